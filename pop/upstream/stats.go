package upstream

// Stats is a snapshot of a group, for metrics.
type Stats struct {
	Name         string
	Servers      []ServerStats
	Inflight     int   // requests holding a bulkhead slot
	Overloaded   int64 // requests refused by the bulkhead
	Retries      int64 // attempts on another server after one that sent nothing or answered 5xx
	BudgetDenied int64 // retries the retry budget refused
	// FreshRetries counts requests sent again, on a new connection to the
	// same server, after a pooled connection the origin had closed failed
	// them before any of them was written.
	FreshRetries int64
	// Panics counts requests that found no server healthy and admitted by
	// its breaker, and were sent to one anyway.
	Panics int64
	// EjectionsCapped counts failures that called for ejecting a server
	// while MaxEjectionPercent held its breaker closed.
	EjectionsCapped int64
}

// ServerStats describes one origin server. Counters only grow.
type ServerStats struct {
	URL           string
	Healthy       bool // in rotation: passed its last health check, or has none
	Warm          bool // reached at least once
	Proto         int  // HTTP major version it answered the pool with; 0 until warm
	Breaker       BreakerState
	Outstanding   int64 // requests in flight
	Requests      int64 // attempts sent, retries included
	Failures      int64 // connection errors, timeouts, 500/502/503/504, broken bodies
	Dials         int64 // TCP connects begun
	TLSHandshakes int64 // TLS handshakes completed, resumed ones included
}

// Stats returns a snapshot of the group.
func (g *Group) Stats() Stats {
	now := g.cfg.Now()
	st := Stats{
		Name: g.cfg.Name, Inflight: len(g.sem), Overloaded: g.overloaded.Load(),
		Retries: g.retries.Load(), BudgetDenied: g.budgetDenied.Load(), FreshRetries: g.freshRetries.Load(),
		Panics: g.panics.Load(), EjectionsCapped: g.ejected.refused.Load(),
		Servers: make([]ServerStats, 0, len(g.servers)),
	}
	for _, s := range g.servers {
		st.Servers = append(st.Servers, ServerStats{
			URL: s.url.String(), Healthy: s.healthy.Load(), Warm: s.warm.Load(), Proto: int(s.proto.Load()),
			Breaker: s.breaker.state(now), Outstanding: s.outstanding.Load(), Requests: s.requests.Load(),
			Failures: s.failures.Load(), Dials: s.dials.Load(), TLSHandshakes: s.handshakes.Load(),
		})
	}
	return st
}
