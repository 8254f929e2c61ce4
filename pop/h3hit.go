package pop

import (
	"bytes"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/edgecdn/cdn/cache"
)

// h3Hits answers plain HTTP/3 cache hits (a GET or HEAD with none of the
// fields that change the answer, for a fresh 200 that does not vary)
// without quic-go's response writer: it takes the request stream over and
// writes, in one stream write, a HEADERS frame made of the stored
// response's field section, QPACK-encoded once per stored response (in
// the cache's Wire3 slot), and the few per-request fields, then the DATA
// frame. The fields are those the ordinary path (ServeHTTP, the cache's
// serveEntry, quic-go's writer) sends for the same hit. Every other
// request, and a miss, goes the ordinary way.
type h3Hits struct {
	s     *Server
	ok200 prometheus.Counter // pop_requests_total{proto="h3",code="200"}
	early prometheus.Counter // pop_early_data_requests_total{result="accepted"}
	hits  atomic.Int64       // responses served here
}

func newH3Hits(s *Server) *h3Hits {
	return &h3Hits{s: s, ok200: s.metrics.requests.WithLabelValues("h3", "200"),
		early: s.metrics.earlyData.WithLabelValues("accepted")}
}

// serve answers r if it is a plain hit and reports whether it did.
func (h *h3Hits) serve(w http.ResponseWriter, r *http.Request) bool {
	s := h.s
	head := r.Method == http.MethodHead
	if !head && r.Method != http.MethodGet || r.ContentLength > 0 || !plainH3Request(r.Header) {
		return false
	}
	hs, ok := w.(http3.HTTPStreamer)
	if !ok {
		return false
	}
	// As the fast loop: a target net/url keeps as sent and an ASCII host,
	// so that AppendKey builds the key the cache would.
	if !validTarget(stringBytes(r.RequestURI)) || !validHost(stringBytes(r.Host)) {
		return false
	}
	st, ok := s.router.route(r)
	if !ok {
		return false // 421 from the ordinary path
	}
	if s.maxInflight > 0 && s.inflight.Add(1) > s.maxInflight {
		s.inflight.Add(-1)
		return false // 503 from the ordinary path
	}
	kp := keyBuffers.Get().(*[]byte)
	key := cache.AppendKey((*kp)[:0], true, r.Host, r.RequestURI, st.query)
	hit, ok := s.cache.LookupFast(key)
	*kp = key[:0]
	keyBuffers.Put(kp)
	if ok && s.limiter != nil && !s.admitFast(clientIP(r.RemoteAddr)) { // no address parsing without a limit
		ok = false // 429 from the ordinary path
	}
	if ok {
		if r.TLS != nil && !r.TLS.HandshakeComplete {
			h.early.Inc() // GET and HEAD are safe in 0-RTT
		}
		h.ok200.Inc()
		h.hits.Add(1) // before the write: a client may look as soon as it has the answer
		h.write(hs, &hit, head)
	}
	if s.maxInflight > 0 {
		s.inflight.Add(-1) // on a miss the ordinary path counts the request again
	}
	return ok
}

// plainH3Request reports whether a request's fields leave a stored 200
// answering it as it is: the fields the HTTP/1.1 fast loop refuses
// (fastRequest.parse) are refused here too. quic-go has already refused
// connection-specific fields and canonicalized the names.
func plainH3Request(h http.Header) bool {
	for k := range h {
		if len(k) > 3 && k[:3] == "If-" {
			return false
		}
		switch k {
		case "Range", "Authorization", "Cache-Control", "Pragma", "Content-Length", "Transfer-Encoding",
			"Expect", "Upgrade", "Te", "Trailer", "Connection", "Http2-Settings":
			return false
		}
	}
	return true
}

// stringBytes is a read-only view of s.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// keyBuffers and h3Buffers hold per-request buffers between requests.
var (
	keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}
	h3Buffers  = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
)

// h3FrameRoom is room left at the front of the buffer for the HEADERS
// frame's type and length, written once the length is known.
const h3FrameRoom = 1 + 8

