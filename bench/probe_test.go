package bench_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/geodns"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
)

// serverCounts reads the PoP's count of TLS handshakes (resumed or full) and
// early-data requests from its metrics.
func serverCounts(t *testing.T, p *pop.Server) (full, resumed, early int) {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := func(re string) int {
		n := 0
		for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(string(b), -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			n += int(v)
		}
		return n
	}
	return sum(`pop_tls_handshakes_total\{resumed="false",transport="\w+"\} (\S+)`),
		sum(`pop_tls_handshakes_total\{resumed="true",transport="\w+"\} (\S+)`),
		sum(`pop_early_data_requests_total\{result="accepted"\} (\S+)`)
}

func TestModesDifferOnTheWire(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	_, port, _ := net.SplitHostPort(p.Addr().String())
	url := "https://localhost:" + port + "/gen/1k"
	const n = 4
	for _, tc := range []struct {
		proto, mode             string
		full, resumed, earlyMin int // what the server must see for the n measured requests
	}{
		{bench.H1, bench.Cold, n, 0, 0},
		{bench.H2, bench.Cold, n, 0, 0},
		{bench.H3, bench.Cold, n, 0, 0},
		{bench.H2, bench.Warm, 1, 0, 0},
		{bench.H3, bench.Warm, 1, 0, 0},
		{bench.H1, bench.Resumed, 0, n, 0},
		{bench.H3, bench.Resumed, 0, n, 0},
		{bench.H3, bench.ZeroRTT, 0, n, 1},
	} {
		t.Run(tc.proto+"/"+tc.mode, func(t *testing.T) {
			cfg := bench.ProbeConfig{Proto: tc.proto, Mode: tc.mode, N: n, RootCAs: ca.RootPool()}
			full0, res0, early0 := serverCounts(t, p)
			// A request in 0-RTT races the handshake's completion on
			// loopback (on a busy machine the handshake may win every
			// time): up to five runs, until the server has seen early data.
			runs := 1
			if tc.mode == bench.ZeroRTT {
				runs = 5
			}
			var rs []bench.Result
			var attempts int
			for attempts = 1; attempts <= runs; attempts++ {
				var err error
				rs, err = bench.Probe(context.Background(), cfg, url)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, early := serverCounts(t, p); early-early0 >= tc.earlyMin {
					break
				}
			}
			attempts = min(attempts, runs)
			full1, res1, early1 := serverCounts(t, p)
			primed := 0
			if tc.mode == bench.Resumed || tc.mode == bench.ZeroRTT {
				primed = 1 // the unmeasured first request is a full handshake
			}
			if got := full1 - full0 - primed*attempts; got != tc.full*attempts {
				t.Errorf("server saw %d full handshakes, want %d", got, tc.full*attempts)
			}
			if got := res1 - res0; got != tc.resumed*attempts {
				t.Errorf("server saw %d resumed handshakes, want %d", got, tc.resumed*attempts)
			}
			if got := early1 - early0; got < tc.earlyMin {
				t.Errorf("server accepted %d early-data requests, want at least %d", got, tc.earlyMin)
			}
			if len(rs) != n {
				t.Fatalf("%d results, want %d", len(rs), n)
			}
			for i, r := range rs {
				if r.Error != "" || r.Status != 200 || r.Bytes != 1024 || r.Negotiated != tc.proto {
					t.Fatalf("result %d: %+v", i, r)
				}
				if r.DNSms+r.Connectms+r.TLSms > r.TTFBms+0.001 || r.TTFBms > r.Totalms+0.001 || r.TTFBms <= 0 {
					t.Errorf("result %d: phases do not add up: dns %.3f + connect %.3f + tls %.3f vs ttfb %.3f, total %.3f", i, r.DNSms, r.Connectms, r.TLSms, r.TTFBms, r.Totalms)
				}
				if r.PoP != poptest.Name || r.CacheStatus == "" {
					t.Errorf("result %d: pop %q cache status %q, want both from the PoP", i, r.PoP, r.CacheStatus)
				}
				if tc.mode == bench.Resumed && !r.Resumed {
					t.Errorf("result %d: not resumed", i)
				}
			}
		})
	}
}

