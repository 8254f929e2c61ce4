package geodns

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// recorder is the ResponseWriter of the slow path in the differential
// tests: it keeps the packed reply, as miekg/dns's would write it.
type recorder struct {
	remote net.Addr
	wire   []byte
	wrote  bool
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	r.wire, r.wrote = b, true
	return err
}
func (r *recorder) Write(b []byte) (int, error) { r.wire, r.wrote = b, true; return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

// slowReply is what miekg/dns and ServeDNS send for the UDP query pkt
// from src: nothing (wrote false) when the reply is withheld.
func slowReply(t testing.TB, s *Server, pkt []byte, src netip.AddrPort) (wire []byte, wrote bool) {
	t.Helper()
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		t.Fatalf("the fast path took %x, which miekg/dns cannot parse: %v", pkt, err)
	}
	rec := &recorder{remote: net.UDPAddrFromAddrPort(src)}
	s.ServeDNS(rec, req)
	return rec.wire, rec.wrote
}

// diffPair is two servers of one configuration, fed the same queries: ref
// answers by the slow path (ServeDNS), fast by serveFast.
type diffPair struct {
	name      string
	ref, fast *Server
}

// steeringConfig is labConfig with latency steering (tables injected by
// the test, never pulled), two answers per query, a second eu PoP of
// weight 3 and an HTTPS port.
func steeringConfig(c *Config) {
	c.Answers = 2
	c.PoPs = append(c.PoPs, PoP{Name: "pop-eu2", A: []string{"10.77.2.21", "10.77.2.22"}, AAAA: []string{"fd77:2::21"}, Region: "eu", Lat: 50.1, Lon: 8.7, Weight: 3, HTTPSPort: 8443})
	for i := range c.PoPs {
		c.PoPs[i].RTTURL = "http://127.0.0.1:1/rtt"
	}
	c.Locator.Networks = append(c.Locator.Networks, Network{Prefix: "10.77.4.0/24", Region: "eu"})
}

