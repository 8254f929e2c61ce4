package geodns

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// httpsView is what an HTTPS record says, for comparing with A and AAAA.
type httpsView struct {
	priority uint16
	target   string
	alpn     []string
	port     int // 0 when absent
	v4, v6   []string
	other    []string // keys we do not send
}

func viewHTTPS(t *testing.T, rr dns.RR) httpsView {
	t.Helper()
	h, ok := rr.(*dns.HTTPS)
	if !ok {
		t.Fatalf("answer %v is not HTTPS", rr)
	}
	v := httpsView{priority: h.Priority, target: h.Target}
	for _, kv := range h.Value {
		switch kv := kv.(type) {
		case *dns.SVCBAlpn:
			v.alpn = kv.Alpn
		case *dns.SVCBPort:
			v.port = int(kv.Port)
		case *dns.SVCBIPv4Hint:
			for _, ip := range kv.Hint {
				v.v4 = append(v.v4, ip.String())
			}
		case *dns.SVCBIPv6Hint:
			for _, ip := range kv.Hint {
				v.v6 = append(v.v6, ip.String())
			}
		default:
			v.other = append(v.other, kv.Key().String())
		}
	}
	return v
}

// TestHTTPSRecordsMatchA asks A, AAAA and HTTPS for several client
// subnets over UDP and TCP: the HTTPS record is ServiceMode for the name
// itself, alpn="h3,h2", port= only where the PoP's is not 443, and hints
// that are exactly the A and AAAA answers, with the same ECS scope.
func TestHTTPSRecordsMatchA(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, "x"), func(c *Config) { c.PoPs[1].HTTPSPort = 8443 }) // pop-eu
	ports := map[string]int{"10.77.2.20": 8443}
	for _, network := range []string{"udp", "tcp"} {
		for _, ecs := range []string{"10.77.1.0/24", "10.77.2.0/24", "10.77.3.0/24", "192.0.2.0/24", "198.51.100.0/24", "fd77:3::/48", ""} {
			t.Run(network+"/"+ecs, func(t *testing.T) {
				a := query(t, s, network, "www.cdn.lab.", dns.TypeA, ecs)
				aaaa := query(t, s, network, "www.cdn.lab.", dns.TypeAAAA, ecs)
				r := query(t, s, network, "www.cdn.lab.", dns.TypeHTTPS, ecs)
				if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
					t.Fatalf("www HTTPS = %s aa=%v %v, want one authoritative record", dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer)
				}
				v := viewHTTPS(t, r.Answer[0])
				wantV4, wantV6 := answerIPs(a), answerIPs(aaaa)
				if len(wantV4) != 1 {
					t.Fatalf("www A = %v, want one address", wantV4)
				}
				want := httpsView{priority: 1, target: ".", alpn: []string{"h3", "h2"}, port: ports[wantV4[0]], v4: wantV4, v6: wantV6}
				if v.priority != want.priority || v.target != want.target || !slices.Equal(v.alpn, want.alpn) || v.port != want.port ||
					!slices.Equal(v.v4, want.v4) || !slices.Equal(v.v6, want.v6) || len(v.other) > 0 {
					t.Errorf("www HTTPS = %+v, want %+v (from the A and AAAA answers)", v, want)
				}
				if r.Answer[0].Header().Ttl != a.Answer[0].Header().Ttl {
					t.Errorf("www HTTPS TTL %d, A TTL %d", r.Answer[0].Header().Ttl, a.Answer[0].Header().Ttl)
				}
				if ecsScope(r) != ecsScope(a) {
					t.Errorf("www HTTPS ECS scope /%d, A /%d", ecsScope(r), ecsScope(a))
				}
			})
		}
	}
}

// TestHTTPSRecordsSeveralPoPs: with answers: 2, one record per PoP of the
// A answer, in its order, priority 1 then 2.
func TestHTTPSRecordsSeveralPoPs(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, "x"), func(c *Config) { c.Answers = 2 })
	for _, ecs := range []string{"10.77.1.0/24", "10.77.3.0/24"} {
		a := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, ecs))
		r := query(t, s, "udp", "www.cdn.lab.", dns.TypeHTTPS, ecs)
		var hints []string
		for i, rr := range r.Answer {
			v := viewHTTPS(t, rr)
			if v.priority != uint16(i+1) {
				t.Errorf("ECS %s: record %d has priority %d, want %d", ecs, i, v.priority, i+1)
			}
			hints = append(hints, v.v4...)
		}
		if len(a) != 2 || !slices.Equal(hints, a) {
			t.Errorf("ECS %s: HTTPS ipv4hints %v, want the A answer %v in its order", ecs, hints, a)
		}
	}
}

