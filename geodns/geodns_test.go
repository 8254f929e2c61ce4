package geodns

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// labConfig is the tests' configuration. Rate limiting is off: tests ask
// from 127.0.0.1 in bursts (TestRateLimitOnByDefault turns it back on).
const labConfig = `
listen: 127.0.0.1:0
admin: 127.0.0.1:0
ttl: 20
answers: 1
rate_limit: {responses_per_second: -1}
zones:
  - origin: cdn.lab.
    ns: [ns1.cdn.lab.]
    records: |
      ns1     60 IN A     10.77.0.53
      origin  60 IN A     10.77.1.10
      alias   60 IN CNAME www
      static  60 IN A     10.77.9.9
      deep.empty.nonterminal 60 IN TXT "x"
      big     60 IN TXT   "%s"
    geo:
      - name: www
pops:
  - {name: pop-na, a: [10.77.1.20], aaaa: ["fd77:1::20"], region: na, lat: 40.7, lon: -74.0}
  - {name: pop-eu, a: [10.77.2.20], aaaa: ["fd77:2::20"], region: eu, lat: 50.1, lon: 8.7}
  - {name: pop-ap, a: [10.77.3.20], aaaa: ["fd77:3::20"], region: ap, lat: 1.35, lon: 103.8}
locator:
  networks:
    - {prefix: 10.77.1.0/24, region: na}
    - {prefix: 10.77.2.0/24, region: eu}
    - {prefix: 10.77.3.0/24, region: ap}
    - {prefix: 127.0.0.0/8, region: eu}
    - {prefix: 192.0.2.0/24, lat: 35.7, lon: 139.7}
  regions:
    na: {lat: 40.7, lon: -74.0}
    eu: {lat: 50.1, lon: 8.7}
    ap: {lat: 1.35, lon: 103.8}
`

func bigTXT() string {
	return strings.Repeat("a", 250) + `" "` + strings.Repeat("b", 250) + `" "` + strings.Repeat("c", 250)
}

// startServer serves yaml, changed by edit, on loopback until the test ends.
func startServer(t *testing.T, yaml string, edit func(*Config)) *Server {
	t.Helper()
	s := newServer(t, yaml, edit)
	serve(t, s)
	return s
}

// newServer builds and binds a server without serving: a test may set its
// clock before serve.
func newServer(t *testing.T, yaml string, edit func(*Config)) *Server {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	return s
}

// serve serves s until the test ends.
func serve(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
}

func query(t *testing.T, s *Server, network, name string, qtype uint16, ecs string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if ecs != "" {
		m.SetEdns0(1232, false)
		_, ipnet, _ := net.ParseCIDR(ecs)
		bits, _ := ipnet.Mask.Size()
		e := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(bits), Address: ipnet.IP.To4()}
		if ipnet.IP.To4() == nil {
			e.Family, e.Address = 2, ipnet.IP
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, e)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, s.Addr().String())
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func answerIPs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	return out
}

func ecsScope(m *dns.Msg) int {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_SUBNET); ok {
				return int(e.SourceScope)
			}
		}
	}
	return -1
}

func TestGeoRouting(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	tests := []struct {
		name  string
		ecs   string
		qtype uint16
		want  string
		scope int
	}{
		{"na subnet", "10.77.1.0/24", dns.TypeA, "10.77.1.20", 24},
		{"eu client address", "10.77.2.100/32", dns.TypeA, "10.77.2.20", 24},
		{"ap subnet", "10.77.3.0/24", dns.TypeA, "10.77.3.20", 24},
		// Unlocated: every PoP is equally good, and one of them answers.
		{"coarser source than network", "10.77.0.0/16", dns.TypeA, "any", 0},
		{"coordinates nearest (Tokyo -> Singapore)", "192.0.2.0/24", dns.TypeA, "10.77.3.20", 24},
		{"AAAA", "10.77.2.0/24", dns.TypeAAAA, "fd77:2::20", 24},
		{"no ECS: source 127.0.0.1 is eu", "", dns.TypeA, "10.77.2.20", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := query(t, s, "udp", "www.cdn.lab.", tt.qtype, tt.ecs)
			if got := answerIPs(r); len(got) != 1 || (got[0] != tt.want && !(tt.want == "any" && strings.HasPrefix(got[0], "10.77."))) {
				t.Errorf("answers = %v, want [%s]", got, tt.want)
			}
			if !r.Authoritative || r.Answer[0].Header().Ttl != 20 {
				t.Errorf("AA %v TTL %d, want AA and TTL 20", r.Authoritative, r.Answer[0].Header().Ttl)
			}
			if got := ecsScope(r); got != tt.scope {
				t.Errorf("ECS scope = %d, want %d", got, tt.scope)
			}
		})
	}
}

