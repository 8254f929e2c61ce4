package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/edgecdn/cdn/pop/internal/fieldenc"
)

// startHandler runs Server.Handler for a stream the reader did not
// answer itself. It reports whether the connection goes on.
func (c *Conn) startHandler(mh *http2.MetaHeadersFrame) bool {
	id := mh.StreamID
	st, ok := c.newStream(id, mh.StreamEnded())
	if st == nil {
		return ok
	}
	req, err := c.newRequest(mh, st)
	if err != nil {
		c.srv.logger().Debug("http2 malformed request", "remote", c.remote, "stream", id, "error", err)
		c.mu.Lock()
		c.resetLocked(st, http2.ErrCodeProtocol) // RFC 9113 8.1.1
		c.mu.Unlock()
		c.streamDone(st)
		return true
	}
	go c.runHandler(st, req)
	return true
}

// newRequest builds the *http.Request of a stream as net/http's HTTP/2
// server does, refusing what RFC 9113 8.2 and 8.3 call malformed.
func (c *Conn) newRequest(mh *http2.MetaHeadersFrame, st *stream) (*http.Request, error) {
	var method, scheme, path, authority string
	for _, hf := range mh.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":path":
			path = hf.Value
		case ":authority":
			authority = hf.Value
		default: // :protocol: no extended CONNECT here
			return nil, fmt.Errorf("pseudo-header %s not supported", hf.Name)
		}
	}
	if method == "" || !httpguts.ValidHeaderFieldName(method) {
		return nil, errors.New(":method missing or not a token")
	}
	if method == http.MethodConnect {
		if scheme != "" || path != "" || authority == "" {
			return nil, errors.New("CONNECT needs :authority and no :scheme or :path")
		}
	} else if scheme == "" || path == "" {
		return nil, errors.New(":scheme and :path are required")
	} else if scheme != "https" && scheme != "http" {
		return nil, fmt.Errorf(":scheme %q is not http or https", scheme)
	} else if path[0] != '/' && !(path == "*" && method == http.MethodOptions) {
		return nil, fmt.Errorf(":path %q is not origin-form", path)
	}
	regular := mh.RegularFields()
	header := make(http.Header, len(regular))
	for _, hf := range regular {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, fmt.Errorf("connection-specific field %q", hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return nil, errors.New(`te other than "trailers"`)
			}
		}
		k := http.CanonicalHeaderKey(hf.Name)
		header[k] = append(header[k], hf.Value)
	}
	if cookies := header["Cookie"]; len(cookies) > 1 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")} // RFC 9113 8.2.3
	}
	switch hosts := header["Host"]; {
	case len(hosts) > 1:
		return nil, errors.New("more than one host field")
	case len(hosts) == 1 && authority == "":
		authority = hosts[0]
	case len(hosts) == 1 && !strings.EqualFold(hosts[0], authority):
		return nil, errors.New("host field differs from :authority") // RFC 9113 8.3.1
	}
	if !httpguts.ValidHostHeader(authority) || strings.Contains(authority, "@") {
		return nil, fmt.Errorf("authority %q is not a valid host", authority)
	}
	delete(header, "Host") // as net/http: the host is Request.Host
	expect := false
	if v := header["Expect"]; len(v) == 1 && strings.EqualFold(v[0], "100-continue") {
		delete(header, "Expect") // answered here, as net/http does: 100 on the first body read
		expect = true
	}
	var u *url.URL
	uri := path
	if method == http.MethodConnect {
		u, uri = &url.URL{Host: authority}, authority
	} else {
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, fmt.Errorf(":path %q: %v", path, err)
		}
	}
	cl := int64(-1)
	if vv := header["Content-Length"]; len(vv) > 0 {
		for _, v := range vv[1:] {
			if v != vv[0] {
				return nil, errors.New("conflicting content-length values")
			}
		}
		n, err := strconv.ParseUint(vv[0], 10, 63)
		if err != nil {
			return nil, fmt.Errorf("content-length %q is not a number", vv[0])
		}
		cl = int64(n)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	r := &http.Request{Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: header,
		ContentLength: cl, Host: authority, RemoteAddr: c.remote, RequestURI: uri, TLS: c.state}
	if mh.StreamEnded() {
		if cl > 0 {
			cancel()
			return nil, errors.New("content-length without a body")
		}
		r.Body, r.ContentLength = http.NoBody, 0
	} else {
		body := &body{c: c, st: st, expect: expect}
		body.cond.L = &body.mu
		c.mu.Lock()
		st.body, st.declared = body, cl
		c.mu.Unlock()
		r.Body = body
	}
	c.mu.Lock()
	st.cancel = cancel
	c.mu.Unlock()
	return r.WithContext(ctx), nil
}

