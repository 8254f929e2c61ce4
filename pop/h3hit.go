package pop

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/internal/fieldenc"
)

// h3Hits answers plain HTTP/3 hits (see hit.go) without quic-go's response
// writer: it takes the request stream over and writes, in one stream
// write, a HEADERS frame made of the stored response's field section,
// QPACK-encoded once per stored response (its HTTP3 encoding slot), and
// the per-request fields, then the DATA frame. Every other request, and a
// miss, goes the ordinary way.
type h3Hits struct {
	s     *Server
	early prometheus.Counter // pop_early_data_requests_total{result="accepted"}
}

func newH3Hits(s *Server) *h3Hits {
	return &h3Hits{s: s, early: s.metrics.earlyData.WithLabelValues("accepted")}
}

// serve answers r if it is a plain hit and reports whether it did. t0
// is when the request was read, as time.Since(s.epoch) (the monotonic
// clock alone).
func (h *h3Hits) serve(w http.ResponseWriter, r *http.Request, t0 time.Duration) bool {
	s := h.s
	head := r.Method == http.MethodHead
	ae := r.Header["Accept-Encoding"] // two lines: the ordinary path joins them
	if !head && r.Method != http.MethodGet || r.ContentLength > 0 || !plainFields(r.Header) || len(ae) > 1 {
		return false
	}
	hs, ok := w.(http3.HTTPStreamer)
	if !ok {
		return false
	}
	// quic-go keeps the target as sent in RequestURI.
	if !cache.PlainTarget(r.RequestURI) || !cache.PlainHost(r.Host) {
		return false
	}
	st, ok := s.router.route(r)
	if !ok {
		return false // 421 from the ordinary path
	}
	kp := keyBuffers.Get().(*[]byte)
	key := cache.AppendKey((*kp)[:0], true, r.Host, r.RequestURI, st.route.Query)
	hit, ok := s.cache.LookupFast(key, strings.Join(ae, ""))
	*kp = key[:0]
	keyBuffers.Put(kp)
	if !ok || !s.admitHit(s.limitKey(r.RemoteAddr)) {
		return false // a miss, 503 or 429 from the ordinary path
	}
	early := r.TLS != nil && !r.TLS.HandshakeComplete
	if early {
		h.early.Inc() // GET and HEAD are safe in 0-RTT
	}
	defer s.release()                       // write aborts the handler by panicking if it cannot take the stream over
	s.fastHits.count(3)                     // before the write: a client may look as soon as it has the answer
	edge := max(hit.Now.Sub(s.epoch)-t0, 0) // no clock read of its own: see appendHitValues
	var scratch [256]byte
	_, v := s.appendHitValues(scratch[:0], &hit, edge, connRTT(r.Context(), hit.Now))
	h.write(hs, &hit, head, v)
	if s.alog.Wanted() {
		c := hitClient{remote: r.RemoteAddr}
		if r.TLS != nil {
			c.tls, c.resumed = r.TLS.Version, r.TLS.DidResume
		}
		bytes := int64(hit.Len())
		if head {
			bytes = 0
		}
		s.logHit(&c, 3, early, r.Method, r.Host, r.RequestURI, bytes, v.status, hit.Now.Add(-edge), edge)
	}
	return true
}

// plainFields reports whether a request's fields leave it plain (see
// cache.PlainRefuses). quic-go has refused connection-specific fields
// already.
func plainFields(h http.Header) bool {
	for k := range h {
		if cache.PlainRefuses(k) {
			return false
		}
	}
	return true
}

// keyBuffers and h3Buffers hold per-request buffers between requests.
var (
	keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}
	h3Buffers  = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
)

// h3FrameRoom is room left at the front of the buffer for the HEADERS
// frame's type and length, written once the length is known.
const h3FrameRoom = 1 + 8

// write takes the stream over and sends the response: HEADERS (the
// stored field section, age, cache-status and, when the origin sent none,
// date), then for GET the body in one DATA frame; small responses in one
// stream write. It ends the stream as quic-go's server does after a
// handler.
func (h *h3Hits) write(hs http3.HTTPStreamer, hit *cache.FastHit, head bool, v hitValues) {
	str, err := hs.HTTPStream()
	if err != nil {
		// Nothing was written yet, so this does not happen; abort the
		// stream rather than let the writer send an empty 200.
		panic(http.ErrAbortHandler)
	}
	block := encoding(&hit.Encoded.HTTP3, func() []byte { return h.block(hit) })
	bp := h3Buffers.Get().(*[]byte)
	defer h3Buffers.Put(bp)
	b := append((*bp)[:h3FrameRoom], block...)
	b = fieldenc.AppendQPACKStatic(b, fieldenc.QPACKAge, v.age)
	b = fieldenc.AppendQPACKLiteral(b, "cache-status", v.status)
	if len(v.date) > 0 { // quic-go's writer adds one
		b = fieldenc.AppendQPACKStatic(b, fieldenc.QPACKDate, v.date)
	}
	b = fieldenc.AppendQPACKLiteral(b, "server-timing", v.timing)
	n := uint64(len(b) - h3FrameRoom)
	start := h3FrameRoom - 1 - quicvarint.Len(n)
	quicvarint.Append(append(b[start:start], 0x01), n) // HEADERS
	var body, tail []byte
	if !head {
		b = quicvarint.Append(append(b, 0x00), uint64(hit.Len())) // DATA
		if len(b)+hit.Len() <= cap(b) {
			b = append(append(b, hit.Body...), hit.Tail...)
		} else {
			body, tail = hit.Body, hit.Tail
		}
	}
	qs := str.QUICStream()
	_, err = qs.Write(b[start:])
	if err == nil && len(body) > 0 {
		_, err = qs.Write(body)
	}
	if err == nil && len(tail) > 0 {
		_, err = qs.Write(tail)
	}
	*bp = b[:0]
	if err != nil {
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		return
	}
	str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	str.Close()
}

// block encodes hitFields (without Alt-Svc, which HTTP/3 responses do not
// carry) as a QPACK field section (RFC 9204 4.5): the section prefix,
// :status 200 and the fields sorted by name. It uses only the static
// table, so it is valid on every connection.
func (h *h3Hits) block(hit *cache.FastHit) []byte {
	hdr := h.s.hitFields(hit, false)
	b := []byte{0, 0}                                  // section prefix: no dynamic table
	b = fieldenc.AppendQPACKField(b, ":status", "200") // indexed
	for _, k := range fieldenc.SortedKeys(hdr) {
		// Trailer fields cannot be stored (Trailer is hop-by-hop and
		// removed); quic-go's writer skips "Trailer:" keys as well.
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		name := strings.ToLower(k)
		for _, v := range hdr[k] {
			b = fieldenc.AppendQPACKField(b, name, v)
		}
	}
	return b
}