func TestStaticAnswersAndNegatives(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	r := query(t, s, "udp", "origin.cdn.lab.", dns.TypeA, "10.77.1.0/24")
	if got := answerIPs(r); len(got) != 1 || got[0] != "10.77.1.10" || ecsScope(r) != 0 {
		t.Errorf("static A = %v scope %d, want 10.77.1.10 with scope 0", got, ecsScope(r))
	}
	r = query(t, s, "udp", "alias.cdn.lab.", dns.TypeA, "10.77.3.0/24")
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Errorf("CNAME to a geo name: %v", r.Answer)
	}
	for _, tt := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"nope.cdn.lab.", dns.TypeA, dns.RcodeNameError},
		{"static.cdn.lab.", dns.TypeTXT, dns.RcodeSuccess},
		{"www.cdn.lab.", dns.TypeTXT, dns.RcodeSuccess},
		{"empty.nonterminal.cdn.lab.", dns.TypeA, dns.RcodeSuccess},
	} {
		r := query(t, s, "udp", tt.name, tt.qtype, "")
		if r.Rcode != tt.rcode || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || !r.Authoritative {
			t.Errorf("%s %s: rcode %s, %d answers, authority %v; want %s with the SOA",
				tt.name, dns.TypeToString[tt.qtype], dns.RcodeToString[r.Rcode], len(r.Answer), r.Ns, dns.RcodeToString[tt.rcode])
		}
	}
	r = query(t, s, "udp", "www.cdn.lab.", dns.TypeANY, "")
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeHINFO {
		t.Errorf("ANY = %v, want one HINFO (RFC 8482)", r.Answer)
	}
}

func TestTruncationThenTCP(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	m := new(dns.Msg)
	m.SetQuestion("big.cdn.lab.", dns.TypeTXT) // no EDNS: 512 bytes
	r, _, err := (&dns.Client{Net: "udp"}).Exchange(m, s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Errorf("750-byte TXT over UDP without EDNS: TC not set (%d answers)", len(r.Answer))
	}
	r = query(t, s, "tcp", "big.cdn.lab.", dns.TypeTXT, "")
	if r.Truncated || len(r.Answer) != 1 {
		t.Errorf("over TCP: TC %v, %d answers; want the full record", r.Truncated, len(r.Answer))
	}
}

func TestFailover(t *testing.T) {
	var euUp atomic.Bool
	euUp.Store(true)
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if euUp.Load() {
			w.Write([]byte("ready"))
			return
		}
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer ready.Close()
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.PoPs[1].Check = Check{URL: ready.URL + "/readyz", Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 2}
	})
	eu := func() string {
		return strings.Join(answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24")), ",")
	}
	poll.Until(t, "pop-eu's first check", func() bool { return eu() == "10.77.2.20" })
	euUp.Store(false)
	start := time.Now()
	poll.Until(t, "pop-eu to leave the answers", func() bool { return eu() != "10.77.2.20" })
	t.Logf("pop-eu left the answers after %v (interval 20ms x fall 2)", time.Since(start))
	if got := eu(); got != "10.77.1.20" {
		t.Errorf("eu client with pop-eu down = %s, want the next nearest, pop-na", got)
	}
	euUp.Store(true)
	poll.Until(t, "pop-eu to come back", func() bool { return eu() == "10.77.2.20" })
}