// runHandler serves one stream with Server.Handler.
func (c *Conn) runHandler(st *stream, r *http.Request) {
	defer c.streamDone(st)
	w := &responseWriter{c: c, st: st, header: http.Header{}, head: r.Method == http.MethodHead, declared: -1}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logger().Error("http2 handler panic", "remote", c.remote, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(buf))
			}
			c.reset(st, http2.ErrCodeInternal) // the response is cut, visibly
		}
	}()
	c.srv.Handler.ServeHTTP(w, r)
	w.finish()
}

// responseWriter is the http.ResponseWriter of a stream. Like net/http's, it
// buffers the start of the body, so that a short response gets its
// Content-Length and goes out with its header block, and sends the rest
// as it is written or flushed.
type responseWriter struct {
	c           *Conn
	st          *stream
	header      http.Header
	snap        http.Header // the header as WriteHeader saw it
	status      int
	head        bool
	sentHeader  bool
	bodyAllowed bool
	declared    int64 // the handler's Content-Length, or -1
	written     int64
	buf         []byte
	trailers    []string // declared by the Trailer field
	err         error
}

const bufferSize = 16 << 10

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.status != 0 {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent now, the final status follows.
		if w.err == nil {
			w.err = w.c.writeHeaders(w.st, w.block(code, w.header, false, -1), false)
		}
		return
	}
	w.status = code
	w.snap = w.header.Clone()
	w.bodyAllowed = code != http.StatusNoContent && code != http.StatusNotModified && !w.head
	if v := w.snap.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			delete(w.snap, "Content-Length")
		}
	}
	for _, v := range w.snap["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				w.trailers = append(w.trailers, k)
			}
		}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		return len(p), nil
	}
	if !w.bodyAllowed {
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	w.written += int64(len(p))
	if len(w.buf)+len(p) <= bufferSize {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if err := w.send(false); err != nil {
		return 0, err
	}
	if len(p) >= bufferSize {
		if w.err = w.c.writeData(w.st, p, false); w.err != nil {
			return 0, w.err
		}
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Flush sends the header block and the buffered body.
func (w *responseWriter) Flush() { w.FlushError() }

func (w *responseWriter) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.send(false)
}

// send writes the header block if it has not gone yet and the buffered
// body; final says the handler is done.
func (w *responseWriter) send(final bool) error {
	if w.err != nil {
		return w.err
	}
	var trailers http.Header
	if final {
		trailers = w.trailerFields()
	}
	endWithBody := final && trailers == nil
	if !w.sentHeader {
		w.sentHeader = true
		w.c.mu.Lock()
		w.st.finalSent = true
		w.c.mu.Unlock()
		cl := int64(-1)
		if final && w.declared < 0 && w.bodyAllowed && trailers == nil {
			cl = int64(len(w.buf)) // the whole body is here: say how long
		}
		end := endWithBody && len(w.buf) == 0
		if w.err = w.c.writeHeaders(w.st, w.block(w.status, w.snap, true, cl), end); w.err != nil || end {
			return w.err
		}
	}
	if len(w.buf) > 0 || endWithBody {
		w.err = w.c.writeData(w.st, w.buf, endWithBody)
		w.buf = w.buf[:0]
		if w.err != nil {
			return w.err
		}
	}
	if final && trailers != nil {
		w.err = w.c.writeHeaders(w.st, fieldenc.AppendHPACKFields(nil, trailers), true)
	}
	return w.err
}

// finish ends the response after the handler returned.
func (w *responseWriter) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.declared >= 0 && w.written < w.declared && w.bodyAllowed {
		w.c.reset(w.st, http2.ErrCodeInternal) // fewer bytes than Content-Length promised
		return
	}
	if w.send(true) != nil {
		return
	}
	w.c.mu.Lock()
	if !w.st.remoteClosed && !w.st.reset {
		// The response is complete; the client may stop sending its body
		// (RFC 9113 8.1).
		w.c.resetLocked(w.st, http2.ErrCodeNo)
		w.c.flushLocked()
	}
	w.c.mu.Unlock()
}

// trailerFields collects the trailers the handler set: those it declared
// in Trailer and those under http.TrailerPrefix.
func (w *responseWriter) trailerFields() http.Header {
	var t http.Header
	for _, k := range w.trailers {
		if vv := w.header[k]; len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[k] = vv
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && name != "" && len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[http.CanonicalHeaderKey(name)] = vv
		}
	}
	return t
}

