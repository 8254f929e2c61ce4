package geodns

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestFastPathOverUDP: a server on loopback reads UDP in batches; plain
// queries are answered from the memo, the others (a COOKIE, a broken
// question) by miekg/dns as before, and an answer too big for the
// client's UDP size is truncated, then whole over TCP.
func TestFastPathOverUDP(t *testing.T) {
	poll.CheckGoroutines(t)
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.Zones[0].Records += "mid 60 IN TXT \"" + strings.Repeat("m", 250) + "\" \"" + strings.Repeat("n", 250) + "\"\n"
	})
	if s.batch == nil {
		t.Fatal("no batch reader on 127.0.0.1")
	}
	for i, ecs := range []string{"10.77.1.0/24", "10.77.2.0/24", "10.77.3.0/24", "192.0.2.0/24"} {
		want := []string{"10.77.1.20", "10.77.2.20", "10.77.3.20", "10.77.3.20"}[i]
		for range 3 {
			if got := answerIPs(query(t, s, "udp", "WwW.cdn.LAB.", dns.TypeA, ecs)); len(got) != 1 || got[0] != want {
				t.Fatalf("www A from %s = %v, want %s", ecs, got, want)
			}
		}
	}
	if s.memo.held() == 0 {
		t.Errorf("memo empty after plain queries: the fast path did not answer them")
	}

	// Not plain: a COOKIE option goes to miekg/dns, and is answered.
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.lab.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
	r, _ := exchangeRaw(t, s.Addr().String(), m)
	if got := answerIPs(r); len(got) != 1 || got[0] != "10.77.2.20" {
		t.Errorf("query with a COOKIE = %v, want pop-eu's address (127.0.0.1 is eu)", got)
	}

	// 540 bytes of TXT: whole with EDNS (fast path), truncated without
	// (slow path), whole over TCP.
	m = new(dns.Msg)
	m.SetQuestion("mid.cdn.lab.", dns.TypeTXT)
	m.SetEdns0(1232, false)
	for range 2 {
		if r, n := exchangeRaw(t, s.Addr().String(), m); r.Truncated || len(r.Answer) != 1 || n > 1232 {
			t.Errorf("mid TXT with EDNS 1232: TC %v, %d answers, %d bytes; want the record whole", r.Truncated, len(r.Answer), n)
		}
	}
	m.Extra = nil
	if r, n := exchangeRaw(t, s.Addr().String(), m); !r.Truncated || n > 512 {
		t.Errorf("mid TXT without EDNS: TC %v, %d bytes; want TC within 512 bytes", r.Truncated, n)
	}
	if r := query(t, s, "tcp", "mid.cdn.lab.", dns.TypeTXT, ""); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("mid TXT over TCP: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
}

