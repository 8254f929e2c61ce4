package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLabCACreatedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca1, err := OpenLabCA(dir)
	if err != nil {
		t.Fatalf("OpenLabCA(%q) = %v", dir, err)
	}
	ca2, err := OpenLabCA(dir)
	if err != nil {
		t.Fatalf("OpenLabCA(%q) again = %v", dir, err)
	}
	if !ca1.Root().Equal(ca2.Root()) {
		t.Errorf("second OpenLabCA made a new root; want the persisted one")
	}
	if got, want := ca1.RootPath(), filepath.Join(dir, "root.pem"); got != want {
		t.Errorf("RootPath() = %q, want %q", got, want)
	}
	pemBytes, err := os.ReadFile(ca1.RootPath())
	if err != nil || string(pemBytes) != string(ca1.RootPEM()) {
		t.Errorf("root.pem on disk differs from RootPEM() (err %v)", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, RootKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("root key mode = %v (err %v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestLabCAConcurrentOpenAgrees(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var wg sync.WaitGroup
	roots := make([]*x509.Certificate, 8)
	for i := range roots {
		wg.Go(func() {
			ca, err := OpenLabCA(dir)
			if err != nil {
				t.Errorf("OpenLabCA = %v", err)
				return
			}
			roots[i] = ca.Root()
		})
	}
	wg.Wait()
	for i, r := range roots {
		if r == nil || !r.Equal(roots[0]) {
			t.Fatalf("opener %d got a different root", i)
		}
	}
}

func TestLabCAIssueVerifies(t *testing.T) {
	ca, err := OpenLabCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("pop-eu.cdn.lab", "*.cdn.lab", "10.77.2.20", "::1")
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	if got := cert.Leaf.PublicKeyAlgorithm; got != x509.ECDSA {
		t.Errorf("leaf key algorithm = %v, want ECDSA", got)
	}
	for _, name := range []string{"pop-eu.cdn.lab", "www.cdn.lab", "10.77.2.20", "::1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.RootPool()}); err != nil {
			t.Errorf("Verify(%q) = %v, want nil", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: ca.RootPool()}); err == nil {
		t.Errorf("Verify(evil.example) = nil, want a name mismatch")
	}
	for _, bad := range []string{"", "bad name", "a..b"} {
		if _, err := ca.Issue(bad); err == nil {
			t.Errorf("Issue(%q) = nil error, want one", bad)
		}
	}
}

func TestSPKIPin(t *testing.T) {
	_, cert := localhostLeaf(t)
	der, err := x509.MarshalPKIXPublicKey(cert.Leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if got, want := SPKIPin(cert.Leaf), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Errorf("SPKIPin = %q, want %q", got, want)
	}
}

// serveTLS runs a TLS server with cfg on loopback answering every request
// with "ok" and returns its address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.TLS = cfg
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func handshake(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	// TLS 1.3 tickets arrive after the handshake: read until the server's
	// answer so the client has processed them.
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	return conn.ConnectionState(), nil
}

func TestTicketKeysResumeAcrossServers(t *testing.T) {
	ca, err := OpenLabCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	secret := []byte(strings.Repeat("s", 32))
	newServer := func(secret []byte) string {
		_, addr := ticketServer(t, leaf, secret, clock)
		return addr
	}
	popEU, popNA, other := newServer(secret), newServer(secret), newServer([]byte(strings.Repeat("x", 32)))

	tests := []struct {
		name    string
		second  string
		advance time.Duration
		resumed bool
	}{
		{"same secret", popNA, 0, true},
		{"same secret after one rotation", popNA, time.Hour, true},
		{"same secret beyond keep", popNA, 3 * time.Hour, false},
		{"other secret", other, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = time.Unix(1_800_000_000, 0)
			client := &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if _, err := handshake(t, popEU, client); err != nil {
				t.Fatalf("first handshake: %v", err)
			}
			now = now.Add(tt.advance)
			st, err := handshake(t, tt.second, client)
			if err != nil {
				t.Fatalf("second handshake: %v", err)
			}
			if st.DidResume != tt.resumed {
				t.Errorf("DidResume = %v, want %v", st.DidResume, tt.resumed)
			}
		})
	}
}

// TestTicketKeysSetSecret: a server whose secret is replaced while it
// runs (a fleet's rotation) issues tickets under the new secret, which a
// server given the same new secret resumes, and still resumes tickets
// issued under the replaced secret for a ticket's lifetime
// (Rotation*(Keep+1)), not after.
func TestTicketKeysSetSecret(t *testing.T) {
	ca, leaf := localhostLeaf(t)
	var now time.Time
	clock := func() time.Time { return now }
	oldSecret, newSecret := []byte(strings.Repeat("o", 32)), []byte(strings.Repeat("n", 32))
	newServer := func(secret []byte) (*TicketKeys, string) { return ticketServer(t, leaf, secret, clock) }
	rotated, popEU := newServer(oldSecret)
	_, popNA := newServer(newSecret) // a PoP that only ever had the new secret
	tests := []struct {
		name    string
		before  bool // first handshake before the secret is replaced
		second  string
		advance time.Duration // after the replacement
		resumed bool
	}{
		{"old ticket at the same server", true, popEU, 0, true},
		{"old ticket within its lifetime", true, popEU, 90 * time.Minute, true},
		{"old ticket beyond its lifetime", true, popEU, 3 * time.Hour, false},
		{"new ticket at a server with the new secret", false, popNA, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = time.Unix(1_800_000_000, 0)
			if err := rotated.SetSecret(oldSecret); err != nil {
				t.Fatal(err)
			}
			client := &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if !tt.before {
				rotated.SetSecret(newSecret, oldSecret)
			}
			if _, err := handshake(t, popEU, client); err != nil {
				t.Fatalf("first handshake: %v", err)
			}
			if tt.before {
				rotated.SetSecret(newSecret, oldSecret)
			}
			now = now.Add(tt.advance)
			st, err := handshake(t, tt.second, client)
			if err != nil {
				t.Fatalf("second handshake: %v", err)
			}
			if st.DidResume != tt.resumed {
				t.Errorf("DidResume = %v, want %v", st.DidResume, tt.resumed)
			}
		})
	}
	if err := rotated.SetSecret([]byte("short")); err == nil || !strings.Contains(err.Error(), "ticket secret") {
		t.Errorf("SetSecret(short) = %v, want an error naming the ticket secret", err)
	}
}

