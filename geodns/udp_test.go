package geodns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// hugeTXT is 40 TXT records of 255 bytes at huge.cdn.lab: a 10.7 KB answer
// to a 41-byte query.
func hugeTXT() string {
	var b strings.Builder
	for i := range 40 {
		fmt.Fprintf(&b, "huge 60 IN TXT \"%02d%s\"\n", i, strings.Repeat("x", 253))
	}
	return b.String()
}

// exchangeRaw sends q over UDP and returns the reply and its size on the wire.
func exchangeRaw(t *testing.T, addr string, q *dns.Msg) (*dns.Msg, int) {
	t.Helper()
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(wire); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatalf("unparsable reply: %v", err)
	}
	return r, n
}

// TestUDPAnswersAtMost1232Bytes: whatever EDNS buffer size a query claims,
// its UDP answer is at most 1232 bytes (512 without EDNS or below 512),
// truncated with TC set, with an OPT advertising 1232; over TCP the whole
// answer comes. This bounds the amplification one spoofed query buys.
func TestUDPAnswersAtMost1232Bytes(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) { c.Zones[0].Records += hugeTXT() })
	for _, tt := range []struct {
		edns int // 0: no OPT
		want int // most bytes allowed
	}{
		{0, 512},
		{256, 512},
		{512, 512},
		{1232, 1232},
		{1400, 1232},
		{4096, 1232},
		{65000, 1232},
	} {
		t.Run(fmt.Sprintf("edns %d", tt.edns), func(t *testing.T) {
			q := new(dns.Msg)
			q.SetQuestion("huge.cdn.lab.", dns.TypeTXT)
			if tt.edns > 0 {
				q.SetEdns0(uint16(tt.edns), false)
			}
			wire, _ := q.Pack()
			r, n := exchangeRaw(t, s.Addr().String(), q)
			t.Logf("%d-byte query, %d-byte answer: amplification %.1fx", len(wire), n, float64(n)/float64(len(wire)))
			if n > tt.want {
				t.Errorf("answer is %d bytes (%.1fx the %d-byte query), want at most %d", n, float64(n)/float64(len(wire)), len(wire), tt.want)
			}
			if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) == 40 {
				t.Errorf("TC %v with %d of 40 records, want TC and as many records as fit", r.Truncated, len(r.Answer))
			}
			opt := r.IsEdns0()
			switch {
			case tt.edns == 0 && opt != nil:
				t.Errorf("answer to a query without EDNS has an OPT: %v", opt)
			case tt.edns > 0 && (opt == nil || opt.UDPSize() != 1232):
				t.Errorf("answer's OPT = %v, want one advertising 1232", opt)
			}
		})
	}
	q := new(dns.Msg)
	q.SetQuestion("huge.cdn.lab.", dns.TypeTXT)
	q.SetEdns0(65000, false)
	r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(q, s.Addr().String())
	if err != nil || r.Truncated || len(r.Answer) != 40 {
		t.Errorf("over TCP: %d records, TC %v, %v; want all 40", len(r.Answer), r.Truncated, err)
	}
}

