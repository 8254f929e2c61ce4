package pop

import (
	"time"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/internal/fieldenc"
	"github.com/edgecdn/cdn/pop/internal/h2"
)

// h2Hits answers the plain hits of one HTTP/2 connection from its reader
// (the h2.Hits hook): it finds the site, the stored response and
// admission, and encodes the hit for HTTP/2.
type h2Hits struct {
	s      *Server
	sni    *site  // the site the TLS server name picked, or nil
	ip     string // the client's limitKey
	key    []byte // reused cache key buffer
	client hitClient

	// The last answer's, for the access log when Done says it was served.
	logged  bool
	method  string
	host    string
	path    string
	bytes   int64
	status  [128]byte // Cache-Status value
	nstatus int
	start   time.Time
	ttfb    time.Duration
}

var _ h2.Hits = (*h2Hits)(nil)

func (h *h2Hits) Hit(block []byte, head bool, authority, path, acceptEncoding string) ([]byte, []byte, []byte, bool) {
	s := h.s
	t0 := time.Since(s.epoch) // the monotonic clock alone: cheaper than time.Now
	st := s.router.lookup(authority)
	if st == nil || h.sni != nil && h.sni != st {
		return block, nil, nil, false
	}
	h.key = cache.AppendKey(h.key[:0], true, authority, path, st.route.Query)
	hit, ok := s.cache.LookupFast(h.key, acceptEncoding)
	if !ok || !s.admitHit(h.ip) {
		return block, nil, nil, false // the handler answers (a miss, 503 or 429)
	}
	enc := encoding(&hit.Encoded.HTTP2, func() []byte { return fieldenc.AppendHPACKFields(nil, s.hitFields(&hit, true)) })
	b := append(append(block, 0x88), enc...) // :status 200, indexed
	now := hit.Now.Sub(s.epoch)              // no clock read of its own: see appendHitValues
	edge := max(now-t0, 0)
	var scratch [256]byte
	_, v := s.appendHitValues(scratch[:0], &hit, edge, h.client.rtt.current(s.epoch, now))
	b = fieldenc.AppendHPACKField(b, "age", v.age)
	b = fieldenc.AppendHPACKField(b, "cache-status", v.status)
	if len(v.date) > 0 {
		b = fieldenc.AppendHPACKField(b, "date", v.date)
	}
	b = fieldenc.AppendHPACKField(b, "server-timing", v.timing)
	body, tail := hit.Body, hit.Tail
	if head {
		body, tail = nil, nil
	}
	if h.logged = s.alog.Wanted(); h.logged {
		h.method = "GET"
		if head {
			h.method = "HEAD"
		}
		h.host, h.path, h.bytes = authority, path, int64(len(body)+len(tail))
		h.nstatus = copy(h.status[:], v.status)
		h.start, h.ttfb = hit.Now.Add(-edge), edge
	}
	return b, body, tail, true
}

func (h *h2Hits) Done(served bool) {
	if served {
		h.s.fastHits.count(2)
		if h.logged {
			h.s.logHit(&h.client, 2, false, h.method, h.host, h.path, h.bytes, h.status[:h.nstatus], h.start, h.ttfb)
		}
	}
	h.logged = false
	h.s.release()
}
