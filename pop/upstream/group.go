package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Group is a pool of connections to the servers of one origin group.
type Group struct {
	cfg     Config
	servers []*server
	bal     balancer
	sem     chan struct{} // bulkhead: one token per request in flight
	budget  *retryBudget

	overloaded, retries, budgetDenied atomic.Int64

	ctx    context.Context // ends the background loops
	cancel context.CancelFunc
	wg     sync.WaitGroup // owns the health loop
	once   sync.Once      // guards starting the health loop
	closed sync.Once
}

// server is one origin server with its own transport and breaker.
type server struct {
	url     *url.URL
	tr      *http.Transport
	breaker breaker

	healthy     atomic.Bool
	warm        atomic.Bool
	outstanding atomic.Int64
	requests    atomic.Int64
	failures    atomic.Int64
	dials       atomic.Int64
	handshakes  atomic.Int64
}

// New validates cfg and builds a Group. Nothing is dialled until Start or
// the first request.
func New(cfg Config) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	g := &Group{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrent), budget: newRetryBudget(cfg.RetryBudget, 10, cfg.Now)}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	for _, raw := range cfg.Servers {
		u, _ := url.Parse(raw)
		u.Path = ""
		s := &server{url: u, breaker: breaker{threshold: cfg.FailThreshold, openFor: cfg.OpenDuration}}
		s.tr = g.newTransport(s)
		// Until the first health check says otherwise, a server is presumed
		// healthy, so that requests work before Start and without checks.
		s.healthy.Store(true)
		g.servers = append(g.servers, s)
	}
	g.bal = newBalancer(cfg.Balancer, g.servers)
	return g, nil
}

func (g *Group) newTransport(s *server) *http.Transport {
	c := g.cfg
	dialer := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	tlsConf := &tls.Config{
		RootCAs:            c.RootCAs,
		ServerName:         c.ServerName,
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
		VerifyConnection: func(tls.ConnectionState) error {
			s.handshakes.Add(1)
			return nil
		},
	}
	if tlsConf.ServerName == "" {
		tlsConf.ServerName = s.url.Hostname()
	}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			s.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true, // a custom dialer and TLS config turn HTTP/2 off otherwise
		TLSHandshakeTimeout:   c.TLSTimeout,
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		MaxIdleConns:          c.MaxIdleConnsPerServer,
		MaxIdleConnsPerHost:   c.MaxIdleConnsPerServer,
		IdleConnTimeout:       10 * time.Minute,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: c.KeepAlive,
			PingTimeout:     5 * time.Second,
		},
	}
}

// Start warms every server (WarmConns connections, each through a full
// TLS handshake) and starts the health and keep-warm loop, owned by the
// Group until Close. It returns when every server was tried once or ctx
// ends; a server that is down stays out of rotation until a health check
// reaches it.
func (g *Group) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(g.servers))
	for i, s := range g.servers {
		wg.Go(func() { errs[i] = g.warmServer(ctx, s, g.cfg.WarmConns) })
	}
	wg.Wait()
	g.once.Do(func() { g.wg.Go(g.healthLoop) })
	return errors.Join(errs...)
}

// Ready reports whether at least one server is warm, healthy and not ejected.
func (g *Group) Ready() bool {
	now := g.cfg.Now()
	for _, s := range g.servers {
		if s.warm.Load() && s.healthy.Load() && s.breaker.state(now) != BreakerOpen {
			return true
		}
	}
	return false
}

// Close stops the loops and closes idle connections.
func (g *Group) Close() error {
	g.closed.Do(func() {
		g.cancel()
		g.wg.Wait()
		for _, s := range g.servers {
			s.tr.CloseIdleConnections()
		}
	})
	return nil
}