func newDiffPairs(t testing.TB) []diffPair {
	t.Helper()
	clock := time.Unix(1_700_000_000, 0)
	build := func(edit func(*Config)) *Server {
		cfg, err := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Zones[0].Records += "under 60 IN A 10.77.9.10\n_svc._tcp 60 IN SRV 1 1 443 www\nWWW.UPPER 60 IN CNAME WWW.CDN.LAB.\nmid 60 IN TXT \"" + bigTXT()[:600] + "\"\n"
		if edit != nil {
			edit(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.rtt.now = func() time.Time { return clock }
		for name, rows := range map[string][][2]any{
			"pop-na":  {{"10.77.4.0/24", 10.0}, {"10.77.2.0/24", 80.0}},
			"pop-eu":  {{"10.77.4.0/24", 90.0}, {"10.77.2.0/24", 12.0}},
			"pop-eu2": {{"10.77.2.0/24", 14.0}, {"127.0.0.0/24", 3.0}},
			"pop-ap":  {{"192.0.2.0/24", 30.0}},
		} {
			var rep rttReport
			for _, r := range rows {
				rep.Prefixes = append(rep.Prefixes, struct {
					Prefix  string  `json:"prefix"`
					RTTms   float64 `json:"rtt_ms"`
					MinMs   float64 `json:"min_ms"`
					Samples int     `json:"samples"`
					AgeMs   int64   `json:"age_ms"`
				}{r[0].(string), r[1].(float64), r[1].(float64), 10, 1000})
			}
			s.rtt.replace(name, rep, clock, s.state.Load().latency)
		}
		return s
	}
	var pairs []diffPair
	for _, c := range []struct {
		name string
		edit func(*Config)
	}{
		{"lab", nil},
		{"steering", steeringConfig},
		{"degraded and down", func(c *Config) {
			c.Answers = 3
			c.PoPs[2].HTTPSPort = 8443
		}},
	} {
		p := diffPair{name: c.name, ref: build(c.edit), fast: build(c.edit)}
		if c.name == "degraded and down" {
			for _, s := range []*Server{p.ref, p.fast} {
				st := s.state.Load()
				st.pops[1].degraded.Store(true)
				st.pops[0].healthy.Store(false)
			}
		}
		pairs = append(pairs, p)
	}
	return pairs
}

// diffSources are the clients of the differential tests: located by a
// network, by coordinates, misplaced (steered), unlocated, over IPv6.
var diffSources = []netip.AddrPort{
	netip.MustParseAddrPort("127.0.0.1:5353"),
	netip.MustParseAddrPort("10.77.1.5:1000"),
	netip.MustParseAddrPort("10.77.4.9:1001"),
	netip.MustParseAddrPort("192.0.2.44:1002"),
	netip.MustParseAddrPort("198.51.100.7:1003"),
	netip.MustParseAddrPort("[fd77:1::5]:1004"),
	netip.MustParseAddrPort("[::1]:1005"),
}

// plainQuery packs a query as a resolver would send it.
type plainQuery struct {
	id     uint16
	name   string
	qtype  uint16
	qclass uint16
	rd, cd bool
	edns   int    // 0: no OPT
	do     bool   // DNSSEC OK
	ecs    string // prefix, "" for none
}

func (q plainQuery) pack(t testing.TB) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.Id = q.id
	m.Question = []dns.Question{{Name: q.name, Qtype: q.qtype, Qclass: q.qclass}}
	m.RecursionDesired, m.CheckingDisabled = q.rd, q.cd
	if q.edns > 0 {
		m.SetEdns0(uint16(q.edns), q.do)
		if q.ecs != "" {
			p := netip.MustParsePrefix(q.ecs)
			e := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()}
			if p.Addr().Is6() {
				e.Family = 2
			}
			m.IsEdns0().Option = append(m.IsEdns0().Option, e)
		}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	diffNames = []string{"www.cdn.lab.", "WwW.cDn.LAB.", "WWW.CDN.LAB.", "origin.cdn.lab.", "Origin.Cdn.Lab.", "nope.cdn.lab.",
		"cdn.lab.", "CDN.lab.", "alias.cdn.lab.", "big.cdn.lab.", "mid.cdn.lab.", "example.org.", "Example.ORG.",
		"empty.nonterminal.cdn.lab.", "_svc._tcp.cdn.lab.", "www.upper.cdn.lab.", "a-b.cdn.lab.", "ns1.cdn.lab.", "NS1.cdn.lab.", ".", "9.cdn.lab."}
	diffTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS, dns.TypeANY, dns.TypeTXT, dns.TypeSOA, dns.TypeNS,
		dns.TypeMX, dns.TypeCNAME, dns.TypeSRV, dns.TypeSVCB}
	diffClasses = []uint16{dns.ClassINET, dns.ClassINET, dns.ClassINET, dns.ClassCHAOS, dns.ClassANY}
	diffEDNS    = []int{0, 0, 512, 1232, 1232, 4096, 100, 1400}
	diffECS     = []string{"", "", "10.77.1.0/24", "10.77.2.9/32", "10.77.0.0/16", "10.77.4.0/24", "0.0.0.0/0",
		"192.0.2.0/24", "198.51.100.0/24", "fd77:1::/56", "fd77:2::/48", "::/0", "10.77.2.128/25", "fd77:1::1/128"}
)

// randomPlain is a random plain query made of the lists above.
func randomPlain(r *rand.Rand) plainQuery {
	q := plainQuery{
		id:     uint16(r.Uint32()),
		name:   diffNames[r.IntN(len(diffNames))],
		qtype:  diffTypes[r.IntN(len(diffTypes))],
		qclass: diffClasses[r.IntN(len(diffClasses))],
		rd:     r.IntN(2) == 0,
		cd:     r.IntN(5) == 0,
		edns:   diffEDNS[r.IntN(len(diffEDNS))],
		do:     r.IntN(4) == 0,
	}
	if q.edns > 0 {
		q.ecs = diffECS[r.IntN(len(diffECS))]
	}
	return q
}

