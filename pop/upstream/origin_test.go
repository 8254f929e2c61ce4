package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// origin is a test origin server on loopback that counts what the pool
// does to it: connections accepted and closed, TLS handshakes begun,
// requests other than health checks. /healthz answers by the healthy flag;
// /block waits until the test ends (or the client goes away) and reports
// its arrival on entered; everything else goes to the handler h, or
// answers with the server's address and protocol.
type origin struct {
	srv        *httptest.Server
	conns      atomic.Int64
	closed     atomic.Int64
	handshakes atomic.Int64
	requests   atomic.Int64
	healthy    atomic.Bool
	entered    chan struct{} // one value per request that reached /block
	release    chan struct{} // closed by unblock
	unblocked  sync.Once
}

// unblock lets every /block request finish; the test's end calls it too.
func (o *origin) unblock() { o.unblocked.Do(func() { close(o.release) }) }

func newOrigin(t testing.TB, tlsOn bool, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{entered: make(chan struct{}, 100), release: make(chan struct{})}
	o.healthy.Store(true)
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !o.healthy.Load() {
				http.Error(w, "sick", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
			return
		}
		o.requests.Add(1)
		switch {
		case r.URL.Path == "/block":
			o.entered <- struct{}{}
			select {
			case <-o.release:
			case <-r.Context().Done():
			}
		case h != nil:
			h(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s", o.addr(), r.Proto)
	}))
	o.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			o.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			o.closed.Add(1)
		}
	}
	if tlsOn {
		o.srv.EnableHTTP2 = true
		o.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			o.handshakes.Add(1)
			return nil, nil
		}}
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	t.Cleanup(o.srv.Close)
	t.Cleanup(o.unblock) // runs first: unblocks handlers so Close can finish
	return o
}

func (o *origin) addr() string { return o.srv.Listener.Addr().String() }

// pool trusts the origin's certificate.
func (o *origin) pool() *x509.CertPool {
	p := x509.NewCertPool()
	if c := o.srv.Certificate(); c != nil {
		p.AddCert(c)
	}
	return p
}

// deadAddr returns a loopback URL that refuses connections.
func deadAddr(t testing.TB, scheme string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return scheme + "://" + addr
}

// silentListener accepts connections and never says a word, until the
// test ends: a server whose TLS handshake or response never comes.
func silentListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// newGroup builds a group that logs nowhere and is closed when the test ends.
func newGroup(t testing.TB, cfg Config) *Group {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// get sends one request through g and returns the response with its body read.
func get(t testing.TB, g *Group, method, path string) (*http.Response, string, error) {
	t.Helper()
	return send(t, g, context.Background(), method, path)
}

func send(t testing.TB, g *Group, ctx context.Context, method, path string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://site.test"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := g.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// servedBy is the address an origin's default answer names.
func servedBy(body string) string { return strings.Fields(body + " ")[0] }

// fakeClock is the Now seam for breakers and the retry budget.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
