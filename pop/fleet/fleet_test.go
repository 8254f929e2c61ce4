package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/fleet/fleettest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// pop is a fleet member whose cache is a record of the purges applied.
type pop struct {
	*Fleet
	mu      sync.Mutex // guards applied
	applied []Purge
}

func (p *pop) purges() []Purge {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Purge(nil), p.applied...)
}

func join(t *testing.T, n *fleettest.Server, name string, edit func(*Config)) *pop {
	t.Helper()
	p := &pop{}
	cfg := Config{URL: n.URL(), PoP: name, User: fleettest.User, Password: fleettest.Password, Alive: 3 * time.Second,
		Apply: func(pu Purge) (int, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.applied = append(p.applied, pu)
			return 1, nil
		}}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := Join(ctx, cfg)
	if err != nil {
		t.Fatalf("Join(%s): %v", name, err)
	}
	p.Fleet = f
	t.Cleanup(f.Close)
	return p
}

// TestPurgeReachesEveryPoP: a purge published at one PoP is applied by
// every PoP of the fleet, each acknowledging it with its latency.
func TestPurgeReachesEveryPoP(t *testing.T) {
	n := fleettest.Start(t)
	pops := map[string]*pop{}
	for _, name := range []string{"pop-na", "pop-eu", "pop-ap"} {
		pops[name] = join(t, n, name, nil)
	}
	ctx := context.Background()
	res, err := pops["pop-eu"].Purge(ctx, Purge{URL: "https://www.cdn.lab/a.css", Soft: true}, 5*time.Second)
	if err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if len(res.Expected) != 3 || len(res.Missing()) != 0 {
		t.Fatalf("purge expected %v, missing %v; want all three acknowledged", res.Expected, res.Missing())
	}
	for name, p := range pops {
		got := p.purges()
		if len(got) != 1 || got[0].URL != "https://www.cdn.lab/a.css" || !got[0].Soft || got[0].From != "pop-eu" {
			t.Errorf("%s applied %+v, want the soft purge of a.css from pop-eu", name, got)
		}
		if a := res.Acks[name]; a.Removed != 1 || a.Latency <= 0 || a.Error != "" {
			t.Errorf("%s acknowledged %+v, want 1 removed, a latency, no error", name, a)
		}
	}
	if _, err := pops["pop-na"].Purge(ctx, Purge{URL: "/relative"}, time.Second); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("purge of a relative URL: %v, want an error asking for an absolute URL", err)
	}
	if _, err := pops["pop-na"].Purge(ctx, Purge{}, time.Second); err == nil {
		t.Errorf("purge of nothing: no error")
	}
}

// TestCatchUpAfterAbsence: a PoP that was away while purges were
// published applies every one of them when it comes back, and is not
// synced (may not serve from its cache) until it has.
func TestCatchUpAfterAbsence(t *testing.T) {
	n := fleettest.Start(t)
	eu := join(t, n, "pop-eu", nil)
	ap := join(t, n, "pop-ap", nil)
	ap.Close()
	ctx := context.Background()
	var urls []string
	for i := range 3 {
		u := fmt.Sprintf("https://www.cdn.lab/%d.js", i)
		urls = append(urls, u)
		if _, err := eu.Purge(ctx, Purge{URL: u}, 200*time.Millisecond); err != nil {
			t.Fatalf("Purge(%s): %v", u, err)
		}
	}
	// Back: the consumer kept what it missed. Apply is held until the
	// test has seen the PoP unsynced.
	release := make(chan struct{})
	var mu sync.Mutex
	var got []string
	back := join(t, n, "pop-ap", func(c *Config) {
		c.Apply = func(p Purge) (int, error) {
			<-release
			mu.Lock()
			defer mu.Unlock()
			got = append(got, p.URL)
			return 1, nil
		}
	})
	if back.Synced() {
		t.Fatal("pop-ap synced before applying the 3 purges it missed")
	}
	if ok, _ := back.Vouch(time.Now()); ok {
		t.Fatal("pop-ap's cache vouched for before it applied the 3 purges it missed")
	}
	close(release)
	poll.Within(t, 10*time.Second, "pop-ap synced", back.Synced)
	if ok, since := back.Vouch(time.Now()); !ok || !since.IsZero() {
		t.Errorf("pop-ap caught up: Vouch = %v, %v; want true, zero", ok, since)
	}
	// Every one applied; not necessarily in order, nor once: a purge
	// whose ack wait (1 s) ran out while Apply was held here comes again
	// after the others (CI saw 1, 2, 0). Purges commute, and one applied
	// twice changes nothing.
	mu.Lock()
	defer mu.Unlock()
	for _, u := range urls {
		if !slices.Contains(got, u) {
			t.Errorf("pop-ap applied %v after coming back, want each of %v", got, urls)
			break
		}
	}
}

