package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
			checkGoroutines(t)
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
	checkGoroutines(t)
	url := deadAddr(t, "http")
	g := newGroup(t, Config{Servers: []string{url}, HealthInterval: 5 * time.Millisecond})
	err := g.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(url, "http://")) {
		t.Fatalf("Start with the origin down = %v, want an error naming it", err)
	}
	if g.Ready() || g.Stats().Servers[0].Healthy {
		t.Fatalf("Ready %v, healthy %v with the origin down; want false", g.Ready(), g.Stats().Servers[0].Healthy)
	}
	if _, _, err := get(t, g, "GET", "/x"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("request with the only server down: %v, want ErrUnavailable", err)
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
	waitFor(t, "the group to become ready", g.Ready)
	if _, body, err := get(t, g, "GET", "/x"); err != nil || body != "up" {
		t.Errorf("request after the origin came up: %q, %v", body, err)
	}
}

func TestStartReturnsWhenContextEnds(t *testing.T) {
	checkGoroutines(t)
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

func TestKeepWarmRedialsAfterOriginDropsConnections(t *testing.T) {
	checkGoroutines(t)
	o := newOrigin(t, false, nil)
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, WarmConns: 2, HealthInterval: 5 * time.Millisecond, KeepAlive: 20 * time.Millisecond})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("Start opened %d connections, want 2", n)
	}
	o.srv.CloseClientConnections() // as an origin's idle timeout would
	waitFor(t, "the pool to dial 2 connections again", func() bool { return o.conns.Load() >= 4 })
}

func TestRetries(t *testing.T) {
	t.Run("GET that could not connect goes to another server", func(t *testing.T) {
		checkGoroutines(t)
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
	t.Run("an answered GET is not retried", func(t *testing.T) {
		bad := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
		live := newOrigin(t, false, nil)
		g := newGroup(t, Config{Servers: []string{bad.srv.URL, live.srv.URL}, HealthPath: "-"})
		if resp, _, err := get(t, g, "GET", "/r"); err != nil || resp.StatusCode != http.StatusBadGateway {
			t.Errorf("GET answered 502: %v, %v; want the 502 passed on", resp, err)
		}
		if n := live.requests.Load(); n != 0 {
			t.Errorf("the other server got %d requests, want 0", n)
		}
	})
}

func TestRetryBudget(t *testing.T) {
	checkGoroutines(t)
	live := newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{
		Servers:    []string{deadAddr(t, "http"), live.srv.URL},
		HealthPath: "-", FailThreshold: 1000, RetryBudget: 0.1, Now: clock.Now,
	})
	// Round robin sends every GET to the dead server first (a retry takes
	// the next turn), so each wants a retry.
	for range 200 {
		get(t, g, "GET", "/budget")
	}
	st := g.Stats()
	// A floor of 10 plus 10% of 200 requests, the clock standing still.
	if st.Retries < 25 || st.Retries > 31 || st.Retries+st.BudgetDenied != 200 {
		t.Errorf("200 requests wanting a retry: %d retried, %d denied; want about 30 retried, the rest denied", st.Retries, st.BudgetDenied)
	}
	clock.Advance(time.Second) // the floor drips in 10 more
	for range 10 {
		if _, _, err := get(t, g, "GET", "/budget"); err != nil {
			t.Errorf("GET after a second's floor: %v, want a retry allowed", err)
		}
	}
}

func TestBulkhead(t *testing.T) {
	checkGoroutines(t)
	o := newOrigin(t, false, nil)
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", MaxConcurrent: 2})
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
		t.Errorf("third request with 2 in flight: %v, want ErrOverloaded", err)
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
}

func TestTimeouts(t *testing.T) {
	checkGoroutines(t)
	o := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slowbody" {
			io.WriteString(w, "start")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	})
	t.Run("response header timeout", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", ResponseHeaderTimeout: 50 * time.Millisecond})
		_, _, err := get(t, g, "GET", "/block")
		<-o.entered
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "response header timeout") {
			t.Errorf("err = %v, want ErrTimeout naming the response header timeout", err)
		}
		if st := g.Stats(); st.Retries != 0 || st.Servers[0].Failures != 1 {
			t.Errorf("retries %d, failures %d; want a sent request not retried, one failure", st.Retries, st.Servers[0].Failures)
		}
	})
	t.Run("total timeout awaiting headers", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", TotalTimeout: 50 * time.Millisecond})
		_, _, err := get(t, g, "GET", "/block")
		<-o.entered
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "total timeout") {
			t.Errorf("err = %v, want ErrTimeout naming the total timeout", err)
		}
	})
	t.Run("total timeout reading the body", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", TotalTimeout: 100 * time.Millisecond})
		req, _ := http.NewRequest("GET", "http://site.test/slowbody", nil)
		resp, err := g.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, ErrTimeout) || string(b) != "start" {
			t.Errorf("reading a body that never ends: %q, %v; want the start, then ErrTimeout", b, err)
		}
		if st := g.Stats(); st.Inflight != 0 || st.Servers[0].Outstanding != 0 {
			t.Errorf("after the body closed: inflight %d, outstanding %d; want 0", st.Inflight, st.Servers[0].Outstanding)
		}
	})
	t.Run("tls handshake timeout", func(t *testing.T) {
		g := newGroup(t, Config{Servers: []string{"https://" + silentListener(t)}, HealthPath: "-", TLSTimeout: 50 * time.Millisecond, Retries: -1})
		_, _, err := get(t, g, "GET", "/x")
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "tls handshake timeout") {
			t.Errorf("err = %v, want ErrTimeout naming the TLS handshake", err)
		}
	})
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"client cancel is not a timeout", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, context.Canceled},
		{"client deadline is not a timeout", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", TotalTimeout: time.Minute})
			ctx, cancel := tc.ctx()
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, _, err := send(t, g, ctx, "GET", "/block")
				errc <- err
			}()
			<-o.entered
			if tc.want == context.Canceled {
				cancel()
			}
			err := <-errc
			if !errors.Is(err, tc.want) || errors.Is(err, ErrTimeout) {
				t.Errorf("err = %v, want %v and not ErrTimeout", err, tc.want)
			}
			if st := g.Stats(); st.Servers[0].Failures != 0 || st.Inflight != 0 {
				t.Errorf("failures %d, inflight %d; want a client's giving up to count against nothing", st.Servers[0].Failures, st.Inflight)
			}
		})
	}
}

func TestCloseStopsEverything(t *testing.T) {
	checkGoroutines(t)
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

func BenchmarkRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h1", false}, {"h2", true}} {
		b.Run(tc.name, func(b *testing.B) {
			o := newOrigin(b, tc.tls, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			g := newGroup(b, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthPath: "-"})
			if err := g.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "http://site.test/bench", nil)
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