// TestHTTPSNegativeAndRefused: names without PoP records answer HTTPS
// with NODATA (or NXDOMAIN where the name does not exist), names outside
// the zones are REFUSED, and no PoP checked yet is SERVFAIL, as for A.
func TestHTTPSNegativeAndRefused(t *testing.T) {
	s := startServer(t, fmt.Sprintf(labConfig, "x"), nil)
	for _, tt := range []struct {
		name  string
		rcode int
		soa   bool
	}{
		{"static.cdn.lab.", dns.RcodeSuccess, true},
		{"cdn.lab.", dns.RcodeSuccess, true},
		{"empty.nonterminal.cdn.lab.", dns.RcodeSuccess, true},
		{"nope.cdn.lab.", dns.RcodeNameError, true},
		{"www.example.org.", dns.RcodeRefused, false},
	} {
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, s, network, tt.name, dns.TypeHTTPS, "10.77.3.0/24")
			gotSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if r.Rcode != tt.rcode || len(r.Answer) != 0 || gotSOA != tt.soa {
				t.Errorf("%s %s HTTPS = %s answer %v ns %v, want %s with no answer (SOA %v)", network, tt.name, dns.RcodeToString[r.Rcode], r.Answer, r.Ns, dns.RcodeToString[tt.rcode], tt.soa)
			}
		}
	}

	// A geo name without PoPs: NODATA.
	empty := startServer(t, `
listen: 127.0.0.1:0
rate_limit: {responses_per_second: -1}
zones: [{origin: cdn.lab., ns: [ns1.cdn.lab.], geo: [{name: www}]}]
`, nil)
	if r := query(t, empty, "udp", "www.cdn.lab.", dns.TypeHTTPS, ""); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("www HTTPS without PoPs = %s %v %v, want NODATA", dns.RcodeToString[r.Rcode], r.Answer, r.Ns)
	}

	// Not checked yet: SERVFAIL, as for A.
	release := make(chan struct{})
	pending := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer pending.Close()
	defer close(release)
	unchecked := startServer(t, fmt.Sprintf(labConfig, "x"), func(c *Config) {
		for i := range c.PoPs {
			c.PoPs[i].Check = Check{URL: pending.URL + "/readyz", Interval: time.Hour, Timeout: 5 * time.Second}
		}
	})
	for _, qtype := range []uint16{dns.TypeA, dns.TypeHTTPS} {
		if r := query(t, unchecked, "udp", "www.cdn.lab.", qtype, ""); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("www %s before any check = %s, want SERVFAIL", dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
		}
	}
}

// TestHTTPSWithDig asks with dig, both as HTTPS and as TYPE65, and checks
// that dig reads the record the A answer implies.
func TestHTTPSWithDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatal("dig is not installed (apt-get install dnsutils)")
		}
		t.Skip("dig is not installed")
	}
	s := startServer(t, fmt.Sprintf(labConfig, "x"), func(c *Config) { c.PoPs[2].HTTPSPort = 8443 }) // pop-ap
	host, port, _ := net.SplitHostPort(s.Addr().String())
	for _, tt := range []struct{ subnet, want string }{
		{"10.77.1.0/24", `1 . alpn="h3,h2" ipv4hint=10.77.1.20 ipv6hint=fd77:1::20`},
		{"10.77.3.0/24", `1 . alpn="h3,h2" port=8443 ipv4hint=10.77.3.20 ipv6hint=fd77:3::20`},
	} {
		a := answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, tt.subnet))
		if len(a) != 1 || !strings.Contains(tt.want, "ipv4hint="+a[0]+" ") {
			t.Fatalf("www A from %s = %v, want the address of %q", tt.subnet, a, tt.want)
		}
		for _, qtype := range []string{"HTTPS", "TYPE65"} {
			for _, tcp := range []string{"+notcp", "+tcp"} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				args := []string{"@" + host, "-p", port, "+short", tcp, "-t", qtype, "www.cdn.lab", "+subnet=" + tt.subnet}
				out, err := exec.CommandContext(ctx, "dig", args...).CombinedOutput()
				cancel()
				if err != nil {
					t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				if got := strings.TrimSpace(string(out)); got != tt.want {
					t.Errorf("dig %s = %q, want %q", strings.Join(args, " "), got, tt.want)
				}
			}
		}
	}
}
