package pop

import (
	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/internal/fieldenc"
	"github.com/edgecdn/cdn/pop/internal/h2"
)

// h2Hits answers the plain hits of one HTTP/2 connection from its reader
// (the h2.Hits hook): it finds the site, the stored response and
// admission, and encodes the hit for HTTP/2.
type h2Hits struct {
	s   *Server
	sni *site  // the site the TLS server name picked, or nil
	ip  string // the client's limitKey
	key []byte // reused cache key buffer
}

var _ h2.Hits = (*h2Hits)(nil)

func (h *h2Hits) Hit(block []byte, head bool, authority, path, acceptEncoding string) ([]byte, []byte, bool) {
	s := h.s
	st := s.router.lookup(authority)
	if st == nil || h.sni != nil && h.sni != st {
		return block, nil, false
	}
	h.key = cache.AppendKey(h.key[:0], true, authority, path, st.route.Query)
	hit, ok := s.cache.LookupFast(h.key, acceptEncoding)
	if !ok || !s.admitHit(h.ip) {
		return block, nil, false // the handler answers (a miss, 503 or 429)
	}
	enc := encoding(&hit.Encoded.HTTP2, func() []byte { return fieldenc.AppendHPACKFields(nil, s.hitFields(&hit, true)) })
	b := append(append(block, 0x88), enc...) // :status 200, indexed
	var scratch [128]byte
	_, v := s.appendHitValues(scratch[:0], &hit)
	b = fieldenc.AppendHPACKField(b, "age", v.age)
	b = fieldenc.AppendHPACKField(b, "cache-status", v.status)
	if len(v.date) > 0 {
		b = fieldenc.AppendHPACKField(b, "date", v.date)
	}
	if head {
		return b, nil, true
	}
	return b, hit.Body, true
}

func (h *h2Hits) Done(served bool) {
	if served {
		h.s.fastHits.count(2)
	}
	h.s.release()
}
