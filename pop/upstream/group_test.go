package upstream

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestStartWarmsAndRequestsReuse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tls       bool
		wantProto int
		wantConns int64 // connections Start opens with WarmConns 3
	}{
		{"tls origin negotiates h2, one connection", true, 2, 1},
		{"plain origin keeps WarmConns h1 connections", false, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			o := newOrigin(t, tc.tls, nil)
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), WarmConns: 3})
			if g.Ready() {
				t.Fatalf("Ready before Start = true, want false")
			}
			if err := g.Start(context.Background()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			st := g.Stats().Servers[0]
			if !g.Ready() || !st.Warm || !st.Healthy || st.Proto != tc.wantProto {
				t.Fatalf("after Start: Ready %v, %+v; want ready, warm, healthy, proto %d", g.Ready(), st, tc.wantProto)
			}
			conns, hs := o.conns.Load(), o.handshakes.Load()
			if conns != tc.wantConns || st.Dials != tc.wantConns {
				t.Errorf("after Start: origin saw %d connections, pool dialled %d; want %d", conns, st.Dials, tc.wantConns)
			}
			if tc.tls && (hs < 1 || st.TLSHandshakes != hs) {
				t.Errorf("after Start: origin saw %d TLS handshakes, pool counted %d; want ≥ 1, equal", hs, st.TLSHandshakes)
			}
			if n := o.requests.Load(); n != 0 {
				t.Errorf("Start sent %d requests outside the health path", n)
			}

			for i := range 20 {
				resp, _, err := get(t, g, "GET", "/x")
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if resp.ProtoMajor != tc.wantProto {
					t.Fatalf("request %d: ProtoMajor %d, want %d", i, resp.ProtoMajor, tc.wantProto)
				}
			}
			// Hold three responses unread at once: each needs a connection of
			// its own (or a stream of the one h2 connection), all warm already.
			var held []*http.Response
			for range 3 {
				req, _ := http.NewRequest("GET", "http://site.test/held", nil)
				resp, err := g.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, resp)
			}
			for _, resp := range held {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if got := o.conns.Load(); got != conns {
				t.Errorf("requests after Start opened %d new connections, want 0", got-conns)
			}
			if got := o.handshakes.Load(); got != hs {
				t.Errorf("requests after Start made %d new TLS handshakes, want 0", got-hs)
			}
			if st := g.Stats().Servers[0]; st.TLSHandshakes != o.handshakes.Load() || st.Dials != o.conns.Load() {
				t.Errorf("Stats after requests: %d TLS handshakes, %d dials; origin saw %d, %d",
					st.TLSHandshakes, st.Dials, o.handshakes.Load(), o.conns.Load())
			}
		})
	}
}

