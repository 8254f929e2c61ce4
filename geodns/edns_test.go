package geodns

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestEDNSRefusals: over UDP and TCP, a query with an EDNS version above
// 0 gets BADVERS in an OPT of version 0 and no answer (RFC 6891 6.1.3), one
// with two OPT records FORMERR (RFC 6891 6.1.1), one whose ECS option has
// a nonzero scope prefix FORMERR (RFC 7871 6); each reply echoes the ID
// and question and carries an OPT (RFC 6891 7). A good EDNS query is
// answered.
func TestEDNSRefusals(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	ecs := func(scope uint8) *dns.EDNS0_SUBNET {
		return &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, SourceScope: scope, Address: net.IPv4(10, 77, 1, 0).To4()}
	}
	for _, tt := range []struct {
		name  string
		edit  func(q *dns.Msg) // q has an OPT of version 0
		rcode int
	}{
		{"good query", func(q *dns.Msg) {}, dns.RcodeSuccess},
		{"good query with ECS", func(q *dns.Msg) { q.IsEdns0().Option = []dns.EDNS0{ecs(0)} }, dns.RcodeSuccess},
		{"EDNS version 1", func(q *dns.Msg) { q.IsEdns0().SetVersion(1) }, dns.RcodeBadVers},
		{"EDNS version 255 with ECS", func(q *dns.Msg) {
			q.IsEdns0().SetVersion(255)
			q.IsEdns0().Option = []dns.EDNS0{ecs(0)}
		}, dns.RcodeBadVers},
		{"two OPT records", func(q *dns.Msg) {
			second := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
			second.SetUDPSize(1232)
			q.Extra = append(q.Extra, second)
		}, dns.RcodeFormatError},
		{"ECS with scope /24", func(q *dns.Msg) { q.IsEdns0().Option = []dns.EDNS0{ecs(24)} }, dns.RcodeFormatError},
		{"ECS with scope /1", func(q *dns.Msg) { q.IsEdns0().Option = []dns.EDNS0{ecs(1)} }, dns.RcodeFormatError},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+" "+tt.name, func(t *testing.T) {
				q := new(dns.Msg)
				q.SetQuestion("www.cdn.lab.", dns.TypeA)
				q.SetEdns0(1232, false)
				tt.edit(q)
				r, _, err := (&dns.Client{Net: network, Timeout: 5 * time.Second}).Exchange(q, s.Addr().String())
				if err != nil {
					t.Fatalf("Exchange: %v", err)
				}
				if r.Rcode != tt.rcode {
					t.Errorf("rcode %s, want %s", rcodeName(r.Rcode), rcodeName(tt.rcode))
				}
				if r.Id != q.Id || len(r.Question) != 1 || r.Question[0] != q.Question[0] {
					t.Errorf("reply ID %#x question %v, want %#x %v", r.Id, r.Question, q.Id, q.Question)
				}
				if opt := r.IsEdns0(); opt == nil || opt.Version() != 0 || opt.UDPSize() != 1232 {
					t.Errorf("reply's OPT = %v, want one of version 0 advertising 1232", opt)
				}
				if tt.rcode != dns.RcodeSuccess && len(r.Answer) != 0 {
					t.Errorf("answers %v, want none", r.Answer)
				}
				if tt.rcode == dns.RcodeSuccess && len(r.Answer) != 1 {
					t.Errorf("answers %v, want one", r.Answer)
				}
			})
		}
	}
	if got := counter(t, s, "geodns_queries_total", "rcode", "BADVERS"); got != 4 {
		t.Errorf("geodns_queries_total{rcode=BADVERS} = %v, want 4", got)
	}
}