// TestFastPathSeesHealthAtOnce: once a health change has reached one
// memoised answer, it has reached them all: the change invalidates the
// memo, not the entries one by one.
func TestFastPathSeesHealthAtOnce(t *testing.T) {
	var euUp atomic.Bool
	euUp.Store(true)
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !euUp.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer ready.Close()
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.PoPs[1].Check = Check{URL: ready.URL, Interval: 20 * time.Millisecond, Rise: 1, Fall: 1}
	})
	type ask struct {
		qtype uint16
		ecs   string
	}
	asks := []ask{{dns.TypeA, "10.77.2.0/24"}, {dns.TypeAAAA, "10.77.2.0/24"}, {dns.TypeHTTPS, "10.77.2.0/24"},
		{dns.TypeA, "10.77.2.128/25"}, {dns.TypeA, "fd77:2::/48"}, {dns.TypeA, ""}, {dns.TypeAAAA, ""}}
	first := func(a ask) string {
		r := query(t, s, "udp", "www.cdn.lab.", a.qtype, a.ecs)
		if len(r.Answer) == 0 {
			return ""
		}
		switch rr := r.Answer[0].(type) {
		case *dns.A:
			return rr.A.String()
		case *dns.AAAA:
			return rr.AAAA.String()
		case *dns.HTTPS:
			return viewHTTPS(t, rr).v4[0]
		}
		return r.Answer[0].String()
	}
	onEU := map[string]bool{"10.77.2.20": true, "fd77:2::20": true}
	// fd77:2::/48 is not located: any PoP; the rest are eu's.
	poll.Until(t, "pop-eu's first check", func() bool { return first(asks[0]) == "10.77.2.20" })
	for range 2 { // memoised
		for _, a := range asks[:4] {
			if got := first(a); !onEU[got] {
				t.Fatalf("%s from %q = %s, want pop-eu", dns.TypeToString[a.qtype], a.ecs, got)
			}
		}
		for _, a := range asks[4:] {
			first(a)
		}
	}
	euUp.Store(false)
	poll.Until(t, "pop-eu to leave the answers", func() bool { return !onEU[first(asks[0])] })
	for _, a := range asks {
		if got := first(a); onEU[got] {
			t.Errorf("%s from %q = %s after pop-eu left another answer, want it gone from all", dns.TypeToString[a.qtype], a.ecs, got)
		}
	}
	euUp.Store(true)
	poll.Until(t, "pop-eu to come back", func() bool { return first(asks[0]) == "10.77.2.20" })
	for _, a := range asks[:4] {
		if got := first(a); !onEU[got] {
			t.Errorf("%s from %q = %s after pop-eu came back, want pop-eu", dns.TypeToString[a.qtype], a.ecs, got)
		}
	}
}

// TestFastPathSeesRTTAtOnce: a pulled RTT table that changes the route
// reaches the memoised answers with the pull, and one that changes
// nothing does not invalidate them.
func TestFastPathSeesRTTAtOnce(t *testing.T) {
	s, tables := steeringLab(t, func(c *Config) { c.Latency.Explore = -1 })
	const client = "10.77.4.0/24"
	count := func(n int) map[string]int {
		got, _ := tally(t, s, client, n)
		return got
	}
	if got := count(40); got["10.77.2.20"] != 40 {
		t.Fatalf("unmeasured: %v, want pop-eu", got)
	}
	tables["pop-eu"].set(client, 90, 20)
	tables["pop-na"].set(client, 10, 20)
	tables["pop-na"].pulled(t)
	tables["pop-eu"].pulled(t)
	if got := count(40); got["10.77.1.20"] != 40 {
		t.Fatalf("pop-na measured at 10 ms: %v, want pop-na", got)
	}
	// Pulls of the same table do not move the generation.
	gen := s.gen.Load()
	tables["pop-na"].pulled(t)
	if g := s.gen.Load(); g != gen {
		t.Errorf("generation %d -> %d over pulls that changed nothing", gen, g)
	}
	tables["pop-na"].set(client, 200, 20)
	tables["pop-na"].pulled(t)
	if got := count(40); got["10.77.2.20"] != 40 {
		t.Fatalf("pop-na measured at 200 ms: %v, want pop-eu", got)
	}
}

