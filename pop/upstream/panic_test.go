package upstream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestPanicRouting takes every server of a group out of rotation, by its
// health checks or its breaker: requests are sent to them anyway, rather
// than failed at once, and counted as Panics.
func TestPanicRouting(t *testing.T) {
	t.Run("every server failing its checks", func(t *testing.T) {
		poll.CheckGoroutines(t)
		a, b := newOrigin(t, false, nil), newOrigin(t, false, nil)
		a.healthy.Store(false)
		b.healthy.Store(false)
		g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthInterval: time.Hour})
		if err := g.Start(context.Background()); err == nil {
			t.Fatalf("Start with both health checks failing = nil, want their errors")
		}
		for i := range 10 {
			if resp, _, err := get(t, g, "GET", fmt.Sprintf("/p/%d", i)); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("RoundTrip(GET /p/%d) with every server unhealthy = %v, %v; want a server's answer", i, resp, err)
			}
		}
		if st := g.Stats(); st.Panics != 10 || a.requests.Load() == 0 || b.requests.Load() == 0 {
			t.Errorf("%d requests in panic, servers got %d and %d; want 10, spread over both", st.Panics, a.requests.Load(), b.requests.Load())
		}
		if g.Ready() {
			t.Errorf("Ready with every server unhealthy = true, want false: panic routing is a last resort")
		}
	})
	t.Run("every server ejected", func(t *testing.T) {
		poll.CheckGoroutines(t)
		var failing atomic.Bool
		failing.Store(true)
		h := func(w http.ResponseWriter, r *http.Request) {
			if failing.Load() {
				w.WriteHeader(http.StatusBadGateway)
			}
		}
		a, b := newOrigin(t, false, h), newOrigin(t, false, h)
		clock := newFakeClock() // the breakers stay open
		g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthPath: "-", Retries: -1,
			FailureMinRequests: 1, MaxEjectionPercent: 100, Now: clock.Now})
		get(t, g, "GET", "/e/1")
		get(t, g, "GET", "/e/2")
		for i, s := range g.Stats().Servers {
			if s.Breaker != BreakerOpen {
				t.Fatalf("server %d after a 502: breaker %v, want open", i, s.Breaker)
			}
		}
		failing.Store(false)
		if resp, _, err := get(t, g, "GET", "/e/3"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("RoundTrip(GET /e/3) with every server ejected = %v, %v; want a server's answer", resp, err)
		}
		if st := g.Stats(); st.Panics != 1 {
			t.Errorf("%d requests in panic, want 1", st.Panics)
		}
	})
	t.Run("origin up after the group started", func(t *testing.T) {
		poll.CheckGoroutines(t)
		url := deadAddr(t, "http")
		// No health check comes in the test's time: only the request can
		// find that the origin is up.
		g := newGroup(t, Config{Servers: []string{url}, HealthInterval: time.Hour})
		if err := g.Start(context.Background()); err == nil {
			t.Fatalf("Start with the origin down = nil, want its error")
		}
		ln, err := net.Listen("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Skipf("address taken again before the test could reuse it: %v", err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		if _, body, err := get(t, g, "GET", "/x"); err != nil || body != "up" {
			t.Errorf("RoundTrip(GET /x) once the origin is up, before any health check = %q, %v; want its answer", body, err)
		}
	})
}