// TestStartPreDialsEveryServer checks, per server of a group, that Start
// leaves warm connections (TLS handshaken over h2) that requests then use,
// and that Stats counts what the origins saw.
func TestStartPreDialsEveryServer(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			var origins []*origin
			var urls []string
			pool := x509.NewCertPool()
			for range 3 {
				o := newOrigin(t, p.tls, nil)
				origins = append(origins, o)
				urls = append(urls, o.srv.URL)
				if c := o.srv.Certificate(); c != nil {
					pool.AddCert(c)
				}
			}
			g := newGroup(t, Config{Servers: urls, RootCAs: pool, WarmConns: 2})
			if err := g.Start(context.Background()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			wantConns := int64(2) // WarmConns, over HTTP/1.1
			if p.tls {
				wantConns = 1 // one multiplexed h2 connection
			}
			conns := make([]int64, len(origins))
			handshakes := make([]int64, len(origins))
			for i, o := range origins {
				st := g.Stats().Servers[i]
				conns[i], handshakes[i] = o.conns.Load(), o.handshakes.Load()
				if conns[i] != wantConns || st.Dials != conns[i] {
					t.Errorf("server %d after Start: origin saw %d connections, Stats %d dials; want %d", i, conns[i], st.Dials, wantConns)
				}
				if p.tls && (handshakes[i] < 1 || st.TLSHandshakes != handshakes[i]) {
					t.Errorf("server %d after Start: origin saw %d TLS handshakes, Stats %d; want at least 1, equal", i, handshakes[i], st.TLSHandshakes)
				}
				if !p.tls && (handshakes[i] != 0 || st.TLSHandshakes != 0) {
					t.Errorf("server %d after Start: %d TLS handshakes (Stats %d) with a plain origin", i, handshakes[i], st.TLSHandshakes)
				}
				if n := o.requests.Load(); n != 0 {
					t.Errorf("server %d: Start sent %d requests outside the health path", i, n)
				}
			}

			for i := range 20 {
				resp, _, err := get(t, g, "GET", fmt.Sprintf("/warm/%d", i))
				if err != nil {
					t.Fatalf("RoundTrip(GET /warm/%d) = %v", i, err)
				}
				if want := map[bool]int{false: 1, true: 2}[p.tls]; resp.ProtoMajor != want {
					t.Errorf("RoundTrip(GET /warm/%d): HTTP/%d, want HTTP/%d", i, resp.ProtoMajor, want)
				}
			}
			for i, o := range origins {
				st := g.Stats().Servers[i]
				if got := o.conns.Load(); got != conns[i] || st.Dials != got {
					t.Errorf("server %d: 20 requests after Start opened %d connections (Stats %d dials in all), want none", i, got-conns[i], st.Dials)
				}
				if got := o.handshakes.Load(); got != handshakes[i] || st.TLSHandshakes != got {
					t.Errorf("server %d: 20 requests after Start made %d TLS handshakes (Stats %d in all), want none", i, got-handshakes[i], st.TLSHandshakes)
				}
				if n := o.requests.Load(); n < 6 || n > 7 || st.Requests != n {
					t.Errorf("server %d got %d of 20 requests (Stats %d), want 6 or 7", i, n, st.Requests)
				}
			}
		})
	}
}

// TestStartWarmsWarmConnsWhateverTheHealthAnswer checks that warm-up opens
// WarmConns HTTP/1.1 connections even when the health answer has no body,
// which frees its connection with the headers, before the caller sees them.
func TestStartWarmsWarmConnsWhateverTheHealthAnswer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		healthPath string
		answer     http.HandlerFunc
	}{
		{"200 with a body", "/status", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }},
		{"200 chunked", "/status", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
			w.(http.Flusher).Flush()
		}},
		{"200 empty", "/status", func(w http.ResponseWriter, r *http.Request) {}},
		{"204", "/status", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }},
		{"404 empty", "/status", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }},
		{"no checks, OPTIONS answered 204", "-", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			o := newOrigin(t, false, tc.answer)
			const warmConns = 4
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: tc.healthPath, WarmConns: warmConns})
			if err := g.Start(context.Background()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if st := g.Stats().Servers[0]; o.conns.Load() != warmConns || st.Dials != warmConns {
				t.Errorf("Start with WarmConns %d: origin saw %d connections, Stats %d dials; want %d",
					warmConns, o.conns.Load(), st.Dials, warmConns)
			}
		})
	}
}

func TestRoundTripKeepsHostAndRewritesURL(t *testing.T) {
	var gotHost, gotURI string
	o := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotURI = r.Host, r.RequestURI
	})
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-"})
	req, _ := http.NewRequest("GET", "https://client.test/a/b?c=d", nil)
	req.Host = "www.site.test"
	resp, err := g.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotHost != "www.site.test" || gotURI != "/a/b?c=d" {
		t.Errorf("origin saw Host %q, URI %q; want www.site.test, /a/b?c=d", gotHost, gotURI)
	}
	if req.URL.Host != "client.test" || req.URL.Scheme != "https" {
		t.Errorf("RoundTrip changed the caller's URL to %v", req.URL)
	}
}

func TestBodylessResponseEndsTheExchangeAtOnce(t *testing.T) {
	o := newOrigin(t, false, nil)
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-"})
	req, _ := http.NewRequest("HEAD", "http://site.test/x", nil)
	resp, err := g.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); resp.Body != http.NoBody || st.Inflight != 0 || st.Servers[0].Outstanding != 0 {
		t.Errorf("HEAD: body %T, inflight %d, outstanding %d; want NoBody and the slot free before any Close",
			resp.Body, st.Inflight, st.Servers[0].Outstanding)
	}
	resp.Body.Close()
}

