package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// origin is a test origin server that counts requests and TLS handshakes.
type origin struct {
	srv        *httptest.Server
	requests   atomic.Int64
	handshakes atomic.Int64
	healthy    atomic.Bool
}

func newOrigin(t *testing.T, tlsOn bool, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{}
	o.healthy.Store(true)
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !o.healthy.Load() {
				http.Error(w, "sick", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok"))
			return
		}
		o.requests.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s", o.srv.Listener.Addr(), r.Proto)
	}))
	if tlsOn {
		o.srv.EnableHTTP2 = true
		o.srv.TLS = &tls.Config{VerifyConnection: func(tls.ConnectionState) error { o.handshakes.Add(1); return nil }}
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) pool() *x509.CertPool {
	p := x509.NewCertPool()
	if c := o.srv.Certificate(); c != nil {
		p.AddCert(c)
	}
	return p
}

func newGroup(t *testing.T, cfg Config) *Group {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func roundTrip(t *testing.T, g *Group, method, path string) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://site.test"+path, nil)
	resp, err := g.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), nil
}

func TestPoolProtocolsAndWarmUp(t *testing.T) {
	h2 := newOrigin(t, true, nil)
	h1 := newOrigin(t, false, nil)
	for _, tc := range []struct {
		name  string
		o     *origin
		proto int
	}{{"tls origin speaks h2", h2, 2}, {"plain origin keeps h1 alive", h1, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t, Config{Servers: []string{tc.o.srv.URL}, RootCAs: tc.o.pool(), WarmConns: 3})
			if err := g.Start(context.Background()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			st := g.Stats().Servers[0]
			if !g.Ready() || !st.Warm {
				t.Fatalf("after Start: Ready %v, warm %v", g.Ready(), st.Warm)
			}
			wantDials := int64(3)
			if tc.proto == 2 {
				wantDials = 1
			}
			if st.Dials != wantDials {
				t.Errorf("dials after Start = %d, want %d", st.Dials, wantDials)
			}
			hsBefore := tc.o.handshakes.Load()
			if tc.proto == 2 && hsBefore != 1 {
				t.Errorf("origin handshakes after Start = %d, want 1", hsBefore)
			}
			for range 20 {
				resp, _, err := roundTrip(t, g, "GET", "/x")
				if err != nil {
					t.Fatal(err)
				}
				if resp.ProtoMajor != tc.proto {
					t.Fatalf("ProtoMajor = %d, want %d", resp.ProtoMajor, tc.proto)
				}
			}
			if d := g.Stats().Servers[0].Dials; d != wantDials {
				t.Errorf("dials after 20 requests = %d, want still %d", d, wantDials)
			}
			if hs := tc.o.handshakes.Load(); hs != hsBefore {
				t.Errorf("origin handshakes after requests = %d, want %d", hs, hsBefore)
			}
		})
	}
}

func TestPoolBalancers(t *testing.T) {
	var os []*origin
	var urls []string
	for range 3 {
		o := newOrigin(t, false, nil)
		os = append(os, o)
		urls = append(urls, o.srv.URL)
	}
	t.Run("round robin spreads evenly", func(t *testing.T) {
		g := newGroup(t, Config{Servers: urls, HealthPath: "-"})
		before := []int64{os[0].requests.Load(), os[1].requests.Load(), os[2].requests.Load()}
		for range 30 {
			if _, _, err := roundTrip(t, g, "GET", "/rr"); err != nil {
				t.Fatal(err)
			}
		}
		for i, o := range os {
			if got := o.requests.Load() - before[i]; got != 10 {
				t.Errorf("server %d got %d of 30 requests, want 10", i, got)
			}
		}
	})
	t.Run("hash sticks and moves only a dead server's URLs", func(t *testing.T) {
		g := newGroup(t, Config{Servers: urls, Balancer: "hash", HealthPath: "-"})
		owner := map[string]string{}
		for i := range 60 {
			path := fmt.Sprintf("/obj/%d", i)
			_, body, err := roundTrip(t, g, "GET", path)
			if err != nil {
				t.Fatal(err)
			}
			owner[path] = strings.Fields(body)[0]
			if _, again, _ := roundTrip(t, g, "GET", path); strings.Fields(again)[0] != owner[path] {
				t.Fatalf("%s moved between requests", path)
			}
		}
		dead := strings.TrimPrefix(urls[1], "http://")
		g.servers[1].healthy.Store(false)
		moved := 0
		for path, was := range owner {
			_, body, err := roundTrip(t, g, "GET", path)
			if err != nil {
				t.Fatal(err)
			}
			now := strings.Fields(body)[0]
			if was != dead && now != was {
				t.Errorf("%s moved from live server %s to %s", path, was, now)
			}
			if was == dead {
				moved++
			}
		}
		if moved == 0 {
			t.Errorf("no URL was owned by the stopped server: hash spread is broken")
		}
	})
	t.Run("least outstanding avoids a busy server", func(t *testing.T) {
		g := newGroup(t, Config{Servers: urls[:2], Balancer: "least_outstanding", HealthPath: "-"})
		g.servers[0].outstanding.Add(100) // as if 100 requests were in flight there
		defer g.servers[0].outstanding.Add(-100)
		before := os[0].requests.Load()
		for range 20 {
			roundTrip(t, g, "GET", "/p2c")
		}
		if got := os[0].requests.Load() - before; got != 0 {
			t.Errorf("busy server got %d of 20 requests, want 0", got)
		}
	})
}