// A PoP whose first health check has not answered is never handed out,
// not even by fail-open; with no PoP checked yet the answer is SERVFAIL.
func TestUncheckedPoPNeverAnswered(t *testing.T) {
	release := make(chan struct{})
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			w.Write([]byte("ready"))
		case <-r.Context().Done():
		}
	}))
	defer ready.Close()
	defer close(release)
	check := Check{URL: ready.URL + "/readyz", Interval: 20 * time.Millisecond, Timeout: 5 * time.Second}
	t.Run("one unchecked", func(t *testing.T) {
		s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) { c.PoPs[1].Check = check })
		for range 20 {
			if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24")); strings.Join(got, ",") != "10.77.1.20" {
				t.Fatalf("eu client while pop-eu's first check is pending = %v, want pop-na (10.77.1.20)", got)
			}
		}
	})
	t.Run("none checked", func(t *testing.T) {
		s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
			for i := range c.PoPs {
				c.PoPs[i].Check = check
			}
		})
		if r := query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24"); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
			t.Errorf("no PoP checked yet: rcode %s, answers %v; want SERVFAIL and none", dns.RcodeToString[r.Rcode], answerIPs(r))
		}
	})
}

func TestFailOpenWhenAllDown(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		for i := range c.PoPs {
			c.PoPs[i].Check = Check{TCP: "127.0.0.1:1", Interval: 10 * time.Millisecond, Fall: 1}
		}
		c.Answers = 3
	})
	poll.Until(t, "all PoPs to be marked down", func() bool {
		for _, p := range s.state.Load().pops {
			if p.healthy.Load() || !p.seen.Load() {
				return false
			}
		}
		return true
	})
	if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.1.0/24")); len(got) != 3 {
		t.Errorf("every PoP down: answers %v, want all three (fail open)", got)
	}
}

func TestForwarding(t *testing.T) {
	upPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: upPC, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go up.ActivateAndServe()
	<-started
	defer up.Shutdown()
	for _, tt := range []struct {
		name  string
		allow []string
		ups   []string
		rcode int
	}{
		{"allowed client", nil, []string{upPC.LocalAddr().String()}, dns.RcodeSuccess},
		{"client outside the ACL", []string{"10.0.0.0/8"}, []string{upPC.LocalAddr().String()}, dns.RcodeRefused},
		{"no upstream", nil, nil, dns.RcodeRefused},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
				c.Forward = Forward{Upstreams: tt.ups, Allow: tt.allow}
			})
			r := query(t, s, "udp", "example.org.", dns.TypeA, "")
			if r.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if tt.rcode == dns.RcodeSuccess && strings.Join(answerIPs(r), ",") != "192.0.2.7" {
				t.Errorf("forwarded answer = %v", answerIPs(r))
			}
		})
	}
}