// TestControlPlaneDown: with the NATS server gone, purges are refused with
// an error (never dropped silently), PoPs are not synced, and one out of
// touch longer than MaxOffline must revalidate what it stored before;
// when the server is back everything works again.
func TestControlPlaneDown(t *testing.T) {
	n := fleettest.Start(t)
	na := join(t, n, "pop-na", func(c *Config) { c.MaxOffline = 200 * time.Millisecond })
	eu := join(t, n, "pop-eu", nil)
	poll.Within(t, 10*time.Second, "both synced", func() bool { return na.Synced() && eu.Synced() })
	n.Stop()
	poll.Within(t, 10*time.Second, "pop-na sees the control plane gone", func() bool { return !na.Synced() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := eu.Purge(ctx, Purge{URL: "https://www.cdn.lab/x"}, time.Second); err == nil {
		t.Fatal("purge with the control plane down: no error")
	}
	if ok, since := eu.Vouch(time.Now()); !ok || !since.IsZero() {
		t.Errorf("pop-eu within MaxOffline of losing touch: Vouch = %v, %v; want it to go on serving its cache", ok, since)
	}
	poll.Within(t, 10*time.Second, "pop-na past MaxOffline", func() bool { return !na.StaleBefore().IsZero() })
	lostAt := na.StaleBefore()
	n.Restart()
	poll.Within(t, 20*time.Second, "both synced again", func() bool { return na.Synced() && eu.Synced() })
	if got := na.StaleBefore(); !got.Equal(lostAt) {
		t.Errorf("pop-na StaleBefore after coming back = %v, want %v (when it lost touch)", got, lostAt)
	}
	if !eu.StaleBefore().IsZero() {
		t.Errorf("pop-eu (MaxOffline 30s) StaleBefore = %v, want zero", eu.StaleBefore())
	}
	res, err := eu.Purge(context.Background(), Purge{Tag: "product-7"}, 5*time.Second)
	if err != nil || len(res.Missing()) != 0 {
		t.Fatalf("purge after the server came back: %v, missing %v", err, res.Missing())
	}
}

// TestCredentialsRequired: the control plane takes no anonymous or wrong
// credentials, and a bad configuration names what is wrong.
func TestCredentialsRequired(t *testing.T) {
	n := fleettest.Start(t)
	apply := func(Purge) (int, error) { return 0, nil }
	ctx := context.Background()
	if _, err := Join(ctx, Config{URL: n.URL(), PoP: "pop-x", User: fleettest.User, Password: "wrong", Apply: apply}); err == nil {
		t.Error("Join with a wrong password: no error")
	}
	_, err := Join(ctx, Config{URL: "", PoP: "bad name", Apply: nil})
	for _, want := range []string{"fleet url", `"bad name"`, "user and password", "Apply"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Join with a bad config: %v, want it to name %s", err, want)
		}
	}
	if errors.Is(err, errNotConnected) {
		t.Errorf("a bad config is not a connection problem: %v", err)
	}
}

// cutter is a TCP proxy to the NATS server that a test can cut (every
// connection closed, new ones refused) and restore on the same port: a
// partition of one PoP from the control plane.
type cutter struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex // guards ln, conns
	ln     net.Listener
	conns  []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	c := &cutter{t: t, target: target, addr: "127.0.0.1:0"}
	c.restore()
	c.addr = c.ln.Addr().String()
	t.Cleanup(c.cut)
	return c
}

