package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// sendUntil sends GETs of path (a format taking the request's number) through
// g until server i has had want requests, and fails the test if the balancer
// keeps sending them elsewhere.
func sendUntil(t *testing.T, g *Group, i int, want int64, path string) {
	t.Helper()
	for n := 0; g.Stats().Servers[i].Requests < want; n++ {
		if n > 4*int(want)+4 {
			t.Fatalf("server %d got %d requests of %d sent, want %d", i, g.Stats().Servers[i].Requests, n, want)
		}
		get(t, g, "GET", fmt.Sprintf(path, n))
	}
}

// servedElsewhere sends n GETs and fails the test unless every one was
// answered by other, while server i of g got none of them.
func servedElsewhere(t *testing.T, g *Group, i int, other *origin, n int, why string) {
	t.Helper()
	before := g.Stats().Servers[i].Requests
	for k := range n {
		if _, body, err := get(t, g, "GET", fmt.Sprintf("/other/%d", k)); err != nil || servedBy(body) != other.addr() {
			t.Fatalf("RoundTrip(GET /other/%d) %s = %q, %v; want the other server's answer", k, why, body, err)
		}
	}
	if got := g.Stats().Servers[i].Requests - before; got != 0 {
		t.Fatalf("%s: server %d got %d of %d requests, want none", why, i, got, n)
	}
}

// TestBreakerOpensAndHalfOpens walks one server's breaker through its
// states beside a good server: failures on three paths open it (with
// FailureMinRequests 3), an open breaker sends nothing to its server, after
// OpenDuration one trial goes through, a failed trial opens it again, and
// while a good trial is out every other request goes to the other server.
func TestBreakerOpensAndHalfOpens(t *testing.T) {
	poll.CheckGoroutines(t)
	var failing atomic.Bool
	failing.Store(true)
	held, release := make(chan struct{}, 1), make(chan struct{})
	a := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		w.Write([]byte("ok"))
	})
	b := newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthPath: "-", Retries: -1,
		FailureMinRequests: 3, OpenDuration: 5 * time.Second, Now: clock.Now})
	state := func() BreakerState { return g.Stats().Servers[0].Breaker }

	sendUntil(t, g, 0, 2, "/b/%d")
	if state() != BreakerClosed {
		t.Fatalf("breaker after 2 failures = %v, want closed", state())
	}
	sendUntil(t, g, 0, 3, "/c/%d")
	if state() != BreakerOpen {
		t.Fatalf("breaker after failures on 3 paths = %v, want open", state())
	}
	servedElsewhere(t, g, 0, b, 10, "with the breaker open")

	clock.Advance(5 * time.Second)
	if state() != BreakerHalfOpen {
		t.Fatalf("breaker after OpenDuration = %v, want half-open", state())
	}
	sendUntil(t, g, 0, 4, "/d/%d") // the trial fails
	if state() != BreakerOpen {
		t.Fatalf("breaker after a failed trial = %v, want open again", state())
	}
	servedElsewhere(t, g, 0, b, 10, "after a failed trial")

	clock.Advance(5 * time.Second)
	failing.Store(false)
	// The trial holds; round robin may first send a request to b.
	trial := make(chan error, 1)
	for sent := 0; ; sent++ {
		if sent > 2 {
			t.Fatalf("3 requests with a half-open breaker, none reached its server")
		}
		done := make(chan error, 1)
		go func() {
			_, _, err := get(t, g, "GET", "/hold")
			done <- err
		}()
		select {
		case <-held:
			trial = done
		case err := <-done:
			if err != nil {
				t.Fatalf("RoundTrip(GET /hold) = %v", err)
			}
			continue
		}
		break
	}
	servedElsewhere(t, g, 0, b, 10, "while the trial is out")
	close(release)
	if err := <-trial; err != nil {
		t.Fatalf("trial: %v", err)
	}
	if state() != BreakerClosed {
		t.Errorf("breaker after a good trial = %v, want closed", state())
	}
	sendUntil(t, g, 0, 6, "/e/%d")
}

func TestBreakerTrialWhoseClientLeftDecidesNothing(t *testing.T) {
	poll.CheckGoroutines(t)
	o := newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", FailThreshold: 1, MaxEjectionPercent: 100, Now: clock.Now})
	g.failed(g.servers[0], true, 0)
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
	if n := g.Stats().Panics; n != 0 {
		t.Errorf("%d requests in panic, want 0: each was the trial", n)
	}
}

