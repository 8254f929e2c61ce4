// Package upstream is a PoP's pool of warm, persistent connections to one
// origin group: several origin servers behind one http.RoundTripper.
//
// A cold origin connection costs a TCP and a TLS handshake, a round trip or
// two each, on the path of a client request that already waited for the
// PoP. So a Group dials and handshakes its connections before the first
// request (Start) and keeps them warm: HTTP/2 connections (negotiated by
// ALPN) are PINGed when idle, HTTP/1.1 pools are re-warmed with periodic
// requests. Each request then follows RoundTrip:
//
//  1. The bulkhead: beyond MaxConcurrent requests in flight the group
//     answers ErrOverloaded at once, so a slow origin cannot pile up the
//     PoP's goroutines.
//  2. The balancer picks a server (round robin, least outstanding by power
//     of two choices, or a consistent hash of the URL), skipping servers
//     that failed an active health check and servers whose breaker is open
//     (passive ejection; half-open later). If that leaves no server, the
//     request is routed in panic (Envoy's term) among all servers, as if
//     every one were healthy: a server thought down may answer, where
//     failing at once is a certain 502 (an origin that came up since its
//     last check, a health path broken on its own).
//  3. The exchange is bounded by connect, TLS, response-header and total
//     timeouts; the total one covers reading the body. Its outcome feeds
//     the server's breaker, which ejects the server on a streak of connect
//     failures or a high failure rate, where the failures of one path count
//     once: a client cannot eject a server by requesting a URL that fails,
//     however often.
//     At most MaxEjectionPercent of the group is ejected at a time.
//  4. A pooled connection may have been closed by the origin meanwhile
//     (its keep-alive timeout, a GOAWAY, a reset). A request that failed
//     on one before any byte of it was written there (on Linux, the
//     connection is checked for a close before the first byte), which the
//     origin therefore cannot have seen, is sent once more to the same
//     server on a new connection of its own, idempotent or not; so is an
//     idempotent request that had no answer yet, as Go's HTTP/1.1
//     transport itself resends one. A body that GetBody cannot give again
//     is kept as it is read, up to 64 KiB, to be sent again, by this retry
//     or by the transports' own (HTTP/2 resends a stream its GOAWAY left
//     out). That retry (Stats.FreshRetries) is no failure of the server,
//     and takes nothing from the retry budget. A non-idempotent request
//     that crossed the origin's close on the wire (written before the
//     close reached the PoP) still fails, unless a GOAWAY says the origin
//     left it alone: it cannot be told from one the origin read and acted
//     on.
//  5. An idempotent request that sent nothing (the dial or the handshake
//     failed) or was answered 500, 502, 503 or 504 is retried on another
//     server, if the retry budget allows; the 5xx answer is dropped. So a
//     server that fails every request at once, which least outstanding
//     would otherwise favour (it has the fewest requests in flight), costs
//     its requests a retry until the failure rate ejects it.
//  6. No error message names a server or tells of ejections, so that a
//     PoP may pass it on to a client; an *Error carries the server for logs.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Group is a pool of connections to the servers of one origin group. It is
// an http.RoundTripper, safe for concurrent use.
type Group struct {
	cfg     Config
	log     *slog.Logger // with the group's name
	servers []*server
	bal     balancer
	sem     chan struct{} // the bulkhead: one token per request in flight
	budget  *retryBudget
	ejected *ejectionCap // shared by the servers' breakers

	overloaded, retries, budgetDenied, panics, freshRetries atomic.Int64

	ctx    context.Context // ends the background loops: cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the per-server keep-warm and health loops

	mu      sync.Mutex // guards started, closed
	started bool
	closed  bool
}

// server is one origin server with its own transport and breaker.
type server struct {
	url     *url.URL
	weight  int // its share of requests (Config.Weights); 0: a backup
	tr      *http.Transport
	fresh   *http.Transport // no keep-alives: for retryFresh
	breaker breaker

	healthy     atomic.Bool  // in rotation: passed its last health check, or has none
	warm        atomic.Bool  // reached at least once
	proto       atomic.Int32 // HTTP major version it answered with, 0 until warm
	outstanding atomic.Int64
	requests    atomic.Int64
	failures    atomic.Int64
	dials       atomic.Int64
	handshakes  atomic.Int64
}

var _ http.RoundTripper = (*Group)(nil)

