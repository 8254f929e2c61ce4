package upstream

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	checkGoroutines(t)
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
	checkGoroutines(t)
	var os []*origin
	var urls []string
	for range 3 {
		o := newOrigin(t, false, nil)
		os = append(os, o)
		urls = append(urls, o.srv.URL)
	}
	g := newGroup(t, Config{Servers: urls, Balancer: Hash, HealthInterval: 2 * time.Millisecond})
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
	waitFor(t, "server 1 to leave rotation", func() bool { return !g.Stats().Servers[1].Healthy })
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
	waitFor(t, "server 1 to come back", func() bool { return g.Stats().Servers[1].Healthy })
	for path, owner0 := range was {
		if now := owner(path); now != owner0 {
			t.Errorf("%s went to %s after its server came back, want %s again", path, now, owner0)
		}
	}
}

func TestLeastOutstandingAvoidsABusyServer(t *testing.T) {
	checkGoroutines(t)
	a, b := newOrigin(t, false, nil), newOrigin(t, false, nil)
	g := newGroup(t, Config{Servers: []string{a.srv.URL, b.srv.URL}, Balancer: LeastOutstanding, HealthPath: "-"})
	blocked := make(chan error, 1)
	go func() {
		_, _, err := get(t, g, "GET", "/block")
		blocked <- err
	}()
	// With two servers both are sampled: the blocked request's server has
	// one outstanding, the other none, so every request goes to the other.
	var busy, idle *origin
	select {
	case <-a.entered:
		busy, idle = a, b
	case <-b.entered:
		busy, idle = b, a
	}
	for range 20 {
		if _, body, err := get(t, g, "GET", "/p2c"); err != nil || servedBy(body) != idle.addr() {
			t.Fatalf("GET with %s busy: %q, %v; want the idle server %s", busy.addr(), body, err, idle.addr())
		}
	}
	busy.unblock()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}

// TestBalancersSkipUnavailable checks every policy against the same
// availability rules, without a network: unhealthy, open, tried.
func TestBalancersSkipUnavailable(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	mk := func() []*server {
		var ss []*server
		for i := range 3 {
			s := &server{url: &url.URL{Scheme: "http", Host: fmt.Sprintf("10.0.0.%d:80", i)}, breaker: breaker{threshold: 1, openFor: time.Second}}
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
			ss[1].breaker.failure(now) // open
			for range 10 {
				if s, _ := b.pick(req, nil, now); s != ss[2] {
					t.Fatalf("pick = %v, want the only available server %v", s.url, ss[2].url)
				}
			}
			if s, _ := b.pick(req, []*server{ss[2]}, now); s != nil {
				t.Errorf("pick with the only available server tried = %v, want nil", s.url)
			}
			s, trial := b.pick(req, []*server{ss[2]}, now.Add(time.Second))
			if s != ss[1] || !trial {
				t.Errorf("pick once the breaker is half-open = %v (trial %v), want the half-open server as a trial", s, trial)
			}
			if s, _ := b.pick(req, []*server{ss[2]}, now.Add(time.Second)); s != nil {
				t.Errorf("second pick while the trial is out = %v, want nil", s.url)
			}
		})
	}
}
