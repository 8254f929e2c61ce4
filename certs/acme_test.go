package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"golang.org/x/crypto/acme/autocert"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// testZone is what the test DNS server answers for; every name in it is
// 127.0.0.1, so a refusal for evil.cdn.test can only come from the host policy.
const (
	testZone = "cdn.test."
	testHost = "www.cdn.test"
	evilHost = "evil.cdn.test"
)

// TestACMEIssuesWithPebble gets a certificate for www.cdn.test from pebble,
// Let's Encrypt's test CA, run in-process: nothing leaves loopback. A DNS
// server on 127.0.0.1 points pebble's validation at our listeners, and each
// sub-test leaves only one challenge type reachable; pebble's port for the
// other one closes every connection at once.
//
// autocert offers tls-alpn-01 first, and http-01 only once HTTPHandler has
// been called, each retry with a new order (verifyRFC in autocert.go), so the
// challenges pebble validated show which path was taken.
func TestACMEIssuesWithPebble(t *testing.T) {
	tests := []struct {
		name   string
		http01 bool     // serve HTTPHandler on pebble's HTTP port, TLS elsewhere
		tried  []string // challenges pebble validated, "type status", in order
	}{
		{"tls-alpn-01", false, []string{"tls-alpn-01 valid"}},
		{"http-01", true, []string{"tls-alpn-01 invalid", "http-01 valid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			closed := closingPort(t)
			tlsLn := listen(t)
			var httpLn net.Listener
			httpPort, tlsPort := closed, port(tlsLn)
			if tt.http01 {
				httpLn = listen(t)
				httpPort, tlsPort = port(httpLn), closed
			}
			p := startPebble(t, httpPort, tlsPort)

			cache := autocert.DirCache(t.TempDir())
			a, err := certs.NewACME(certs.ACMEConfig{Hosts: []string{testHost}, Cache: cache, DirectoryURL: p.dirURL, RootCAs: p.roots})
			if err != nil {
				t.Fatal(err)
			}
			if tt.http01 {
				serve(t, httpLn, a.HTTPHandler(nil), nil)
			}
			serve(t, tlsLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				&tls.Config{GetCertificate: a.GetCertificate, NextProtos: a.NextProtos([]string{"h2", "http/1.1"})})
			// Runs before the servers and pebble stop (cleanups are LIFO).
			t.Cleanup(func() { waitAutocertIdle(t) })

			// The first handshake for the name blocks on the issuance.
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: p.issuer},
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return new(net.Dialer).DialContext(ctx, "tcp", tlsLn.Addr().String())
				},
				ForceAttemptHTTP2: true,
			}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			resp, err := c.Get("https://" + testHost + "/")
			if err != nil {
				t.Fatalf("GET https://%s/ = %v, want a certificate from pebble", testHost, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Errorf("GET https://%s/ = %d %q, want 200 \"ok\"", testHost, resp.StatusCode, body)
			}
			if got := resp.TLS.NegotiatedProtocol; got != "h2" {
				t.Errorf("ALPN = %q, want h2 (acme-tls/1 must only be added)", got)
			}
			chain := resp.TLS.VerifiedChains[0]
			if leaf := chain[0]; !slices.Equal(leaf.DNSNames, []string{testHost}) {
				t.Errorf("leaf DNSNames = %v, want [%s]", leaf.DNSNames, testHost)
			}
			if root := chain[len(chain)-1]; !root.Equal(p.root) {
				t.Errorf("chain ends at %q, want pebble's root %q", root.Subject, p.root.Subject)
			}

			orders, tried := p.validations(t, cache)
			if !slices.Equal(tried, tt.tried) {
				t.Errorf("pebble validated %q, want %q", tried, tt.tried)
			}

			// A name outside the policy (that resolves) is refused without
			// an order at the CA.
			d := &tls.Dialer{Config: &tls.Config{ServerName: evilHost, RootCAs: p.issuer}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if conn, err := d.DialContext(ctx, "tcp", tlsLn.Addr().String()); err == nil {
				conn.Close()
				t.Errorf("handshake with SNI %s succeeded, want a refusal (host policy)", evilHost)
			}
			if n, tried2 := p.validations(t, cache); n != orders || len(tried2) != len(tried) {
				t.Errorf("after %s: %d orders, %d validations; want %d, %d as before", evilHost, n, len(tried2), orders, len(tried))
			}

			if tt.http01 {
				// Everything else on the port-80 listener goes to https,
				// without the port the client came in on.
				req, _ := http.NewRequest("GET", "http://"+httpLn.Addr().String()+"/page?q=1", nil)
				req.Host = net.JoinHostPort(testHost, strconv.Itoa(port(httpLn)))
				c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if want := "https://" + testHost + "/page?q=1"; resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
					t.Errorf("GET %s on port 80 = %d Location %q, want 302 %q", req.URL.Path, resp.StatusCode, resp.Header.Get("Location"), want)
				}
			}
		})
	}
}

