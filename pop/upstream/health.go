package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// warmServer opens n connections to s at once (concurrent requests force
// separate HTTP/1.1 connections; HTTP/2 shares one) and marks s warm and
// healthy when one succeeds.
func (g *Group) warmServer(ctx context.Context, s *server, n int) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = g.check(ctx, s, g.cfg.ConnectTimeout+g.cfg.TLSTimeout+g.cfg.HealthTimeout) })
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			g.markHealthy(s, true)
			return nil
		}
	}
	if ctx.Err() == nil {
		g.markHealthy(s, false)
	}
	return fmt.Errorf("warm %s: %w", s.url.Host, errs[0])
}

// check sends one health request. With active checks disabled it sends
// OPTIONS * (any answer means the server is reachable).
func (g *Group) check(ctx context.Context, s *server, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method, target := http.MethodGet, s.url.String()+g.cfg.HealthPath
	if g.cfg.HealthPath == "-" {
		method, target = http.MethodOptions, s.url.String()+"/"
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "edgecdn-pop-health")
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if g.cfg.HealthPath != "-" && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return fmt.Errorf("health check %s: status %d", req.URL, resp.StatusCode)
	}
	return nil
}

func (g *Group) markHealthy(s *server, ok bool) {
	if ok {
		s.warm.Store(true)
		s.breaker.success()
	}
	if was := s.healthy.Swap(ok); was != ok {
		g.cfg.Logger.Info("upstream server health changed", "upstream", g.cfg.Name, "server", s.url.Host, "healthy", ok)
	}
}

// healthLoop checks every server each HealthInterval (when active checks
// are on) and re-opens WarmConns connections each KeepAlive, so HTTP/1.1
// pools stay warm through origin idle timeouts.
func (g *Group) healthLoop() {
	interval := g.cfg.HealthInterval
	if g.cfg.HealthPath == "-" {
		interval = g.cfg.KeepAlive
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastWarm := time.Now()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-tick.C:
		}
		rewarm := time.Since(lastWarm) >= g.cfg.KeepAlive
		if rewarm {
			lastWarm = time.Now()
		}
		var wg sync.WaitGroup
		for _, s := range g.servers {
			wg.Go(func() {
				n := 1
				if rewarm || !s.warm.Load() {
					n = g.cfg.WarmConns
				}
				if g.cfg.HealthPath == "-" && s.warm.Load() && !rewarm {
					return
				}
				g.warmServer(g.ctx, s, n)
			})
		}
		wg.Wait()
	}
}