func TestResolverIsUsed(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		asked.Add(1)
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA && q.Question[0].Name == "www.cdn.lab." {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "www.cdn.lab.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()
	_, port, _ := net.SplitHostPort(p.Addr().String())
	rs, err := bench.Probe(context.Background(), bench.ProbeConfig{Proto: bench.H2, Mode: bench.Cold, N: 2, RootCAs: ca.RootPool(), Resolver: pc.LocalAddr().String()}, "https://www.cdn.lab:"+port+"/gen/1k")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Error != "" || r.Status != 200 || r.DNSms <= 0 {
			t.Errorf("result %+v, want a 200 with a DNS phase", r)
		}
	}
	if asked.Load() == 0 {
		t.Errorf("the given resolver was never asked")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	in := []bench.Result{{Proto: "h3", Mode: "0rtt", URL: "https://x/", Status: 200, TTFBms: 1.5, EarlyData: true, CacheStatus: "pop; hit"}}
	var buf bytes.Buffer
	if err := bench.WriteJSON(&buf, in); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"proto", "mode", "url", "status", "dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms", "cache_status", "pop", "resumed", "early_data"} {
		if !strings.Contains(buf.String(), `"`+key+`"`) {
			t.Errorf("JSON lacks %q: %s", key, buf.String())
		}
	}
	out, err := bench.ReadJSON(&buf)
	if err != nil || len(out) != 1 || out[0] != in[0] {
		t.Errorf("ReadJSON = %+v, %v; want the same result back", out, err)
	}
	if _, err := bench.ReadJSON(strings.NewReader("{\"proto\":\"h1\",\"url\":\"u\"}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: %v, want an error naming line 2", err)
	}
	var table bytes.Buffer
	bench.WriteTable(&table, in)
	if !strings.Contains(table.String(), "ttfb") || !strings.Contains(table.String(), "early_data=true") {
		t.Errorf("table:\n%s", table.String())
	}
}

func FuzzReadJSON(f *testing.F) {
	f.Add([]byte(`{"proto":"h1","mode":"cold","url":"https://x/","status":200,"ttfb_ms":1}` + "\n"))
	f.Add([]byte("{}\n\n[]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := bench.ReadJSON(bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := bench.WriteJSON(&buf, rs); err != nil {
			t.Fatal(err)
		}
		again, err := bench.ReadJSON(&buf)
		if err != nil || len(again) != len(rs) {
			t.Fatalf("results do not survive a write and read: %v", err)
		}
	})
}

// TestFirstVisitFollowsHTTPSRecord runs both first-visit modes against a
// real geodns whose geo name answers the PoP: without the HTTPS record the
// first request is h2 over TCP, with it h3 over QUIC, and the PoP's own
// handshake counters say so.
func TestFirstVisitFollowsHTTPSRecord(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	_, port, _ := net.SplitHostPort(p.Addr().String())
	cfg, err := geodns.ParseConfig([]byte(`
listen: 127.0.0.1:0
rate_limit: {responses_per_second: -1}
zones:
  - origin: cdn.lab.
    ns: [ns1.cdn.lab.]
    geo: [{name: www}]
pops:
  - {name: pop-test, a: [127.0.0.1], region: eu, https_port: ` + port + `}
locator:
  regions: {eu: {lat: 50.1, lon: 8.7}}
`))
	if err != nil {
		t.Fatal(err)
	}
	g, err := geodns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	go g.Serve()
	t.Cleanup(func() { g.Shutdown(context.Background()) })
	handshakes := func(transport string) int {
		resp, err := http.Get("http://" + p.AdminAddr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n := 0
		for _, m := range regexp.MustCompile(`pop_tls_handshakes_total\{resumed="\w+",transport="`+transport+`"\} (\S+)`).FindAllStringSubmatch(string(b), -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			n += int(v)
		}
		return n
	}
	// The URL has no port: only the HTTPS record's port= leads to the PoP
	// over QUIC; without it the test dials the PoP's TCP port through the
	// same name, as a browser told the port by the page would.
	for _, tc := range []struct{ mode, url, want, transport string }{
		{bench.First, "https://www.cdn.lab:" + port + "/gen/1k", bench.H2, "tcp"},
		{bench.FirstHTTPS, "https://www.cdn.lab/gen/1k", bench.H3, "quic"},
	} {
		before := handshakes(tc.transport)
		rs, err := bench.Probe(context.Background(), bench.ProbeConfig{Mode: tc.mode, N: 2, RootCAs: ca.RootPool(), Resolver: g.Addr().String()}, tc.url)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Error != "" || r.Status != 200 || r.Negotiated != tc.want || r.Proto != tc.want || r.Mode != tc.mode || r.DNSms <= 0 || r.TTFBms < r.DNSms {
				t.Errorf("%s: %+v, want a 200 over %s whose TTFB includes its DNS", tc.mode, r, tc.want)
			}
		}
		if got := handshakes(tc.transport) - before; got != 2 {
			t.Errorf("%s: the PoP saw %d new %s handshakes, want 2", tc.mode, got, tc.transport)
		}
	}
	if _, err := bench.Probe(context.Background(), bench.ProbeConfig{Mode: bench.FirstHTTPS, ConnectTo: "127.0.0.1:1"}, "https://www.cdn.lab/"); err == nil {
		t.Error("first-https with connect-to: no error")
	}
}