// write takes the stream over and sends the response: HEADERS (the
// stored block, age, cache-status and, when the origin sent none, date),
// then for GET the body in one DATA frame; small responses in one stream
// write. It ends the stream as quic-go's server does after a handler.
func (h *h3Hits) write(hs http3.HTTPStreamer, hit *cache.FastHit, head bool) {
	str, err := hs.HTTPStream()
	if err != nil {
		// Nothing was written yet, so this does not happen; abort the
		// stream rather than let the writer send an empty 200.
		panic(http.ErrAbortHandler)
	}
	block := hit.Wire3.Load()
	if block == nil {
		b := h.block(hit.Header, len(hit.Body))
		hit.Wire3.CompareAndSwap(nil, &b)
		block = hit.Wire3.Load()
	}
	bp := h3Buffers.Get().(*[]byte)
	defer h3Buffers.Put(bp)
	b := append((*bp)[:h3FrameRoom], *block...)
	var scratch [128]byte
	b = appendQPACKStatic(b, qpackAge, strconv.AppendInt(scratch[:0], ageSeconds(hit.Age), 10))
	v := scratch[:0]
	if prior := hit.Header["Cache-Status"]; len(prior) > 0 && prior[0] != "" {
		v = append(v, prior[0]...)
		v = append(v, ", "...)
	}
	v = append(v, h.s.cfg.Name...)
	v = append(v, "; hit; ttl="...)
	v = strconv.AppendInt(v, ageSeconds(hit.TTL), 10)
	b = appendQPACKLiteral(b, "cache-status", v)
	if _, ok := hit.Header["Date"]; !ok { // quic-go's writer adds one
		b = appendQPACKStatic(b, qpackDate, time.Now().UTC().AppendFormat(scratch[:0], http.TimeFormat))
	}
	n := uint64(len(b) - h3FrameRoom)
	start := h3FrameRoom - 1 - quicvarint.Len(n)
	quicvarint.Append(append(b[start:start], 0x01), n) // HEADERS
	var body []byte
	if !head {
		b = quicvarint.Append(append(b, 0x00), uint64(len(hit.Body))) // DATA
		if len(b)+len(hit.Body) <= cap(b) {
			b = append(b, hit.Body...)
		} else {
			body = hit.Body
		}
	}
	qs := str.QUICStream()
	_, err = qs.Write(b[start:])
	if err == nil && body != nil {
		_, err = qs.Write(body)
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

// block is a stored response's QPACK field section (RFC 9204 4.5) without
// the per-request fields: the section prefix, :status 200, and the fields
// the ordinary path sends for a hit (X-Served-By under the stored ones,
// Accept-Ranges and Content-Length as the cache's serveEntry sets them,
// Last-Modified in its canonical form), sorted by name. It uses only the
// static table, so it is valid on every connection.
func (h *h3Hits) block(stored http.Header, size int) []byte {
	hdr := http.Header{"X-Served-By": h.s.servedBy}
	for k, v := range stored {
		hdr[k] = v
	}
	for _, k := range []string{"Age", "Cache-Status", "Date"} {
		delete(hdr, k)
	}
	hdr["Accept-Ranges"] = []string{"bytes"}
	hdr["Content-Length"] = []string{strconv.Itoa(size)}
	if lm, err := http.ParseTime(strings.TrimSpace(hdr.Get("Last-Modified"))); err == nil && !lm.IsZero() {
		hdr["Last-Modified"] = []string{lm.UTC().Format(http.TimeFormat)}
	}
	if d, ok := stored["Date"]; ok {
		hdr["Date"] = d
	}
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		// Trailer fields cannot be stored (Trailer is hop-by-hop and
		// removed); quic-go's writer skips "Trailer:" keys as well.
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	b := []byte{0, 0}                         // section prefix: no dynamic table
	b = appendQPACKField(b, ":status", "200") // indexed
	for _, k := range keys {
		name := strings.ToLower(k)
		for _, v := range hdr[k] {
			b = appendQPACKField(b, name, v)
		}
	}
	return b
}

// appendQPACKField appends the field line for name: value with no
// Huffman coding: an indexed line when the static table holds the whole
// field, a literal with the table's name when it holds the name, else a
// literal name. Plain strings cost a client's decoder a copy where Huffman
// codes cost a table walk per byte (about a third of quic-go's
// client-side header parsing), and a stored block is sent far more often than it is
// built. qpack's encoder chooses the static entry (RFC 9204 appendix A);
// only its Huffman-coded strings are replaced.
func appendQPACKField(b []byte, name, value string) []byte {
	var one bytes.Buffer
	qpack.NewEncoder(&one).WriteField(qpack.HeaderField{Name: name, Value: value})
	line := one.Bytes()[2:] // after the two-byte section prefix
	switch {
	case line[0]&0xc0 == 0xc0: // 11xxxxxx: indexed, static table
		return append(b, line...)
	case line[0]&0xd0 == 0x50: // 01N1xxxx: literal with a static name
		idx := uint64(line[0] & 0x0f)
		if idx == 0x0f { // RFC 9204 4.1.1: the index continues
			for i, m := 1, uint(0); i < len(line); i, m = i+1, m+7 {
				idx += uint64(line[i]&0x7f) << m
				if line[i]&0x80 == 0 {
					break
				}
			}
		}
		return appendHpackString(appendHpackInt(b, 0x50, 4, idx), value)
	default:
		return appendQPACKLiteral(b, name, []byte(value))
	}
}

// Static table indices (RFC 9204 appendix A) of the per-request fields.
const (
	qpackAge  = 2
	qpackDate = 6
)

// appendQPACKStatic appends a literal field line whose name is static
// table entry idx (< 16), with value v, not Huffman-coded.
func appendQPACKStatic(b []byte, idx byte, v []byte) []byte {
	b = append(b, 0x50|idx) // 01NT: may be indexed, static table
	return appendHpackString(b, v)
}

// appendQPACKLiteral appends a literal field line with a literal
// (lowercase) name and value, neither Huffman-coded.
func appendQPACKLiteral(b []byte, name string, v []byte) []byte {
	b = appendHpackInt(b, 0x20, 3, uint64(len(name))) // 001NH
	b = append(b, name...)
	return appendHpackString(b, v)
}
