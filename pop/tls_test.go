package pop_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// writeSelfSigned writes a self-signed certificate for localhost valid
// for the given time, and its key.
func writeSelfSigned(t *testing.T, dir string, valid time.Duration) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(valid)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

var reloadFailures = regexp.MustCompile(`pop_tls_certificate_reload_failures_total (\d+)`)

// A certificate reload that fails is logged and counted, the previous
// certificate stays; a certificate that expires within tls.min_validity
// makes /readyz say so.
func TestCertReloadFailureAndExpiry(t *testing.T) {
	ca := certstest.LabCA(t) // the PoPs below serve certFile, not a certificate from ca
	ro := startRecordingOrigin(t, nil)
	admin := func(p *pop.Server, path string) (int, string) {
		resp, err := http.Get("http://" + p.AdminAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	t.Run("reload failure", func(t *testing.T) {
		certFile, keyFile := writeSelfSigned(t, t.TempDir(), 90*24*time.Hour)
		cfg := poptest.Config(ca, ro.url)
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		p := poptest.StartPoP(t, cfg)
		os.WriteFile(keyFile, []byte("half-written"), 0o600)
		later := time.Now().Add(time.Minute)
		os.Chtimes(keyFile, later, later)
		poll.Until(t, "the failed reload to be counted", func() bool {
			// Handshakes check the files (at most once a second).
			c, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
			if err != nil {
				t.Fatalf("handshake after a broken key file: %v (the previous certificate must stay)", err)
			}
			c.Close()
			_, m := admin(p, "/metrics")
			n := 0
			if f := reloadFailures.FindStringSubmatch(m); f != nil {
				n, _ = strconv.Atoi(f[1])
			}
			return n == 1
		})
	})
	t.Run("expiring", func(t *testing.T) {
		certFile, keyFile := writeSelfSigned(t, t.TempDir(), time.Hour)
		cfg := poptest.Config(ca, ro.url)
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		p := poptest.StartPoP(t, cfg)
		if code, body := admin(p, "/readyz"); code != 503 || !strings.Contains(body, "certificate expires") {
			t.Errorf("/readyz with a certificate valid for 1h = %d %q, want 503 naming the expiry (min_validity 24h)", code, body)
		}
		cfg = poptest.Config(ca, ro.url)
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		cfg.TLS.MinValidity = -1
		p2 := poptest.StartPoP(t, cfg)
		if code, body := admin(p2, "/readyz"); code != 200 {
			t.Errorf("/readyz with min_validity -1 = %d %q, want 200", code, body)
		}
	})
}

// A stored response's Set-Cookie goes only to the client whose request
// fetched it, unless the site says store (then everyone gets it, as RFC
// 9111 allows) or pass (then nothing is stored).
func TestSiteSetCookiePolicy(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		w.Header().Set("Set-Cookie", "session=first-visitor")
		w.Write([]byte("page"))
	})
	for _, tt := range []struct {
		policy        string
		second        string // the second client's Set-Cookie
		originFetches int
	}{
		{"", "", 1}, {"strip", "", 1}, {"store", "session=first-visitor", 1}, {"pass", "session=first-visitor", 2},
	} {
		t.Run("policy "+tt.policy, func(t *testing.T) {
			cfg := poptest.Config(ca, ro.url)
			cfg.Sites[0].SetCookie = tt.policy
			p := poptest.StartPoP(t, cfg)
			url := "https://localhost:" + port(p.Addr()) + "/cookie-" + tt.policy
			first, _ := get(t, clients(t, ca)["h2"], url)
			p.WaitCache()
			second, _ := get(t, clients(t, ca)["h2"], url)
			if got := first.Header.Get("Set-Cookie"); got != "session=first-visitor" {
				t.Errorf("the fetching client's Set-Cookie = %q, want its cookie", got)
			}
			if got := second.Header.Get("Set-Cookie"); got != tt.second {
				t.Errorf("another client's Set-Cookie = %q, want %q", got, tt.second)
			}
			n := 0
			for _, r := range ro.requests() {
				if r.URL.Path == "/cookie-"+tt.policy {
					n++
				}
			}
			if n != tt.originFetches {
				t.Errorf("origin fetched %d times, want %d", n, tt.originFetches)
			}
		})
	}
	if _, err := pop.ParseConfig([]byte("listen: 127.0.0.1:0\nsites: [{hosts: [a.lab], upstream: o, set_cookie: eat}]\nupstreams: {o: {servers: [\"https://127.0.0.1:1\"]}}\n")); err == nil || !strings.Contains(err.Error(), "sites[0].set_cookie") {
		t.Errorf("set_cookie: eat: %v, want an error naming sites[0].set_cookie", err)
	}
}