func TestStartWithOriginDownBecomesReadyLater(t *testing.T) {
	poll.CheckGoroutines(t)
	url := deadAddr(t, "http")
	g := newGroup(t, Config{Servers: []string{url}, HealthInterval: 5 * time.Millisecond})
	err := g.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(url, "http://")) {
		t.Fatalf("Start with the origin down = %v, want an error naming it", err)
	}
	if g.Ready() || g.Stats().Servers[0].Healthy {
		t.Fatalf("Ready %v, healthy %v with the origin down; want false", g.Ready(), g.Stats().Servers[0].Healthy)
	}
	// Panic routing: the server is tried anyway, and refuses.
	if _, _, err := get(t, g, "GET", "/x"); !errors.Is(err, syscall.ECONNREFUSED) || g.Stats().Panics != 1 {
		t.Errorf("request with the only server down: %v (%d in panic), want its refused dial, in panic", err, g.Stats().Panics)
	}

	// The origin comes up on its address.
	ln, err := net.Listen("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Skipf("address taken again before the test could reuse it: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	poll.Until(t, "the group to become ready", g.Ready)
	if _, body, err := get(t, g, "GET", "/x"); err != nil || body != "up" {
		t.Errorf("request after the origin came up: %q, %v", body, err)
	}
}

func TestStartReturnsWhenContextEnds(t *testing.T) {
	poll.CheckGoroutines(t)
	addr := silentListener(t)
	g := newGroup(t, Config{Servers: []string{"http://" + addr}, HealthTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Start(ctx) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start with ctx cancelled = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after its context ended")
	}
	if !g.Stats().Servers[0].Healthy {
		t.Errorf("a warm-up cut short by the caller marked the server unhealthy")
	}
}

func TestCloseEndsAWarmUp(t *testing.T) {
	poll.CheckGoroutines(t)
	g := newGroup(t, Config{Servers: []string{"http://" + silentListener(t)}, HealthTimeout: time.Minute})
	done := make(chan error, 1)
	go func() { done <- g.Start(context.Background()) }()
	poll.Until(t, "the warm-up to dial", func() bool { return g.Stats().Servers[0].Dials > 0 })
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Start cut short by Close = nil, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after Close")
	}
}

func TestKeepWarmRedialsAfterOriginDropsConnections(t *testing.T) {
	poll.CheckGoroutines(t)
	o := newOrigin(t, false, nil)
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, WarmConns: 2, HealthInterval: 5 * time.Millisecond, KeepAlive: 20 * time.Millisecond})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("Start opened %d connections, want 2", n)
	}
	o.srv.CloseClientConnections() // as an origin's idle timeout would
	poll.Until(t, "the pool to dial 2 connections again", func() bool { return o.conns.Load() >= 4 })
}