// pebble is Let's Encrypt's test ACME CA, wired as its cmd/pebble/main.go
// does, with its API served over TLS from the lab CA.
type pebble struct {
	dirURL string
	roots  *x509.CertPool    // verifies pebble's API (the lab CA)
	root   *x509.Certificate // pebble's issuing root
	issuer *x509.CertPool    // holds root
	db     *db.MemoryStore
}

func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s sleep before each validation
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no "badNonce" for 5% of good nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	lab := certstest.LabCA(t)
	leaf, err := lab.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, front.Handler(), nil)
	p := &pebble{
		dirURL: "https://" + ln.Addr().String() + wfe.DirectoryPath,
		roots:  lab.RootPool(),
		root:   authority.GetRootCert(0).Cert,
		issuer: x509.NewCertPool(),
		db:     store,
	}
	p.issuer.AddCert(p.root)
	return p
}

// validations returns how many orders the account in cache has placed at
// pebble, and every challenge pebble validated for them as "type status", in
// order. It reads pebble's store, not the ACME API, so it counts what the CA
// holds whatever the client did.
func (p *pebble) validations(t *testing.T, cache autocert.Cache) (orders int, tried []string) {
	t.Helper()
	data, err := cache.Get(context.Background(), "acme_account+key") // autocert's name for its account key
	if err != nil {
		t.Fatalf("account key: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("account key: no PEM block")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("account key: %v", err)
	}
	acct, err := p.db.GetAccountByKey(key.Public())
	if err != nil || acct == nil {
		t.Fatalf("pebble has no account for autocert's key (err %v)", err)
	}
	all := p.db.GetOrdersByAccountID(acct.ID)
	for _, o := range all {
		o.RLock()
		authzs := o.AuthorizationObjects
		o.RUnlock()
		for _, z := range authzs {
			z.RLock()
			chals := z.Challenges
			z.RUnlock()
			for _, c := range chals {
				c.RLock()
				if c.Status != "pending" {
					tried = append(tried, c.Type+" "+c.Status)
				}
				c.RUnlock()
			}
		}
	}
	return len(all), tried
}

// startDNS runs real DNS servers on one loopback port, UDP and TCP (pebble
// asks over TCP), authoritative for testZone: A 127.0.0.1 for every name in
// it, an empty answer for other types (AAAA), REFUSED outside it.
func startDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if len(q.Question) != 1 || !dns.IsSubDomain(testZone, q.Question[0].Name) {
			m.Rcode = dns.RcodeRefused
		} else if qq := q.Question[0]; qq.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})
	ln := listen(t)
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{Listener: ln, Handler: handler}, {PacketConn: pc, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("dns server: %v", err)
		}
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return ln.Addr().String()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// closingPort returns a loopback port whose listener closes every connection
// at once, so a validation sent there fails quickly. It stays bound for the
// whole test, so nothing else can take the port.
func closingPort(t *testing.T) int {
	t.Helper()
	ln := listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return port(ln)
}

// serve runs an HTTP server on ln, over TLS when cfg is set, until the test
// ends.
func serve(t *testing.T, ln net.Listener, h http.Handler, cfg *tls.Config) {
	t.Helper()
	srv := &http.Server{Handler: h, TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan error, 1)
	go func() {
		if cfg != nil {
			done <- srv.ServeTLS(ln, "", "")
		} else {
			done <- srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve %s: %v", ln.Addr(), err)
		}
	})
}

// waitAutocertIdle waits for the goroutines autocert starts at the end of an
// issuance (deactivating leftover authorizations, deleting challenge tokens)
// to end, so none outlives the CA or the cache directory. There is no event
// to wait on, so it polls the goroutine stacks; if they never end, the
// failure shows them.
func waitAutocertIdle(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var stacks string
	busy := func() bool {
		stacks = string(buf[:runtime.Stack(buf, true)])
		return strings.Contains(stacks, "/acme/autocert.")
	}
	defer func() {
		if strings.Contains(stacks, "/acme/autocert.") { // poll.Until gave up
			t.Logf("goroutines:\n%s", stacks)
		}
	}()
	poll.Until(t, "autocert's goroutines to end", func() bool { return !busy() })
}
