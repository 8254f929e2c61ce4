package upstream

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	poll.CheckGoroutines(t)
	var os []*origin
	var urls []string
	for range 3 {
		o := newOrigin(t, false, nil)
		os = append(os, o)
		urls = append(urls, o.srv.URL)
	}
	g := newGroup(t, Config{Servers: urls, HealthPath: "-"})
	for range 30 {
		if _, _, err := get(t, g, "GET", "/rr"); err != nil {
			t.Fatal(err)
		}
	}
	for i, o := range os {
		if got := o.requests.Load(); got != 10 {
			t.Errorf("server %d got %d of 30 requests, want 10", i, got)
		}
	}
}

func TestHashSticksAndMovesOnlyAnUnhealthyServersURLs(t *testing.T) {
	poll.CheckGoroutines(t)
	var os []*origin
	var urls []string
	for range 3 {
		o := newOrigin(t, false, nil)
		os = append(os, o)
		urls = append(urls, o.srv.URL)
	}
	g := newGroup(t, Config{Servers: urls, Balancer: Hash, HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Minute})
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	owner := func(path string) string {
		t.Helper()
		_, body, err := get(t, g, "GET", path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return servedBy(body)
	}
	was := map[string]string{}
	perServer := map[string]int{}
	for i := range 90 {
		path := fmt.Sprintf("/obj/%d?v=1", i)
		was[path] = owner(path)
		perServer[was[path]]++
		for range 3 {
			if now := owner(path); now != was[path] {
				t.Fatalf("%s moved from %s to %s with every server healthy", path, was[path], now)
			}
		}
	}
	for _, o := range os {
		if n := perServer[o.addr()]; n < 10 {
			t.Errorf("server %s owns %d of 90 URLs, want a fair share", o.addr(), n)
		}
	}

	os[1].healthy.Store(false)
	poll.Until(t, "server 1 to leave rotation", func() bool { return !g.Stats().Servers[1].Healthy })
	for path, owner0 := range was {
		now := owner(path)
		switch {
		case owner0 == os[1].addr() && now == owner0:
			t.Errorf("%s still went to the unhealthy server", path)
		case owner0 != os[1].addr() && now != owner0:
			t.Errorf("%s moved from healthy %s to %s", path, owner0, now)
		}
	}

	os[1].healthy.Store(true)
	poll.Until(t, "server 1 to come back", func() bool { return g.Stats().Servers[1].Healthy })
	for path, owner0 := range was {
		if now := owner(path); now != owner0 {
			t.Errorf("%s went to %s after its server came back, want %s again", path, now, owner0)
		}
	}
}

func TestLeastOutstandingAvoidsABusyServer(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d servers", n), func(t *testing.T) {
			poll.CheckGoroutines(t)
			var origins []*origin
			var urls []string
			for range n {
				o := newOrigin(t, false, nil)
				origins = append(origins, o)
				urls = append(urls, o.srv.URL)
			}
			g := newGroup(t, Config{Servers: urls, Balancer: LeastOutstanding, HealthPath: "-"})
			blocked := make(chan error, 1)
			go func() {
				_, _, err := get(t, g, "GET", "/block")
				blocked <- err
			}()
			// The blocked request's server has one request outstanding, every
			// other none. Power of two choices samples two distinct servers, so
			// the busy one always loses to the other sampled.
			var busy *origin
			poll.Until(t, "the blocked request to reach a server", func() bool {
				for _, o := range origins {
					if o.requests.Load() == 1 {
						busy = o
						return true
					}
				}
				return false
			})
			<-busy.entered
			served := map[string]int{}
			for i := range 30 {
				_, body, err := get(t, g, "GET", "/p2c")
				if err != nil || servedBy(body) == busy.addr() {
					t.Fatalf("RoundTrip(GET /p2c) #%d with %s busy = %q, %v; want an idle server's answer", i, busy.addr(), body, err)
				}
				served[servedBy(body)]++
			}
			if len(served) != n-1 {
				t.Errorf("30 requests went to %v, want every one of the %d idle servers", served, n-1)
			}
			if st := g.Stats(); st.Servers[slices.Index(origins, busy)].Outstanding != 1 {
				t.Errorf("busy server's outstanding = %d, want 1", st.Servers[slices.Index(origins, busy)].Outstanding)
			}
			busy.unblock()
			if err := <-blocked; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHashMovesOnlyAStoppedServersURLs stops one of three servers, so that
// it refuses connections: its URLs go on to the server next on the ring
// (what a ring built without it gives), and no other URL moves. Active
// checks take it out of rotation; without them, refused GETs are retried
// along the ring until the breaker ejects it.
//
// Without checks only over HTTP/1.1: net/http retries a GET that meets a
// pooled connection the origin closed, so the attempt ends in a refused
// dial, which the group retries. An HTTP/2 GET that meets such a connection
// before the pool notices fails with "unexpected EOF", counts as sent, and
// is not retried: that race has no deterministic test.
func TestHashMovesOnlyAStoppedServersURLs(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
		cfg  Config
	}{
		{"h1/active checks", false, Config{HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Minute}},
		{"h2/active checks", true, Config{HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Minute}},
		{"h1/no checks", false, Config{HealthPath: "-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			var origins []*origin
			var urls []string
			pool := x509.NewCertPool()
			for range 3 {
				o := newOrigin(t, tc.tls, nil)
				origins = append(origins, o)
				urls = append(urls, o.srv.URL)
				if c := o.srv.Certificate(); c != nil {
					pool.AddCert(c)
				}
			}
			clock := newFakeClock() // an open breaker stays open
			cfg := tc.cfg
			cfg.Servers, cfg.RootCAs, cfg.Balancer, cfg.Now = urls, pool, Hash, clock.Now
			g := newGroup(t, cfg)
			if err := g.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			owner := func(path string) string {
				t.Helper()
				_, body, err := get(t, g, "GET", path)
				if err != nil {
					t.Fatalf("RoundTrip(GET %s) = %v, want an answer", path, err)
				}
				return servedBy(body)
			}
			var paths []string
			was := map[string]string{}
			for i := range 60 {
				path := fmt.Sprintf("/obj/%d", i)
				paths = append(paths, path)
				was[path] = owner(path)
				if again := owner(path); again != was[path] {
					t.Fatalf("RoundTrip(GET %s) went to %s, then to %s, with every server up", path, was[path], again)
				}
			}

			stopped := origins[1]
			stopped.srv.Close()
			if g.checks() {
				poll.Until(t, "the stopped server to leave rotation", func() bool { return !g.Stats().Servers[1].Healthy })
			}
			// The same ring without the stopped server's points.
			var rest []*server
			for _, raw := range []string{urls[0], urls[2]} {
				u, _ := url.Parse(raw)
				s := &server{url: u, weight: 1}
				s.healthy.Store(true)
				rest = append(rest, s)
			}
			ring := newHashRing(rest)
			movedTo := map[string]int{}
			for _, path := range paths {
				now := owner(path)
				if was[path] != stopped.addr() {
					if now != was[path] {
						t.Errorf("RoundTrip(GET %s) moved from %s, still up, to %s", path, was[path], now)
					}
					continue
				}
				req, _ := http.NewRequest("GET", "http://site.test"+path, nil)
				want, _ := ring.pick(req, nil, clock.Now(), false)
				if now != want.url.Host {
					t.Errorf("RoundTrip(GET %s) of the stopped server went to %s, want the next on the ring, %s", path, now, want.url.Host)
				}
				movedTo[now]++
			}
			if len(movedTo) != 2 {
				t.Errorf("the stopped server's URLs went to %v, want both other servers", movedTo)
			}
			if st := g.Stats(); !g.checks() && st.Retries == 0 {
				t.Errorf("no retries with a server refusing and no checks, want its GETs retried")
			}
		})
	}
}

// TestBalancersSkipUnavailable checks every policy against the same
// availability rules, without a network: unhealthy, open, tried; and in
// panic, that only tried counts.
func TestBalancersSkipUnavailable(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	mk := func() []*server {
		var ss []*server
		for i := range 3 {
			s := &server{url: &url.URL{Scheme: "http", Host: fmt.Sprintf("10.0.0.%d:80", i)}, weight: 1, breaker: breaker{threshold: 1, openFor: time.Second}}
			s.healthy.Store(true)
			ss = append(ss, s)
		}
		return ss
	}
	req, _ := http.NewRequest("GET", "http://site.test/k", nil)
	for _, name := range []string{RoundRobin, LeastOutstanding, Hash} {
		t.Run(name, func(t *testing.T) {
			ss := mk()
			b := newBalancer(name, ss)
			ss[0].healthy.Store(false)
			ss[1].breaker.failure(now, true, 0) // a connect failure: open
			for range 10 {
				if s, _ := b.pick(req, nil, now, false); s != ss[2] {
					t.Fatalf("pick = %v, want the only available server %v", s.url, ss[2].url)
				}
			}
			if s, _ := b.pick(req, []*server{ss[2]}, now, false); s != nil {
				t.Errorf("pick with the only available server tried = %v, want nil", s.url)
			}
			seen := map[*server]bool{}
			for range 50 {
				s, trial := b.pick(req, []*server{ss[2]}, now, true)
				if s == nil || s == ss[2] || trial {
					t.Fatalf("panic pick with %v tried = %v (trial %v), want an untried server, no trial", ss[2].url, s, trial)
				}
				seen[s] = true
			}
			if name != Hash && len(seen) != 2 {
				t.Errorf("panic picks went to %d servers, want both untried ones", len(seen))
			}
			if st := ss[1].breaker.state(now); st != BreakerOpen {
				t.Errorf("breaker after panic picks = %v, want still open", st)
			}
			s, trial := b.pick(req, []*server{ss[2]}, now.Add(time.Second), false)
			if s != ss[1] || !trial {
				t.Errorf("pick once the breaker is half-open = %v (trial %v), want the half-open server as a trial", s, trial)
			}
			if s, _ := b.pick(req, []*server{ss[2]}, now.Add(time.Second), false); s != nil {
				t.Errorf("second pick while the trial is out = %v, want nil", s.url)
			}
		})
	}
}

// TestLeastOutstandingShunsAServerFailingFast puts least outstanding in its
// trap: one server answers 500 at once, so it always has the fewest requests
// in flight, beside a good one that takes 20ms. Its 500s are retried on the
// good server until, failing on every path, it is ejected by the failure
// rate; at least 99% of the clients' requests must succeed.
func TestLeastOutstandingShunsAServerFailingFast(t *testing.T) {
	poll.CheckGoroutines(t)
	bad := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	good := newOrigin(t, false, func(w http.ResponseWriter, r *http.Request) {
		select { // the good server's latency
		case <-time.After(20 * time.Millisecond):
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	})
	g := newGroup(t, Config{Servers: []string{bad.srv.URL, good.srv.URL}, Balancer: LeastOutstanding, HealthPath: "-"})
	const requests, clients = 500, 10
	var ok atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range next {
				if resp, _, err := get(t, g, "GET", fmt.Sprintf("/obj/%d", i)); err == nil && resp.StatusCode == http.StatusOK {
					ok.Add(1)
				}
			}
		})
	}
	for i := range requests {
		next <- i
	}
	close(next)
	wg.Wait()
	st := g.Stats()
	t.Logf("%d of %d requests succeeded; the failing server got %d, the good one %d; %d retries, %d denied",
		ok.Load(), requests, st.Servers[0].Requests, st.Servers[1].Requests, st.Retries, st.BudgetDenied)
	if ok.Load() < requests*99/100 {
		t.Errorf("%d of %d requests succeeded with one server failing fast, want at least 99%%", ok.Load(), requests)
	}
	if st.Servers[0].Breaker == BreakerClosed {
		t.Errorf("the server failing every path has its breaker closed, want it ejected")
	}
}
