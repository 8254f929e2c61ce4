package geodns

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
	"github.com/miekg/dns"
)

// rttServer serves a PoP's /rtt table over real HTTP, set by the test:
// geodns's side of the contract (the PoP's side is tested in pop).
type rttServer struct {
	mu    sync.Mutex
	pop   string
	rows  map[string][2]float64 // prefix -> rtt ms, samples
	pulls int
	srv   *httptest.Server
}

func startRTTServer(t *testing.T, pop string) *rttServer {
	r := &rttServer{pop: pop, rows: map[string][2]float64{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.pulls++
		var rows []string
		for p, v := range r.rows {
			rows = append(rows, fmt.Sprintf(`{"prefix":%q,"rtt_ms":%g,"min_ms":%g,"samples":%d,"age_ms":100}`, p, v[0], v[0], int(v[1])))
		}
		fmt.Fprintf(w, `{"pop":%q,"prefixes":[%s]}`, r.pop, strings.Join(rows, ","))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *rttServer) set(prefix string, rttMs float64, samples int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows[prefix] = [2]float64{rttMs, float64(samples)}
}

// pulled waits for two more pulls, so the table geodns holds is the one set.
func (r *rttServer) pulled(t *testing.T) {
	r.mu.Lock()
	n := r.pulls
	r.mu.Unlock()
	poll.Until(t, r.pop+" pulled", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.pulls >= n+2
	})
}

// steeringLab is labConfig with every PoP's table on an rttServer and a
// locator network for 10.77.4.0/24 in eu: the misplaced client of the lab.
func steeringLab(t *testing.T, edit func(*Config)) (*Server, map[string]*rttServer) {
	tables := map[string]*rttServer{}
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		for i := range c.PoPs {
			r := startRTTServer(t, c.PoPs[i].Name)
			tables[c.PoPs[i].Name] = r
			c.PoPs[i].RTTURL = r.srv.URL + "/rtt"
		}
		c.Locator.Networks = append(c.Locator.Networks, Network{Prefix: "10.77.4.0/24", Region: "eu"})
		c.Latency.PullInterval = 20 * time.Millisecond
		if edit != nil {
			edit(c)
		}
	})
	return s, tables
}

// tally asks n times from the client network ecs and counts the first
// A record of each answer, and the answers whose TTL is the explore TTL.
func tally(t *testing.T, s *Server, ecs string, n int) (map[string]int, int) {
	got, short := map[string]int{}, 0
	for range n {
		r := query(t, s, "udp", "www.cdn.lab.", dns.TypeA, ecs)
		ips := answerIPs(r)
		if len(ips) == 0 {
			t.Fatalf("no answer: %v", r)
		}
		got[ips[0]]++
		if r.Answer[0].Header().Ttl == 5 {
			short++
		}
		if scope := ecsScope(r); scope != 24 {
			t.Fatalf("ECS scope %d, want 24 (the answer depends on the /24's measurements)", scope)
		}
	}
	return got, short
}