// RoundTrip sends req to a server of the group. req.URL supplies the path
// and query; scheme and host become the chosen server's, and req.Host (the
// client's Host) is kept.
func (g *Group) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case g.sem <- struct{}{}:
	default:
		g.overloaded.Add(1)
		return nil, fmt.Errorf("%s: %d requests in flight: %w", g.cfg.Name, g.cfg.MaxConcurrent, ErrOverloaded)
	}
	release := func() { <-g.sem }
	g.budget.deposit()

	attempts := 1
	if g.cfg.Retries > 0 && idempotent(req) {
		attempts += g.cfg.Retries
	}
	var tried []*server
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			if !g.budget.withdraw() {
				g.budgetDenied.Add(1)
				break
			}
			g.retries.Add(1)
			if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
				body, err := req.GetBody()
				if err != nil {
					break
				}
				req.Body = body
			}
		}
		s := g.bal.pick(req, tried, g.cfg.Now())
		if s == nil {
			if lastErr == nil {
				lastErr = fmt.Errorf("%s: %w", g.cfg.Name, ErrUnavailable)
			}
			break
		}
		tried = append(tried, s)
		resp, sent, err := g.send(s, req, release)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if sent || req.Context().Err() != nil {
			break
		}
	}
	release()
	return nil, lastErr
}

// send makes one attempt on s. sent reports whether any of the request may
// have reached the server (then it must not be retried).
func (g *Group) send(s *server, req *http.Request, release func()) (resp *http.Response, sent bool, err error) {
	ctx, cancel := context.WithTimeout(req.Context(), g.cfg.TotalTimeout)
	var gotConn atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }})
	out := req.Clone(ctx)
	out.URL.Scheme, out.URL.Host = s.url.Scheme, s.url.Host
	if out.Host == "" {
		out.Host = req.URL.Host
	}
	out.RequestURI = ""
	s.outstanding.Add(1)
	s.requests.Add(1)
	resp, err = s.tr.RoundTrip(out)
	if err != nil {
		s.outstanding.Add(-1)
		cancel()
		if req.Context().Err() != nil {
			return nil, true, req.Context().Err() // the client gave up: not the origin's fault
		}
		s.failures.Add(1)
		s.breaker.failure(g.cfg.Now())
		return nil, gotConn.Load(), g.classify(s, err)
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		s.failures.Add(1)
		s.breaker.failure(g.cfg.Now())
	default:
		s.breaker.success()
	}
	resp.Body = &trackedBody{rc: resp.Body, done: func() {
		s.outstanding.Add(-1)
		cancel()
		release()
	}}
	return resp, true, nil
}

// classify wraps a transport error, marking timeouts with ErrTimeout.
func (g *Group) classify(s *server, err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("origin %s: %w: %v", s.url.Host, ErrTimeout, err)
	}
	return fmt.Errorf("origin %s: %w", s.url.Host, err)
}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
	}
	return false
}

// trackedBody runs done once, when the body is read to its end or closed.
type trackedBody struct {
	rc   io.ReadCloser
	once sync.Once
	done func()
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.once.Do(b.done)
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.rc.Close()
	b.once.Do(b.done)
	return err
}

// Stats is a snapshot of the group for metrics.
type Stats struct {
	Servers      []ServerStats
	Inflight     int
	Overloaded   int64 // requests refused by the bulkhead
	Retries      int64
	BudgetDenied int64 // retries the budget refused
}

// ServerStats describes one origin server.
type ServerStats struct {
	URL           string
	Healthy       bool // passed its last health check (or has none)
	Warm          bool // has been reached at least once
	Breaker       BreakerState
	Outstanding   int64
	Requests      int64
	Failures      int64
	Dials         int64
	TLSHandshakes int64
}

// Stats returns a snapshot of the group.
func (g *Group) Stats() Stats {
	now := g.cfg.Now()
	st := Stats{Inflight: len(g.sem), Overloaded: g.overloaded.Load(), Retries: g.retries.Load(), BudgetDenied: g.budgetDenied.Load()}
	for _, s := range g.servers {
		st.Servers = append(st.Servers, ServerStats{
			URL: s.url.String(), Healthy: s.healthy.Load(), Warm: s.warm.Load(), Breaker: s.breaker.state(now),
			Outstanding: s.outstanding.Load(), Requests: s.requests.Load(), Failures: s.failures.Load(),
			Dials: s.dials.Load(), TLSHandshakes: s.handshakes.Load(),
		})
	}
	return st
}
