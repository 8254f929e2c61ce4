//go:build linux

package geodns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

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
			raw := s.batch.handoff.raw.Load()
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

// TestRawSocketOptions: the batch loops' socket is out of the Go
// runtime's epoll set (no epoll wakeup per datagram received or sent;
// rawSocket), and sends with DF, ignoring path MTU (udpControl).
func TestRawSocketOptions(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.3.0/24")
	raw := s.batch.handoff.raw.Load()
	if raw == nil {
		t.Fatal("the batch loops do not use the raw socket")
	}
	var st unix.Stat_t
	if err := unix.Fstat(raw.fd, &st); err != nil {
		t.Fatal(err)
	}
	ino := fmt.Sprintf("ino:%x", st.Ino)
	infos, err := filepath.Glob("/proc/self/fdinfo/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range infos {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // closed since the listing
		}
		for _, line := range strings.Split(string(b), "\n") {
			if fields := strings.Fields(line); len(fields) > 0 && fields[0] == "tfd:" && slices.Contains(fields, ino) {
				t.Errorf("the UDP socket (%s) is in the epoll set of %s: %s", ino, f, line)
			}
		}
	}
	if v, err := unix.GetsockoptInt(raw.fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER); err != nil || v != unix.IP_PMTUDISC_PROBE {
		t.Errorf("IP_MTU_DISCOVER = %d (%v), want IP_PMTUDISC_PROBE (%d)", v, err, unix.IP_PMTUDISC_PROBE)
	}
}

// TestBatchLoopsLeaveAP: a batch loop keeps its P while it waits for
// datagrams only while another P is left for everything else: with two
// Ps and three servers one loop holds a P, and every server answers over
// UDP and TCP; a stop-the-world reaches the loop that waits holding its P,
// and a server that stops gives its P back.
func TestBatchLoopsLeaveAP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	if n := heldPs.Load(); n != 0 {
		t.Fatalf("%d Ps held before the test's servers start", n)
	}
	var servers []*Server
	for range 3 {
		servers = append(servers, startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil))
	}
	for i, s := range servers {
		for _, network := range []string{"udp", "tcp"} {
			if got := answerIPs(query(t, s, network, "www.cdn.lab.", dns.TypeA, "10.77.3.0/24")); len(got) != 1 || got[0] != "10.77.3.20" {
				t.Fatalf("server %d over %s: www A from 10.77.3.0/24 = %v, want [10.77.3.20]", i, network, got)
			}
		}
	}
	if n := heldPs.Load(); n != 1 {
		t.Errorf("%d Ps held by batch loops with GOMAXPROCS 2, want 1", n)
	}
	runtime.GC()
	for _, s := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
	if n := heldPs.Load(); n != 0 {
		t.Errorf("%d Ps held after every server stopped, want 0", n)
	}
}

// TestUDPHoldGathersBatches: after a read that found several queries
// waiting, a batch loop pauses (Config.UDPHold) and reads what came
// meanwhile as one batch. Eight queries queued before the server starts
// are its first read; eight more sent a millisecond apart during the
// pause that follows are its second, where a loop that did not pause
// would wake for each. Every query is answered.
func TestUDPHoldGathersBatches(t *testing.T) {
	// One loop (with more, another would read what comes during the
	// pause), which does not keep its P (heldPs full), and no garbage
	// collection: goroutines queued on the P of a loop that keeps it,
	// and a stop-the-world, wait for its pause to end, and the test's
	// client would be among them.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	heldPs.Add(1)
	defer heldPs.Add(-1)
	s := newServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	if s.batch == nil {
		t.Fatal("no batch reader on 127.0.0.1")
	}
	s.batch.hold = 500 * time.Millisecond // long enough for the test's client to send into it
	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(id uint16) {
		m := new(dns.Msg)
		m.SetQuestion("www.cdn.lab.", dns.TypeA)
		m.Id = id
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(n int) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, maxUDPSize)
		for range n {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("reading answers: %v", err)
			}
			if r := mustUnpack(t, buf[:k]); len(r.Answer) != 1 {
				t.Fatalf("answer %d: %v, want one record", r.Id, r.Answer)
			}
		}
	}
	for id := range uint16(8) {
		send(id)
	}
	serve(t, s)
	recv(8)
	for id := range uint16(8) {
		send(100 + id)
		time.Sleep(time.Millisecond)
	}
	recv(8)
	ms := family(t, s, "geodns_udp_batch_datagrams")
	if len(ms) != 1 {
		t.Fatalf("geodns_udp_batch_datagrams: %d series, want 1", len(ms))
	}
	if h := ms[0].GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() != 16 {
		t.Errorf("%d reads of %v datagrams in all, want 2 reads of 8", h.GetSampleCount(), h.GetSampleSum())
	}
}