func (c *cutter) restore() {
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.ln = ln
	c.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", c.target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ln.Close()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// TestPartitionedPoPCatchesUp: a PoP cut off from the control plane while
// purges are published is not synced once it is back until it has applied
// all of them; it never reports synced with one missing.
func TestPartitionedPoPCatchesUp(t *testing.T) {
	n := fleettest.Start(t)
	eu := join(t, n, "pop-eu", nil)
	proxy := newCutter(t, n.Addr())
	gate := make(chan struct{}, 100)
	var mu sync.Mutex
	var got []string
	ap := join(t, n, "pop-ap", func(c *Config) {
		c.URL = "nats://" + proxy.addr
		c.Apply = func(p Purge) (int, error) {
			<-gate
			mu.Lock()
			defer mu.Unlock()
			got = append(got, p.URL)
			return 1, nil
		}
	})
	poll.Within(t, 10*time.Second, "pop-ap synced", ap.Synced)
	proxy.cut()
	poll.Within(t, 10*time.Second, "pop-ap sees the cut", func() bool { return !ap.Synced() })
	for i := range 3 {
		if _, err := eu.Purge(context.Background(), Purge{URL: fmt.Sprintf("https://www.cdn.lab/%d", i)}, 100*time.Millisecond); err != nil {
			t.Fatalf("purge %d: %v", i, err)
		}
	}
	proxy.restore()
	for i := range 3 {
		// Until the last missed purge is let through, pop-ap is not synced.
		if i == 0 {
			poll.Within(t, 15*time.Second, "pop-ap reconnected", func() bool { return ap.connected.Load() })
		}
		if ap.Synced() {
			t.Fatalf("pop-ap synced with %d of 3 missed purges applied", i)
		}
		gate <- struct{}{}
	}
	poll.Within(t, 10*time.Second, "pop-ap synced after catching up", ap.Synced)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Errorf("pop-ap applied %v, want the 3 purges it missed", got)
	}
}

// TestRestartAfterApplying: a PoP that applied every purge, stopped and
// came back (a restart) is synced at once: what it acknowledged before
// does not come again, and it must not wait for it.
func TestRestartAfterApplying(t *testing.T) {
	n := fleettest.Start(t)
	eu := join(t, n, "pop-eu", nil)
	na := join(t, n, "pop-na", nil)
	for i := range 3 {
		if res, err := eu.Purge(context.Background(), Purge{URL: fmt.Sprintf("https://www.cdn.lab/%d", i)}, 5*time.Second); err != nil || len(res.Missing()) > 0 {
			t.Fatalf("purge %d: %v, missing %v", i, err, res.Missing())
		}
	}
	na.Close()
	again := join(t, n, "pop-na", nil)
	poll.Within(t, 10*time.Second, "pop-na synced after its restart", again.Synced)
	if got := again.purges(); len(got) != 0 {
		t.Errorf("pop-na applied %d purges again after its restart, want none (it had acknowledged them)", len(got))
	}
}

// TestAppliedCountsOnlyWithoutGaps: redeliveries after a partition come
// in any order (each purge's ack wait runs out on its own), so a PoP has
// caught up only when every purge up to the target is applied, not when
// the last one is: applying 3 before 1 and 2 leaves it behind until they
// come. What lies below the stream's first sequence counts as applied.
func TestAppliedCountsOnlyWithoutGaps(t *testing.T) {
	f := &Fleet{}
	f.target.Store(3)
	for _, tt := range []struct {
		seq     uint64
		applied uint64
	}{{3, 0}, {1, 1}, {3, 1}, {2, 3}, {2, 3}} {
		f.markApplied(tt.seq)
		if got := f.applied.Load(); got != tt.applied {
			t.Fatalf("after applying %d: applied %d, want %d", tt.seq, got, tt.applied)
		}
	}
	g := &Fleet{}
	g.markApplied(12)
	g.appliedFloor(10) // 1..10 expired from the stream
	if got := g.applied.Load(); got != 10 {
		t.Fatalf("floor 10 with 12 applied: applied %d, want 10", got)
	}
	g.markApplied(11)
	if got := g.applied.Load(); got != 12 {
		t.Errorf("then 11 applied: applied %d, want 12", got)
	}
}