func TestQUICKeysSharedBySecret(t *testing.T) {
	a, _ := NewTicketKeys(TicketKeysConfig{Secret: []byte(strings.Repeat("a", 32))})
	b, _ := NewTicketKeys(TicketKeysConfig{Secret: []byte(strings.Repeat("a", 32))})
	c, _ := NewTicketKeys(TicketKeysConfig{Secret: []byte(strings.Repeat("c", 32))})
	at, ar := a.QUICKeys()
	bt, br := b.QUICKeys()
	ct, _ := c.QUICKeys()
	if at != bt || ar != br {
		t.Errorf("QUICKeys differ for the same secret")
	}
	if at == ct || at == ar {
		t.Errorf("QUICKeys: token key equals another secret's or the reset key")
	}
}

func TestTicketKeysConfigErrors(t *testing.T) {
	if _, err := NewTicketKeys(TicketKeysConfig{Secret: []byte("short")}); err == nil || !strings.Contains(err.Error(), "ticket secret") {
		t.Errorf("short secret: err = %v, want one naming the ticket secret", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))+"\n"), 0o600)
	if s, err := LoadSecret(p); err != nil || string(s) != strings.Repeat("k", 32) {
		t.Errorf("LoadSecret(base64) = %q, %v", s, err)
	}
	os.WriteFile(p, []byte("tiny"), 0o600)
	if _, err := LoadSecret(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("LoadSecret(tiny) = %v, want an error naming the file", err)
	}
}

func TestTLS13OnlyByDefault(t *testing.T) {
	ca, leaf := localhostLeaf(t)
	for _, allow := range []bool{false, true} {
		cfg, err := ServerConfig{GetCertificate: StaticCertificate(leaf), AllowTLS12: allow}.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		addr := serveTLS(t, cfg)
		_, err = handshake(t, addr, &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12})
		if (err == nil) != allow {
			t.Errorf("AllowTLS12=%v: TLS 1.2 handshake error = %v", allow, err)
		}
	}
}