func TestMalformedECSIsFORMERR(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.lab.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 77, 1, 0).To4()})
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	// The ECS option ends the packet: family(2) netmask(1) scope(1) addr(3).
	// Make the family IPv4 with a /40 and then an unknown family: both
	// disagree with their address; then a /8 over 10.77.1: address bits
	// set past the prefix (RFC 7871 6).
	for _, patch := range []struct{ family, bits byte }{{1, 40}, {3, 24}, {1, 8}} {
		bad := append([]byte(nil), wire...)
		bad[len(bad)-6], bad[len(bad)-5] = patch.family, patch.bits
		conn, err := net.Dial("udp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(bad)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		conn.Close()
		if err != nil {
			t.Fatalf("family %d /%d: no reply: %v", patch.family, patch.bits, err)
		}
		var r dns.Msg
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatalf("unparsable reply: %v", err)
		}
		if r.Rcode != dns.RcodeFormatError {
			t.Errorf("ECS family %d with /%d: rcode %s, want FORMERR", patch.family, patch.bits, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestConfigErrorsNameFields(t *testing.T) {
	bad := `
listen: 127.0.0.1:0
zones:
  - origin: "bad..name"
    ns: []
  - origin: cdn.lab.
    ns: [ns1.cdn.lab.]
    geo: [{name: www, pops: [pop-mars]}]
pops:
  - {name: pop-na, a: [not-an-ip]}
locator:
  networks: [{prefix: 10.0.0.0/33}]
forward:
  allow: [nonsense]
udp_hold: 2ms
`
	_, err := ParseConfig([]byte(bad))
	for _, want := range []string{"zones[0].origin", "zones[1].geo[0].pops[0]", "pops[0].a[0]", "locator.networks[0].prefix", "forward.allow[0]", "udp_hold: 2ms, want at most 1ms"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig = %v, want it to name %s", err, want)
		}
	}
	if _, err := ParseConfig([]byte("listen: x\nlisen: y\n")); err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Errorf("unknown field: %v", err)
	}
}

// TestPoPLocation: a PoP without coordinates is placed at its region's;
// one with neither is refused, naming the field.
func TestPoPLocation(t *testing.T) {
	base := `
listen: 127.0.0.1:0
zones: [{origin: cdn.lab., ns: [ns1.cdn.lab.], geo: [{name: www}]}]
locator:
  regions:
    na: {lat: 40.7, lon: -74.0}
    ap: {lat: 1.35, lon: 103.8}
    nowhere: {pops: [pop-x]}
pops:
`
	for _, tt := range []struct {
		name, pop, want string // want "" means accepted
	}{
		{"own coordinates", `{name: pop-x, a: [10.0.0.1], lat: 50.1, lon: 8.7}`, ""},
		{"region's coordinates", `{name: pop-x, a: [10.0.0.1], region: ap}`, ""},
		{"nothing", `{name: pop-x, a: [10.0.0.1]}`, "pops[0] (pop-x): no location, want lat and lon"},
		{"undefined region", `{name: pop-x, a: [10.0.0.1], region: mars}`, `pops[0].region: "mars" is not defined under locator.regions`},
		{"region without coordinates", `{name: pop-x, a: [10.0.0.1], region: nowhere}`, "pops[0].region: locator.regions.nowhere has no lat and lon"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(base + "  - " + tt.pop + "\n"))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ParseConfig(%s) = %v, want it accepted", tt.pop, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ParseConfig(%s) = %v, want an error containing %q", tt.pop, err, tt.want)
			}
		})
	}

	// Distance uses the region's coordinates: every client goes to the
	// PoP of its own region, whichever is listed first.
	s := startServer(t, `
listen: 127.0.0.1:0
rate_limit: {responses_per_second: -1}
zones: [{origin: cdn.lab., ns: [ns1.cdn.lab.], geo: [{name: www}]}]
pops:
  - {name: pop-na, a: [10.77.1.20], region: na}
  - {name: pop-eu, a: [10.77.2.20], region: eu}
  - {name: pop-ap, a: [10.77.3.20], region: ap}
locator:
  networks:
    - {prefix: 10.77.1.0/24, region: na}
    - {prefix: 10.77.2.0/24, region: eu}
    - {prefix: 10.77.3.0/24, region: ap}
    - {prefix: 192.0.2.0/24, lat: 35.7, lon: 139.7}
  regions:
    na: {lat: 40.7, lon: -74.0}
    eu: {lat: 50.1, lon: 8.7}
    ap: {lat: 1.35, lon: 103.8}
`, nil)
	for ecs, want := range map[string]string{"10.77.1.0/24": "10.77.1.20", "10.77.2.0/24": "10.77.2.20", "10.77.3.0/24": "10.77.3.20", "192.0.2.0/24": "10.77.3.20"} {
		if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, ecs)); len(got) != 1 || got[0] != want {
			t.Errorf("www A from %s = %v, want %s", ecs, got, want)
		}
	}
}

func TestReloadSwapsPoPs(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	cfg, _ := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
	cfg.PoPs[1].A = []string{"10.77.2.21"}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24")); len(got) != 1 || got[0] != "10.77.2.21" {
		t.Errorf("after reload: %v, want the new pop-eu address", got)
	}
	bad := cfg
	bad.Zones = nil
	if err := s.Reload(bad); err == nil {
		t.Errorf("Reload(bad) = nil, want an error")
	}
	if got := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24")); len(got) != 1 || got[0] != "10.77.2.21" {
		t.Errorf("after a failed reload: %v, want the running config kept", got)
	}
}

