package pop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/cache"
)

// front owns the TLS-over-TCP listener. It completes each handshake
// itself, hands HTTP/2 connections to net/http untouched, and serves
// HTTP/1.1 connections from a loop of its own that answers plain cache
// hits without net/http: the request head is parsed in place, the cache
// is looked up with one key built in a reused buffer, and the response is
// one precomputed header block, the few per-request fields and the body,
// written with one TLS write and one syscall. The first request the fast
// loop does not serve as a hit (anything but a plain GET or HEAD, any
// field that changes the answer, a miss, anything unusual in the syntax)
// moves the connection, with the bytes already read, to net/http for
// good: the strict parser and every feature stay net/http's.
type front struct {
	s      *Server
	ln     net.Listener
	tlsCfg *tls.Config
	fast   bool // serve HTTP/1.1 hits in the fast loop

	conns     chan net.Conn // to net/http's Accept
	done      chan struct{} // closed by close
	closeOnce sync.Once

	draining atomic.Bool
	mu       sync.Mutex // guards loops
	loops    map[*fastConn]struct{}
	wg       sync.WaitGroup // the accept loop and the fast loops

	ok200   prometheus.Counter
	h2ok200 prometheus.Counter
	hits    atomic.Int64 // responses the fast loop or an h2conn's reader served
}

func newFront(s *Server, ln net.Listener, cfg *tls.Config) *front {
	return &front{s: s, ln: ln, tlsCfg: cfg, fast: s.cache != nil && !s.cfg.DisableFastPath,
		conns: make(chan net.Conn), done: make(chan struct{}), loops: map[*fastConn]struct{}{},
		ok200: s.metrics.requests.WithLabelValues("h1", "200"), h2ok200: s.metrics.requests.WithLabelValues("h2", "200")}
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
		if c = f.s.tcpConns.admit(c); c == nil {
			f.s.connRefused()
			continue
		}
		f.wg.Go(func() { f.handle(c) })
	}
}