// TestFastPathExpiresStaleMeasurements: a memoised route that counted a
// measurement is rebuilt when it goes stale, with no pull to say so.
func TestFastPathExpiresStaleMeasurements(t *testing.T) {
	cfg, err := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
	if err != nil {
		t.Fatal(err)
	}
	steeringConfig(&cfg)
	cfg.Answers = 1
	cfg.Latency = Latency{MaxAge: time.Minute, Explore: -1}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	s.now = func() time.Time { return now }
	s.rtt.now = func() time.Time { return now }
	for pop, ms := range map[string]float64{"pop-na": 10, "pop-eu": 90} {
		var rep rttReport
		rep.Prefixes = append(rep.Prefixes, struct {
			Prefix  string  `json:"prefix"`
			RTTms   float64 `json:"rtt_ms"`
			MinMs   float64 `json:"min_ms"`
			Samples int     `json:"samples"`
			AgeMs   int64   `json:"age_ms"`
		}{"10.77.4.0/24", ms, ms, 10, 0})
		s.rtt.replace(pop, rep, now, s.state.Load().latency)
	}
	pkt := plainQuery{name: "www.cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET, edns: 1232, ecs: "10.77.4.0/24"}.pack(t)
	ask := func() string {
		key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
		n, act := s.serveFast(pkt, diffSources[0], now, key, out)
		if act != answered {
			t.Fatalf("fast path %d, want answered", act)
		}
		r := new(dns.Msg)
		if err := r.Unpack(out[:n]); err != nil {
			t.Fatal(err)
		}
		return answerIPs(r)[0]
	}
	if got := ask(); got != "10.77.1.20" {
		t.Fatalf("measured: %s, want pop-na (10 ms)", got)
	}
	now = now.Add(59 * time.Second)
	if got := ask(); got != "10.77.1.20" {
		t.Fatalf("59 s later: %s, want pop-na still", got)
	}
	now = now.Add(2 * time.Second)
	if got := ask(); !strings.HasPrefix(got, "10.77.2.") {
		t.Errorf("61 s later, the measurements stale: %s, want an eu PoP (geography)", got)
	}
}

// TestFastPathSeesReload: a reload replaces the memoised answers.
func TestFastPathSeesReload(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	for range 2 {
		if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24")); len(got) != 1 || got[0] != "10.77.2.20" {
			t.Fatalf("before reload: %v, want pop-eu's 10.77.2.20", got)
		}
	}
	cfg, _ := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
	cfg.PoPs[1].A = []string{"10.77.2.21"}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24")); len(got) != 1 || got[0] != "10.77.2.21" {
		t.Errorf("after reload: %v, want the new pop-eu address", got)
	}
}

// TestFastPathRateLimitsAsSlowPath: with rate limiting on, one prefix's
// queries are answered, slipped and dropped by the fast path exactly as
// by the slow path, byte for byte, and counted alike.
func TestFastPathRateLimitsAsSlowPath(t *testing.T) {
	var servers [2]*Server
	clock := time.Unix(1_700_000_000, 0)
	for i := range servers {
		cfg, err := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RateLimit = RateLimit{ResponsesPerSecond: 1, Burst: 3, Slip: 2}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.now = func() time.Time { return clock }
		s.state.Load().rrl.now = s.now
		servers[i] = s
	}
	ref, fast := servers[0], servers[1]
	key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
	var sent, slipped, dropped int
	for i := range 24 {
		q := plainQuery{id: uint16(i), name: "www.cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET, edns: 1232}
		if i%3 == 0 {
			q.ecs = "10.77.1.0/24"
		}
		pkt := q.pack(t)
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 53) // one /24
		n, act := fast.serveFast(pkt, src, clock, key, out)
		want, wrote := slowReply(t, ref, pkt, src)
		switch {
		case act == declined:
			t.Fatalf("query %d declined", i)
		case act == withheld && wrote, act == answered && !wrote:
			t.Fatalf("query %d: fast path %d, slow path wrote %v", i, act, wrote)
		case act == answered && string(out[:n]) != string(want):
			t.Fatalf("query %d:\nfast %v\nslow %v", i, unpacked(out[:n]), unpacked(want))
		case act == withheld:
			dropped++
		case len(answerIPs(mustUnpack(t, want))) == 0:
			slipped++
		default:
			sent++
		}
		if i%4 == 3 {
			clock = clock.Add(time.Second) // one token back
		}
	}
	if sent < 3 || slipped == 0 || dropped == 0 {
		t.Errorf("sent %d, slipped %d, dropped %d; want the burst of 3 and more, some slipped and some dropped", sent, slipped, dropped)
	}
	for _, action := range []string{"drop", "slip"} {
		if a, b := counter(t, fast, "geodns_rate_limited_total", "action", action), counter(t, ref, "geodns_rate_limited_total", "action", action); a != b {
			t.Errorf("geodns_rate_limited_total{action=%s}: fast %v, slow %v", action, a, b)
		}
	}
}

