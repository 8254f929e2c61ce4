package certs_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/acmetest"
)

// Names in acmetest.Zone, which the test DNS server answers for with
// 127.0.0.1, so a refusal for evil.cdn.test can only come from the host
// policy.
const (
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
			closed := acmetest.ClosingPort(t)
			tlsLn := acmetest.Listen(t)
			var httpLn net.Listener
			httpPort, tlsPort := closed, acmetest.Port(tlsLn)
			if tt.http01 {
				httpLn = acmetest.Listen(t)
				httpPort, tlsPort = acmetest.Port(httpLn), closed
			}
			p := acmetest.StartPebble(t, httpPort, tlsPort)

			cache := autocert.DirCache(t.TempDir())
			a, err := certs.NewACME(certs.ACMEConfig{Hosts: []string{testHost}, Cache: cache, DirectoryURL: p.DirURL, RootCAs: p.Roots})
			if err != nil {
				t.Fatal(err)
			}
			if tt.http01 {
				acmetest.Serve(t, httpLn, a.HTTPHandler(nil), nil)
			}
			acmetest.Serve(t, tlsLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				&tls.Config{GetCertificate: a.GetCertificate, NextProtos: a.NextProtos([]string{"h2", "http/1.1"})})
			// Runs before the servers and pebble stop (cleanups are LIFO).
			t.Cleanup(func() { acmetest.WaitAutocertIdle(t) })

			// The first handshake for the name blocks on the issuance.
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: p.Issuer},
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
			if root := chain[len(chain)-1]; !root.Equal(p.Root) {
				t.Errorf("chain ends at %q, want pebble's root %q", root.Subject, p.Root.Subject)
			}

			orders, tried := p.Validations(t, cache)
			if n := p.NewOrders(); n != orders {
				t.Errorf("pebble's API created %d orders, its store holds %d for the account", n, orders)
			}
			if !slices.Equal(tried, tt.tried) {
				t.Errorf("pebble validated %q, want %q", tried, tt.tried)
			}

			// A name outside the policy (that resolves) is refused without
			// an order at the CA.
			d := &tls.Dialer{Config: &tls.Config{ServerName: evilHost, RootCAs: p.Issuer}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if conn, err := d.DialContext(ctx, "tcp", tlsLn.Addr().String()); err == nil {
				conn.Close()
				t.Errorf("handshake with SNI %s succeeded, want a refusal (host policy)", evilHost)
			}
			if n, tried2 := p.Validations(t, cache); n != orders || len(tried2) != len(tried) {
				t.Errorf("after %s: %d orders, %d validations; want %d, %d as before", evilHost, n, len(tried2), orders, len(tried))
			}

			if tt.http01 {
				// Everything else on the port-80 listener goes to https,
				// without the port the client came in on.
				req, _ := http.NewRequest("GET", "http://"+httpLn.Addr().String()+"/page?q=1", nil)
				req.Host = net.JoinHostPort(testHost, strconv.Itoa(acmetest.Port(httpLn)))
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