func TestRetries(t *testing.T) {
	t.Run("GET that could not connect goes to another server", func(t *testing.T) {
		poll.CheckGoroutines(t)
		live := newOrigin(t, false, nil)
		dead := deadAddr(t, "http")
		g := newGroup(t, Config{Servers: []string{dead, live.srv.URL}, HealthPath: "-"})
		for i := range 4 {
			if resp, body, err := get(t, g, "GET", "/r"); err != nil || resp.StatusCode != 200 || servedBy(body) != live.addr() {
				t.Fatalf("GET %d with one server refusing: %q, %v; want 200 from the live one", i, body, err)
			}
		}
		st := g.Stats()
		if st.Retries == 0 || st.Servers[0].Failures != st.Retries {
			t.Errorf("retries %d, failures of the dead server %d; want equal and > 0", st.Retries, st.Servers[0].Failures)
		}
	})
	t.Run("POST is not retried", func(t *testing.T) {
		live := newOrigin(t, false, nil)
		g := newGroup(t, Config{Servers: []string{deadAddr(t, "http"), live.srv.URL}, HealthPath: "-"})
		_, _, err := get(t, g, "POST", "/r") // round robin starts at the dead server
		var op *net.OpError
		if !errors.As(err, &op) {
			t.Errorf("POST to a refusing server: %v, want its dial error", err)
		}
		if n := live.requests.Load(); n != 0 || g.Stats().Retries != 0 {
			t.Errorf("POST retried: live server got %d, retries %d", n, g.Stats().Retries)
		}
	})
	t.Run("PUT with a body is retried with the body again", func(t *testing.T) {
		var got string
		live := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got = string(b)
		})
		g := newGroup(t, Config{Servers: []string{deadAddr(t, "http"), live.srv.URL}, HealthPath: "-"})
		req, _ := http.NewRequest("PUT", "http://site.test/obj", bytes.NewReader([]byte("payload"))) // sets GetBody
		resp, err := g.RoundTrip(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		resp.Body.Close()
		if got != "payload" || g.Stats().Retries != 1 {
			t.Errorf("live server got body %q after %d retries, want payload after 1", got, g.Stats().Retries)
		}
	})
	t.Run("TLS handshake failure is retried", func(t *testing.T) {
		plain := newOrigin(t, false, nil) // answers a ClientHello with garbage
		live := newOrigin(t, true, nil)
		g := newGroup(t, Config{Servers: []string{"https://" + plain.addr(), live.srv.URL}, RootCAs: live.pool(), HealthPath: "-"})
		if _, body, err := get(t, g, "GET", "/r"); err != nil || servedBy(body) != live.addr() {
			t.Errorf("GET with the first server failing the TLS handshake: %q, %v; want the live one's answer", body, err)
		}
		if st := g.Stats(); st.Retries != 1 || st.Servers[0].Failures != 1 {
			t.Errorf("retries %d, failures of the first server %d; want 1, 1", st.Retries, st.Servers[0].Failures)
		}
	})
	t.Run("a GET sent and timed out is not retried", func(t *testing.T) {
		slow, live := newOrigin(t, false, nil), newOrigin(t, false, nil)
		g := newGroup(t, Config{Servers: []string{slow.srv.URL, live.srv.URL}, HealthPath: "-", ResponseHeaderTimeout: 20 * time.Millisecond})
		if _, _, err := get(t, g, "GET", "/block"); !errors.Is(err, ErrTimeout) {
			t.Errorf("GET to a server that never answers: %v, want ErrTimeout", err)
		}
		<-slow.entered
		if n := live.requests.Load(); n != 0 || g.Stats().Retries != 0 {
			t.Errorf("the other server got %d requests, retries %d; want a sent request not retried", n, g.Stats().Retries)
		}
	})
	t.Run("a GET answered 5xx goes to another server", func(t *testing.T) {
		for _, code := range []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
			bad := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
			live := newOrigin(t, false, nil)
			g := newGroup(t, Config{Servers: []string{bad.srv.URL, live.srv.URL}, HealthPath: "-"})
			if resp, body, err := get(t, g, "GET", "/r"); err != nil || resp.StatusCode != 200 || servedBy(body) != live.addr() {
				t.Errorf("GET answered %d by the first server: %v, %q, %v; want the other one's 200", code, resp, body, err)
			}
			if st := g.Stats(); st.Retries != 1 || st.Inflight != 0 || st.Servers[0].Outstanding != 0 || st.Servers[0].Failures != 1 {
				t.Errorf("after a retried %d: retries %d, inflight %d, outstanding %d, failures %d; want 1, 0, 0, 1",
					code, st.Retries, st.Inflight, st.Servers[0].Outstanding, st.Servers[0].Failures)
			}
		}
	})
	t.Run("the last 5xx is passed on", func(t *testing.T) {
		h := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }
		a, b := newOrigin(t, false, h), newOrigin(t, false, h)
		g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthPath: "-"})
		if resp, body, err := get(t, g, "GET", "/r"); err != nil || resp.StatusCode != http.StatusServiceUnavailable || body != "busy\n" {
			t.Errorf("GET answered 503 by both servers: %v, %q, %v; want the second 503 passed on", resp, body, err)
		}
		if n := a.requests.Load() + b.requests.Load(); n != 2 {
			t.Errorf("servers got %d requests, want 2: one retry", n)
		}
	})
	t.Run("a POST answered 502 is not retried", func(t *testing.T) {
		bad := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
		live := newOrigin(t, false, nil)
		g := newGroup(t, Config{Servers: []string{bad.srv.URL, live.srv.URL}, HealthPath: "-"})
		if resp, _, err := get(t, g, "POST", "/r"); err != nil || resp.StatusCode != http.StatusBadGateway {
			t.Errorf("POST answered 502: %v, %v; want the 502 passed on", resp, err)
		}
		if n := live.requests.Load(); n != 0 {
			t.Errorf("the other server got %d requests, want 0", n)
		}
	})
	t.Run("a GET answered 404 or 501 is not retried", func(t *testing.T) {
		for _, code := range []int{http.StatusNotFound, http.StatusNotImplemented} {
			bad := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
			live := newOrigin(t, false, nil)
			g := newGroup(t, Config{Servers: []string{bad.srv.URL, live.srv.URL}, HealthPath: "-"})
			if resp, _, err := get(t, g, "GET", "/r"); err != nil || resp.StatusCode != code {
				t.Errorf("GET answered %d: %v, %v; want it passed on", code, resp, err)
			}
			if n := live.requests.Load(); n != 0 {
				t.Errorf("the other server got %d requests after a %d, want 0", n, code)
			}
		}
	})
}

