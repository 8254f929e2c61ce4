package upstream

// Active health checks ride on the keep-warm requests (see warm and tend):
// every check is a request on the pooled connections, so a check also
// proves that those connections work. This file holds the verdicts.

// checks reports whether active health checks are on.
func (g *Group) checks() bool { return g.cfg.HealthPath != noHealthChecks }

// checkPassed puts s back in rotation and closes its breaker. With active
// checks off, reaching a server decides nothing: its breaker alone does.
func (g *Group) checkPassed(s *server) {
	if !g.checks() {
		return
	}
	if !s.healthy.Swap(true) {
		g.log.Info("upstream server healthy", "server", s.url.String())
	}
	if s.breaker.success() {
		g.log.Info("upstream breaker closed", "server", s.url.String(), "by", "health check")
	}
}

// checkFailed takes s out of rotation until a check passes, and counts the
// failure towards its breaker. A server never reached is not logged: Start
// returns its error, and the loop logs when it comes up.
func (g *Group) checkFailed(s *server, err error) {
	if !g.checks() {
		return
	}
	if s.healthy.Swap(false) && s.warm.Load() {
		g.log.Warn("upstream server unhealthy", "server", s.url.String(), "error", err)
	}
	if s.breaker.failure(g.cfg.Now()) {
		g.log.Info("upstream breaker opened", "server", s.url.String(), "open_for", g.cfg.OpenDuration)
	}
}
