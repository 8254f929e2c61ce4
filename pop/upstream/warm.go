package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// warm makes sure n connections to s are open and handshaken, with the
// health check as the first request, and records the check's verdict.
//
// The first request opens one connection; when the server speaks HTTP/2
// that is all it takes. Over HTTP/1.1, n-1 more requests go out while every
// earlier response is still unread, so each must take a connection of its
// own (an idle one if the pool has it, else a new dial) and no dial is left
// racing in the background; then all responses are drained and closed, and
// the connections go back to the pool idle and warm.
func (g *Group) warm(ctx context.Context, s *server, n int) error {
	first, err := g.probe(ctx, s, !s.warm.Load())
	if err != nil {
		if ctx.Err() == nil {
			g.checkFailed(s, err)
		}
		return fmt.Errorf("warm %s: %w", s.url, err)
	}
	held := []*http.Response{first}
	if first.ProtoMajor < 2 && n > 1 {
		var mu sync.Mutex // guards held
		var wg sync.WaitGroup
		for range n - 1 {
			wg.Go(func() {
				// A failure here leaves one connection fewer, no more: the
				// first request already vouched for the server.
				if resp, err := g.probe(ctx, s, true); err == nil {
					mu.Lock()
					held = append(held, resp)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	for _, resp := range held {
		// Drain so that an HTTP/1.1 connection can be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	s.proto.Store(int32(first.ProtoMajor))
	s.warm.Store(true)
	g.checkPassed(s)
	return nil
}

// probe sends one health check (or, with checks disabled, an OPTIONS
// request whose any answer means reachable) and returns the response
// unread: the caller drains and closes it, which frees the connection and
// the timeout. dial adds ConnectTimeout and TLSTimeout to HealthTimeout for
// a request that will likely need a new connection.
func (g *Group) probe(ctx context.Context, s *server, dial bool) (*http.Response, error) {
	timeout := g.cfg.HealthTimeout
	if dial {
		timeout += g.cfg.ConnectTimeout + g.cfg.TLSTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	method, path := http.MethodGet, g.cfg.HealthPath
	if !g.checks() {
		method, path = http.MethodOptions, "/"
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url.String()+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if g.cfg.ServerName != "" {
		req.Host = g.cfg.ServerName
	}
	req.Header.Set("User-Agent", "edgecdn-pop-health")
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		cancel()
		if isTimeout(err) {
			return nil, fmt.Errorf("health check %s %s: no answer in %v: %w", method, path, timeout, ErrTimeout)
		}
		return nil, fmt.Errorf("health check %s %s: %w", method, path, err)
	}
	// Any answer below 500 means the server is up and serving: an origin
	// without a health path (404) is as alive as one with it.
	if g.checks() && resp.StatusCode >= 500 {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("health check %s %s: status %d", method, path, resp.StatusCode)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases a request's context when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// tend keeps s warm and checked until ctx ends. Every HealthInterval it
// warms s if it was never reached, or else runs a health check; every
// KeepAlive it re-warms WarmConns connections instead, so that HTTP/1.1
// pools outlive the origin's idle timeout and the pool's IdleConnTimeout
// (HTTP/2 connections are also PINGed by the transport when idle).
func (g *Group) tend(ctx context.Context, s *server) {
	tick := time.NewTicker(g.cfg.HealthInterval)
	defer tick.Stop()
	lastWarm := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		switch {
		case !s.warm.Load() || time.Since(lastWarm) >= g.cfg.KeepAlive:
			if g.warm(ctx, s, g.cfg.WarmConns) == nil {
				lastWarm = time.Now()
			}
		case g.checks():
			g.warm(ctx, s, 1)
		}
	}
}
