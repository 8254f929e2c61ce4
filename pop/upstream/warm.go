package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// warm makes sure n connections to s are open and handshaken, with the
// health check as the first request, and records the check's verdict.
//
// The first request opens one connection; when the server speaks HTTP/2
// that is all it takes. Over HTTP/1.1, n-1 more requests go out while the
// first response is still unread, and each holds the connection it gets
// until every one has its own (an idle one if the pool has it, else a new
// dial), so that none is handed a connection another just freed and no dial
// is left racing in the background. A bodiless answer frees its connection
// with the headers, so after a bodiless first answer n requests go out.
// Then all responses are drained and closed, and the connections go back to
// the pool idle and warm.
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
		more := n - 1
		if first.ContentLength == 0 {
			more = n // its connection is back in the pool
		}
		barrier := newConnBarrier(more)
		var mu sync.Mutex // guards held
		var wg sync.WaitGroup
		for range more {
			wg.Go(func() {
				hold, arrived := barrier.join(ctx)
				defer arrived()
				// A failure here leaves one connection fewer, no more: the
				// first request already vouched for the server.
				if resp, err := g.probe(hold, s, true); err == nil {
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

// connBarrier holds each of n HTTP/1.1 requests on the connection it got
// until all n have one, or gave up: so none is handed a connection that
// another has just freed.
type connBarrier struct {
	left atomic.Int32  // requests without a connection yet
	all  chan struct{} // closed when left reaches 0
}

func newConnBarrier(n int) *connBarrier {
	b := &connBarrier{all: make(chan struct{})}
	b.left.Store(int32(n))
	return b
}

// join returns ctx with the hook that holds a request once it has a
// connection, and arrived, which the request must call when it returns
// (it counts once, connection or not).
func (b *connBarrier) join(ctx context.Context) (_ context.Context, arrived func()) {
	var once sync.Once
	arrived = func() {
		once.Do(func() {
			if b.left.Add(-1) == 0 {
				close(b.all)
			}
		})
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { // HTTP/1.1: on the request's goroutine
			arrived()
			select {
			case <-b.all:
			case <-ctx.Done():
			}
		},
	}), arrived
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