func TestRetryBudget(t *testing.T) {
	poll.CheckGoroutines(t)
	live := newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{
		Servers:    []string{deadAddr(t, "http"), live.srv.URL},
		HealthPath: "-", FailThreshold: 1000, FailureRate: 1, RetryBudget: 0.1, Now: clock.Now,
	})
	// Round robin sends every GET to the dead server first (a retry takes
	// the next turn), so each wants a retry.
	for range 200 {
		get(t, g, "GET", "/budget")
	}
	st := g.Stats()
	// A full bucket of 20 (the floor of 10 plus 10% of 100 requests), then
	// 10% of 200 requests, the clock standing still.
	if st.Retries < 35 || st.Retries > 41 || st.Retries+st.BudgetDenied != 200 {
		t.Errorf("200 requests wanting a retry: %d retried, %d denied; want about 40 retried, the rest denied", st.Retries, st.BudgetDenied)
	}
	clock.Advance(time.Second) // the floor drips in 10 more
	for range 10 {
		if _, _, err := get(t, g, "GET", "/budget"); err != nil {
			t.Errorf("GET after a second's floor: %v, want a retry allowed", err)
		}
	}
}

// protocols are the two ways the pool speaks to an origin: HTTP/1.1 to a
// plain one, HTTP/2 (by ALPN) to a TLS one.
var protocols = []struct {
	name string
	tls  bool
}{{"h1", false}, {"h2", true}}

func TestBulkhead(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			o := newOrigin(t, p.tls, nil)
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthPath: "-", MaxConcurrent: 2})
			results := make(chan error, 2)
			for range 2 {
				go func() {
					_, _, err := get(t, g, "GET", "/block")
					results <- err
				}()
				<-o.entered
			}
			// Nothing frees a slot until the test does: a refusal that waited for
			// one would end in the context's error instead.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, _, err := send(t, g, ctx, "GET", "/x"); !errors.Is(err, ErrOverloaded) {
				t.Errorf("RoundTrip(GET /x) with 2 in flight = %v, want ErrOverloaded", err)
			}
			if st := g.Stats(); st.Inflight != 2 || st.Overloaded != 1 || o.requests.Load() != 2 {
				t.Errorf("inflight %d, overloaded %d, origin requests %d; want 2, 1, 2", st.Inflight, st.Overloaded, o.requests.Load())
			}
			o.unblock()
			for range 2 {
				if err := <-results; err != nil {
					t.Errorf("blocked request: %v", err)
				}
			}
			if _, _, err := get(t, g, "GET", "/x"); err != nil || g.Stats().Inflight != 0 {
				t.Errorf("after the slots freed: %v, inflight %d", err, g.Stats().Inflight)
			}
		})
	}
}

