package pop

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/internal/fieldenc"
)

// serveFast is the fast loop of one HTTP/1.1 connection: it answers plain
// hits (see hit.go) itself, the request head parsed in place (h1parse.go)
// and the cache looked up with one key built in a reused buffer, and
// writes each as one precomputed header block, the per-request fields and
// the body, in one TLS write and one syscall. The first request it does
// not serve as a hit (anything not plain, a miss, a refusal by admit)
// moves the connection, with the bytes already read, to net/http for good:
// the strict parser and every feature stay net/http's. serveFast returns
// that connection, or nil when the connection is done.
func (f *front) serveFast(fc *fastConn, cc *corkConn, st *tls.ConnectionState) net.Conn {
	tc, s := fc.tc, f.s
	sni := st.ServerName
	client := newHitClient("", st, &cc.rtt) // remote filled in when first logged
	var sniSite *site
	if sni != "" {
		sniSite = s.router.lookup(sni)
	}
	br := bufio.NewReaderSize(tc, 4096)
	var key []byte
	lim := s.cfg.Limits
	ip := s.limitKey(tc.RemoteAddr().String())
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
		if !ok || !s.admitHit(ip) {
			b, _ := br.Peek(br.Buffered())
			return &replayConn{Conn: tc, pending: bytes.Clone(b)}
		}
		br.Discard(len(head)) // head stays readable until the next read
		closeAfter := req.close || f.draining.Load()
		s.fastHits.count(1) // before the write: a client may look as soon as it has the answer
		if client.remote == "" && s.alog.Wanted() {
			client.remote = tc.RemoteAddr().String()
		}
		err = s.answerHit(tc, cc, &hit, &req, closeAfter, &client, now)
		s.release()
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
	host := view(req.host)
	st := f.s.router.lookup(host)
	if st == nil || sniSite != nil && sniSite != st {
		return key, cache.FastHit{}, false
	}
	key = cache.AppendKey(key[:0], true, host, view(req.target), st.route.Query)
	hit, ok := f.s.cache.LookupFast(key, view(req.acceptEncoding))
	return key, hit, ok
}

// writeBuffers holds response buffers between requests.
var writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// answerHit writes a hit (writeHit) and logs it when the access log is
// wanted. start is when the request was read.
func (s *Server) answerHit(tc io.Writer, cc *corkConn, hit *cache.FastHit, req *fastRequest, closeAfter bool, c *hitClient, start time.Time) error {
	edge := max(hit.Now.Sub(start), 0) // no clock read of its own: see appendHitValues
	bp := writeBuffers.Get().(*[]byte)
	// The per-request values go first in the buffer, the response after
	// them: no scratch array to clear.
	vals, v := s.appendHitValues((*bp)[:0], hit, edge, c.rtt.current(start, edge))
	b, err := s.writeHit(tc, cc, hit, req.head, closeAfter, v, vals)
	if s.alog.Wanted() {
		method, bytes := "GET", int64(hit.Len())
		if req.head {
			method, bytes = "HEAD", 0
		}
		s.logHit(c, 1, false, method, view(req.host), view(req.target), bytes, v.status, start, edge)
	}
	*bp = b[:0]
	writeBuffers.Put(bp)
	return err
}

// writeHit writes a hit in HTTP/1.1 after the bytes of buf (which it
// does not send): the stored response's header block (encoded once, see
// h1Header), the per-request fields v, Connection: close when closing,
// and the body (its two pieces, FastHit.Body and Tail); small responses
// in one TLS record, larger ones corked into one write. It returns buf
// grown.
func (s *Server) writeHit(tc io.Writer, cc *corkConn, hit *cache.FastHit, head, closeAfter bool, v hitValues, buf []byte) ([]byte, error) {
	block := encoding(&hit.Encoded.HTTP1, func() []byte { return s.h1Header(hit) })
	start := len(buf)
	b := append(buf, block...)
	b = append(append(append(b, "Age: "...), v.age...), "\r\n"...)
	b = append(append(append(b, "Cache-Status: "...), v.status...), "\r\n"...)
	if len(v.date) > 0 {
		b = append(append(append(b, "Date: "...), v.date...), "\r\n"...)
	}
	b = append(append(append(b, "Server-Timing: "...), v.timing...), "\r\n"...)
	if closeAfter {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	var err error
	switch {
	case head:
		_, err = tc.Write(b[start:])
	case len(b)+hit.Len() <= cap(b):
		b = append(append(b, hit.Body...), hit.Tail...)
		_, err = tc.Write(b[start:])
	case cc == nil:
		err = writeHitBody(tc, b[start:], hit)
	default:
		cc.cork()
		err = writeHitBody(tc, b[start:], hit)
		if ferr := cc.uncork(); err == nil {
			err = ferr
		}
	}
	return b, err
}

// writeHitBody writes head, then the hit's body, Body and Tail.
func writeHitBody(w io.Writer, head []byte, hit *cache.FastHit) error {
	for _, p := range [...][]byte{head, hit.Body, hit.Tail} {
		if len(p) > 0 {
			if _, err := w.Write(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// h1Header encodes hitFields as an HTTP/1.1 status line and fields, sorted
// by name, line breaks in values replaced by spaces as net/http does.
func (s *Server) h1Header(hit *cache.FastHit) []byte {
	h := s.hitFields(hit, true)
	b := []byte("HTTP/1.1 200 OK\r\n")
	for _, k := range fieldenc.SortedKeys(h) {
		for _, v := range h[k] {
			b = append(append(b, k...), ": "...)
			for i := 0; i < len(v); i++ {
				c := v[i]
				if c == '\r' || c == '\n' {
					c = ' '
				}
				b = append(b, c)
			}
			b = append(b, "\r\n"...)
		}
	}
	return b
}
