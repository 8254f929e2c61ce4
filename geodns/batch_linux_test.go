//go:build linux

package geodns

import (
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestRawSocketBothFamilies: on Linux the batch loops read and write the
// socket with recvmmsg and sendmmsg themselves (rawudp_linux.go), over
// IPv4 and IPv6 alike: plain queries are answered by the fast path, the
// others handed to miekg/dns, which answers from the client's address.
func TestRawSocketBothFamilies(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			poll.CheckGoroutines(t)
			if listen[0] == '[' {
				ln, err := net.ListenPacket("udp", listen)
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) { c.Listen = listen })
			for range 3 {
				if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.3.0/24")); len(got) != 1 || got[0] != "10.77.3.20" {
					t.Fatalf("www A from 10.77.3.0/24 = %v, want [10.77.3.20]", got)
				}
			}
			s.batch.mu.Lock()
			raw := s.batch.raw
			s.batch.mu.Unlock()
			if raw == nil {
				t.Errorf("batch loops on %s do not use the raw socket", listen)
			}
			if s.memo.held() == 0 {
				t.Errorf("memo empty after plain queries: the fast path did not answer them")
			}
			m := new(dns.Msg)
			m.SetQuestion("www.cdn.lab.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
			if r, _ := exchangeRaw(t, s.Addr().String(), m); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("query with a COOKIE (miekg/dns's) = rcode %d, %d answers; want one answer", r.Rcode, len(r.Answer))
			}
		})
	}
}
