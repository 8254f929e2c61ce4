package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/certs"
)

// startDNS runs a real DNS server on loopback, UDP and TCP on one port
// (pebble's resolver uses TCP), that answers A 127.0.0.1 for every name
// and nothing else, so the ACME CA's validation reaches our listeners.
func startDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{Listener: ln, Handler: handler}, {PacketConn: pc, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return ln.Addr().String()
}

// pebble is Let's Encrypt's test ACME CA, run in-process.
type pebble struct {
	dirURL   string
	roots    *x509.CertPool // verifies pebble's own TLS (the lab CA)
	issuer   *x509.CertPool // verifies certificates pebble issues
	requests atomic.Int64   // requests to the ACME API
}

func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	lab, err := certs.OpenLabCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := lab.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p := &pebble{roots: lab.RootPool(), issuer: x509.NewCertPool()}
	p.issuer.AddCert(authority.GetRootCert(0).Cert)
	api := front.Handler()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		api.ServeHTTP(w, r)
	}), ErrorLog: logger}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.dirURL = "https://" + ln.Addr().String() + "/dir"
	return p
}

func freePort(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// fetchCert makes a TLS handshake with SNI host to addr (which triggers
// issuance) and verifies the chain against the ACME CA's root.
func fetchCert(t *testing.T, addr, host string, issuer *x509.CertPool) error {
	t.Helper()
	d := &net.Dialer{Timeout: 60 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: host, RootCAs: issuer, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return err
	}
	return conn.Close()
}

func TestACMEIssuesWithBothChallenges(t *testing.T) {
	t.Run("tls-alpn-01 on the TLS listener", func(t *testing.T) {
		tlsLn, tlsPort := freePort(t)
		deadLn, httpPort := freePort(t)
		deadLn.Close() // no HTTP-01 listener at all
		p := startPebble(t, httpPort, tlsPort)
		m, err := certs.NewACME(certs.ACMEConfig{Hosts: []string{"www.cdn.test"}, Dir: t.TempDir(), DirectoryURL: p.dirURL, RootCAs: p.roots})
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
			TLSConfig: &tls.Config{GetCertificate: m.GetCertificate, NextProtos: m.NextProtos([]string{"h2", "http/1.1"})}, ErrorLog: log.New(io.Discard, "", 0)}
		go srv.ServeTLS(tlsLn, "", "")
		t.Cleanup(func() { srv.Close() })
		// A host outside the policy fails before any contact with the CA.
		// Checked first, while nothing else talks to the CA.
		fresh, err := certs.NewACME(certs.ACMEConfig{Hosts: []string{"www.cdn.test"}, Dir: t.TempDir(), DirectoryURL: p.dirURL, RootCAs: p.roots})
		if err != nil {
			t.Fatal(err)
		}
		before := p.requests.Load()
		if _, err := fresh.GetCertificate(&tls.ClientHelloInfo{ServerName: "evil.cdn.test", CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256}}); err == nil {
			t.Errorf("GetCertificate for a host outside the policy succeeded")
		}
		if n := p.requests.Load() - before; n != 0 {
			t.Errorf("a host outside the policy made %d requests to the ACME CA, want 0", n)
		}
		if err := fetchCert(t, tlsLn.Addr().String(), "www.cdn.test", p.issuer); err != nil {
			t.Fatalf("handshake for www.cdn.test: %v", err)
		}
	})
	t.Run("http-01 on the port-80 listener", func(t *testing.T) {
		httpLn, httpPort := freePort(t)
		deadLn, deadPort := freePort(t)
		deadLn.Close() // TLS-ALPN-01 cannot succeed: pebble's TLS port is closed
		p := startPebble(t, httpPort, deadPort)
		m, err := certs.NewACME(certs.ACMEConfig{Hosts: []string{"www.cdn.test"}, Dir: t.TempDir(), DirectoryURL: p.dirURL, RootCAs: p.roots})
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: m.HTTPHandler(nil), ErrorLog: log.New(io.Discard, "", 0)}
		go hs.Serve(httpLn)
		t.Cleanup(func() { hs.Close() })
		tlsLn, _ := freePort(t)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
			TLSConfig: &tls.Config{GetCertificate: m.GetCertificate, NextProtos: m.NextProtos([]string{"http/1.1"})}, ErrorLog: log.New(io.Discard, "", 0)}
		go srv.ServeTLS(tlsLn, "", "")
		t.Cleanup(func() { srv.Close() })
		if err := fetchCert(t, tlsLn.Addr().String(), "www.cdn.test", p.issuer); err != nil {
			t.Fatalf("handshake for www.cdn.test: %v", err)
		}
		// The port-80 listener redirects everything else to https.
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+httpLn.Addr().String()+"/page", nil)
		req.Host = "www.cdn.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "https://www.cdn.test/page") {
			t.Errorf("port 80 non-challenge request: %d Location %q, want a redirect to https", resp.StatusCode, loc)
		}
	})
}
