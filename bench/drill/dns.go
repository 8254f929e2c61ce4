package drill

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// dnsAttack sends the malformed corpus (each on its own socket, waiting
// for the reply or its absence) and seeded random packets, then a good
// query, which must be answered with the attacker's PoP.
func dnsAttack(ctx context.Context, c bench.LabClient, resolver, host, popAddr string) (string, bool) {
	ok := true
	got := map[string]int{}
	var wrong []string
	corpus := MalformedDNSQueries(host + ".")
	for _, m := range corpus {
		conn, err := c.Dial(ctx, "udp", resolver)
		if err != nil {
			return "dial: " + err.Error(), false
		}
		out := dnsOutcome(conn, m.Packet, 400*time.Millisecond)
		conn.Close()
		got[out]++
		found := false
		for _, w := range m.Want {
			found = found || w == out
		}
		if !found {
			ok = false
			wrong = append(wrong, m.Name+": "+out+";")
		}
	}
	// Random packets: fired without waiting; what comes back is counted.
	random := RandomDNSPackets(uint64(time.Now().UnixNano()), 2000)
	replies := map[string]int{}
	if conn, err := c.Dial(ctx, "udp", resolver); err == nil {
		var rd sync.WaitGroup
		rd.Go(func() {
			buf := make([]byte, 65536)
			for {
				conn.SetReadDeadline(time.Now().Add(time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				if n < 12 {
					replies["short"]++
					continue
				}
				replies[rcodeName(buf[3]&0x0f)]++
			}
		})
		for i, p := range random {
			conn.Write(p)
			if i%100 == 99 {
				time.Sleep(5 * time.Millisecond) // stay under the delay line's queue
			}
		}
		rd.Wait()
		conn.Close()
	}
	ips, err := newResolver(resolver, c.Dial).LookupHost(ctx, host)
	good := err == nil && len(ips) > 0 && ips[0] == popAddr
	ok = ok && good
	return fmt.Sprintf("%d kinds %s, unexpected %v; %d random packets got replies %s; then %s → %v %v",
		len(corpus), sortedCounts(got), wrong, len(random), sortedCounts(replies), host, ips, err), ok
}

// rcodeName names the DNS response codes a drill expects.
func rcodeName(rcode byte) string {
	switch rcode {
	case 0:
		return DNSNoError
	case 1:
		return DNSFormErr
	case 4:
		return DNSNotImp
	case 5:
		return DNSRefused
	}
	return fmt.Sprintf("rcode %d", rcode)
}

// dnsOutcome sends one packet on a connected UDP socket and classifies
// the reply: no answer, or the reply's rcode.
func dnsOutcome(conn net.Conn, pkt []byte, wait time.Duration) string {
	conn.SetDeadline(time.Now().Add(wait))
	if _, err := conn.Write(pkt); err != nil {
		return "send error"
	}
	buf := make([]byte, 65536)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return DNSNoAnswer
		}
		if n < 12 {
			return "short reply"
		}
		if len(pkt) >= 2 && n >= 2 && buf[0] == pkt[0] && buf[1] == pkt[1] || len(pkt) < 2 {
			return rcodeName(buf[3] & 0x0f)
		}
		// A late reply to an earlier packet: keep reading.
	}
}
