package geodns

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// manyClients is a server of the harness's configuration and the
// harness's kinds of geo queries from 5,120 ECS prefixes, in a spread
// order as its random one.
func manyClients(b *testing.B) (*Server, [][]byte) {
	b.Helper()
	s := benchServer(b)
	var pkts [][]byte
	for region := 1; region <= 5; region++ {
		for third := range 256 {
			for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
				for _, ecs := range []string{fmt.Sprintf("10.%d.%d.0/24", region, third), fmt.Sprintf("2001:db8:%x:%x00::/56", 0x100+region, third)} {
					q := plainQuery{name: "www.cdn.lab.", qtype: qtype, qclass: dns.ClassINET, id: 0x1234, rd: true, edns: 1232, ecs: ecs}
					pkts = append(pkts, q.pack(b))
				}
			}
		}
	}
	for i := range pkts {
		j := int(uint32(i) * 2654435761 % uint32(len(pkts)))
		pkts[i], pkts[j] = pkts[j], pkts[i]
	}
	return s, pkts
}

// benchServer is a server of the harness's configuration
// (testdata/dnsbench.yaml) without health checks.
func benchServer(b *testing.B) *Server {
	b.Helper()
	cfg, err := LoadConfig("testdata/dnsbench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for i := range cfg.PoPs {
		cfg.PoPs[i].Check = Check{}
	}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkFastPath is the work per query beside the system calls: the
// fast path (parse, memo, rolls, copy and patch) against what the slow
// path does for the same query (miekg/dns's Unpack, ServeDNS, Pack),
// for the harness's kinds of queries (dns-bench.sh's qgen): a geo name
// with ECS, without, and a name outside the zones.
func BenchmarkFastPath(b *testing.B) {
	s := benchServer(b)
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	for _, q := range []struct {
		name string
		q    plainQuery
	}{
		{"ecs", plainQuery{name: "www.cdn.lab.", qtype: dns.TypeA, edns: 1232, ecs: "10.2.7.0/24"}},
		{"ecs-v6", plainQuery{name: "www.cdn.lab.", qtype: dns.TypeAAAA, edns: 1232, ecs: "2001:db8:103:400::/56"}},
		{"plain", plainQuery{name: "www.cdn.lab.", qtype: dns.TypeA}},
		{"refused", plainQuery{name: "www.example.org.", qtype: dns.TypeA, edns: 1232}},
	} {
		q.q.qclass, q.q.id, q.q.rd = dns.ClassINET, 0x1234, true
		pkt := q.q.pack(b)
		b.Run(fmt.Sprintf("fast/%s", q.name), func(b *testing.B) {
			key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
			now := time.Now()
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if _, act := s.serveFast(pkt, src, now, key, out); act != answered {
					b.Fatalf("fast path %d", act)
				}
			}
		})
		b.Run(fmt.Sprintf("slow/%s", q.name), func(b *testing.B) {
			w := &recorder{remote: net.UDPAddrFromAddrPort(src)}
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				req := new(dns.Msg)
				if err := req.Unpack(pkt); err != nil {
					b.Fatal(err)
				}
				s.ServeDNS(w, req)
			}
		})
	}
}

// BenchmarkFastPathManyClients is the fast path as a busy server sees it:
// the harness's queries come from thousands of ECS prefixes, so the memo
// holds thousands of entries and most lookups miss the CPU's caches.
func BenchmarkFastPathManyClients(b *testing.B) {
	s, pkts := manyClients(b)
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	key, out := make([]byte, maxKeyLen), make([]byte, maxUDPSize)
	now := time.Now()
	for _, pkt := range pkts {
		s.serveFast(pkt, src, now, key, out)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, act := s.serveFast(pkts[i], src, now, key, out); act != answered {
			b.Fatalf("fast path %d", act)
		}
		if i++; i == len(pkts) {
			i = 0
		}
	}
	b.ReportMetric(float64(len(pkts)), "keys")
}