// handle completes the TLS handshake (bounded by the read-header timeout,
// as net/http bounds it) and dispatches by ALPN. The connection is
// tracked until net/http takes it, so that close can end it.
func (f *front) handle(raw net.Conn) {
	cc := &corkConn{Conn: raw}
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
		if !f.fast {
			pass = tc
			return
		}
		f.serveH2(fc, st.ServerName)
	case "", "http/1.1":
		if !f.fast {
			pass = tc
			return
		}
		pass = f.serveFast(fc, cc, st.ServerName)
	default: // acme-tls/1: the handshake was the whole exchange
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

// connContext gives requests on a passed-on connection their TLS state:
// net/http only knows it for a *tls.Conn (see withTLS).
func (f *front) connContext(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*replayConn); ok {
		st := rc.ConnectionState()
		return context.WithValue(ctx, tlsStateKey{}, &st)
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
	h2   atomic.Pointer[h2conn]
}

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// serveFast is the fast loop of one HTTP/1.1 connection. It returns the
// connection for net/http when it meets a request it does not serve, or
// nil when the connection is done.
func (f *front) serveFast(fc *fastConn, cc *corkConn, sni string) net.Conn {
	tc, s := fc.tc, f.s
	var sniSite *site
	if sni != "" {
		sniSite = s.router.lookup(sni)
	}
	br := bufio.NewReaderSize(tc, 4096)
	var key []byte
	lim := s.cfg.Limits
	var ip string // the client's address, for the rate limit
	if s.limiter != nil {
		ip = clientIP(tc.RemoteAddr().String())
	}
	// The first request must come within the read-header timeout: a
	// connection that never asks is not idle keep-alive, it is held.
	wait := lim.ReadHeaderTimeout
	for {
		now := time.Now()
		if br.Buffered() == 0 {
			tc.SetReadDeadline(now.Add(wait))
			fc.idle.Store(true)
			if f.draining.Load() {
				return nil
			}
			if _, err := br.Peek(1); err != nil {
				return nil
			}
			fc.idle.Store(false)
			now = time.Now()
		}
		tc.SetReadDeadline(now.Add(lim.ReadHeaderTimeout))
		head, err := peekHead(br)
		if err != nil {
			return nil // timeout (slowloris) or the client left mid-request
		}
		wait = lim.IdleTimeout
		var req fastRequest
		var hit cache.FastHit
		ok := head != nil
		if ok {
			key, hit, ok = f.lookup(head, &req, sniSite, key)
		}
		if ok && s.maxInflight > 0 {
			if s.inflight.Add(1) > s.maxInflight {
				s.inflight.Add(-1)
				ok = false // net/http answers 503
			}
		}
		if ok && !s.admitFast(ip) {
			if s.maxInflight > 0 {
				s.inflight.Add(-1)
			}
			ok = false // net/http answers 429
		}
		if !ok {
			b, _ := br.Peek(br.Buffered())
			return &replayConn{Conn: tc, pending: bytes.Clone(b)}
		}
		br.Discard(len(head))
		closeAfter := req.close || f.draining.Load()
		f.ok200.Inc()
		f.hits.Add(1) // before the write: a client may look as soon as it has the answer
		err = f.writeHit(tc, cc, &hit, req.head, closeAfter)
		if s.maxInflight > 0 {
			s.inflight.Add(-1)
		}
		if err != nil || closeAfter {
			return nil
		}
	}
}

// lookup parses a request head and finds the stored response that answers
// it in the fast loop. key is a reused buffer; it returns it grown.
func (f *front) lookup(head []byte, req *fastRequest, sniSite *site, key []byte) ([]byte, cache.FastHit, bool) {
	if !req.parse(head) {
		return key, cache.FastHit{}, false
	}
	// Views of the read buffer, valid until it is read again.
	host := unsafe.String(unsafe.SliceData(req.host), len(req.host))
	st := f.s.router.lookup(host)
	if st == nil || sniSite != nil && sniSite != st {
		return key, cache.FastHit{}, false
	}
	key = cache.AppendKey(key[:0], true, host, unsafe.String(unsafe.SliceData(req.target), len(req.target)), st.query)
	hit, ok := f.s.cache.LookupFast(key)
	return key, hit, ok
}

// peekHead returns the request head (through the empty line) from the
// read buffer without consuming it, reading more as needed. It returns nil
// and no error when the head is not for the fast loop: longer than the
// buffer, or lines ending in a bare LF.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return buf[:i+4], nil
		}
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && (i == 0 || buf[i-1] != '\r') {
			return nil, nil
		}
		if len(buf) >= br.Size() {
			return nil, nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// fastRequest is what the fast loop needs from a request head. Its slices
// point into the read buffer.
type fastRequest struct {
	head   bool // HEAD rather than GET
	target []byte
	host   []byte
	close  bool // Connection: close
}

// parse accepts only the plainest requests: "GET" or "HEAD", an
// origin-form target of unreserved characters, HTTP/1.1, one Host, fields
// with token names and clean values, and none of the fields that change
// what the answer is or how the body is framed. Anything else is left to
// net/http, so the fast loop never decides a case net/http would decide
// differently.
func (q *fastRequest) parse(head []byte) bool {
	line, rest, _ := bytes.Cut(head, crlf)
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD /")):
		q.head = true
		line = line[5:]
	default:
		return false
	}
	target, version, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(version) != "HTTP/1.1" || !validTarget(target) {
		return false
	}
	q.target = target
	fields := 0
	for len(rest) > 2 { // the head ends with the empty line's CRLF
		var l []byte
		l, rest, _ = bytes.Cut(rest, crlf)
		if fields++; fields > 64 {
			return false
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || !validToken(name) {
			return false
		}
		value = bytes.Trim(value, " \t")
		if !validValue(value) {
			return false
		}
		switch {
		case asciiEqualFold(name, "host"):
			if q.host != nil || !validHost(value) {
				return false
			}
			q.host = value
		case asciiEqualFold(name, "connection"):
			switch {
			case asciiEqualFold(value, "close"):
				q.close = true
			case asciiEqualFold(value, "keep-alive"):
			default:
				return false
			}
		case len(name) > 3 && asciiEqualFold(name[:3], "if-"),
			asciiEqualFold(name, "range"), asciiEqualFold(name, "authorization"),
			asciiEqualFold(name, "cache-control"), asciiEqualFold(name, "pragma"),
			asciiEqualFold(name, "content-length"), asciiEqualFold(name, "transfer-encoding"),
			asciiEqualFold(name, "expect"), asciiEqualFold(name, "upgrade"), asciiEqualFold(name, "te"),
			asciiEqualFold(name, "http2-settings"), asciiEqualFold(name, "trailer"):
			return false
		}
	}
	return len(q.host) > 0
}

var crlf = []byte("\r\n")

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// validTarget: "/" then path characters that net/url keeps as they are
// (unreserved, sub-delims, ":", "@", "/" and %XX), then optionally "?" and
// visible ASCII other than "#".
func validTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	inQuery := false
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case inQuery:
			if c <= ' ' || c >= 0x7f || c == '#' {
				return false
			}
		case c == '?':
			inQuery = true
		case c == '%':
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
			i += 2
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			switch c {
			case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
			default:
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func validToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			switch c {
			case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
			default:
				return false
			}
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost: a name, an IPv4 address or a bracketed IPv6 address, with an
// optional port.
func validHost(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// writeBuffers holds response buffers between requests.
var writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeHit writes a stored response: its precomputed header block, Age,
// Cache-Status, Date when the origin sent none, Connection: close when
// closing, and the body; small responses in one TLS record, larger ones
// corked into one write.
func (f *front) writeHit(tc io.Writer, cc *corkConn, hit *cache.FastHit, head, closeAfter bool) error {
	wire := hit.Wire.Load()
	if wire == nil {
		w := f.wireHeader(hit.Header, len(hit.Body))
		hit.Wire.CompareAndSwap(nil, &w)
		wire = hit.Wire.Load()
	}
	bp := writeBuffers.Get().(*[]byte)
	defer writeBuffers.Put(bp)
	b := append((*bp)[:0], *wire...)
	b = append(b, "Age: "...)
	b = strconv.AppendInt(b, ageSeconds(hit.Age), 10)
	b = append(b, "\r\nCache-Status: "...)
	if prior := hit.Header["Cache-Status"]; len(prior) > 0 && prior[0] != "" {
		b = append(b, prior[0]...)
		b = append(b, ", "...)
	}
	b = append(b, f.s.cfg.Name...)
	b = append(b, "; hit; ttl="...)
	b = strconv.AppendInt(b, ageSeconds(hit.TTL), 10)
	b = append(b, "\r\n"...)
	if _, ok := hit.Header["Date"]; !ok {
		b = append(b, "Date: "...)
		b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
	}
	if closeAfter {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	var err error
	switch {
	case head:
		_, err = tc.Write(b)
	case len(b)+len(hit.Body) <= cap(b):
		b = append(b, hit.Body...)
		_, err = tc.Write(b)
	case cc == nil:
		if _, err = tc.Write(b); err == nil {
			_, err = tc.Write(hit.Body)
		}
	default:
		cc.cork()
		if _, err = tc.Write(b); err == nil {
			_, err = tc.Write(hit.Body)
		}
		if ferr := cc.uncork(); err == nil {
			err = ferr
		}
	}
	*bp = b[:0]
	return err
}

func ageSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	return min(s, 1<<31)
}

// wireHeader is a stored response's HTTP/1.1 status line and header
// block, without the per-request fields: the same fields the net/http
// path sends for a hit (the stored ones over X-Served-By and Alt-Svc,
// Accept-Ranges and Content-Length as http.ServeContent sets them,
// Last-Modified in its canonical form), sorted by name.
func (f *front) wireHeader(stored http.Header, size int) []byte {
	h := f.hitFields(stored)
	delete(h, "Date")
	b := []byte("HTTP/1.1 200 OK\r\n")
	for _, k := range sortedKeys(h) {
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			for i := 0; i < len(v); i++ { // as net/http: no line breaks in values
				c := v[i]
				if c == '\r' || c == '\n' {
					c = ' '
				}
				b = append(b, c)
			}
			b = append(b, "\r\n"...)
		}
	}
	if d, ok := stored["Date"]; ok && len(d) > 0 {
		b = append(b, "Date: "...)
		b = append(b, d[0]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(size), 10)
	return append(b, "\r\n"...)
}

// hitFields are the fields of a hit that do not change per request: the
// stored ones over X-Served-By and Alt-Svc, Accept-Ranges as
// http.ServeContent sets it, Last-Modified in its canonical form; without
// Age, Cache-Status, Content-Length and Connection.
func (f *front) hitFields(stored http.Header) http.Header {
	h := http.Header{"X-Served-By": f.s.servedBy}
	if f.s.altSvc != nil {
		h["Alt-Svc"] = f.s.altSvc
	}
	for k, v := range stored {
		h[k] = v
	}
	for _, k := range []string{"Age", "Cache-Status", "Content-Length", "Connection"} {
		delete(h, k)
	}
	h["Accept-Ranges"] = []string{"bytes"}
	if lm, err := http.ParseTime(h.Get("Last-Modified")); err == nil && !lm.IsZero() {
		h["Last-Modified"] = []string{lm.UTC().Format(http.TimeFormat)}
	}
	return h
}

// shutdown drains the fast loops: idle connections close now, busy ones
// after their response (with Connection: close); it waits for them until
// ctx ends, then closes the rest.
func (f *front) shutdown(ctx context.Context) error {
	f.Close()
	f.draining.Store(true)
	var h2 []*h2conn
	f.mu.Lock()
	for fc := range f.loops {
		if c := fc.h2.Load(); c != nil {
			h2 = append(h2, c)
		} else if fc.idle.Load() {
			fc.tc.SetReadDeadline(aLongTimeAgo)
		}
	}
	f.mu.Unlock()
	for _, c := range h2 {
		go c.drain() // GOAWAY; the connection ends with its last stream (a stuck write must not hold up the rest)
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

// corkConn sits under the TLS connection and, while corked, gathers the
// records of one response so that they leave in one write.
type corkConn struct {
	net.Conn
	mu     sync.Mutex // guards corked, buf: a TLS alert may be written by Close from another goroutine
	corked bool
	buf    *[]byte
}

var corkBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= 256<<10 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.buf = corkBuffers.Get().(*[]byte)
	c.mu.Unlock()
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.corked = false
	if cap(*c.buf) <= 512<<10 {
		corkBuffers.Put(c.buf)
	}
	c.buf = nil
	return err
}

func (c *corkConn) flushLocked() error {
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}