// New validates cfg and builds a Group. Nothing is dialled until Start or
// the first request.
func New(cfg Config) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	g := &Group{
		cfg:     cfg,
		log:     cfg.Logger.With("upstream", cfg.Name),
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		budget:  newRetryBudget(cfg.RetryBudget, 10, cfg.Now),
		ejected: newEjectionCap(len(cfg.Servers), cfg.MaxEjectionPercent),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	for _, raw := range cfg.Servers {
		u, _ := url.Parse(raw) // validated
		s := &server{
			url:     &url.URL{Scheme: u.Scheme, Host: u.Host},
			weight:  cfg.weight(u),
			breaker: newBreaker(cfg, g.ejected),
		}
		s.tr = g.newTransport(s)
		s.fresh = g.newTransport(s)
		s.fresh.DisableKeepAlives = true
		// Presumed healthy until a check says otherwise, so that requests
		// work before Start and without active checks.
		s.healthy.Store(true)
		g.servers = append(g.servers, s)
	}
	g.bal = newBalancer(cfg.Balancer, g.servers)
	return g, nil
}

// newTransport builds s's transport, counting its dials and handshakes.
func (g *Group) newTransport(s *server) *http.Transport {
	c := g.cfg
	dialer := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: c.KeepAlive}
	serverName := c.ServerName
	if serverName == "" {
		serverName = s.url.Hostname()
	}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			s.dials.Add(1)
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &originConn{Conn: c}, nil
		},
		TLSClientConfig: &tls.Config{
			RootCAs:            c.RootCAs,
			ServerName:         serverName,
			ClientSessionCache: tls.NewLRUClientSessionCache(64),
			// Runs once per completed handshake, resumed ones included.
			VerifyConnection: func(tls.ConnectionState) error {
				s.handshakes.Add(1)
				return nil
			},
		},
		ForceAttemptHTTP2:     true, // a custom dialer and TLS config turn HTTP/2 off otherwise
		TLSHandshakeTimeout:   c.TLSTimeout,
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          c.MaxIdleConnsPerServer,
		MaxIdleConnsPerHost:   c.MaxIdleConnsPerServer,
		IdleConnTimeout:       10 * time.Minute,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:               c.KeepAlive,
			PingTimeout:                   5 * time.Second,
			MaxReceiveBufferPerStream:     c.StreamWindow,
			MaxReceiveBufferPerConnection: c.ConnWindow,
		},
	}
}

