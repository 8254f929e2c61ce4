package view

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/compose"
	"github.com/edgecdn/cdn/compose/labtest"
)

func labTopo(t *testing.T) *compose.Topology {
	t.Helper()
	topo, err := compose.Load(context.Background(), "../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestNewFindsTheRegions(t *testing.T) {
	s, err := New(Config{Topo: labTopo(t)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.regions {
		got = append(got, r.name+":"+r.pop.Name+"@"+r.admin+"<-"+r.client.Name)
	}
	want := "na:pop-na@10.77.1.20:9901<-client-na eu:pop-eu@10.77.2.20:9901<-client-eu ap:pop-ap@10.77.3.20:9901<-client-ap"
	if strings.Join(got, " ") != want {
		t.Errorf("regions = %v, want %s", got, want)
	}
	m := s.matrix(make([]map[netip.Prefix]float64, len(s.regions)))
	if m.Configured[1][2] != 240 || m.Configured[0][0] != 10 {
		t.Errorf("configured matrix %v, want pop-eu to ap 240 ms and pop-na to na 10 ms", m.Configured)
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Topo") {
		t.Errorf("New without a topology = %v, want an error naming Config.Topo", err)
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte(`# HELP pop_requests_total x
# TYPE pop_requests_total counter
pop_requests_total{code="200",proto="h2"} 10
pop_requests_total{code="200",proto="h3"} 5
pop_requests_total{code="404",proto="h3"} 1
pop_cache_events_total{event="hit"} 7
pop_cache_events_total{event="miss"} 3
pop_cache_bytes 1.5e+06
garbage line
pop_cache_hit_ratio NaN
`))
	for _, tt := range []struct {
		name, label, value string
		want               float64
	}{
		{"pop_requests_total", "", "", 16},
		{"pop_requests_total", "proto", "h3", 6},
		{"pop_cache_events_total", "event", "hit", 7},
		{"pop_cache_bytes", "", "", 1.5e6},
		{"missing", "", "", 0},
	} {
		if got := m.sum(tt.name, tt.label, tt.value); got != tt.want {
			t.Errorf("sum(%s, %s=%s) = %v, want %v", tt.name, tt.label, tt.value, got, tt.want)
		}
	}
}

// TestEvents: /events sends the latest snapshot at once and every new one
// after; /state is the latest.
func TestEvents(t *testing.T) {
	s, err := New(Config{Topo: labTopo(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	s.publish(Snapshot{Regions: []RegionState{{Name: "eu", AnswerPoP: "pop-eu"}}})
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("/events Content-Type %q, want text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() Snapshot {
		t.Helper()
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var snap Snapshot
				if err := json.Unmarshal([]byte(data), &snap); err != nil {
					t.Fatalf("event %q: %v", data, err)
				}
				return snap
			}
		}
		t.Fatalf("/events ended: %v", sc.Err())
		return Snapshot{}
	}
	if got := next(); len(got.Regions) != 1 || got.Regions[0].AnswerPoP != "pop-eu" {
		t.Errorf("first event %+v, want the latest snapshot", got)
	}
	s.publish(Snapshot{Regions: []RegionState{{Name: "eu", AnswerPoP: "pop-na"}}})
	if got := next(); got.Regions[0].AnswerPoP != "pop-na" {
		t.Errorf("second event %+v, want the new snapshot", got)
	}
	st, err := http.Get(srv.URL + "/state")
	if err != nil {
		t.Fatal(err)
	}
	var snap Snapshot
	json.NewDecoder(st.Body).Decode(&snap)
	st.Body.Close()
	if snap.Regions[0].AnswerPoP != "pop-na" {
		t.Errorf("/state = %+v, want the latest snapshot", snap)
	}
}

// TestPageInChromium renders the page in headless Chromium from a
// snapshot sent as an event: the regions' cards, their health and
// GeoDNS's answer, and the RTT matrix.
func TestPageInChromium(t *testing.T) {
	chromium := labtest.Chromium(t)
	s, err := New(Config{Topo: labTopo(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	snap := Snapshot{Time: time.Now(), RTT: s.matrix(make([]map[netip.Prefix]float64, 3))}
	for _, r := range []struct{ name, health, answer string }{{"na", "up", "pop-na"}, {"eu", "down", "pop-na"}, {"ap", "degraded", "pop-ap"}} {
		snap.Regions = append(snap.Regions, RegionState{Name: r.name, Client: "client-" + r.name, AnswerPoP: r.answer, Answer: []string{"10.77.1.20"},
			PoP: PoPState{Name: "pop-" + r.name, Health: r.health}, Probes: 10, TTFBp50ms: 41.5, TTFBp99ms: 93.25})
	}
	s.publish(snap)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// The page renders the snapshot it came with as it loads; its event
	// stream stays open, so no budget of virtual time would run out:
	// Chromium dumps the DOM at the load event (or after 3 s).
	out, err := exec.CommandContext(ctx, chromium, append(labtest.ChromiumArgs(t, 0, 3*time.Second), "--dump-dom", srv.URL+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	dom := string(out)
	for _, want := range []string{`id="region-eu" data-health="down" data-answer="pop-na"`, "pop-eu: down", "client-eu \u2192 pop-na",
		"pop-ap: degraded", "41.5 / 93.3 ms", "240 / \u2013"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, dom)
		}
	}
	shot := filepath.Join(t.TempDir(), "view.png")
	if b, err := exec.CommandContext(ctx, chromium, append(labtest.ChromiumArgs(t, 0, 3*time.Second), "--screenshot="+shot, srv.URL+"/")...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, b)
	}
	labtest.KeepArtifact(t, shot, "live-view-unit.png")
}

// TestPoPState reads a real admin listener: health from /readyz (and
// X-PoP-Degraded), rates between two snapshots from /metrics, measured
// RTTs from /rtt.
func TestPoPState(t *testing.T) {
	var ready, degraded bool
	requests, hits := 100, 40
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			if degraded {
				w.Header().Set("X-PoP-Degraded", "1")
			}
			if !ready {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case "/metrics":
			fmt.Fprintf(w, "pop_requests_total{code=\"200\",proto=\"h2\"} %d\npop_cache_events_total{event=\"hit\"} %d\npop_cache_events_total{event=\"miss\"} 10\npop_cache_bytes 4096\npop_cache_hit_ratio 0.8\n", requests, hits)
		case "/rtt":
			w.Write([]byte(`{"pop":"pop-x","prefixes":[{"prefix":"10.77.2.0/24","rtt_ms":10.5,"min_ms":10,"samples":3,"age_ms":1}]}`))
		}
	}))
	defer admin.Close()
	s, err := New(Config{Topo: labTopo(t)})
	if err != nil {
		t.Fatal(err)
	}
	r := s.regions[1]
	r.admin = strings.TrimPrefix(admin.URL, "http://")
	for _, tt := range []struct {
		ready, degraded bool
		want            string
	}{{false, false, "down"}, {true, true, "degraded"}, {true, false, "up"}} {
		ready, degraded = tt.ready, tt.degraded
		st, _ := s.popState(t.Context(), r)
		if st.Health != tt.want || st.Ready != tt.ready || st.Degraded != tt.degraded {
			t.Errorf("ready %v degraded %v: %+v, want health %s", tt.ready, tt.degraded, st, tt.want)
		}
	}
	requests, hits = 160, 70 // 30 hits and no miss since the last look
	st, rtt := s.popState(t.Context(), r)
	if st.RPS <= 0 || st.HitRatio != 1 || st.CacheBytes != 4096 || st.RequestsTotal != 160 {
		t.Errorf("second look: %+v, want a positive rate, hit ratio 1 (30 hits, 0 misses since), 4096 bytes", st)
	}
	if got := rtt[netip.MustParsePrefix("10.77.2.0/24")]; got != 10.5 {
		t.Errorf("measured RTT to 10.77.2.0/24 = %v, want 10.5", got)
	}
	// A PoP that does not answer at all is down, with the error.
	admin.Close()
	if st, _ := s.popState(t.Context(), r); st.Health != "down" || st.Error == "" {
		t.Errorf("closed admin: %+v, want down with an error", st)
	}
}