func TestFileSourceReloads(t *testing.T) {
	ca, err := OpenLabCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	first, err := ca.Issue("first.lab")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(first, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	var reported []error
	src, err := NewFileSource(FileSourceConfig{CertFile: certFile, KeyFile: keyFile, Now: func() time.Time { return now },
		OnReloadError: func(err error) { reported = append(reported, err) }})
	if err != nil {
		t.Fatalf("NewFileSource = %v", err)
	}
	get := func() string {
		c, err := src.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if got := get(); got != "first.lab" {
		t.Fatalf("cert = %q, want first.lab", got)
	}
	second, err := ca.Issue("second.lab")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(second, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(certFile, later, later)
	os.Chtimes(keyFile, later, later)
	if got := get(); got != "first.lab" {
		t.Errorf("cert before the check interval = %q, want first.lab still", got)
	}
	now = now.Add(2 * time.Second)
	if got := get(); got != "second.lab" {
		t.Errorf("cert after change = %q, want second.lab", got)
	}
	// A broken file keeps the last good certificate and reports the error.
	os.WriteFile(keyFile, []byte("garbage"), 0o600)
	later = later.Add(time.Minute)
	os.Chtimes(keyFile, later, later)
	now = now.Add(2 * time.Second)
	if got := get(); got != "second.lab" || src.Err() == nil {
		t.Errorf("after a broken key: cert %q, Err %v; want second.lab and an error", got, src.Err())
	}
	now = now.Add(2 * time.Second)
	get() // still broken: not reported again
	if len(reported) != 1 {
		t.Errorf("OnReloadError called %d times for one broken key over two checks, want once: %v", len(reported), reported)
	}
	if _, err := NewFileSource(FileSourceConfig{CertFile: filepath.Join(dir, "missing"), KeyFile: keyFile}); err == nil || !strings.Contains(err.Error(), "certificate file") {
		t.Errorf("missing file: err = %v, want one naming the certificate file", err)
	}
}

func TestACMEHostPolicy(t *testing.T) {
	if _, err := NewACME(ACMEConfig{Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "acme hosts") {
		t.Errorf("no hosts: err = %v, want one naming acme hosts", err)
	}
	a, err := NewACME(ACMEConfig{Hosts: []string{"www.cdn.lab"}, Dir: t.TempDir(), DirectoryURL: "https://127.0.0.1:1/dir"})
	if err != nil {
		t.Fatal(err)
	}
	// A name outside the policy fails before any contact with the CA.
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "evil.example", CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256}}); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("GetCertificate(evil.example) = %v, want a host policy error", err)
	}
	if got := a.NextProtos([]string{"h2"}); len(got) != 2 || got[1] != "acme-tls/1" {
		t.Errorf("NextProtos = %v, want h2 and acme-tls/1", got)
	}
	h := a.HTTPHandler(nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://www.cdn.lab/x?y=1", nil))
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://www.cdn.lab/x?y=1" {
		t.Errorf("HTTP handler: %d %q, want a redirect to https", rec.Code, rec.Header().Get("Location"))
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://www.cdn.lab/.well-known/acme-challenge/unknown", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown challenge token: %d, want 404", rec.Code)
	}
}

// localhostLeaf is a new lab CA and a certificate for localhost from it.
func localhostLeaf(t *testing.T) (*LabCA, tls.Certificate) {
	t.Helper()
	ca, err := OpenLabCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	return ca, leaf
}

// ticketServer serves TLS with leaf and ticket keys from secret (hourly
// rotation, one older key kept, on clock) until the test ends, and
// returns the keys and its address.
func ticketServer(t *testing.T, leaf tls.Certificate, secret []byte, clock func() time.Time) (*TicketKeys, string) {
	t.Helper()
	keys, err := NewTicketKeys(TicketKeysConfig{Secret: secret, Rotation: time.Hour, Keep: 1, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerConfig{GetCertificate: StaticCertificate(leaf), Tickets: keys, NextProtos: []string{"http/1.1"}}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	return keys, serveTLS(t, cfg)
}