// family is the series of s's metric name, none if it has none.
func family(t testing.TB, s *Server, name string) []*dto.Metric {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// counter is the sum of the series of counter name of s's metrics whose
// labels (name, value pairs) are labels.
func counter(t testing.TB, s *Server, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
metric:
	for _, m := range family(t, s, name) {
		for i := 0; i+1 < len(labels); i += 2 {
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() != labels[i+1] {
					continue metric
				}
			}
		}
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// TestRateLimitOnByDefault: with no rate_limit in the config, one prefix
// flooding UDP queries gets 100 answers (the burst), then every 2nd extra
// query a truncated empty reply and the others nothing; over TCP it is
// still answered. The clock is stopped, so no token comes back.
func TestRateLimitOnByDefault(t *testing.T) {
	s := newServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) { c.RateLimit = RateLimit{} })
	l := s.state.Load().rrl
	if l == nil {
		t.Fatal("no rate limit with rate_limit left out, want the default one")
	}
	t0 := time.Now()
	l.now = func() time.Time { return t0 }
	serve(t, s)

	const queries, burst = 300, 100
	conn, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var answered, slipped int
	reader := make(chan struct{})
	go func() { // reads while the queries go out: the socket buffer is small
		defer close(reader)
		buf := make([]byte, 65536)
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for answered+slipped < queries-(queries-burst)/2 {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			var r dns.Msg
			if r.Unpack(buf[:n]) != nil {
				continue
			}
			if r.Truncated && len(r.Answer) == 0 {
				slipped++
			} else {
				answered++
			}
		}
	}()
	for sent := 0; sent < queries; {
		for range 25 { // a few at a time, so that none is lost in the server's socket buffer
			q := new(dns.Msg)
			q.SetQuestion("www.cdn.lab.", dns.TypeA)
			q.Id = uint16(sent)
			wire, _ := q.Pack()
			conn.Write(wire)
			sent++
		}
		poll.Until(t, fmt.Sprintf("the server to take %d queries", sent), func() bool {
			return counter(t, s, "geodns_queries_total") >= float64(sent)
		})
	}
	<-reader
	if answered != burst || slipped != (queries-burst)/2 {
		t.Errorf("%d queries from 127.0.0.1: %d answered, %d slipped; want %d and %d", queries, answered, slipped, burst, (queries-burst)/2)
	}
	if got := counter(t, s, "geodns_rate_limited_total", "action", "drop"); got != (queries-burst)/2 {
		t.Errorf("geodns_rate_limited_total{action=drop} = %v, want %d", got, (queries-burst)/2)
	}
	if r := query(t, s, "tcp", "www.cdn.lab.", dns.TypeA, ""); len(r.Answer) != 1 {
		t.Errorf("over TCP while limited: %v, want the answer", r.Answer)
	}
}

// TestRateLimitConfig: what each rate_limit gives, and the errors that
// name the field.
func TestRateLimitConfig(t *testing.T) {
	for _, tt := range []struct {
		name              string
		in                RateLimit
		rate, burst, slip float64 // all zero: no limit
	}{
		{"default", RateLimit{}, 20, 100, 2},
		{"negative is off", RateLimit{ResponsesPerSecond: -1}, 0, 0, 0},
		{"rate only: five seconds' burst", RateLimit{ResponsesPerSecond: 50}, 50, 250, 2},
		{"tiny rate: burst at least 1", RateLimit{ResponsesPerSecond: 0.01}, 0.01, 1, 2},
		{"all set", RateLimit{ResponsesPerSecond: 5, Burst: 7, Slip: 1}, 5, 7, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newRRL(tt.in)
			var rate, burst, slip float64
			if l != nil {
				rate, burst, slip = l.rate, l.burst, float64(l.slip)
			}
			if rate != tt.rate || burst != tt.burst || slip != tt.slip {
				t.Errorf("newRRL(%+v) = rate %v burst %v slip %v, want %v %v %v", tt.in, rate, burst, slip, tt.rate, tt.burst, tt.slip)
			}
		})
	}
	for yaml, want := range map[string]string{
		"{responses_per_second: .nan}": "rate_limit.responses_per_second",
		"{responses_per_second: .inf}": "rate_limit.responses_per_second",
		"{burst: -1}":                  "rate_limit.burst",
		"{slip: -2}":                   "rate_limit.slip",
	} {
		_, err := ParseConfig([]byte(strings.Replace(fmt.Sprintf(labConfig, "x"), "{responses_per_second: -1}", yaml, 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("rate_limit: %s: error %v, want one naming %s", yaml, err, want)
		}
	}
}

// TestLabClientsNeverLimited: with the lab's configuration, the clients
// of one region, each behind Docker's resolver (one address per
// container, one /24 per region), are never limited while resolving a few
// names a second, after a browser's first page.
func TestLabClientsNeverLimited(t *testing.T) {
	cfg, err := LoadConfig("../compose/lab/geodns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := newRRL(cfg.RateLimit)
	if l == nil {
		return // no limit at all
	}
	now := time.Now()
	l.now = func() time.Time { return now }
	client, browser := netip.MustParseAddr("10.77.2.100"), netip.MustParseAddr("10.77.2.101")
	ask := func(who string, n int) {
		a := client
		if who == "browser" {
			a = browser
		}
		for range n {
			if v := l.check(a); v != send {
				t.Fatalf("%s at %v: verdict %d, want every response sent", who, now, v)
			}
		}
	}
	ask("browser", 40) // first page: a dozen names, A, AAAA and HTTPS each
	for range 600 {    // ten minutes
		ask("client", 8)  // 4 names a second, A and AAAA
		ask("browser", 6) // 2 names a second, A, AAAA and HTTPS
		now = now.Add(time.Second)
	}
}