// TestHealthChecksTakeServerOutAndBackIn fails a server's checks: it
// leaves rotation (its breaker untouched: checks and breakers are separate
// signals) and comes back when they pass.
func TestHealthChecksTakeServerOutAndBackIn(t *testing.T) {
	poll.CheckGoroutines(t)
	a, b := newOrigin(t, false, nil), newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Minute, FailThreshold: 2, Now: clock.Now})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.healthy.Store(false)
	poll.Until(t, "server a to leave rotation", func() bool { return !g.Stats().Servers[0].Healthy })
	before := a.requests.Load()
	for range 10 {
		if _, body, err := get(t, g, "GET", "/h"); err != nil || servedBy(body) != b.addr() {
			t.Fatalf("GET with a unhealthy: %q, %v; want b's answer", body, err)
		}
	}
	if got := a.requests.Load() - before; got != 0 {
		t.Errorf("unhealthy server got %d requests, want 0", got)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerClosed {
		t.Errorf("breaker of a server failing its checks = %v, want closed", st)
	}

	a.healthy.Store(true)
	poll.Until(t, "server a to come back", func() bool { return g.Stats().Servers[0].Healthy })
	var gotA bool
	for range 4 {
		_, body, _ := get(t, g, "GET", "/h")
		gotA = gotA || servedBy(body) == a.addr()
	}
	if !gotA {
		t.Errorf("server a back in rotation got none of 4 round-robin requests")
	}
}

// TestPassingCheckHalfOpensTheBreaker ejects a server that fails every
// request but passes its health checks: a passing check makes the breaker
// half-open at once, not closed, so one trial decides, and fails.
func TestPassingCheckHalfOpensTheBreaker(t *testing.T) {
	poll.CheckGoroutines(t)
	a := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	b := newOrigin(t, false, nil)
	clock := newFakeClock() // OpenDuration never passes
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, Retries: -1, FailureMinRequests: 3,
		HealthInterval: time.Hour, Now: clock.Now})
	sendUntil(t, g, 0, 3, "/p/%d")
	if st := g.Stats().Servers[0].Breaker; st != BreakerOpen {
		t.Fatalf("breaker after 500s on 3 paths = %v, want open", st)
	}
	if err := g.Start(context.Background()); err != nil { // checks both servers once
		t.Fatal(err)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerHalfOpen {
		t.Fatalf("breaker after a passing check = %v, want half-open", st)
	}
	sendUntil(t, g, 0, 4, "/q/%d")
	if st := g.Stats().Servers[0].Breaker; st != BreakerOpen {
		t.Errorf("breaker after the trial answered 500 = %v, want open again", st)
	}
}

func TestBreakerUnit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := &breaker{threshold: 2, openFor: time.Second, rate: 0.5, minVolume: 1000}
	b.failure(now, true, 0)
	b.success(now) // consecutive: a success resets the streak
	b.failure(now, true, 0)
	b.failure(now, false, 1) // so does an answer that failed: the server was reached
	b.failure(now, true, 0)
	if s := b.state(now); s != BreakerClosed {
		t.Fatalf("after connect failure, success, connect failure, 5xx, connect failure = %v, want closed", s)
	}
	if !b.failure(now, true, 0) || b.state(now) != BreakerOpen {
		t.Fatalf("second consecutive connect failure did not open the breaker")
	}
	if b.failure(now.Add(900*time.Millisecond), true, 0) || b.state(now.Add(time.Second)) != BreakerHalfOpen {
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
	if !b.failure(later, false, 7) || b.state(later) != BreakerOpen {
		t.Errorf("a trial answered 5xx did not open the breaker again")
	}
	b.hasten(later)
	if s := b.state(later); s != BreakerHalfOpen {
		t.Errorf("after hasten = %v, want half-open at once", s)
	}
}

