package pop

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/pop/internal/h2"
)

// front owns the TLS-over-TCP listener. It completes each handshake
// itself and dispatches by ALPN: HTTP/2 connections to the hand-written
// HTTP/2 server (package h2, with h2Hits answering plain hits from its
// reader), HTTP/1.1 connections to the fast loop (serveFast), which passes
// a connection to net/http at its first request that is not a plain hit.
// With the fast paths off (no cache, or disable_fast_path) every
// connection goes to net/http as it is.
type front struct {
	s      *Server
	ln     net.Listener
	tlsCfg *tls.Config
	fast   bool       // serve HTTP/1.1 hits in the fast loop, HTTP/2 with h2
	h2     *h2.Server // serves HTTP/2 connections when fast

	conns     chan net.Conn // to net/http's Accept
	done      chan struct{} // closed by close
	closeOnce sync.Once

	draining atomic.Bool
	mu       sync.Mutex // guards loops
	loops    map[*fastConn]struct{}
	wg       sync.WaitGroup // the accept loop and the fast loops
}

func newFront(s *Server, ln net.Listener, cfg *tls.Config) *front {
	f := &front{s: s, ln: ln, tlsCfg: cfg, fast: s.cache != nil && !s.cfg.DisableFastPath,
		conns: make(chan net.Conn), done: make(chan struct{}), loops: map[*fastConn]struct{}{}}
	lim := s.cfg.Limits
	f.h2 = &h2.Server{Handler: s, MaxConcurrentStreams: lim.MaxConcurrentStreams, MaxHeaderBytes: lim.MaxHeaderBytes,
		ReadHeaderTimeout: lim.ReadHeaderTimeout, IdleTimeout: lim.IdleTimeout, Draining: f.draining.Load, Logger: s.log,
		ConnContext: func(ctx context.Context, tc *tls.Conn) context.Context { return withConn(ctx, tc) }}
	return f
}

// Accept gives net/http the connections it serves: HTTP/2 ones straight
// after the handshake, HTTP/1.1 ones the fast loop passed on.
func (f *front) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections already open are left to their
// owners (net/http's Shutdown, or shutdown and close below).
func (f *front) Close() error {
	f.closeOnce.Do(func() {
		close(f.done)
		f.ln.Close()
	})
	return nil
}

func (f *front) Addr() net.Addr { return f.ln.Addr() }

// acceptLoop accepts TCP connections until the listener closes, backing
// off on errors such as running out of file descriptors.
func (f *front) acceptLoop() {
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.s.log.Warn("accept", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-f.done:
				return
			}
			continue
		}
		delay = 0
		sc, _ := c.(syscall.Conn) // the socket, before admit wraps it
		if c = f.s.tcpConns.admit(c); c == nil {
			f.s.connRefused()
			continue
		}
		f.wg.Go(func() { f.handle(c, sc) })
	}
}

// handle completes the TLS handshake (bounded by the read-header timeout,
// as net/http bounds it) and dispatches by ALPN. The connection is
// tracked until net/http takes it, so that close can end it. sc is the
// socket under raw, for the round-trip samples (rttsample.go) taken after
// the handshake of an HTTP connection and as it closes.
func (f *front) handle(raw net.Conn, sc syscall.Conn) {
	cc := &corkConn{Conn: raw, rtt: f.s.rtt.newTCPRTT(sc, raw.RemoteAddr())}
	tc := tls.Server(cc, f.tlsCfg)
	fc := &fastConn{tc: tc, cc: cc}
	f.mu.Lock()
	f.loops[fc] = struct{}{}
	f.mu.Unlock()
	var pass net.Conn // for net/http, once untracked
	defer func() {
		f.mu.Lock()
		delete(f.loops, fc)
		f.mu.Unlock()
		if pass != nil {
			f.handoff(pass)
		} else {
			tc.Close()
		}
	}()
	if f.draining.Load() {
		return
	}
	tc.SetDeadline(time.Now().Add(f.s.cfg.Limits.ReadHeaderTimeout))
	if err := tc.Handshake(); err != nil {
		f.s.log.Debug("tls handshake", "remote", raw.RemoteAddr().String(), "error", err)
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	switch st.NegotiatedProtocol {
	case "h2":
		cc.rtt.handshakeDone()
		if !f.fast {
			pass = tc
			return
		}
		remote := tc.RemoteAddr().String()
		c := f.h2.NewConn(tc, &h2Hits{s: f.s, sni: f.s.router.lookup(st.ServerName), ip: f.s.limitKey(remote),
			client: newHitClient(remote, &st, &cc.rtt)})
		fc.h2.Store(c)
		c.Serve()
		fc.h2.Store(nil)
	case "", "http/1.1":
		cc.rtt.handshakeDone()
		if !f.fast {
			pass = tc
			return
		}
		pass = f.serveFast(fc, cc, &st)
	default: // acme-tls/1: the handshake was the whole exchange, and a CA's validator is no client to sample
	}
}

// handoff passes a connection to net/http.
func (f *front) handoff(c net.Conn) {
	select {
	case f.conns <- c:
	case <-f.done:
		c.Close()
	}
}

// replayConn is an HTTP/1.1 connection the fast loop passes on: net/http
// first reads the bytes the loop had already read.
type replayConn struct {
	*tls.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

type tlsStateKey struct{}

// connContext gives requests on a passed-on connection their TLS state
// (net/http only knows it for a *tls.Conn, see withTLS), and every
// request its connection's round-trip time (connRTT).
func (f *front) connContext(ctx context.Context, c net.Conn) context.Context {
	switch c := c.(type) {
	case *replayConn:
		st := c.ConnectionState()
		return withConn(context.WithValue(ctx, tlsStateKey{}, &st), c.Conn)
	case *tls.Conn:
		return withConn(ctx, c)
	}
	return ctx
}

// withConn notes under connKey the corkConn under a TLS connection.
func withConn(ctx context.Context, tc *tls.Conn) context.Context {
	if cc, ok := tc.NetConn().(*corkConn); ok {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}

// withTLS sets r.TLS for a request on a passed-on connection.
func withTLS(r *http.Request) {
	if r.TLS == nil {
		if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
			r.TLS = st
		}
	}
}

// fastConn is a connection the front owns: in its handshake or in the
// fast loop.
type fastConn struct {
	tc   *tls.Conn
	cc   *corkConn
	idle atomic.Bool // waiting for a request: shutdown may close it
	h2   atomic.Pointer[h2.Conn]
}

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// shutdown drains the fast loops: idle connections close now, busy ones
// after their response (with Connection: close); it waits for them until
// ctx ends, then closes the rest.
func (f *front) shutdown(ctx context.Context) error {
	f.Close()
	f.draining.Store(true)
	var h2conns []*h2.Conn
	f.mu.Lock()
	for fc := range f.loops {
		if c := fc.h2.Load(); c != nil {
			h2conns = append(h2conns, c)
		} else if fc.idle.Load() {
			fc.tc.SetReadDeadline(aLongTimeAgo)
		}
	}
	f.mu.Unlock()
	for _, c := range h2conns {
		go c.Drain() // GOAWAY; the connection ends with its last stream (a stuck write must not hold up the rest)
	}
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		f.closeConns()
		<-done
		return ctx.Err()
	}
}

// close stops the listener and closes the fast loops' connections.
func (f *front) close() {
	f.Close()
	f.draining.Store(true)
	f.closeConns()
	f.wg.Wait()
}

func (f *front) closeConns() {
	f.mu.Lock()
	for fc := range f.loops {
		fc.tc.NetConn().Close()
	}
	f.mu.Unlock()
}