// oddQueries are queries the fast path must decline or answer as the slow
// path does: broken ECS, other options, versions, flags, pointers.
func oddQueries(t testing.TB) [][]byte {
	base := plainQuery{id: 0x1234, name: "www.cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET, rd: true, edns: 1232, ecs: "10.77.1.0/24"}.pack(t)
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), base...)) }
	n := len(base)
	var out [][]byte
	out = append(out,
		edit(func(b []byte) []byte { b[n-1] = 1; return b }),                               // address bits past the prefix
		edit(func(b []byte) []byte { b[n-4] = 24; return b }),                              // scope set
		edit(func(b []byte) []byte { b[n-5] = 40; return b }),                              // /40 for IPv4
		edit(func(b []byte) []byte { b[n-6] = 3; return b }),                               // family 3
		edit(func(b []byte) []byte { b[n-6] = 0; b[n-5] = 0; return b }),                   // family 0
		edit(func(b []byte) []byte { return append(b, 0) }),                                // trailing byte
		edit(func(b []byte) []byte { b[2] |= 0x80; return b }),                             // a response
		edit(func(b []byte) []byte { b[2] |= 0x02; return b }),                             // TC
		edit(func(b []byte) []byte { b[2] |= 0x04; return b }),                             // AA
		edit(func(b []byte) []byte { b[2] |= 4 << 3; return b }),                           // opcode NOTIFY
		edit(func(b []byte) []byte { b[3] |= 0x40; return b }),                             // Z
		edit(func(b []byte) []byte { b[3] |= 0x20; return b }),                             // AD
		edit(func(b []byte) []byte { b[3] |= 0x80; return b }),                             // RA
		edit(func(b []byte) []byte { b[3] |= 0x05; return b }),                             // an RCODE
		edit(func(b []byte) []byte { b[5] = 2; return b }),                                 // two questions counted
		edit(func(b []byte) []byte { b[11] = 2; return b }),                                // two additional counted
		edit(func(b []byte) []byte { b[12+13+4+5] = 1; return b }),                         // extended RCODE
		edit(func(b []byte) []byte { b[12+13+4+6] = 1; return b }),                         // EDNS version 1
		edit(func(b []byte) []byte { b[12+13+4+7] = 0x80; b[12+13+4+8] = 0x01; return b }), // DO and a Z bit
		edit(func(b []byte) []byte { b[12+13+4] = 1; return b }),                           // OPT owner not the root
		edit(func(b []byte) []byte { return b[:n-1] }),                                     // cut short
		edit(func(b []byte) []byte { b[12] = 0xc0; b[13] = 12; return b }),                 // a pointer
		edit(func(b []byte) []byte { b[13] = '*'; return b }),                              // a wildcard label
		edit(func(b []byte) []byte { b[13] = '.'; return b }),                              // an escaped dot
		edit(func(b []byte) []byte { b[13] = 0xe9; return b }),                             // a non-ASCII byte
	)
	// A COOKIE option beside ECS, and alone.
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.lab.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
	b, _ := m.Pack()
	out = append(out, b)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 77, 1, 0).To4()})
	b, _ = m.Pack()
	out = append(out, b)
	// A 63-byte label, and a name of 255 bytes.
	long := plainQuery{name: fmt.Sprintf("%s.cdn.lab.", bytes.Repeat([]byte("a"), 63)), qtype: dns.TypeA, qclass: dns.ClassINET}.pack(t)
	out = append(out, long)
	var name []byte
	for len(name) < 240 {
		name = append(name, "abcdefghi."...)
	}
	out = append(out, plainQuery{name: string(name[:245]) + "cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET}.pack(t))
	return out
}

// FuzzFastPath: for every query, the fast path answers byte for byte as
// the slow path does (miekg/dns's parser, ServeDNS, Pack), with the same
// rolls and clock, and moves the same metrics; or it declines. The seeds
// are plain queries of every kind (geo, static, negative, CNAME, ANY,
// HTTPS, refused classes, out of zone, too big for UDP; with and without
// EDNS and ECS of many source prefixes; names in mixed case) and odd ones.
func FuzzFastPath(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 600 {
		f.Add(randomPlain(r).pack(f), uint8(r.IntN(len(diffSources))), r.Uint32(), r.Uint32())
	}
	for _, b := range oddQueries(f) {
		f.Add(b, uint8(0), uint32(7), uint32(1))
	}
	pairs := newDiffPairs(f)
	f.Fuzz(func(t *testing.T, pkt []byte, src uint8, roll, sec uint32) {
		from := diffSources[int(src)%len(diffSources)]
		now := time.Unix(1_700_000_000+int64(sec%100_000), 0)
		for _, p := range pairs {
			p.compare(t, pkt, from, roll, now)
		}
	})
}

// compare runs pkt from src through both servers with the same rolls and
// clock and fails t unless the fast path declines it or answers it as the
// slow path does, byte for byte, rolling as often and counting alike. It
// reports whether the fast path answered.
func (p diffPair) compare(t testing.TB, pkt []byte, from netip.AddrPort, roll uint32, now time.Time) bool {
	t.Helper()
	key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
	p.ref.now = func() time.Time { return now }
	p.fast.now = p.ref.now
	p.ref.answered.Store(uint64(roll))
	p.fast.answered.Store(uint64(roll))
	n, act := p.fast.serveFast(pkt, from, now, key, out)
	if act == declined {
		return false
	}
	if !wellFormed(pkt) {
		t.Fatalf("%s: the fast path took %x, which strict parsing refuses", p.name, pkt)
	}
	want, wrote := slowReply(t, p.ref, pkt, from)
	switch {
	case act == withheld && wrote:
		t.Fatalf("%s: fast path withheld the reply to %x, slow path sent %x", p.name, pkt, want)
	case act == answered && !bytes.Equal(out[:n], want):
		t.Fatalf("%s: query %x from %v, roll %d, second %d:\nfast %x\nslow %x\nfast: %v\nslow: %v",
			p.name, pkt, from, roll, now.Unix(), out[:n], want, unpacked(out[:n]), unpacked(want))
	}
	if a, b := p.fast.answered.Load(), p.ref.answered.Load(); a != b {
		t.Fatalf("%s: the fast path rolled %d times, the slow path %d", p.name, a-uint64(roll), b-uint64(roll))
	}
	for _, name := range []string{"geodns_queries_total", "geodns_pop_answers_total", "geodns_steering_answers_total", "geodns_rate_limited_total"} {
		if a, b := series(t, p.fast, name), series(t, p.ref, name); !maps.Equal(a, b) {
			t.Fatalf("%s: %s = %v by the fast path, %v by the slow path", p.name, name, a, b)
		}
	}
	return act == answered
}

// series is the metric name's counters of s by their labels, those above
// zero (the fast path makes each option's series when it memoises a
// route, before it counts in them).
func series(t testing.TB, s *Server, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range family(t, s, name) {
		if v := m.GetCounter().GetValue(); v != 0 {
			out[fmt.Sprint(m.GetLabel())] = v
		}
	}
	return out
}

// TestFastPathVariations: queries that differ from one another in one
// respect only (ID, spelling, flags, EDNS size, DO, ECS, client, roll,
// second), asked one after the other so that each finds the memo entry of
// the one before: every answer is the slow path's.
func TestFastPathVariations(t *testing.T) {
	bases := []plainQuery{
		{name: "www.cdn.lab.", qtype: dns.TypeA, edns: 1232, ecs: "10.77.4.0/24"},
		{name: "www.cdn.lab.", qtype: dns.TypeHTTPS},
		{name: "mid.cdn.lab.", qtype: dns.TypeTXT, edns: 1232},
		{name: "nope.cdn.lab.", qtype: dns.TypeAAAA, edns: 1232, ecs: "fd77:1::/56"},
		{name: "www.cdn.lab.", qtype: dns.TypeANY, edns: 600},
	}
	vary := []func(q *plainQuery){
		func(q *plainQuery) {},
		func(q *plainQuery) { q.id ^= 0xffff },
		func(q *plainQuery) { q.name = strings.ToUpper(q.name) },
		func(q *plainQuery) { q.name = strings.ToUpper(q.name[:2]) + q.name[2:] },
		func(q *plainQuery) { q.rd = !q.rd },
		func(q *plainQuery) { q.cd = !q.cd },
		func(q *plainQuery) { q.do = !q.do },
		func(q *plainQuery) { q.edns = 512 },
		func(q *plainQuery) { q.edns = 4096 },
		func(q *plainQuery) { q.edns, q.ecs = 0, "" },
		func(q *plainQuery) { q.edns = max(q.edns, 512); q.ecs = "10.77.2.0/24" },
		func(q *plainQuery) { q.edns = max(q.edns, 512); q.ecs = "10.77.2.0/23" },
		func(q *plainQuery) { q.edns = max(q.edns, 512); q.ecs = "0.0.0.0/0" },
		func(q *plainQuery) { q.qclass = dns.ClassANY },
		func(q *plainQuery) { q.qclass = dns.ClassCHAOS },
	}
	answered := 0
	for _, p := range newDiffPairs(t) {
		for _, base := range bases {
			base.id, base.qclass = 0x4242, dns.ClassINET
			for _, from := range diffSources {
				for i, v := range vary {
					q := base
					v(&q)
					for j, roll := range []uint32{0, 1 << 31, 0xffff_ffff} {
						if p.compare(t, q.pack(t), from, roll+uint32(i), time.Unix(1_700_000_000+int64(j), 0)) {
							answered++
						}
					}
				}
			}
		}
	}
	t.Logf("%d answers compared", answered)
}

func unpacked(b []byte) string {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return err.Error()
	}
	return m.String()
}