// TestBreakerRateRule drives the rate rule on a fake clock: failures
// judged as a share of the evidence in a sliding window, a path's failures
// once per window, at least minVolume of evidence.
func TestBreakerRateRule(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	const window = 10 * time.Second
	mk := func() *breaker {
		return &breaker{threshold: 1 << 30, openFor: time.Second, rate: 0.5, minVolume: 20, window: failureWindow{span: window}}
	}
	t.Run("one path failing, others succeeding", func(t *testing.T) {
		b := mk()
		for i := range 1000 {
			if b.failure(t0, false, 99) {
				t.Fatalf("failure %d of one path opened the breaker", i)
			}
			if i%100 == 0 {
				b.success(t0)
			}
		}
	})
	t.Run("one path failing, nothing else", func(t *testing.T) {
		b := mk()
		for i := range 1000 {
			if b.failure(t0, false, 99) {
				t.Fatalf("failure %d of one path and no other evidence opened the breaker", i)
			}
		}
	})
	t.Run("failures on many paths", func(t *testing.T) {
		b := mk()
		for range 10 {
			b.success(t0)
		}
		// It opens when failures > half of the evidence, with at least 20
		// pieces: at the 11th distinct path.
		for i := range 11 {
			if i > 0 && b.failure(t0, false, uint64(i-1)) {
				t.Fatalf("path %d failing again opened the breaker", i-1)
			}
			if opened := b.failure(t0, false, uint64(i)); opened != (i == 10) {
				t.Fatalf("failure on path %d after 10 successes: opened %v, want %v", i+1, opened, i == 10)
			}
		}
	})
	t.Run("connect failures count one by one", func(t *testing.T) {
		b := mk()
		for i := range 20 {
			if opened := b.failure(t0, true, 0); opened != (i == 19) {
				t.Fatalf("connect failure %d: opened %v, want %v", i+1, opened, i == 19)
			}
		}
	})
	t.Run("the window slides", func(t *testing.T) {
		b := mk()
		for i := range 15 {
			b.failure(t0, false, uint64(i))
		}
		// A path's failure is remembered for the window, across buckets.
		for i := range 15 {
			if b.failure(t0.Add(window/2), false, uint64(i)) {
				t.Fatalf("path %d failing again within the window opened the breaker", i)
			}
		}
		// A window later the first 15 are forgotten: 15 new failures of
		// the same paths are not 20 pieces of evidence.
		late := t0.Add(window)
		for i := range 15 {
			if b.failure(late, false, uint64(i)) {
				t.Fatalf("failure on path %d a window later opened the breaker with old evidence", i)
			}
		}
		if s, f := b.window.totals(late); s != 0 || f != 15 {
			t.Errorf("evidence a window later = %d successes, %d failures; want 0, 15", s, f)
		}
		for i := 15; i < 20; i++ {
			if opened := b.failure(late, false, uint64(i)); opened != (i == 19) {
				t.Fatalf("failure on path %d: opened %v, want %v", i, opened, i == 19)
			}
		}
	})
	t.Run("remembers a bounded number of paths", func(t *testing.T) {
		b := mk()
		b.minVolume = 1 << 30
		for i := range 10 * maxPathsPerBucket {
			b.failure(t0, false, uint64(i))
		}
		var n int
		for _, bk := range b.window.buckets {
			n += len(bk.paths)
		}
		if n > maxPathsPerBucket {
			t.Errorf("window remembers %d paths after failures on %d in one bucket, want at most %d", n, 10*maxPathsPerBucket, maxPathsPerBucket)
		}
		if _, f := b.window.totals(t0); f != 10*maxPathsPerBucket {
			t.Errorf("failures counted = %d, want %d: every distinct path", f, 10*maxPathsPerBucket)
		}
	})
	t.Run("the ejection cap", func(t *testing.T) {
		ej := newEjectionCap(2, 50)
		b1, b2 := mk(), mk()
		b1.ejections, b2.ejections = ej, ej
		b1.minVolume, b2.minVolume = 1, 1
		if !b1.failure(t0, true, 0) {
			t.Fatalf("first breaker did not open with the cap free")
		}
		if b2.failure(t0, true, 0) || b2.state(t0) != BreakerClosed || ej.refused.Load() != 1 {
			t.Fatalf("second breaker of two opened beyond a 50%% cap (refused %d)", ej.refused.Load())
		}
		b1.success(t0)
		if !b2.failure(t0, true, 0) {
			t.Errorf("second breaker did not open once the first closed")
		}
	})
}

