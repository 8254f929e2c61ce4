package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// warmServer makes sure n connections to s are open and handshaken, and
// marks s warm and healthy when it answers. The first health request opens
// one connection; over HTTP/2 that is all it takes. Over HTTP/1.1, n-1 more
// requests are sent while every earlier response is still unread, so each
// must dial a connection of its own and no dial is left racing in the
// background; then all responses are drained and the connections go idle.
func (g *Group) warmServer(ctx context.Context, s *server, n int) error {
	timeout := g.cfg.ConnectTimeout + g.cfg.TLSTimeout + g.cfg.HealthTimeout
	first, err := g.check(ctx, s, timeout)
	if err != nil {
		if ctx.Err() == nil {
			g.markHealthy(s, false)
		}
		return fmt.Errorf("warm %s: %w", s.url.Host, err)
	}
	held := []*http.Response{first}
	if first.ProtoMajor < 2 && n > 1 {
		var mu sync.Mutex // guards held
		var wg sync.WaitGroup
		for range n - 1 {
			wg.Go(func() {
				if resp, err := g.check(ctx, s, timeout); err == nil {
					mu.Lock()
					held = append(held, resp)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	for _, resp := range held {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	g.markHealthy(s, true)
	return nil
}

// check sends one health request and returns the response unread (the
// caller drains and closes it, which frees the connection). With active
// checks disabled it sends OPTIONS * (any answer means reachable).
func (g *Group) check(ctx context.Context, s *server, timeout time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	method, target := http.MethodGet, s.url.String()+g.cfg.HealthPath
	if g.cfg.HealthPath == "-" {
		method, target = http.MethodOptions, s.url.String()+"/"
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("User-Agent", "edgecdn-pop-health")
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		cancel()
		return nil, err
	}
	// Any answer below 500 means the server is up and serving: an origin
	// without a health path (404) is as alive as one with it.
	if g.cfg.HealthPath != "-" && resp.StatusCode >= 500 {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("health check %s: status %d", req.URL, resp.StatusCode)
	}
	resp.Body = &trackedBody{rc: resp.Body, done: cancel}
	return resp, nil
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