func FuzzQueryBytes(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.lab.", dns.TypeA)
	seed, _ := m.Pack()
	f.Add(seed)
	f.Add([]byte{0, 1, 2})
	f.Add(make([]byte, 12))
	f.Add([]byte("0000000000000")) // opcode 6 and 12336 questions: NOTIMP
	cfg, err := ParseConfig([]byte(fmt.Sprintf(labConfig, "x")))
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		f.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	f.Fuzz(func(t *testing.T, data []byte) {
		conn, err := net.Dial("udp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(data)
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		if err != nil {
			return // no answer is allowed
		}
		var r dns.Msg
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatalf("server sent an unparsable reply to %x", data)
		}
		if n > maxUDPSize {
			t.Fatalf("%d-byte UDP reply to %x, want at most %d", n, data, maxUDPSize)
		}
		var q dns.Msg
		// An opcode other than QUERY and NOTIFY is NOTIMP from the header
		// alone (RFC 1035 4.1.1), before the rest is read; a reply means a
		// whole header came.
		opcode := int(data[2]>>3) & 0xf
		notImp := opcode != dns.OpcodeQuery && opcode != dns.OpcodeNotify && r.Rcode == dns.RcodeNotImplemented
		if q.Unpack(data) != nil && r.Rcode != dns.RcodeFormatError && !notImp {
			t.Fatalf("unparsable query %x got rcode %s, want FORMERR", data, dns.RcodeToString[r.Rcode])
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(labConfig, "x")))
	f.Add([]byte("zones: [{origin: a., ns: [b.], records: 'x IN A 1.2.3.4'}]\nlisten: :1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if _, err := compile(cfg); err != nil {
			t.Fatalf("a config that validates fails to compile: %v", err)
		}
	})
}

func TestLocalConfigParses(t *testing.T) {
	cfg, err := LoadConfig("testdata/local.yaml")
	if err != nil {
		t.Fatalf("testdata/local.yaml: %v", err)
	}
	if _, err := compile(cfg); err != nil {
		t.Fatalf("compile: %v", err)
	}
}

func TestResponseRateLimitingSlips(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.RateLimit = RateLimit{ResponsesPerSecond: 0.001, Burst: 3, Slip: 2}
	})
	var answered, slipped, dropped int
	for range 12 {
		m := new(dns.Msg)
		m.SetQuestion("www.cdn.lab.", dns.TypeA)
		r, _, err := (&dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}).Exchange(m, s.Addr().String())
		switch {
		case err != nil:
			dropped++
		case r.Truncated && len(r.Answer) == 0:
			slipped++
		default:
			answered++
		}
	}
	if answered != 3 || slipped == 0 || dropped == 0 {
		t.Errorf("12 queries from one prefix, burst 3, slip 2: answered %d, slipped %d, dropped %d", answered, slipped, dropped)
	}
	// TCP is not limited: a limited client gets its answer there.
	if r := query(t, s, "tcp", "www.cdn.lab.", dns.TypeA, ""); len(r.Answer) != 1 {
		t.Errorf("over TCP while limited: %v", r.Answer)
	}
}

func TestDNSBenchConfigMapping(t *testing.T) {
	cfg, err := LoadConfig("testdata/dnsbench.yaml")
	if err != nil {
		t.Fatalf("testdata/dnsbench.yaml: %v", err)
	}
	cfg.Listen = "127.0.0.1:0"
	for i := range cfg.PoPs {
		cfg.PoPs[i].Check = Check{} // the harness's health endpoints are not running here
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	for ecs, want := range map[string]string{"10.1.0.0/24": "127.0.1.1", "10.2.0.0/24": "127.0.2.1", "10.3.0.0/24": "127.0.3.1",
		"10.4.0.0/24": "127.0.3.1", "10.5.0.0/24": "127.0.2.1", "2001:db8:101::/56": "127.0.1.1"} {
		r := query(t, s, "udp", "www.cdn.lab.", dns.TypeA, ecs)
		if got := answerIPs(r); len(got) != 1 || got[0] != want {
			t.Errorf("ECS %s: %v, want %s", ecs, got, want)
		}
	}
}

// TestCountsThatLieAreFORMERR: queries miekg/dns alone would read
// leniently (a question cut after its name, an additional record the
// header counts but the message lacks, a record cut inside its data) get
// FORMERR with their ID over UDP and TCP, and a good query with an OPT
// record is still answered.
func TestCountsThatLieAreFORMERR(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), nil)
	good := new(dns.Msg)
	good.SetQuestion("www.cdn.lab.", dns.TypeA)
	good.SetEdns0(1232, false)
	wire, err := good.Pack()
	if err != nil {
		t.Fatal(err)
	}
	nameEnd := 12 + len("www.cdn.lab.") + 1
	header := func(id uint16, ar byte) []byte {
		return []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, ar}
	}
	question := wire[12 : nameEnd+4]
	cases := []struct {
		name string
		msg  []byte
	}{
		{"question cut after its name", append(header(0x1001, 0), wire[12:nameEnd]...)},
		{"question cut inside its class", append(header(0x1002, 0), wire[12:nameEnd+3]...)},
		{"additional record counted, absent", append(header(0x1003, 1), question...)},
		{"record cut inside its data", append(append(header(0x1004, 1), question...), 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 4, 0, 8)},
	}
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: 2 * time.Second}
		conn, err := c.Dial(s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write(tc.msg); err != nil {
				t.Fatal(err)
			}
			raw, err := conn.ReadMsgHeader(nil)
			if err != nil {
				t.Errorf("%s %s: no answer: %v", network, tc.name, err)
				continue
			}
			var r dns.Msg
			if err := r.Unpack(raw); err != nil {
				t.Fatalf("%s %s: unparsable reply: %v", network, tc.name, err)
			}
			if id := uint16(tc.msg[0])<<8 | uint16(tc.msg[1]); r.Rcode != dns.RcodeFormatError || r.Id != id {
				t.Errorf("%s %s: rcode %s id %#x, want FORMERR for id %#x", network, tc.name, dns.RcodeToString[r.Rcode], r.Id, id)
			}
		}
		r, _, err := c.ExchangeWithConn(good, conn)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s good query after the broken ones: %v %v", network, r, err)
		}
		conn.Close()
	}
}