// TestBreakerOpensOnFailures feeds one of two servers failures of one kind
// on distinct paths (FailThreshold and FailureMinRequests 3): refused
// connections, 500, 502, 503 and 504 answers and response header timeouts
// eject it, other answers do not. OpenDuration later on the fake clock, not
// sooner, it gets one trial, whose failure ejects it again.
func TestBreakerOpensOnFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int // the origin's answer; 0: the server refuses connections; -1: it never answers
		opens  bool
	}{
		{"500", http.StatusInternalServerError, true},
		{"502", http.StatusBadGateway, true},
		{"503", http.StatusServiceUnavailable, true},
		{"504", http.StatusGatewayTimeout, true},
		{"connection refused", 0, true},
		{"response header timeout", -1, true},
		{"501", http.StatusNotImplemented, false},
		{"404", http.StatusNotFound, false},
		{"429", http.StatusTooManyRequests, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			url := deadAddr(t, "http")
			switch {
			case tc.status > 0:
				url = newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(tc.status) }).srv.URL
			case tc.status < 0:
				url = newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }).srv.URL
			}
			good := newOrigin(t, false, nil)
			const openFor = 10 * time.Second
			clock := newFakeClock()
			g := newGroup(t, Config{Servers: []string{url, good.srv.URL}, HealthPath: "-", Retries: -1,
				ResponseHeaderTimeout: 300 * time.Millisecond, FailThreshold: 3, FailureMinRequests: 3,
				OpenDuration: openFor, Now: clock.Now})
			state := func() BreakerState { return g.Stats().Servers[0].Breaker }

			sendUntil(t, g, 0, 3, "/b/%d")
			if !tc.opens {
				if state() != BreakerClosed {
					t.Fatalf("after 3 answers %s: breaker %v, want closed", tc.name, state())
				}
				sendUntil(t, g, 0, 6, "/c/%d")
				return
			}
			if state() != BreakerOpen {
				t.Fatalf("after 3 failures: breaker %v, want open", state())
			}
			servedElsewhere(t, g, 0, good, 6, "with the breaker open")
			clock.Advance(openFor - time.Millisecond)
			servedElsewhere(t, g, 0, good, 6, "just before OpenDuration")
			clock.Advance(time.Millisecond)
			if state() != BreakerHalfOpen {
				t.Fatalf("after OpenDuration: breaker %v, want half-open", state())
			}
			sendUntil(t, g, 0, 4, "/d/%d")
			if state() != BreakerOpen {
				t.Fatalf("after a failed trial: breaker %v, want open again", state())
			}
			servedElsewhere(t, g, 0, good, 6, "after a failed trial")
			if st := g.Stats().Servers[0]; st.Requests != 4 || st.Failures != 4 {
				t.Errorf("server got %d requests with %d failures, want 4 and 4: three, then one trial", st.Requests, st.Failures)
			}
		})
	}
}

// TestBreakerHalfOpenAdmitsOneTrialOfMany sends many requests at once to a
// group with a half-open server: one is its trial, every other goes to the
// other server.
func TestBreakerHalfOpenAdmitsOneTrialOfMany(t *testing.T) {
	poll.CheckGoroutines(t)
	var failing atomic.Bool
	failing.Store(true)
	entered, release := make(chan struct{}, 100), make(chan struct{})
	a := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		entered <- struct{}{}
		<-release
	})
	b := newOrigin(t, false, nil)
	clock := newFakeClock()
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthPath: "-", Retries: -1,
		FailureMinRequests: 1, OpenDuration: time.Second, Now: clock.Now})
	sendUntil(t, g, 0, 1, "/fail/%d")
	if st := g.Stats().Servers[0].Breaker; st != BreakerOpen {
		t.Fatalf("breaker after a 502 = %v, want open", st)
	}
	clock.Advance(time.Second)
	failing.Store(false)

	const n = 20
	start := make(chan struct{})
	type result struct {
		body string
		err  error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			<-start
			_, body, err := get(t, g, "GET", fmt.Sprintf("/t/%d", i))
			results <- result{body, err}
		}()
	}
	close(start)
	deadline := time.After(5 * time.Second)
	for i := range n - 1 {
		select {
		case r := <-results:
			if r.err != nil || servedBy(r.body) != b.addr() {
				t.Errorf("request %d beside the trial = %q, %v; want the other server's answer", i, r.body, r.err)
			}
		case <-deadline:
			t.Fatalf("%d of %d requests returned while the trial is out, want %d", i, n, n-1)
		}
	}
	<-entered
	if got := a.requests.Load(); got != 2 {
		t.Errorf("half-open server got %d requests, want 2: the failure and one trial", got)
	}
	close(release)
	if r := <-results; r.err != nil {
		t.Errorf("trial = %v, want its answer", r.err)
	}
	if st := g.Stats().Servers[0].Breaker; st != BreakerClosed {
		t.Errorf("breaker after a good trial = %v, want closed", st)
	}
}