func mustUnpack(t *testing.T, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMemoBounded: a client sending ECS for 200,000 prefixes fills the
// memo to its bound and no further; the heap stays within that and the
// answers stay right.
func TestMemoBounded(t *testing.T) {
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	cfg, err := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const bound = 4 << 20
	s.memo = newMemo(bound)
	var before runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
	now := time.Now()
	for i := range n {
		q := plainQuery{id: uint16(i), name: "www.cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET, edns: 1232,
			ecs: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32).String()}
		if i%2 == 1 {
			q.ecs = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + i>>16), byte(i >> 8), byte(i), 0}), 24).String()
		}
		if _, act := s.serveFast(q.pack(t), diffSources[0], now, key, out); act != answered {
			t.Fatalf("query %d (%s): %d, want answered", i, q.ecs, act)
		}
		if held := s.memo.held(); held > bound {
			t.Fatalf("after %d prefixes the memo holds %d bytes, over its bound of %d", i+1, held, bound)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d prefixes: memo %d bytes (bound %d), heap grew %d bytes", n, s.memo.held(), bound, grew)
	if s.memo.held() < bound/2 {
		t.Errorf("memo holds %d bytes, want it near its bound %d: it should keep answers", s.memo.held(), bound)
	}
	if grew > 3*bound {
		t.Errorf("heap grew %d bytes for a memo bounded at %d", grew, bound)
	}
	// Still right, and memoised: a client after the flood.
	pkt := plainQuery{name: "www.cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET, edns: 1232, ecs: "10.77.3.0/24"}.pack(t)
	nn, _ := s.serveFast(pkt, diffSources[0], now, key, out)
	if got := answerIPs(mustUnpack(t, out[:nn])); len(got) != 1 || got[0] != "10.77.3.20" {
		t.Errorf("ap client after the flood: %v, want pop-ap", got)
	}
	p, _ := parsePlain(pkt, diffSources[0].Addr(), key)
	if s.memo.get(p.key, s.gen.Load(), now) == nil {
		t.Errorf("a new client after the flood is not memoised: a full memo should make room")
	}
}

// TestShutdownStopsBatchLoops: Shutdown ends the batch loops and
// miekg/dns's server behind them, leaving no goroutine, and Serve
// returns nil; a Shutdown before Serve does not hang.
func TestShutdownStopsBatchLoops(t *testing.T) {
	poll.CheckGoroutines(t)
	s := newServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.1.0/24")
	conn, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}) // to miekg/dns, which ignores it
	conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil after Shutdown", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Shutdown")
	}

	early := newServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	early.Shutdown(ctx)
	early.tcpLn.Close()
	early.udpConn.Close()
}

// TestFastPathCountsBeforeReplying: a client holding its answers from the
// batch loops finds every query counted, with no wait.
func TestFastPathCountsBeforeReplying(t *testing.T) {
	s := startServer(t, labConfig, nil)
	if s.batch == nil {
		t.Fatal("no batch reader on 127.0.0.1")
	}
	before := counter(t, s, "geodns_queries_total")
	const n = 25
	for i := range n {
		ecs := fmt.Sprintf("10.77.%d.0/24", 1+i%3)
		if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, ecs)); len(got) != 1 {
			t.Fatalf("www A from %s = %v, want one address", ecs, got)
		}
		if got := counter(t, s, "geodns_queries_total") - before; got != float64(i+1) {
			t.Fatalf("after %d answers geodns_queries_total grew by %v, want %d", i+1, got, i+1)
		}
	}
}

// TestHoldsOnlyUnderLoad: a batch loop pauses after a read that found at
// least holdMin datagrams and less than a whole batch, and only with a
// hold configured.
func TestHoldsOnlyUnderLoad(t *testing.T) {
	on, off := &batchUDP{hold: defaultUDPHold}, &batchUDP{}
	for _, c := range []struct {
		b    *batchUDP
		n    int
		want bool
	}{{on, 1, false}, {on, holdMin - 1, false}, {on, holdMin, true}, {on, batchSize - 1, true}, {on, batchSize, false}, {off, holdMin, false}} {
		if got := c.b.holds(c.n); got != c.want {
			t.Errorf("hold %v, %d datagrams read: holds = %v, want %v", c.b.hold, c.n, got, c.want)
		}
	}
}
