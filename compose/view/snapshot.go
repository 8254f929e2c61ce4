package view

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Snapshot is the lab at one moment, as the page shows it.
type Snapshot struct {
	Time    time.Time     `json:"time"`
	Regions []RegionState `json:"regions"`
	RTT     RTTMatrix     `json:"rtt"`
}

// RegionState is one region: its PoP, what its clients see, and where
// GeoDNS sends them.
type RegionState struct {
	Name string   `json:"name"`
	PoP  PoPState `json:"pop"`
	// Client is the host the probes and the GeoDNS question come from.
	Client string `json:"client"`
	// TTFBp50ms and TTFBp99ms cover the last Window probes that
	// succeeded; Probes and ProbeErrors count that window.
	TTFBp50ms   float64 `json:"ttfb_p50_ms"`
	TTFBp99ms   float64 `json:"ttfb_p99_ms"`
	Probes      int     `json:"probes"`
	ProbeErrors int     `json:"probe_errors"`
	LastError   string  `json:"last_error,omitempty"`
	// LastPoP is the PoP that answered the last probe (X-Served-By).
	LastPoP string `json:"last_pop,omitempty"`
	// Answer is GeoDNS's answer for the region's clients now, and
	// AnswerPoP the PoP it is the address of ("" if none).
	Answer    []string `json:"answer"`
	AnswerPoP string   `json:"answer_pop"`
	DNSError  string   `json:"dns_error,omitempty"`
}

// PoPState is a PoP as its admin listener tells it.
type PoPState struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Ready    bool   `json:"ready"`    // /readyz answered 200
	Degraded bool   `json:"degraded"` // ready, but its origin is down
	// Health is what the page shows: up, degraded or down.
	Health string `json:"health"`
	Error  string `json:"error,omitempty"`
	// RPS is requests answered per second since the last snapshot,
	// HitRatio hits over hits and misses since then (or, without any, the
	// PoP's own ratio since it started), CacheBytes what its cache holds.
	RPS           float64 `json:"rps"`
	HitRatio      float64 `json:"hit_ratio"`
	CacheBytes    float64 `json:"cache_bytes"`
	RequestsTotal float64 `json:"requests_total"`
}

// RTTMatrix is the round trip between each PoP and each region's clients:
// Configured from docker-compose.yml's matrix, Measured by each PoP (its
// /rtt for the client's /24; 0 when it has none).
type RTTMatrix struct {
	PoPs       []string    `json:"pops"`
	Regions    []string    `json:"regions"`
	Configured [][]float64 `json:"configured_ms"`
	Measured   [][]float64 `json:"measured_ms"`
}

// popState is what a PoP's previous snapshot needs to turn its counters
// into rates.
type popState struct {
	at                   time.Time
	requests, hits, miss float64
}

// collect takes a snapshot: every PoP's admin endpoints and every
// region's GeoDNS answer at once, the probes' percentiles as they stand.
func (s *Server) collect(ctx context.Context) Snapshot {
	snap := Snapshot{Time: time.Now().UTC(), Regions: make([]RegionState, len(s.regions))}
	rtts := make([]map[netip.Prefix]float64, len(s.regions))
	var wg sync.WaitGroup
	for i, r := range s.regions {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.Interval)
			defer cancel()
			st := RegionState{Name: r.name, Client: r.client.Name}
			st.PoP, rtts[i] = s.popState(ctx, r)
			r.probe.summary(&st)
			st.Answer, st.DNSError = r.probe.answer(ctx, s.cfg.CDNName)
			for _, a := range st.Answer {
				for _, other := range s.regions {
					if other.pop.Addr.String() == a {
						st.AnswerPoP = other.pop.Name
					}
				}
			}
			snap.Regions[i] = st
		})
	}
	wg.Wait()
	snap.RTT = s.matrix(rtts)
	return snap
}

// popState asks one PoP's admin listener for its readiness, metrics and
// measured RTTs.
func (s *Server) popState(ctx context.Context, r region) (PoPState, map[netip.Prefix]float64) {
	st := PoPState{Name: r.pop.Name, Addr: r.pop.Addr.String(), Health: "down"}
	c := &http.Client{Transport: &http.Transport{DialContext: s.dialer(r.client.Name), DisableKeepAlives: true}}
	get := func(path string) (*http.Response, []byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.admin+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return resp, b, err
	}
	resp, _, err := get("/readyz")
	if err != nil {
		st.Error = err.Error()
		return st, nil
	}
	st.Ready, st.Degraded = resp.StatusCode == http.StatusOK, resp.Header.Get("X-PoP-Degraded") != ""
	switch {
	case st.Ready && st.Degraded:
		st.Health = "degraded"
	case st.Ready:
		st.Health = "up"
	default:
		st.Error = fmt.Sprintf("/readyz: %s", resp.Status)
	}
	if _, b, err := get("/metrics"); err == nil {
		m := parseMetrics(b)
		st.RequestsTotal, st.CacheBytes = m.sum("pop_requests_total", "", ""), m.sum("pop_cache_bytes", "", "")
		hits, miss := m.sum("pop_cache_events_total", "event", "hit")+m.sum("pop_cache_events_total", "event", "stale"), m.sum("pop_cache_events_total", "event", "miss")
		now, prev := time.Now(), *r.pstate
		*r.pstate = popState{at: now, requests: st.RequestsTotal, hits: hits, miss: miss}
		st.HitRatio = m.sum("pop_cache_hit_ratio", "", "")
		if !prev.at.IsZero() && st.RequestsTotal >= prev.requests {
			st.RPS = (st.RequestsTotal - prev.requests) / now.Sub(prev.at).Seconds()
			if dh, dm := hits-prev.hits, miss-prev.miss; dh+dm > 0 && dh >= 0 && dm >= 0 {
				st.HitRatio = dh / (dh + dm)
			}
		}
	}
	var rtt map[netip.Prefix]float64
	if _, b, err := get("/rtt"); err == nil {
		var rep struct {
			Prefixes []struct {
				Prefix netip.Prefix `json:"prefix"`
				RTT    float64      `json:"rtt_ms"`
			} `json:"prefixes"`
		}
		if json.Unmarshal(b, &rep) == nil {
			rtt = map[netip.Prefix]float64{}
			for _, p := range rep.Prefixes {
				rtt[p.Prefix] = p.RTT
			}
		}
	}
	return st, rtt
}

// matrix sets the configured RTT between each PoP and each region's
// client beside the one the PoP measured for that client's /24.
func (s *Server) matrix(measured []map[netip.Prefix]float64) RTTMatrix {
	var m RTTMatrix
	for _, r := range s.regions {
		m.PoPs = append(m.PoPs, r.pop.Name)
		m.Regions = append(m.Regions, r.name)
	}
	for i, r := range s.regions {
		conf, meas := make([]float64, len(s.regions)), make([]float64, len(s.regions))
		for j, c := range s.regions {
			conf[j] = float64(s.cfg.Topo.RTTBetween(r.pop, c.client)) / float64(time.Millisecond)
			if p, err := c.client.Addr.Prefix(24); err == nil {
				meas[j] = measured[i][p]
			}
		}
		m.Configured, m.Measured = append(m.Configured, conf), append(m.Measured, meas)
	}
	return m
}