// TestFailingPathCannotEjectAServer has attackers hammer two paths of an
// origin, one answered 503 and one slower than ResponseHeaderTimeout, while
// a client requests other paths: each failing path counts once in the
// failure window, against every success, so no breaker opens and every
// legitimate request succeeds. MaxEjectionPercent 100 lets the rate rule
// alone decide.
func TestFailingPathCannotEjectAServer(t *testing.T) {
	poll.CheckGoroutines(t)
	h := func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/attack":
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		case "/slow":
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "ok")
	}
	a, b := newOrigin(t, false, h), newOrigin(t, false, h)
	// The timeout leaves legitimate requests ample time, even under the race
	// detector on a busy machine beside the attackers.
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, HealthPath: "-",
		ResponseHeaderTimeout: time.Second, MaxEjectionPercent: 100})

	stop := make(chan struct{})
	var attacks, timeouts atomic.Int64
	var wg sync.WaitGroup
	for _, path := range []string{"/attack", "/attack", "/attack", "/slow", "/slow", "/slow", "/slow"} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := get(t, g, "GET", path); errors.Is(err, ErrTimeout) {
					timeouts.Add(1)
				}
				attacks.Add(1)
			}
		})
	}
	// At least 1000 legitimate requests, and as many as it takes for the
	// slow path to have timed out a few times meanwhile.
	var ok, legit int
	for ; legit < 1000 || timeouts.Load() < 4; legit++ {
		resp, _, err := get(t, g, "GET", fmt.Sprintf("/legit/%d", legit))
		if err == nil && resp.StatusCode == http.StatusOK {
			ok++
		} else {
			t.Logf("RoundTrip(GET /legit/%d) = %v, %v", legit, resp, err)
		}
	}
	close(stop)
	wg.Wait()
	st := g.Stats()
	t.Logf("%d of %d legitimate requests succeeded beside %d attacking ones (%d timed out)", ok, legit, attacks.Load(), timeouts.Load())
	if ok != legit {
		t.Errorf("%d of %d legitimate requests succeeded while attackers hammered failing paths, want all", ok, legit)
	}
	for i, s := range st.Servers {
		if s.Breaker != BreakerClosed || s.Failures == 0 {
			t.Errorf("server %d: breaker %v after %d failures, want closed after some", i, s.Breaker, s.Failures)
		}
	}
}

// TestMaxEjectionPercent has every server of a group fail every request on
// every path: no more than MaxEjectionPercent of the group, rounded down,
// is ejected, so a lone server is not at the default, and every request
// still reaches a server.
func TestMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		servers, percent int
		ejected          int
	}{
		{1, 0, 0}, {2, 0, 1}, {3, 0, 1}, {4, 0, 2}, {4, 25, 1}, {4, 100, 4}, {1, 100, 1},
	} {
		name := fmt.Sprintf("%d servers, at most %d%%", tc.servers, tc.percent)
		if tc.percent == 0 {
			name = fmt.Sprintf("%d servers, default", tc.servers)
		}
		t.Run(name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			var urls []string
			for range tc.servers {
				urls = append(urls, newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusServiceUnavailable)
				}).srv.URL)
			}
			clock := newFakeClock()
			g := newGroup(t, Config{Servers: urls, HealthPath: "-", Retries: -1, FailureMinRequests: 3,
				MaxEjectionPercent: tc.percent, Now: clock.Now})
			const requests = 40
			for i := range requests {
				if resp, _, err := get(t, g, "GET", fmt.Sprintf("/all/%d", i)); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("RoundTrip(GET /all/%d) = %v, %v; want a server's 503", i, resp, err)
				}
			}
			st := g.Stats()
			var ejected int
			var reached int64
			for _, s := range st.Servers {
				if s.Breaker != BreakerClosed {
					ejected++
				}
				reached += s.Requests
			}
			if ejected != tc.ejected {
				t.Errorf("%d of %d servers ejected, want %d", ejected, tc.servers, tc.ejected)
			}
			if capped := st.EjectionsCapped > 0; capped != (tc.ejected < tc.servers) {
				t.Errorf("EjectionsCapped = %d, want > 0 exactly when the cap held a breaker closed", st.EjectionsCapped)
			}
			if reached != requests {
				t.Errorf("servers got %d of %d requests, want every one", reached, requests)
			}
		})
	}
}