func TestLatencySteersMisplacedClient(t *testing.T) {
	s, tables := steeringLab(t, nil)
	const client = "10.77.4.0/24"
	// Nothing measured: geography (eu), no exploring until pop-eu has
	// measured the client (its connections there do that).
	got, short := tally(t, s, client, 400)
	if got["10.77.2.20"] != 400 || short != 0 {
		t.Fatalf("unmeasured: answers %v, %d with TTL 5; want pop-eu 400, none exploring", got, short)
	}
	// pop-eu measures 90 ms (the client is sent there); pop-na has only two
	// samples: not enough to count.
	tables["pop-eu"].set(client, 90, 20)
	tables["pop-na"].set(client, 10, 2)
	tables["pop-na"].pulled(t)
	if got, _ := tally(t, s, client, 100); got["10.77.2.20"] < 94 || got["10.77.2.20"] > 96 { // one in twenty explores, to within one
		t.Fatalf("pop-na under min_samples: answers %v, want pop-eu 95 of 100", got)
	}
	// pop-eu at 90 ms is far (over explore_above_ms): one answer in twenty
	// explores, with a short TTL, the other two PoPs.
	got, short = tally(t, s, client, 400)
	if got["10.77.2.20"] < 379 || got["10.77.2.20"] > 381 || got["10.77.1.20"] < 8 || got["10.77.3.20"] < 8 || short < 19 || short > 21 {
		t.Fatalf("pop-eu measured far: answers %v, %d with TTL 5; want pop-eu 380, pop-na and pop-ap 10 each, 20 short", got, short)
	}
	// Three samples: pop-na's 10 ms beats pop-eu's 90 ms, and is close
	// enough that the prefix stops exploring.
	tables["pop-na"].set(client, 10, 3)
	tables["pop-na"].pulled(t)
	got, short = tally(t, s, client, 400)
	if got["10.77.1.20"] != 400 || short != 0 {
		t.Fatalf("measured: answers %v, %d short; want pop-na 400, none exploring", got, short)
	}
	// The client's own network is unaffected: eu clients stay on pop-eu.
	if r := query(t, s, "udp", "www.cdn.lab.", dns.TypeA, "10.77.2.0/24"); answerIPs(r)[0] != "10.77.2.20" {
		t.Errorf("eu client: %v, want pop-eu", answerIPs(r))
	}
	// /status shows the measurements and why.
	resp, err := http.Get("http://" + s.AdminAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var status struct {
		Routing map[string][]string `json:"routing"`
		Latency latencyStatus       `json:"latency"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	var ps *prefixStatus
	for i := range status.Latency.Prefixes {
		if status.Latency.Prefixes[i].Prefix == client {
			ps = &status.Latency.Prefixes[i]
		}
	}
	if ps == nil || ps.RTT["pop-na"].RTTms != 10 || !ps.RTT["pop-na"].Fresh || ps.RTT["pop-eu"].RTTms != 90 ||
		!strings.HasPrefix(ps.Reason, "latency: pop-na 10.0 ms (answered), pop-eu 90.0 ms") || ps.Shares["pop-na"] < 0.94 {
		t.Errorf("status for %s: %+v", client, ps)
	}
	if got := status.Routing[client]; len(got) != 1 || got[0] != "pop-na" {
		t.Errorf("status routing %s = %v, want [pop-na]", client, got)
	}
	if p := status.Latency.Pulls["pop-na"]; p.Prefixes != 1 || p.Error != "" {
		t.Errorf("pull status %+v", p)
	}
}

func TestLatencyIgnoresUnhealthyAndStale(t *testing.T) {
	s, tables := steeringLab(t, func(c *Config) { c.Latency.MaxAge = time.Second })
	const client = "10.77.4.0/24"
	tables["pop-eu"].set(client, 90, 20)
	tables["pop-na"].set(client, 10, 20)
	tables["pop-na"].pulled(t)
	if got, _ := tally(t, s, client, 20); got["10.77.1.20"] != 20 {
		t.Fatalf("answers %v, want pop-na", got)
	}
	// The PoPs stop answering: their last samples age past max_age (1 s)
	// and no longer count; geography answers again.
	for _, r := range tables {
		r.srv.Close()
	}
	poll.Until(t, "the measurements to go stale", func() bool {
		got, _ := tally(t, s, client, 20)
		return got["10.77.2.20"] == 20
	})
}

// decide runs route for a client of eu with the given measurements.
func decide(t *testing.T, st *state, tbl *rttTable, rtts map[string]float64) []string {
	t.Helper()
	for _, name := range []string{"pop-na", "pop-eu", "pop-ap"} {
		var rep rttReport
		if v, ok := rtts[name]; ok {
			rep.Prefixes = append(rep.Prefixes, struct {
				Prefix  string  `json:"prefix"`
				RTTms   float64 `json:"rtt_ms"`
				MinMs   float64 `json:"min_ms"`
				Samples int     `json:"samples"`
				AgeMs   int64   `json:"age_ms"`
			}{"10.77.4.0/24", v, v, 10, 0})
		}
		tbl.replace(name, rep, tbl.now(), Latency{MaxPrefixes: 100}.withDefaults())
	}
	addr := netip.MustParseAddr("10.77.4.1")
	r := st.route(tbl, st.pops, addr, st.locate(addr), 1)
	var out []string
	for _, o := range r.options {
		if !o.explore {
			out = append(out, o.pops[0].cfg.Name)
		}
	}
	return out
}

// routeState is the lab configuration's state with 10.77.4.0/24 located
// in eu, for tests that call route directly (its PoPs are never pulled).
func routeState(t *testing.T) *state {
	t.Helper()
	cfg, err := ParseConfig([]byte(fmt.Sprintf(labConfig, bigTXT())))
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.PoPs {
		cfg.PoPs[i].RTTURL = "http://127.0.0.1:1/rtt" // never pulled: route is called directly
	}
	cfg.Locator.Networks = append(cfg.Locator.Networks, Network{Prefix: "10.77.4.0/24", Region: "eu"})
	st, err := compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestLatencyHysteresis(t *testing.T) {
	st := routeState(t)
	tbl := newRTTTable()
	// Tolerance: the larger of 5 ms and 10% of the best.
	steps := []struct {
		rtts map[string]float64
		want string
	}{
		{map[string]float64{"pop-eu": 40, "pop-na": 60}, "pop-eu"},
		{map[string]float64{"pop-eu": 40, "pop-na": 43}, "pop-eu pop-na"}, // within 5 ms: equally good
		{map[string]float64{"pop-eu": 40, "pop-na": 49}, "pop-eu pop-na"}, // in the set, stays until 2 x 5 ms behind
		{map[string]float64{"pop-eu": 40, "pop-na": 51}, "pop-eu"},        // out
		{map[string]float64{"pop-eu": 40, "pop-na": 49}, "pop-eu"},        // not back in until within 5 ms
		{map[string]float64{"pop-eu": 49, "pop-na": 40}, "pop-na pop-eu"}, // the best always answers; pop-eu stays
		{map[string]float64{"pop-eu": 90, "pop-na": 10}, "pop-na"},
		{map[string]float64{"pop-eu": 195, "pop-na": 180}, "pop-na pop-eu"}, // 10% of 180 = 18 ms
	}
	for i, s := range steps {
		for _, p := range st.pops {
			p.healthy.Store(true)
			p.seen.Store(true)
		}
		if got := strings.Join(decide(t, st, tbl, s.rtts), " "); got != s.want {
			t.Fatalf("step %d %v: answered %q, want %q", i, s.rtts, got, s.want)
		}
	}
}

func TestWeightsShareAnswers(t *testing.T) {
	const cfg = `
listen: 127.0.0.1:0
rate_limit: {responses_per_second: -1}
zones:
  - origin: cdn.lab.
    ns: [ns1.cdn.lab.]
    geo: [{name: www}]
pops:
  - {name: eu-a, a: [10.0.2.1], region: eu, weight: 3}
  - {name: eu-b, a: [10.0.2.2], region: eu}
  - {name: na, a: [10.0.1.1], region: na}
locator:
  networks: [{prefix: 10.0.0.0/8, region: eu}]
  regions:
    eu: {lat: 50.1, lon: 8.7}
    na: {lat: 40.7, lon: -74.0}
`
	s := startServer(t, cfg, nil)
	got := map[string]int{}
	const n = 2000
	for i := range n {
		r := query(t, s, "udp", "www.cdn.lab.", dns.TypeA, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))
		got[answerIPs(r)[0]]++
	}
	if a := float64(got["10.0.2.1"]) / n; a < 0.70 || a > 0.80 || got["10.0.1.1"] != 0 {
		t.Errorf("answers %v: eu-a has %.3f of them, want 0.75 (weight 3 of 4) and na none", got, a)
	}
}

func TestLatencyConfigErrors(t *testing.T) {
	base := fmt.Sprintf(labConfig, bigTXT())
	for _, tt := range []struct{ edit, want string }{
		{"latency: {explore: 0.2}\n", "latency.explore: 0.2, want at most 0.05"},
		{"latency: {min_samples: -1}\n", "latency.min_samples"},
		{"latency: {max_prefixes: -5}\n", "latency.max_prefixes"},
	} {
		_, err := ParseConfig([]byte(base + tt.edit))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to name %q", strings.TrimSpace(tt.edit), err, tt.want)
		}
	}
	bad := strings.Replace(base, "region: na, lat: 40.7", `region: na, rtt_url: "ftp://x", weight: -1, lat: 40.7`, 1)
	_, err := ParseConfig([]byte(bad))
	if err == nil || !strings.Contains(err.Error(), "pops[0].rtt_url") || !strings.Contains(err.Error(), "pops[0].weight") {
		t.Errorf("error %v, want pops[0].rtt_url and pops[0].weight named", err)
	}
}

// TestExploreSkipsDegraded: exploration never sends a client to a
// degraded PoP (its origin is down: the client would get only what is
// cached there), only to the healthy, non-degraded others.
func TestExploreSkipsDegraded(t *testing.T) {
	st := routeState(t)
	explored := func() []string {
		tbl := newRTTTable()
		decide(t, st, tbl, map[string]float64{"pop-eu": 90}) // far: explores
		addr := netip.MustParseAddr("10.77.4.1")
		var out []string
		for _, o := range st.route(tbl, st.pops, addr, st.locate(addr), 1).options {
			if o.explore {
				out = append(out, o.pops[0].cfg.Name)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, p := range st.pops {
		p.healthy.Store(true)
	}
	if got := explored(); strings.Join(got, " ") != "pop-ap pop-na" {
		t.Fatalf("explored %v, want pop-ap and pop-na", got)
	}
	for _, p := range st.pops {
		if p.cfg.Name == "pop-ap" {
			p.degraded.Store(true)
		}
	}
	if got := explored(); strings.Join(got, " ") != "pop-na" {
		t.Errorf("pop-ap degraded: explored %v, want pop-na only", got)
	}
}