// Start warms every server: WarmConns connections each, dialled and
// TLS-handshaken (one for a server that speaks HTTP/2), and starts the
// per-server health and keep-warm loops, which run until Close. It returns
// when every reachable server is warm or ctx ends, with the errors of the
// servers it could not reach; those stay out of rotation (with active
// checks) and the loops keep trying them every HealthInterval, so the group
// becomes ready when they come up. Calling Start again warms again.
func (g *Group) Start(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return fmt.Errorf("start upstream %s: %w", g.cfg.Name, ErrClosed)
	}
	first := !g.started
	g.started = true
	g.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)() // Close ends a warm-up too

	errs := make([]error, len(g.servers))
	var wg sync.WaitGroup
	for i, s := range g.servers {
		wg.Go(func() { errs[i] = g.warm(ctx, s, g.cfg.WarmConns) })
	}
	wg.Wait()

	if first {
		g.mu.Lock()
		if !g.closed { // else Close is waiting on g.wg: add nothing
			for _, s := range g.servers {
				g.wg.Go(func() { g.tend(g.ctx, s) })
			}
		}
		g.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Name is the group's name (Config.Name).
func (g *Group) Name() string { return g.cfg.Name }

// Ready reports whether at least one server is warm, healthy and not
// ejected by its breaker.
func (g *Group) Ready() bool {
	now := g.cfg.Now()
	for _, s := range g.servers {
		if s.warm.Load() && s.healthy.Load() && s.breaker.state(now) != BreakerOpen {
			return true
		}
	}
	return false
}

// Close stops the loops, waits for them and closes idle connections.
// Requests in flight finish on their connections; new ones fail with
// ErrClosed.
func (g *Group) Close() error {
	g.mu.Lock()
	already := g.closed
	g.closed = true
	g.mu.Unlock()
	if already {
		return nil
	}
	g.cancel()
	g.wg.Wait()
	for _, s := range g.servers {
		s.tr.CloseIdleConnections()
		s.fresh.CloseIdleConnections()
	}
	return nil
}

func (g *Group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// RoundTrip sends req to a server of the group. req.URL supplies the path
// and query; its scheme and host become the chosen server's, and req.Host
// (the site's name, set by the caller) is kept, or req.URL.Host if empty.
// The request is in flight (for the bulkhead and the total timeout) until
// the response body is read to the end or closed.
func (g *Group) RoundTrip(req *http.Request) (*http.Response, error) {
	if g.isClosed() {
		closeBody(req)
		return nil, ErrClosed
	}
	select {
	case g.sem <- struct{}{}:
	default:
		g.overloaded.Add(1)
		closeBody(req)
		return nil, ErrOverloaded
	}
	g.budget.deposit()
	ctx, cancel := context.WithTimeout(req.Context(), g.cfg.TotalTimeout)
	resp, err := g.exchange(ctx, cancel, req)
	if err != nil {
		cancel()
		<-g.sem
		return nil, err
	}
	return resp, nil
}

// exchange tries servers until one answers well, a failure may not be
// retried, or the attempts or the budget run out, and returns the last
// outcome. ctx carries the total timeout; cancel is handed to the response
// body.
func (g *Group) exchange(ctx context.Context, cancel context.CancelFunc, req *http.Request) (*http.Response, error) {
	attempts := 1
	if g.cfg.Retries > 0 && idempotent(req) {
		attempts += g.cfg.Retries
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	key := pathKey(host, req.URL)
	now := g.cfg.Now()
	s, trial := g.bal.pick(req, nil, now, false)
	panicking := s == nil
	if panicking {
		g.panics.Add(1)
		s, trial = g.bal.pick(req, nil, now, true) // nothing tried: never nil
	}
	tried := []*server{s}
	body := req.Body // the body of the first attempt; retries get theirs from GetBody
	for n := 1; ; n++ {
		resp, sent, err := g.attempt(ctx, req, body, s, trial, key)
		var next *server
		var nextTrial bool
		if n < attempts && ctx.Err() == nil && (err == nil && serverError(resp.StatusCode) || err != nil && !sent) {
			next, nextTrial = g.bal.pick(req, tried, g.cfg.Now(), panicking)
			if next != nil && !g.retry(req, &body, next, nextTrial) {
				next = nil
			}
		}
		if next == nil {
			if err != nil {
				return nil, err
			}
			return g.track(resp, s, trial, key, req.Context(), ctx, cancel), nil
		}
		if resp != nil {
			discard(resp, s)
		}
		s, trial = next, nextTrial
		tried = append(tried, s)
	}
}

// retry takes a retry of req on s from the budget and readies the body to
// send again. On false, s's breaker admission is given back.
func (g *Group) retry(req *http.Request, body *io.ReadCloser, s *server, trial bool) bool {
	if !g.budget.withdraw() {
		g.budgetDenied.Add(1)
		s.breaker.abandon(trial)
		return false
	}
	if *body != nil && *body != http.NoBody {
		b, err := req.GetBody()
		if err != nil {
			s.breaker.abandon(trial)
			return false
		}
		*body = b
	}
	g.retries.Add(1)
	return true
}

// attempt sends req to s once and feeds a failure to s's breaker. sent
// reports whether any of the request may have reached the server. The
// response's exchange is still in s's outstanding count, and a good answer
// still to be judged: the caller either tracks it or discards it.
func (g *Group) attempt(ctx context.Context, req *http.Request, body io.ReadCloser, s *server, trial bool, key uint64) (resp *http.Response, sent bool, err error) {
	tr := &attemptTrace{}
	out := req.WithContext(httptrace.WithClientTrace(ctx, tr.hooks()))
	u := *req.URL
	u.Scheme, u.Host, u.User = s.url.Scheme, s.url.Host, nil
	out.URL = &u
	if out.Host == "" {
		out.Host = req.URL.Host
	}
	out.RequestURI = ""
	out.Body = body
	if r := replayable(out); r != nil {
		defer r.settle()
	}

	s.outstanding.Add(1)
	s.requests.Add(1)
	resp, err = s.tr.RoundTrip(out)
	if err != nil && req.Context().Err() == nil && ctx.Err() == nil && !isTimeout(err) && tr.stale(idempotent(out)) {
		// A pooled connection the origin had closed: no fault of the server.
		if r, rtr, rerr := g.retryFresh(ctx, out, s); rtr != nil {
			resp, err, tr = r, rerr, rtr
		}
	}
	if err != nil {
		s.outstanding.Add(-1)
		p := tr.phase()
		if cerr := req.Context().Err(); cerr != nil {
			// The client gave up: its error, and no verdict on the server.
			s.breaker.abandon(trial)
			return nil, true, exchangeError(s, p, cerr)
		}
		sent = p >= phaseSent && !isDial(err)
		g.failed(s, !sent, key)
		if isTimeout(err) || ctx.Err() != nil {
			return nil, sent, g.timeoutError(s, p, ctx.Err() != nil)
		}
		return nil, sent, exchangeError(s, p, err)
	}
	if serverError(resp.StatusCode) {
		g.failed(s, false, key)
	}
	// A success is counted when the body ends well (track).
	return resp, true, nil
}

// track hands resp to the caller with a body that ends the exchange and
// gives the verdict on a good answer once its body is through: a body that
// breaks off makes the exchange one failure, not a success and a failure.
func (g *Group) track(resp *http.Response, s *server, trial bool, key uint64, client, total context.Context, cancel context.CancelFunc) *http.Response {
	b := &respBody{g: g, s: s, trial: trial, key: key, client: client, total: total, cancel: cancel}
	b.judged.Store(serverError(resp.StatusCode)) // counted by attempt
	if resp.Body == nil || resp.Body == http.NoBody {
		b.finish() // nothing to read: the exchange is over
		return resp
	}
	b.rc = resp.Body
	resp.Body = b
	return resp
}

// discard ends the exchange of a response that a retry replaces. A short
// body is read first, so that an HTTP/1.1 connection can be reused; a long
// or unknown one would delay the retry, so its connection goes.
func discard(resp *http.Response, s *server) {
	if resp.ContentLength >= 0 && resp.ContentLength <= 4<<10 {
		io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	s.outstanding.Add(-1)
}

// serverError reports whether an answer with this status is a failure of
// the server: 500, 502, 503 and 504 are; 501, 505 and the rest of 5xx are
// about the request or the deployment, and are answers like any other.
func serverError(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// pathKey is the key under which a failure of the path counts once in a
// failure window: the site and the path, not the query, which a client
// can vary at no cost.
func pathKey(host string, u *url.URL) uint64 {
	return mix(fnvString(fnvString(fnvOffset, host), u.EscapedPath()))
}

// failed counts a failure of s, a connect failure or one after the request
// was sent, and feeds its breaker.
func (g *Group) failed(s *server, connect bool, key uint64) {
	s.failures.Add(1)
	if s.breaker.failure(g.cfg.Now(), connect, key) {
		g.log.Info("upstream breaker opened", "server", s.url.String(), "open_for", g.cfg.OpenDuration)
	}
}

// idempotent reports whether req may be sent again: an idempotent method
// whose body is empty or can be had again.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
	}
	return false
}

// closeBody closes the body of a request RoundTrip will not send, as a
// RoundTripper must.
func closeBody(r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body.Close()
	}
}

// attemptTrace records how far an attempt got, and on which pooled
// connection (see stale). Its hooks may run on the transport's dial
// goroutine, even after the attempt is over.
type attemptTrace struct {
	p      atomic.Int32
	pooled atomic.Pointer[pooledConn]
}

func (t *attemptTrace) phase() phase { return phase(t.p.Load()) }

// reach moves the phase forward, never back: a dial this request started
// may report progress after the request took another connection.
func (t *attemptTrace) reach(p phase) {
	for {
		cur := t.p.Load()
		if int32(p) <= cur || t.p.CompareAndSwap(cur, int32(p)) {
			return
		}
	}
}

func (t *attemptTrace) hooks() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		DNSStart:             func(httptrace.DNSStartInfo) { t.reach(phaseConnect) },
		ConnectStart:         func(string, string) { t.reach(phaseConnect) },
		TLSHandshakeStart:    func() { t.reach(phaseTLS) },
		GotConn:              t.gotConn,
		GotFirstResponseByte: func() { t.reach(phaseBody) },
	}
}

