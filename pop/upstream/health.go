package upstream

// Active health checks ride on the keep-warm requests (see warm and tend):
// every check is a request on the pooled connections, so a check also
// proves that those connections work. This file holds the verdicts.

// checks reports whether active health checks are on.
func (g *Group) checks() bool { return g.cfg.HealthPath != noHealthChecks }

// checkPassed puts s back in rotation, and makes an open breaker
// half-open at once: the next request is its trial. A check vouches for
// the server, not for its answers to requests, so it does not close the
// breaker itself. With active checks off, reaching a server decides
// nothing: its breaker alone does.
func (g *Group) checkPassed(s *server) {
	if !g.checks() {
		return
	}
	if !s.healthy.Swap(true) {
		g.log.Info("upstream server healthy", "server", s.url.String())
	}
	s.breaker.hasten(g.cfg.Now())
}

// checkFailed takes s out of rotation until a check passes. A server never
// reached is not logged: Start returns its error, and the loop logs when it
// comes up. The breaker is left alone: checks and breakers are separate
// signals, and only breakers count towards MaxEjectionPercent.
func (g *Group) checkFailed(s *server, err error) {
	if !g.checks() {
		return
	}
	if s.healthy.Swap(false) && s.warm.Load() {
		g.log.Warn("upstream server unhealthy", "server", s.url.String(), "error", err)
	}
}