// TestResponseBodyEndFreesTheSlot checks that a request holds its bulkhead
// slot and its server's outstanding count exactly until its body ends,
// however the caller ends it.
func TestResponseBodyEndFreesTheSlot(t *testing.T) {
	payload := strings.Repeat("x", 64<<10) // more than one read, and than a socket buffer
	for _, p := range protocols {
		for _, end := range []struct {
			name string
			end  func(io.ReadCloser) error
		}{
			{"closed unread", func(b io.ReadCloser) error { return b.Close() }},
			{"read to the end and closed", func(b io.ReadCloser) error {
				_, err := io.Copy(io.Discard, b)
				return errors.Join(err, b.Close())
			}},
			{"read to the end, not closed", func(b io.ReadCloser) error {
				_, err := io.Copy(io.Discard, b)
				return err
			}},
		} {
			t.Run(p.name+"/"+end.name, func(t *testing.T) {
				poll.CheckGoroutines(t)
				o := newOrigin(t, p.tls, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, payload) })
				g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthPath: "-", MaxConcurrent: 2})
				for i := range 10 {
					req, _ := http.NewRequest("GET", "http://site.test/big", nil)
					resp, err := g.RoundTrip(req)
					if err != nil {
						t.Fatalf("RoundTrip(GET /big) #%d = %v, want the slots of the ones before free", i, err)
					}
					defer resp.Body.Close() // for "not closed": after the checks
					if st := g.Stats(); st.Inflight != 1 || st.Servers[0].Outstanding != 1 {
						t.Errorf("#%d with its body open: inflight %d, outstanding %d; want 1, 1", i, st.Inflight, st.Servers[0].Outstanding)
					}
					if err := end.end(resp.Body); err != nil {
						t.Fatalf("#%d: ending the body: %v", i, err)
					}
					if st := g.Stats(); st.Inflight != 0 || st.Servers[0].Outstanding != 0 || st.Servers[0].Failures != 0 {
						t.Errorf("#%d with its body %s: inflight %d, outstanding %d, failures %d; want 0, 0, 0",
							i, end.name, st.Inflight, st.Servers[0].Outstanding, st.Servers[0].Failures)
					}
				}
			})
		}
	}
}