// respBody is a response body that ends the exchange when it is read to its
// end or closed: it frees the bulkhead slot, the server's outstanding count
// and the total-timeout timer. It reports a total timeout while reading as
// ErrTimeout, and a body the origin broke off as an *Error: a cache that
// reads a whole body before answering passes the error on to its client.
type respBody struct {
	rc     io.ReadCloser
	g      *Group
	s      *server
	trial  bool            // the half-open trial of s's breaker
	key    uint64          // the request's pathKey
	client context.Context // the caller's: its end is not the origin's fault
	total  context.Context // client plus TotalTimeout
	cancel context.CancelFunc

	once   sync.Once
	closed atomic.Bool
	judged atomic.Bool // the breaker has its verdict
}

func (b *respBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		b.finish()
	case b.client.Err() != nil || b.closed.Load():
	case b.total.Err() == context.DeadlineExceeded:
		b.fail()
		err = b.g.timeoutError(b.s, phaseBody, true)
	default:
		b.fail() // the origin broke off mid-body
		err = exchangeError(b.s, phaseBody, err)
	}
	return n, err
}

func (b *respBody) Close() error {
	b.closed.Store(true)
	err := b.rc.Close()
	b.finish()
	return err
}

// fail counts the broken body as a failure of its path.
func (b *respBody) fail() {
	if b.judged.CompareAndSwap(false, true) {
		b.g.failed(b.s, false, b.key)
	}
}

// finish ends the exchange, a success unless it failed; if the client gave
// up, it decides nothing.
func (b *respBody) finish() {
	b.once.Do(func() {
		if b.judged.CompareAndSwap(false, true) {
			if b.client.Err() != nil {
				b.s.breaker.abandon(b.trial)
			} else if b.s.breaker.success(b.g.cfg.Now()) {
				b.g.log.Info("upstream breaker closed", "server", b.s.url.String())
			}
		}
		b.s.outstanding.Add(-1)
		b.cancel()
		<-b.g.sem
	})
}