// block encodes a response header block as net/http's HTTP/2 server
// would: lowercased names, connection-specific and invalid fields
// dropped, Content-Type sniffed when missing, Date added when missing.
func (w *responseWriter) block(code int, h http.Header, final bool, cl int64) []byte {
	b := fieldenc.AppendHPACKFields(fieldenc.AppendHPACKStatus(nil, code), h)
	if !final {
		return b
	}
	if _, ok := h["Content-Type"]; !ok && w.bodyAllowed && len(w.buf) > 0 && h.Get("Content-Encoding") == "" {
		b = fieldenc.AppendHPACKField(b, "content-type", http.DetectContentType(w.buf))
	}
	if cl >= 0 && h.Get("Content-Length") == "" && w.status != http.StatusNoContent && w.status != http.StatusNotModified {
		b = fieldenc.AppendHPACKField(b, "content-length", strconv.AppendInt(nil, cl, 10))
	}
	if _, ok := h["Date"]; !ok {
		b = fieldenc.AppendHPACKField(b, "date", time.Now().UTC().Format(http.TimeFormat))
	}
	return b
}

// body is a request body: the reader appends DATA, the handler reads,
// and each read gives its bytes of receive window back.
type body struct {
	c      *Conn
	st     *stream
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	err    error // io.EOF once the body ended, or why it failed
	closed bool  // the handler closed it
	expect bool  // the client waits for 100 Continue (touched by the reading goroutine only)
}

var (
	errH2BodyClosed  = errors.New("http2: request body closed by handler")
	errH2BodyStalled = errors.New("http2: no request body bytes for the idle timeout")
)

func (b *body) Read(p []byte) (int, error) {
	if b.expect {
		b.expect = false
		b.c.sendContinue(b.st)
	}
	b.mu.Lock()
	for len(b.buf) == 0 && b.err == nil && !b.closed {
		// A client that stops sending its body would hold the handler
		// forever: after an idle timeout without data the body fails.
		if waitAtMost(&b.cond, b.c.srv.IdleTimeout) && len(b.buf) == 0 && b.err == nil && !b.closed {
			b.err = errH2BodyStalled
		}
	}
	if b.closed {
		b.mu.Unlock()
		return 0, errH2BodyClosed
	}
	if len(b.buf) == 0 {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	b.mu.Unlock()
	b.c.bodyRead(b.st, n)
	return n, nil
}

func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

// write appends bytes from a DATA frame; false if the handler closed the
// body (the bytes are dropped).
func (b *body) write(p []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.err != nil {
		return false
	}
	b.buf = append(b.buf, p...)
	b.cond.Broadcast()
	return true
}

// finish ends the body with err (io.EOF when complete).
func (b *body) finish(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// close ends the body for good and returns how many bytes were left
// unread, for the connection window.
func (b *body) close() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	n := len(b.buf)
	b.buf = nil
	b.cond.Broadcast()
	return n
}

var _ io.ReadCloser = (*body)(nil)

// waitAtMost waits on cond, whose lock the caller holds, and reports
// whether it was woken by d passing rather than by a Signal or Broadcast
// (the caller checks its condition again either way).
func waitAtMost(cond *sync.Cond, d time.Duration) (expired bool) {
	t := time.AfterFunc(d, func() {
		cond.L.Lock()
		expired = true
		cond.Broadcast()
		cond.L.Unlock()
	})
	cond.Wait()
	t.Stop()
	return expired
}

// sendContinue answers Expect: 100-continue when the handler first reads
// the body, unless the final response went out already.
func (c *Conn) sendContinue(st *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil || st.reset || st.remoteClosed || st.finalSent {
		return
	}
	c.appendHeaders(st.id, fieldenc.AppendHPACKStatus(nil, http.StatusContinue), false)
	c.flushLocked()
}