// TestBrokenBodyIsAFailure has the origin break off a response midway: the
// reader gets an error, and the failure reaches the server's breaker, as
// one failure and no success (with FailureMinRequests 1, it opens).
func TestBrokenBodyIsAFailure(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			o := newOrigin(t, p.tls, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "start")
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // drops the connection (h1) or resets the stream (h2)
			})
			clock := newFakeClock()
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthPath: "-",
				FailureMinRequests: 1, MaxEjectionPercent: 100, Now: clock.Now})
			req, _ := http.NewRequest("GET", "http://site.test/broken", nil)
			resp, err := g.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip(GET /broken) = %v, want the headers", err)
			}
			b, err := io.ReadAll(resp.Body)
			if err == nil || errors.Is(err, ErrTimeout) || string(b) != "start" {
				t.Errorf("reading a body cut off after %q: %q, %v; want the start, then an error", "start", b, err)
			}
			resp.Body.Close()
			st := g.Stats()
			if s := st.Servers[0]; s.Failures != 1 || s.Breaker != BreakerOpen || st.Inflight != 0 {
				t.Errorf("after a broken body: failures %d, breaker %v, inflight %d; want 1, open, 0", s.Failures, s.Breaker, st.Inflight)
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			// start gives each case an origin of its own, so that none waits
			// on another's requests, and a warm group, so that the short
			// timeouts below are not spent dialling.
			start := func(t *testing.T, c Config) (*origin, *Group) {
				t.Helper()
				o := newOrigin(t, p.tls, func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/slowbody" {
						io.WriteString(w, "start")
						w.(http.Flusher).Flush()
						<-r.Context().Done()
					}
				})
				c.Servers, c.RootCAs, c.HealthPath = []string{o.srv.URL}, o.pool(), "-"
				g := newGroup(t, c)
				if err := g.Start(context.Background()); err != nil {
					t.Fatalf("Start: %v", err)
				}
				return o, g
			}
			t.Run("response header timeout", func(t *testing.T) {
				_, g := start(t, Config{ResponseHeaderTimeout: 50 * time.Millisecond})
				_, _, err := get(t, g, "GET", "/block")
				if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "response header timeout") {
					t.Errorf("RoundTrip(GET /block) = %v, want ErrTimeout naming the response header timeout", err)
				}
				if st := g.Stats(); st.Retries != 0 || st.Servers[0].Failures != 1 || st.Inflight != 0 {
					t.Errorf("retries %d, failures %d, inflight %d; want a sent request not retried, one failure, the slot free",
						st.Retries, st.Servers[0].Failures, st.Inflight)
				}
			})
			t.Run("total timeout awaiting headers", func(t *testing.T) {
				_, g := start(t, Config{TotalTimeout: 50 * time.Millisecond})
				_, _, err := get(t, g, "GET", "/block")
				if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "total timeout") {
					t.Errorf("RoundTrip(GET /block) = %v, want ErrTimeout naming the total timeout", err)
				}
			})
			t.Run("total timeout reading the body", func(t *testing.T) {
				_, g := start(t, Config{TotalTimeout: 200 * time.Millisecond})
				req, _ := http.NewRequest("GET", "http://site.test/slowbody", nil)
				resp, err := g.RoundTrip(req)
				if err != nil {
					t.Fatalf("RoundTrip(GET /slowbody) = %v, want the headers within the total timeout", err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !errors.Is(err, ErrTimeout) || string(b) != "start" {
					t.Errorf("reading a body that never ends: %q, %v; want the start, then ErrTimeout", b, err)
				}
				if st := g.Stats(); st.Inflight != 0 || st.Servers[0].Outstanding != 0 || st.Servers[0].Failures != 1 {
					t.Errorf("after the body closed: inflight %d, outstanding %d, failures %d; want 0, 0, 1",
						st.Inflight, st.Servers[0].Outstanding, st.Servers[0].Failures)
				}
			})
			t.Run("client cancel is not a timeout", func(t *testing.T) {
				o, g := start(t, Config{TotalTimeout: time.Minute})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				errc := make(chan error, 1)
				go func() {
					_, _, err := send(t, g, ctx, "GET", "/block")
					errc <- err
				}()
				<-o.entered // awaiting headers
				cancel()
				err := <-errc
				if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
					t.Errorf("RoundTrip(GET /block) = %v, want context.Canceled and not ErrTimeout", err)
				}
				if st := g.Stats(); st.Servers[0].Failures != 0 || st.Inflight != 0 {
					t.Errorf("failures %d, inflight %d; want a client's giving up to count against nothing", st.Servers[0].Failures, st.Inflight)
				}
			})
			t.Run("client deadline is not a timeout", func(t *testing.T) {
				_, g := start(t, Config{TotalTimeout: time.Minute})
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				_, _, err := send(t, g, ctx, "GET", "/block")
				if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTimeout) {
					t.Errorf("RoundTrip(GET /block) = %v, want context.DeadlineExceeded and not ErrTimeout", err)
				}
				if st := g.Stats(); st.Servers[0].Failures != 0 || st.Inflight != 0 {
					t.Errorf("failures %d, inflight %d; want a client's giving up to count against nothing", st.Servers[0].Failures, st.Inflight)
				}
			})
		})
	}
	t.Run("tls handshake timeout", func(t *testing.T) {
		poll.CheckGoroutines(t)
		g := newGroup(t, Config{Servers: []string{"https://" + silentListener(t)}, HealthPath: "-", TLSTimeout: 50 * time.Millisecond, Retries: -1})
		_, _, err := get(t, g, "GET", "/x")
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "tls handshake timeout") {
			t.Errorf("RoundTrip(GET /x) = %v, want ErrTimeout naming the TLS handshake", err)
		}
	})
}

