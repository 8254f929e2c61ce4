package drill

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/geodns"
)

const testZone = `
listen: 127.0.0.1:0
zones:
  - origin: cdn.lab.
    ns: [ns1.cdn.lab.]
    records: |
      ns1 60 IN A 10.77.0.53
    geo:
      - name: www
pops:
  - {name: pop-na, a: [10.77.1.20], region: na, lat: 40.7, lon: -74.0}
locator:
  networks:
    - {prefix: 127.0.0.0/8, region: na}
  regions:
    na: {lat: 40.7, lon: -74.0}
`

// TestMalformedDNSQueries sends the corpus to a real GeoDNS server: each
// packet gets one of the outcomes the corpus expects, and the server
// answers a good query afterwards.
func TestMalformedDNSQueries(t *testing.T) {
	cfg, err := geodns.ParseConfig([]byte(testZone))
	if err != nil {
		t.Fatal(err)
	}
	s, err := geodns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	addr := s.Addr().String()
	for _, m := range MalformedDNSQueries("www.cdn.lab.") {
		t.Run(m.Name, func(t *testing.T) {
			conn, err := net.Dial("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := dnsOutcome(conn, m.Packet, 300*time.Millisecond); !slices.Contains(m.Want, got) {
				t.Errorf("%s: got %q, want one of %q", m.Name, got, m.Want)
			}
		})
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range RandomDNSPackets(1, 500) {
		conn.Write(p)
	}
	var d net.Dialer
	r := newResolver(addr, d.DialContext)
	ips, err := r.LookupHost(context.Background(), "www.cdn.lab")
	if err != nil || len(ips) != 1 || ips[0] != "10.77.1.20" {
		t.Errorf("LookupHost(www.cdn.lab) after the corpus = %v, %v; want [10.77.1.20]", ips, err)
	}
}

// TestHostileHTTP1 checks the corpus's shape: one request per entry for
// the given host, smuggled requests asking for /smuggled.
func TestHostileHTTP1(t *testing.T) {
	corpus := HostileHTTP1("www.cdn.lab")
	names := map[string]bool{}
	for _, h := range corpus {
		if names[h.Name] {
			t.Errorf("duplicate name %q", h.Name)
		}
		names[h.Name] = true
		if strings.Contains(h.Name, "smuggle") && !strings.Contains(h.Raw, "/smuggled") {
			t.Errorf("%q smuggles nothing the origin's log would show", h.Name)
		}
	}
	if len(corpus) < 19 {
		t.Errorf("%d requests, want at least 19", len(corpus))
	}
}
