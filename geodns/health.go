package geodns

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"
)

// popState is a PoP with its live health.
type popState struct {
	cfg      PoP
	a, aaaa  []netip.Addr
	lat, lon float64 // the PoP's or its region's (Config.popLocation)
	healthy  atomic.Bool
	// degraded is what the last passing check said: the PoP serves but
	// its origin is unreachable (X-PoP-Degraded: 1 on its /readyz). It
	// follows each check at once, without rise and fall.
	degraded atomic.Bool
	// seen is set once a health check has given a result (at once for a
	// PoP without a check): an unseen PoP is never answered, not even to
	// fail open, so a fresh start never sends clients to a PoP that is
	// not up yet.
	seen atomic.Bool
	// transitions counts health changes, for metrics.
	transitions atomic.Int64
}

func newPopState(p PoP, lat, lon float64) *popState {
	ps := &popState{cfg: p, lat: lat, lon: lon}
	for _, a := range p.A {
		ps.a = append(ps.a, netip.MustParseAddr(a))
	}
	for _, a := range p.AAAA {
		ps.aaaa = append(ps.aaaa, netip.MustParseAddr(a))
	}
	if p.Check.URL == "" && p.Check.TCP == "" {
		ps.healthy.Store(true)
		ps.seen.Store(true)
	}
	return ps
}

func (p *popState) weight() int {
	if p.cfg.Weight == 0 {
		return 1
	}
	return p.cfg.Weight
}

// startChecks stops the checkers and RTT pullers of the previous state and
// starts one of each per PoP of st that has a check or an rtt_url.
func (s *Server) startChecks(st *state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopChecks != nil {
		s.stopChecks()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopChecks = cancel
	for _, p := range st.pops {
		if p.cfg.Check.URL == "" && p.cfg.Check.TCP == "" {
			continue
		}
		s.checks.Go(func() { s.checkLoop(ctx, p) })
	}
	for _, p := range st.pops {
		if p.cfg.RTTURL != "" {
			s.checks.Go(func() { s.pullLoop(ctx, st, p) })
		}
	}
}

// checkLoop checks p every interval: fall consecutive failures make it
// unhealthy, rise consecutive successes healthy again.
func (s *Server) checkLoop(ctx context.Context, p *popState) {
	c := p.cfg.Check
	interval, timeout, rise, fall := c.Interval, c.Timeout, c.Rise, c.Fall
	if interval == 0 {
		interval = 2 * time.Second
	}
	if timeout == 0 {
		timeout = time.Second
	}
	if rise == 0 {
		rise = 2
	}
	if fall == 0 {
		fall = 2
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // "is it serving", not "is it trusted"
			DisableKeepAlives: true,
		},
	}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	good, bad := 0, 0
	for {
		ok, degraded := probe(ctx, client, c, timeout)
		changed := false
		if ok {
			good, bad = good+1, 0
			if p.degraded.Swap(degraded) != degraded {
				changed = true
				s.log.Info("pop degraded", "pop", p.cfg.Name, "degraded", degraded)
			}
		} else {
			good, bad = 0, bad+1
		}
		switch {
		case !p.seen.Load():
			// The first result decides at once; rise and fall apply to
			// changes after it.
			p.healthy.Store(ok)
			p.seen.Store(true)
			changed = true
			s.log.Info("pop first checked", "pop", p.cfg.Name, "healthy", ok)
		case ok && good >= rise && !p.healthy.Load():
			p.healthy.Store(true)
			p.transitions.Add(1)
			changed = true
			s.log.Info("pop healthy", "pop", p.cfg.Name)
		case !ok && bad >= fall && p.healthy.Load():
			p.healthy.Store(false)
			p.transitions.Add(1)
			changed = true
			s.log.Warn("pop unhealthy", "pop", p.cfg.Name)
		}
		if changed {
			s.invalidate()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe checks once: whether the PoP passes, and whether a passing PoP
// says it is degraded (X-PoP-Degraded: 1).
func probe(ctx context.Context, client *http.Client, c Check, timeout time.Duration) (ok, degraded bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.URL == "" {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.TCP)
		if err != nil {
			return false, false
		}
		conn.Close()
		return true, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return false, false
	}
	req.Header.Set("User-Agent", "edgecdn-geodns-health")
	resp, err := client.Do(req)
	if err != nil {
		return false, false
	}
	resp.Body.Close()
	ok = resp.StatusCode >= 200 && resp.StatusCode < 300
	return ok, ok && resp.Header.Get("X-PoP-Degraded") == "1"
}