func TestPoolHealthChecks(t *testing.T) {
	a, b := newOrigin(t, false, nil), newOrigin(t, false, nil)
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthInterval: 10 * time.Millisecond})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.healthy.Store(false)
	waitUntil(t, "server a to leave rotation", func() bool { return !g.Stats().Servers[0].Healthy })
	before := a.requests.Load()
	for range 10 {
		roundTrip(t, g, "GET", "/h")
	}
	if got := a.requests.Load() - before; got != 0 {
		t.Errorf("unhealthy server got %d requests, want 0", got)
	}
	a.healthy.Store(true)
	waitUntil(t, "server a to come back", func() bool { return g.Stats().Servers[0].Healthy })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPoolBreaker(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	o := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "bad", http.StatusBadGateway)
			return
		}
		w.Write([]byte("ok"))
	})
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", FailThreshold: 3, OpenDuration: 5 * time.Second, Now: clock, Retries: -1})
	for range 3 {
		resp, _, err := roundTrip(t, g, "GET", "/b")
		if err != nil || resp.StatusCode != 502 {
			t.Fatalf("failing origin: %v %v", resp, err)
		}
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerOpen {
		t.Fatalf("breaker after 3 failures = %v, want open", st)
	}
	if _, _, err := roundTrip(t, g, "GET", "/b"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("request with the breaker open: %v, want ErrUnavailable", err)
	}
	advance(6 * time.Second)
	if st := g.Stats().Servers[0].Breaker; st != BreakerHalfOpen {
		t.Fatalf("breaker after the pause = %v, want half-open", st)
	}
	// Exactly one trial while half-open.
	if !g.servers[0].breaker.acquire(clock()) || g.servers[0].breaker.acquire(clock()) {
		t.Errorf("half-open breaker admitted other than exactly one trial")
	}
	g.servers[0].breaker.failure(clock()) // the trial failed: open again
	if st := g.Stats().Servers[0].Breaker; st != BreakerOpen {
		t.Fatalf("breaker after a failed trial = %v, want open", st)
	}
	advance(6 * time.Second)
	failing.Store(false)
	if resp, _, err := roundTrip(t, g, "GET", "/b"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("trial request: %v %v", resp, err)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerClosed {
		t.Errorf("breaker after a good trial = %v, want closed", st)
	}
}

func TestPoolRetries(t *testing.T) {
	live := newOrigin(t, false, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	g := newGroup(t, Config{Servers: []string{dead, live.srv.URL}, HealthPath: "-", Retries: 1})
	for i := range 4 {
		resp, _, err := roundTrip(t, g, "GET", "/r")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %d with one dead server: %v %v, want a retry on the live one", i, resp, err)
		}
	}
	if g.Stats().Retries == 0 {
		t.Errorf("no retries counted")
	}
	// POST is never retried: round robin sends some to the dead server.
	var failed int
	for range 4 {
		if _, _, err := roundTrip(t, g, "POST", "/r"); err != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Errorf("4 POSTs with one dead server all succeeded: POST was retried")
	}
}

func TestPoolRetryBudget(t *testing.T) {
	live := newOrigin(t, false, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	now := time.Unix(1_800_000_000, 0)
	g := newGroup(t, Config{Servers: []string{dead, live.srv.URL}, HealthPath: "-", FailThreshold: 1000, RetryBudget: 0.1, Now: func() time.Time { return now }})
	for range 200 {
		roundTrip(t, g, "GET", "/budget")
	}
	st := g.Stats()
	// 10 retries of floor plus 10% of 200 requests: at most ~30 retries.
	if st.Retries > 32 || st.BudgetDenied == 0 {
		t.Errorf("retries %d, denied %d; want the budget to cap retries near 30", st.Retries, st.BudgetDenied)
	}
}

func TestPoolBulkheadAndTimeouts(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		if r.URL.Path == "/slowbody" {
			w.Write([]byte("start"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("ok"))
	})
	t.Cleanup(func() { close(release) }) // before the origin closes: unblock its handlers
	t.Run("bulkhead", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", MaxConcurrent: 2, ResponseHeaderTimeout: 10 * time.Second})
		var started sync.WaitGroup
		for range 2 {
			started.Add(1)
			go func() {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://site.test/block", nil)
				started.Done()
				if resp, err := g.RoundTrip(req); err == nil {
					resp.Body.Close()
				}
			}()
		}
		started.Wait()
		waitUntil(t, "two requests in flight", func() bool { return g.Stats().Inflight == 2 })
		start := time.Now()
		_, _, err := roundTrip(t, g, "GET", "/x")
		if !errors.Is(err, ErrOverloaded) {
			t.Errorf("third request: %v, want ErrOverloaded", err)
		}
		if time.Since(start) > time.Second {
			t.Errorf("overloaded refusal took %v, want at once", time.Since(start))
		}
	})
	t.Run("response header timeout", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", ResponseHeaderTimeout: 50 * time.Millisecond, Retries: -1})
		if _, _, err := roundTrip(t, g, "GET", "/block"); !errors.Is(err, ErrTimeout) {
			t.Errorf("err = %v, want ErrTimeout", err)
		}
	})
	t.Run("total timeout covers the body", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", TotalTimeout: 100 * time.Millisecond, Retries: -1})
		req, _ := http.NewRequest("GET", "http://site.test/slowbody", nil)
		resp, err := g.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("reading a body that never ends: no error, want the total timeout to cut it")
		}
		waitUntil(t, "the bulkhead token to return", func() bool { return g.Stats().Inflight == 0 })
	})
	t.Run("client cancel is not a timeout", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-"})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://site.test/block", nil)
		_, err := g.RoundTrip(req)
		if err == nil || errors.Is(err, ErrTimeout) {
			t.Errorf("err = %v, want the client's context error, not ErrTimeout", err)
		}
	})
}

func TestPoolValidateNamesFields(t *testing.T) {
	err := Config{Servers: []string{"http://ok", "ftp://x"}, Balancer: "dice", RetryBudget: 2, HealthPath: "nope"}.Validate()
	for _, want := range []string{"servers[1]", "balancer", "retry_budget", "health_path"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "servers: empty") {
		t.Errorf("empty config: %v", err)
	}
}

func TestPoolCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		o := newOrigin(t, true, nil)
		g, err := New(Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		g.Start(context.Background())
		for range 5 {
			roundTrip(t, g, "GET", "/g")
		}
		g.Close()
		o.srv.Close()
	}()
	waitUntil(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before+1 })
}

func BenchmarkRoundTrip(b *testing.B) {
	for _, tlsOn := range []bool{false, true} {
		name := "h1"
		if tlsOn {
			name = "h2"
		}
		b.Run(name, func(b *testing.B) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
			if tlsOn {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			pool := x509.NewCertPool()
			if c := srv.Certificate(); c != nil {
				pool.AddCert(c)
			}
			g, err := New(Config{Servers: []string{srv.URL}, RootCAs: pool, HealthPath: "-"})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			req, _ := http.NewRequest("GET", "http://site.test/b", nil)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := g.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
