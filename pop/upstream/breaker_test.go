package upstream

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestBreakerOpensAndHalfOpens(t *testing.T) {
	checkGoroutines(t)
	var failing atomic.Bool
	failing.Store(true)
	o := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", FailThreshold: 3, OpenDuration: 5 * time.Second, Now: clock.Now})
	state := func() BreakerState { return g.Stats().Servers[0].Breaker }

	for i := range 3 {
		if state() != BreakerClosed {
			t.Fatalf("breaker after %d failures = %v, want closed", i, state())
		}
		if resp, _, err := get(t, g, "GET", "/b"); err != nil || resp.StatusCode != 503 {
			t.Fatalf("failing origin: %v, %v; want its 503", resp, err)
		}
	}
	if state() != BreakerOpen || g.Ready() {
		t.Fatalf("breaker after 3 failures = %v (ready %v), want open", state(), g.Ready())
	}
	if _, _, err := get(t, g, "GET", "/b"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("request with the breaker open: %v, want ErrUnavailable", err)
	}
	sent := o.requests.Load()

	clock.Advance(5 * time.Second)
	if state() != BreakerHalfOpen {
		t.Fatalf("breaker after OpenDuration = %v, want half-open", state())
	}
	// A failed trial opens it again.
	if resp, _, err := get(t, g, "GET", "/b"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("trial: %v, %v; want the origin's 503", resp, err)
	}
	if state() != BreakerOpen || o.requests.Load() != sent+1 {
		t.Fatalf("after a failed trial: breaker %v, origin got %d; want open, one trial", state(), o.requests.Load()-sent)
	}

	clock.Advance(5 * time.Second)
	failing.Store(false)
	// Exactly one trial while half-open: the first blocks, a second is refused.
	trial := make(chan error, 1)
	go func() {
		_, _, err := get(t, g, "GET", "/block")
		trial <- err
	}()
	<-o.entered
	if _, _, err := get(t, g, "GET", "/b"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("second request while the trial is out: %v, want ErrUnavailable", err)
	}
	o.unblock()
	if err := <-trial; err != nil {
		t.Fatalf("trial: %v", err)
	}
	if state() != BreakerClosed {
		t.Errorf("breaker after a good trial = %v, want closed", state())
	}
	if _, _, err := get(t, g, "GET", "/b"); err != nil {
		t.Errorf("request with the breaker closed again: %v", err)
	}
}

func TestBreakerTrialWhoseClientLeftDecidesNothing(t *testing.T) {
	checkGoroutines(t)
	o := newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", FailThreshold: 1, Now: clock.Now})
	g.failed(g.servers[0])
	clock.Advance(time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := send(t, g, ctx, "GET", "/block")
		errc <- err
	}()
	<-o.entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled trial: %v, want context.Canceled", err)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerHalfOpen {
		t.Errorf("breaker after an abandoned trial = %v, want still half-open", st)
	}
	if _, _, err := get(t, g, "GET", "/x"); err != nil {
		t.Errorf("next request: %v, want it admitted as the new trial", err)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerClosed {
		t.Errorf("breaker after a good trial = %v, want closed", st)
	}
}

func TestHealthChecksTakeServerOutAndBackIn(t *testing.T) {
	checkGoroutines(t)
	a, b := newOrigin(t, false, nil), newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Minute, FailThreshold: 2, Now: clock.Now})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.healthy.Store(false)
	waitFor(t, "server a to leave rotation", func() bool { return !g.Stats().Servers[0].Healthy })
	before := a.requests.Load()
	for range 10 {
		if _, body, err := get(t, g, "GET", "/h"); err != nil || servedBy(body) != b.addr() {
			t.Fatalf("GET with a unhealthy: %q, %v; want b's answer", body, err)
		}
	}
	if got := a.requests.Load() - before; got != 0 {
		t.Errorf("unhealthy server got %d requests, want 0", got)
	}
	// Failing checks count towards the breaker too; the fake clock keeps it open.
	waitFor(t, "server a's breaker to open", func() bool { return g.Stats().Servers[0].Breaker == BreakerOpen })

	a.healthy.Store(true)
	waitFor(t, "server a to come back", func() bool { return g.Stats().Servers[0].Healthy })
	if st := g.Stats().Servers[0].Breaker; st != BreakerClosed {
		t.Errorf("breaker after a passing check = %v, want closed", st)
	}
	var gotA bool
	for range 4 {
		_, body, _ := get(t, g, "GET", "/h")
		gotA = gotA || servedBy(body) == a.addr()
	}
	if !gotA {
		t.Errorf("server a back in rotation got none of 4 round-robin requests")
	}
}