func TestCloseStopsEverything(t *testing.T) {
	poll.CheckGoroutines(t)
	h2, h1 := newOrigin(t, true, nil), newOrigin(t, false, nil)
	pool := h2.pool()
	g := newGroup(t, Config{Servers: []string{h2.srv.URL, h1.srv.URL}, RootCAs: pool, HealthInterval: time.Millisecond, KeepAlive: 5 * time.Millisecond})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, _, err := get(t, g, "GET", "/g"); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := get(t, g, "GET", "/g"); !errors.Is(err, ErrClosed) {
		t.Errorf("RoundTrip after Close: %v, want ErrClosed", err)
	}
	if err := g.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
	// checkGoroutines verifies, after the origins close, that no loop or
	// connection goroutine is left.
}

// TestCloseLetsRequestsInFlightFinish closes a group while a request is
// waiting on its origin: the request still gets its answer and frees its
// slot, and nothing is left running once the origin is gone.
func TestCloseLetsRequestsInFlightFinish(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			o := newOrigin(t, p.tls, nil)
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool()})
			if err := g.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			type result struct {
				body string
				err  error
			}
			done := make(chan result, 1)
			go func() {
				_, body, err := get(t, g, "GET", "/block")
				done <- result{body, err}
			}()
			<-o.entered
			if err := g.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			o.unblock()
			if r := <-done; r.err != nil || servedBy(r.body) != o.addr() {
				t.Errorf("RoundTrip(GET /block) in flight at Close = %q, %v; want the origin's answer", r.body, r.err)
			}
			if g.Stats().Inflight != 0 {
				t.Errorf("inflight %d after the request ended, want 0", g.Stats().Inflight)
			}
			if !p.tls {
				// net/http closes an HTTP/1.1 connection that goes idle after
				// CloseIdleConnections. An HTTP/2 one that had a stream open then
				// stays until IdleConnTimeout or the origin closes it.
				poll.Until(t, "the origin to see every connection closed", func() bool { return o.closed.Load() == o.conns.Load() })
			}
		})
	}
}

// BenchmarkRoundTrip measures one request through a warm group to one
// loopback origin, by protocol and response size.
func BenchmarkRoundTrip(b *testing.B) {
	for _, p := range protocols {
		b.Run(p.name, func(b *testing.B) {
			for _, size := range []int{1 << 10, 64 << 10} {
				b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
					body := strings.Repeat("x", size)
					o := newOrigin(b, p.tls, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
					g := newGroup(b, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthPath: "-"})
					if err := g.Start(context.Background()); err != nil {
						b.Fatal(err)
					}
					req, _ := http.NewRequest("GET", "http://site.test/bench", nil)
					b.SetBytes(int64(size))
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
		})
	}
}

// Responses nobody reads hold at most the stream window each in the PoP,
// not Go's default 4 MiB per stream and 1 GiB per connection: ten stalled
// 64 MiB responses over HTTP/2 grow the heap by far less than 40 MiB.
func TestStalledResponsesHoldOnlyTheWindow(t *testing.T) {
	chunk := make([]byte, 64<<10)
	o := newOrigin(t, true, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(64<<20))
		for i := 0; i < (64<<20)/len(chunk); i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	g, err := New(Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), ResponseHeaderTimeout: 10 * time.Second, TotalTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var bodies []io.Closer
	for i := range 10 {
		req, _ := http.NewRequest("GET", o.srv.URL+"/big?"+strconv.Itoa(i), nil)
		resp, err := g.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Skipf("the origin answered HTTP/%d: the window is an HTTP/2 matter", resp.ProtoMajor)
		}
		bodies = append(bodies, resp.Body)
	}
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	// Let the origin fill what the windows allow: until the heap stops
	// growing for a while.
	heap := func() int64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse)
	}
	grew := poll.Steady(t, "the heap in use", 500*time.Millisecond, 64<<10, heap) - int64(before.HeapInuse)
	t.Logf("10 unread 64 MiB responses over HTTP/2: heap grew %.1f MiB", float64(grew)/(1<<20))
	if grew > 20<<20 {
		t.Errorf("heap grew %.1f MiB holding 10 unread responses, want at most 20 (1 MiB window each)", float64(grew)/(1<<20))
	}
}