// TestFastPathAnswersPlainQueries: the fast path does answer what it is
// for, so that FuzzFastPath compares something: geo, static and negative
// answers, with and without EDNS and ECS, in any case; and declines only
// what it should.
func TestFastPathAnswersPlainQueries(t *testing.T) {
	p := newDiffPairs(t)[0]
	key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
	from := diffSources[0]
	for _, q := range []plainQuery{
		{name: "www.cdn.lab.", qtype: dns.TypeA},
		{name: "WwW.cDn.LaB.", qtype: dns.TypeAAAA, rd: true},
		{name: "www.cdn.lab.", qtype: dns.TypeHTTPS, edns: 1232},
		{name: "www.cdn.lab.", qtype: dns.TypeA, edns: 4096, do: true, ecs: "10.77.2.0/24"},
		{name: "www.cdn.lab.", qtype: dns.TypeAAAA, edns: 1232, ecs: "fd77:1::/56"},
		{name: "www.cdn.lab.", qtype: dns.TypeA, edns: 512, ecs: "0.0.0.0/0"},
		{name: "origin.cdn.lab.", qtype: dns.TypeA},
		{name: "nope.cdn.lab.", qtype: dns.TypeA, edns: 1232},
		{name: "www.cdn.lab.", qtype: dns.TypeTXT},
		{name: "www.cdn.lab.", qtype: dns.TypeANY},
		{name: "alias.cdn.lab.", qtype: dns.TypeA},
		{name: "example.org.", qtype: dns.TypeA, edns: 1232}, // REFUSED: no upstreams
		{name: "mid.cdn.lab.", qtype: dns.TypeTXT, edns: 1232},
	} {
		q.id, q.qclass = 0xbeef, dns.ClassINET
		if _, act := p.fast.serveFast(q.pack(t), from, time.Now(), key, out); act != answered {
			t.Errorf("%+v: fast path %d, want it answered", q, act)
		}
	}
	for _, q := range []plainQuery{
		{name: "big.cdn.lab.", qtype: dns.TypeTXT},                                // truncated: compressed
		{name: "mid.cdn.lab.", qtype: dns.TypeTXT},                                // likewise without EDNS
		{name: "w*w.cdn.lab.", qtype: dns.TypeA, edns: 1232},                      // not a plain name
		{name: "www.cdn.lab.", qtype: dns.TypeA, edns: 1232, ecs: "10.77.1.0/24"}, // answered; the pointer below is not
	} {
		q.id, q.qclass = 0xbeef, dns.ClassINET
		pkt := q.pack(t)
		_, act := p.fast.serveFast(pkt, from, time.Now(), key, out)
		if q.ecs != "" {
			pkt[len(pkt)-5] = 20 // /20 of 10.77.1: bits set past the prefix, FORMERR
			_, act = p.fast.serveFast(pkt, from, time.Now(), key, out)
		}
		if act != declined {
			t.Errorf("%+v: fast path %d, want it declined", q, act)
		}
	}
	for _, b := range oddQueries(t) {
		if _, act := p.fast.serveFast(b, from, time.Now(), key, out); act == answered && !wellFormed(b) {
			t.Errorf("odd query %x answered", b)
		}
	}
}