// The forwarder retries a truncated answer over TCP, answers repeats from
// its cache, and says SERVFAIL when its upstream is unreachable.
func TestForwardTCPCacheAndUnreachable(t *testing.T) {
	var udpQueries, tcpQueries atomic.Int64
	handler := func(counter *atomic.Int64, truncate bool) dns.HandlerFunc {
		return func(w dns.ResponseWriter, q *dns.Msg) {
			counter.Add(1)
			m := new(dns.Msg)
			m.SetReply(q)
			if truncate {
				m.Truncated = true
			} else {
				for i := range 3 {
					m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, byte(10+i))})
				}
			}
			w.WriteMsg(m)
		}
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	udpSrv := &dns.Server{PacketConn: pc, Handler: handler(&udpQueries, true)}
	tcpSrv := &dns.Server{Listener: ln, Handler: handler(&tcpQueries, false)}
	for _, srv := range []*dns.Server{udpSrv, tcpSrv} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		defer srv.Shutdown()
	}
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.Forward = Forward{Upstreams: []string{pc.LocalAddr().String()}}
	})
	for i := range 3 {
		r := query(t, s, "udp", "example.org.", dns.TypeA, "")
		if got := strings.Join(answerIPs(r), ","); got != "192.0.2.10,192.0.2.11,192.0.2.12" {
			t.Fatalf("query %d: forwarded answer = %q, want the three records the upstream gives over TCP", i, got)
		}
	}
	if u, c := udpQueries.Load(), tcpQueries.Load(); u != 1 || c != 1 {
		t.Errorf("upstream saw %d UDP and %d TCP queries for three identical questions; want 1 and 1 (TC retried over TCP, repeats from the cache)", u, c)
	}

	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close() // nothing listens: the upstream is unreachable (ICMP port unreachable)
	s2 := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.Forward = Forward{Upstreams: []string{deadAddr}}
	})
	if r := query(t, s2, "udp", "example.org.", dns.TypeA, ""); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("unreachable upstream: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}

	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("# docker\nnameserver 127.0.0.11\noptions ndots:0\n"), 0o644)
	f, err := newForwarder(Forward{ResolvConf: resolv, Upstreams: []string{"10.77.0.53:53"}}, "10.77.0.53:53")
	if err != nil || strings.Join(f.upstreams, ",") != "127.0.0.11:53" {
		t.Errorf("resolv_conf upstreams = %v, %v; want [127.0.0.11:53] (the server's own address left out)", f.upstreams, err)
	}
	if _, err := newForwarder(Forward{ResolvConf: filepath.Join(t.TempDir(), "missing")}, ""); err == nil || !strings.Contains(err.Error(), "forward.resolv_conf") {
		t.Errorf("missing resolv_conf: error %v, want one naming forward.resolv_conf", err)
	}
}
