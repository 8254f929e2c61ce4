package pop

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// ServeHTTP is the PoP's ordinary request path, for every listener and
// every request a fast path did not answer: admission (admit), CONNECT
// refused, site routing (the one routing of a request: its site's
// cache.Route goes with it to the cache, which never asks again), body
// limits, the site's request rules, the early-data policy, then the cache
// or, uncached, the site's proxy. Plain HTTP/3 hits are offered to h3Hits
// first.
//
// Every response gets Server-Timing (timing.go) as its header is written,
// and, when the access log is wanted, a line once it is sent (logs.go).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 3 && s.hits3 != nil && s.hits3.serve(w, r, time.Since(s.epoch)) {
		return
	}
	start := time.Now()
	withTLS(r)
	x := &exchange{start: start}
	r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
	sw := &statusWriter{ResponseWriter: w, s: s, x: x, ctx: r.Context()}
	s.serve(sw, r)
	if sw.status == 0 && !sw.hijacked {
		if r.Context().Err() != nil {
			sw.status = 499 // the client left before an answer: nothing is sent (nginx's code)
		} else {
			// Nothing written: the server sends a 200 with no body,
			// which gets its Server-Timing too.
			sw.WriteHeader(http.StatusOK)
		}
	}
	s.metrics.request(r.ProtoMajor, sw.code())
	if s.alog.Wanted() {
		s.logExchange(r, sw)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["X-Served-By"] = s.servedBy
	if r.TLS != nil && r.ProtoMajor < 3 && s.altSvc != nil {
		h["Alt-Svc"] = s.altSvc
	}
	switch s.admit(s.limitKey(r.RemoteAddr)) {
	case rateLimited:
		s.metrics.rejected.WithLabelValues("rate_limit").Inc()
		h.Set("Retry-After", "1")
		http.Error(w, "429 too many requests from this address, slow down", http.StatusTooManyRequests)
		return
	case overloaded:
		s.metrics.rejected.WithLabelValues("overload").Inc()
		h.Set("Retry-After", "1")
		http.Error(w, "503 service unavailable: this PoP is at its limit of "+strconv.FormatInt(s.maxInflight, 10)+" requests in flight, retry shortly", http.StatusServiceUnavailable)
		return
	}
	defer s.release()
	if r.URL.Path == ReadyPath {
		s.serveReadyPath(w)
		return
	}
	if lc := checkLoop(r.Header, s.cfg.CDN, s.cfg.Name); lc.loop() {
		s.metrics.rejected.WithLabelValues("loop").Inc()
		http.Error(w, "508 loop detected: by its CDN-Loop field, this request already passed through "+s.cfg.Name+" or twice through this CDN", http.StatusLoopDetected)
		return
	}
	if r.Method == http.MethodConnect {
		// A CDN edge tunnels nothing: CONNECT would make it an open proxy.
		s.metrics.rejected.WithLabelValues("connect").Inc()
		h.Set("Allow", "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE")
		http.Error(w, "405 method not allowed: CONNECT; this is a CDN edge, not a proxy", http.StatusMethodNotAllowed)
		return
	}
	site, ok := s.router.route(r)
	if !ok {
		s.metrics.rejected.WithLabelValues("unknown_host").Inc()
		http.Error(w, "421 misdirected request: host "+strconv.Quote(r.Host)+" is not served by this CDN node", http.StatusMisdirectedRequest)
		return
	}
	if r.ContentLength > s.maxBody {
		s.metrics.rejected.WithLabelValues("body_too_large").Inc()
		http.Error(w, "413 request body of "+strconv.FormatInt(r.ContentLength, 10)+" bytes exceeds the limit of "+strconv.FormatInt(s.maxBody, 10), http.StatusRequestEntityTooLarge)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientBody{ReadCloser: http.MaxBytesReader(w, r.Body, s.maxBody)}
	}
	if r.ProtoMajor == 1 && (len(r.TransferEncoding) > 0 || r.ProtoMinor == 0) {
		// Go drops a Content-Length that came with chunked encoding and
		// keeps the connection: close it after this response, so bytes
		// smuggled after the body are never read as a request (RFC 9112
		// 6.1 requires closing on that conflict). HTTP/1.0 has no chunked
		// framing and net/http deletes a Transfer-Encoding it ignores there,
		// so the PoP cannot see one: every HTTP/1.0 connection is closed
		// after its response, as 6.1 requires when the field is present.
		h.Set("Connection", "close")
	}
	for _, f := range site.strip {
		delete(r.Header, f)
	}
	if deniedPath(site.deny, r.URL.Path) {
		s.metrics.rejected.WithLabelValues("denied_path").Inc()
		http.Error(w, "404 not found", http.StatusNotFound)
		return
	}
	early := r.TLS != nil && !r.TLS.HandshakeComplete
	if early {
		if !safeMethod(r.Method) {
			s.metrics.earlyData.WithLabelValues("rejected").Inc()
			http.Error(w, "425 too early: "+r.Method+" is not replay-safe; retry after the handshake", http.StatusTooEarly)
			return
		}
		s.metrics.earlyData.WithLabelValues("accepted").Inc()
	}
	if s.cache == nil || isUpgrade(r) {
		site.proxy.ServeHTTP(w, r)
		return
	}
	s.cache.ServeRoute(w, r, &site.route)
}

// isUpgrade reports a protocol upgrade (WebSocket): those bypass the cache
// through the reverse proxy, which can tunnel them.
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// deniedPath reports whether the cleaned path is under one of the
// prefixes ("/_origin/" denies "/_origin", "/_origin/x" and
// "/a/../_origin/x"; the origin sees the same decoded path).
func deniedPath(prefixes []string, p string) bool {
	if len(prefixes) == 0 {
		return false
	}
	clean := path.Clean("/" + p)
	for _, d := range prefixes {
		if strings.HasPrefix(clean, d) || strings.HasPrefix(clean+"/", d) {
			return true
		}
	}
	return false
}

// safeMethod reports whether a request may be served from 0-RTT data: only
// safe methods, which a replay cannot turn into a second side effect.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

// statusWriter remembers the status code for metrics and the body bytes
// for the access log, and stamps the final header with Server-Timing
// (timing.go) as it is written. It keeps the optional interfaces
// reachable through Unwrap (http.ResponseController).
type statusWriter struct {
	http.ResponseWriter
	s        *Server
	x        *exchange
	ctx      context.Context // the request's, for its connection
	status   int
	bytes    int64
	stamped  bool
	hijacked bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.stamp()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.stamp()
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
		w.stamp()
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// clientBody remembers why reading the client's request body failed, so a
// malformed or oversized upload is answered 400/413, not blamed on the origin.
type clientBody struct {
	io.ReadCloser
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}