// TestMainRollIsFNV: mainRoll, now in two steps for the fast path, is the
// hash/fnv one it was.
func TestMainRollIsFNV(t *testing.T) {
	old := func(client netip.Addr, now time.Time) float64 {
		h := fnv.New64a()
		b, _ := rttPrefix(client).MarshalBinary()
		h.Write(b)
		var sec [8]byte
		binary.LittleEndian.PutUint64(sec[:], uint64(now.Unix()))
		h.Write(sec[:])
		return float64(uint32(h.Sum64()>>32)) / (1 << 32)
	}
	for _, a := range []string{"10.77.1.5", "127.0.0.1", "fd77:1::5", "::ffff:10.1.2.3", "0.0.0.0"} {
		for _, sec := range []int64{0, 1, 1_700_000_000, 1 << 40} {
			addr, now := netip.MustParseAddr(a), time.Unix(sec, 0)
			if got, want := mainRoll(addr, now), old(addr, now); got != want {
				t.Errorf("mainRoll(%v, %d) = %v, want %v", addr, sec, got, want)
			}
		}
	}
}

// TestPickIndexIsPick: pickIndex chooses as pick did, for routes with and
// without exploring options and weights.
func TestPickIndexIsPick(t *testing.T) {
	old := func(r *route, explore, main float64) *option {
		var primary, exploring []option
		share := 0.0
		for _, o := range r.options {
			if o.explore {
				exploring = append(exploring, o)
				share += o.share
			} else {
				primary = append(primary, o)
			}
		}
		if explore < share {
			return &exploring[int(explore/share*float64(len(exploring)))%len(exploring)]
		}
		main *= 1 - share
		for i := range primary {
			if main < primary[i].share {
				return &primary[i]
			}
			main -= primary[i].share
		}
		return &primary[len(primary)-1]
	}
	pops := []*popState{{cfg: PoP{Name: "a"}}, {cfg: PoP{Name: "b"}}, {cfg: PoP{Name: "c"}}, {cfg: PoP{Name: "d"}}}
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		var rt route
		primary := 1 + r.IntN(3)
		rt.options = shares(pops[:primary], pops, 2, 1)
		if r.IntN(2) == 0 {
			for i := range rt.options {
				rt.options[i].share *= 0.95
			}
			for _, p := range pops[primary:] {
				rt.options = append(rt.options, option{pops: []*popState{p}, explore: true, share: 0.05 / float64(len(pops)-primary)})
			}
		}
		explore, main := r.Float64(), r.Float64()
		if got, want := rt.options[rt.pickIndex(explore, main)].pops[0], old(&rt, explore, main).pops[0]; got != want {
			t.Fatalf("pickIndex(%v, %v) chose %s, pick %s", explore, main, got.cfg.Name, want.cfg.Name)
		}
	}
}