func TestBreakerUnit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := &breaker{threshold: 2, openFor: time.Second}
	b.failure(now)
	b.success() // consecutive: a success resets the count
	b.failure(now)
	if s := b.state(now); s != BreakerClosed {
		t.Fatalf("after fail, success, fail = %v, want closed", s)
	}
	if !b.failure(now) || b.state(now) != BreakerOpen {
		t.Fatalf("second consecutive failure did not open the breaker")
	}
	if b.failure(now.Add(900*time.Millisecond)) || b.state(now.Add(time.Second)) != BreakerHalfOpen {
		t.Errorf("a late failure while open extended the open time")
	}
	later := now.Add(time.Second)
	ok, trial := b.acquire(later)
	if !ok || !trial {
		t.Fatalf("half-open acquire = %v, %v; want the trial", ok, trial)
	}
	if ok, _ := b.acquire(later); ok {
		t.Errorf("second acquire while the trial is out = true, want false")
	}
	b.abandon(true)
	if ok, trial := b.acquire(later); !ok || !trial {
		t.Errorf("acquire after an abandoned trial = %v, %v; want a new trial", ok, trial)
	}
}

// TestBreakerOpensOnFailures feeds a lone server FailThreshold failures of
// one kind: 502, 503 and 504 answers and refused connections open its
// breaker, other answers do not. OpenDuration later on the fake clock, not
// sooner, it lets one trial through, whose failure opens it again.
func TestBreakerOpensOnFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int // the origin's answer; 0: the server refuses connections
		opens  bool
	}{
		{"502", http.StatusBadGateway, true},
		{"503", http.StatusServiceUnavailable, true},
		{"504", http.StatusGatewayTimeout, true},
		{"connection refused", 0, true},
		{"500", http.StatusInternalServerError, false},
		{"404", http.StatusNotFound, false},
		{"429", http.StatusTooManyRequests, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			url := deadAddr(t, "http")
			if tc.status != 0 {
				url = newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(tc.status) }).srv.URL
			}
			const openFor = 10 * time.Second
			clock := newFakeClock()
			g := newGroup(t, Config{Servers: []string{url}, HealthPath: "-", FailThreshold: 3, OpenDuration: openFor, Now: clock.Now})
			// reached sends one GET and reports whether it reached the server.
			reached := func() bool {
				t.Helper()
				resp, _, err := get(t, g, "GET", "/b")
				switch {
				case errors.Is(err, ErrUnavailable):
					return false
				case tc.status == 0 && err == nil, tc.status != 0 && (err != nil || resp.StatusCode != tc.status):
					t.Fatalf("RoundTrip(GET /b) = %v, %v; want the server's %s", resp, err, tc.name)
				}
				return true
			}
			state := func() BreakerState { return g.Stats().Servers[0].Breaker }

			for i := range 3 {
				if !reached() {
					t.Fatalf("RoundTrip(GET /b) #%d refused with the breaker %v, want it sent", i, state())
				}
			}
			if !tc.opens {
				if state() != BreakerClosed || !reached() {
					t.Errorf("after 3 answers %s: breaker %v, want closed and requests sent", tc.name, state())
				}
				return
			}
			if state() != BreakerOpen || reached() {
				t.Fatalf("after 3 failures: breaker %v, want open and requests refused", state())
			}
			clock.Advance(openFor - time.Millisecond)
			if state() != BreakerOpen || reached() {
				t.Fatalf("just before OpenDuration: breaker %v, want open and requests refused", state())
			}
			clock.Advance(time.Millisecond)
			if state() != BreakerHalfOpen {
				t.Fatalf("after OpenDuration: breaker %v, want half-open", state())
			}
			if !reached() {
				t.Fatalf("half-open: the first request was refused, want it sent as the trial")
			}
			if state() != BreakerOpen || reached() {
				t.Errorf("after a failed trial: breaker %v, want open again and requests refused", state())
			}
			if st := g.Stats().Servers[0]; st.Requests != 4 || st.Failures != 4 {
				t.Errorf("server got %d requests with %d failures, want 4 and 4: three, then one trial", st.Requests, st.Failures)
			}
		})
	}
}

// TestBreakerHalfOpenAdmitsOneTrialOfMany sends many requests at once to a
// half-open server: one goes through, every other is refused at once.
func TestBreakerHalfOpenAdmitsOneTrialOfMany(t *testing.T) {
	checkGoroutines(t)
	o := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", FailThreshold: 1, OpenDuration: time.Second, Now: clock.Now})
	if resp, _, err := get(t, g, "GET", "/fail"); err != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("RoundTrip(GET /fail) = %v, %v; want the origin's 502", resp, err)
	}
	clock.Advance(time.Second)

	const n = 20
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		go func() {
			<-start
			_, _, err := get(t, g, "GET", "/block")
			errs <- err
		}()
	}
	close(start)
	deadline := time.After(5 * time.Second)
	for i := range n - 1 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("request %d beside the trial = %v, want ErrUnavailable", i, err)
			}
		case <-deadline:
			t.Fatalf("%d of %d requests returned while the trial is out, want %d refused at once", i, n, n-1)
		}
	}
	<-o.entered
	if got := o.requests.Load(); got != 2 {
		t.Errorf("origin got %d requests, want 2: the failure and one trial", got)
	}
	o.unblock()
	if err := <-errs; err != nil {
		t.Errorf("trial = %v, want its answer", err)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerClosed {
		t.Errorf("breaker after a good trial = %v, want closed", st)
	}
}