// TestMemoComparesKeys: the memo is keyed by a hash of the memo key, so
// two keys of one hash must not answer each other: an entry found under
// the hash is used only if it holds the key looked up.
func TestMemoComparesKeys(t *testing.T) {
	c := newMemo(1 << 20)
	a, b := []byte("key-a"), []byte("key-b")
	c.put(&entry{key: a, gen: 1, size: entryOverhead})
	if c.get(a, 1, time.Now()) == nil {
		t.Fatalf("get(%q) = nil after put, want its entry", a)
	}
	// Make b collide with a: store a's entry under b's hash as well.
	c.m[c.hash(b)] = c.m[c.hash(a)]
	if e := c.get(b, 1, time.Now()); e != nil {
		t.Errorf("get(%q) = the entry of %q (same hash), want nil", b, e.key)
	}
}

// TestMemoGetAll: the batch lookup finds what get finds, key by key: an
// entry of the generation asked, none of another, none for a key stored
// under another's hash, none for a nil key.
func TestMemoGetAll(t *testing.T) {
	c := newMemo(1 << 20)
	now := time.Now()
	keys := [][]byte{[]byte("a"), nil, []byte("b"), []byte("c"), []byte("d"), []byte("gone")}
	c.put(&entry{key: keys[0], gen: 2, size: entryOverhead})
	c.put(&entry{key: keys[2], gen: 2, size: entryOverhead})
	c.put(&entry{key: keys[3], gen: 2, expires: now.Add(-time.Second).UnixNano(), size: entryOverhead})
	c.m[c.hash(keys[4])] = c.m[c.hash(keys[0])] // d collides with a
	found := make([]*entry, len(keys))
	c.getAll(keys, make([]uint64, len(keys)), found, 2, now)
	for i, k := range keys {
		var want *entry
		if k != nil {
			want = c.get(k, 2, now)
		}
		if found[i] != want {
			t.Errorf("getAll: key %q found %p, get finds %p", k, found[i], want)
		}
	}
	if found[0] == nil || found[2] == nil || found[3] != nil || found[4] != nil {
		t.Errorf("getAll found %v, want entries for a and b only", found)
	}
	c.getAll(keys, make([]uint64, len(keys)), found, 3, now)
	for i := range found {
		if found[i] != nil {
			t.Errorf("generation 3: key %q found an entry of generation 2", keys[i])
		}
	}
}

// TestMemoSharesAnswers: memo entries of clients whose replies differ only
// in their ECS address share one set of answers, patched with the address
// as asked; a client steered by measurement and one sent to the same PoP
// by geography, whose replies are the same bytes but count in different
// series, do not. Every reply is the slow path's.
func TestMemoSharesAnswers(t *testing.T) {
	var steering diffPair
	for _, p := range newDiffPairs(t) {
		if p.name == "steering" {
			steering = p
		}
	}
	from := netip.MustParseAddrPort("10.9.9.9:53")
	now := time.Unix(1_700_000_000, 0)
	answersOf := func(ecs string) *answers {
		t.Helper()
		pkt := plainQuery{name: "www.cdn.lab.", qtype: dns.TypeA, qclass: dns.ClassINET, edns: 1232, ecs: ecs}.pack(t)
		if !steering.compare(t, pkt, from, 1, now) {
			t.Fatalf("ECS %s: the fast path declined", ecs)
		}
		p, _ := parsePlain(pkt, from.Addr(), make([]byte, maxKeyLen))
		e := steering.fast.memo.get(p.key, steering.fast.gen.Load(), now)
		if e == nil || e.ans == nil {
			t.Fatalf("ECS %s: no memo entry with answers", ecs)
		}
		return e.ans
	}
	measured, geo := answersOf("10.77.4.0/24"), answersOf("10.77.1.0/24") // both pop-na, scope /24
	if measured == geo {
		t.Errorf("a client steered by measurement shares the answers of one located by geography")
	}
	a, b := answersOf("10.77.5.0/24"), answersOf("10.77.6.0/24")
	if a != b {
		t.Errorf("10.77.5.0/24 and 10.77.6.0/24, same route, hold answers of their own")
	}
}
