package pop

import (
	"net/http"
	"slices"
	"testing"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/internal/fieldenc"
)

// TestEncodingsWithinTheirCost: the header block each fast path keeps
// for a stored response (encoding: an exact copy, and the slot's
// pointer) is within what the store counts for it
// (cache.Fields.EncodingBytes), for a PoP with a long name and Alt-Svc:
// a response of the project's origin, and one that stored one field
// (the PoP adds the most to it).
func TestEncodingsWithinTheirCost(t *testing.T) {
	s := &Server{servedBy: []string{"pop-frankfurt-eu-central-1a"}, altSvc: []string{`h3=":443"; ma=86400`}}
	h3 := &h3Hits{s: s}
	for _, h := range []http.Header{cache.GenFields(), {"Cache-Control": {"max-age=60"}}} {
		hit := &cache.FastHit{Header: cache.FieldsOf(h), Body: make([]byte, 1<<20)}
		counted := hit.Header.EncodingBytes()
		for proto, encode := range map[string]func() []byte{
			"h1": func() []byte { return s.h1Header(hit) },
			"h2": func() []byte { return fieldenc.AppendHPACKFields(nil, s.hitFields(hit, true)) },
			"h3": func() []byte { return h3.block(hit) },
		} {
			var slot cache.Encodings
			b := encoding(&slot.HTTP1, encode)
			if cap(b) != len(b) {
				t.Errorf("%s: a block of %d bytes keeps %d", proto, len(b), cap(b))
			}
			held := int64(cap(slices.Grow([]byte(nil), cap(b)))) + 24 // its size class, and the slot's *[]byte
			t.Logf("%s, %d fields: %d bytes held, %d counted", proto, len(h), held, counted)
			if held > counted {
				t.Errorf("%s, %d fields: the block holds %d bytes, more than the %d counted", proto, len(h), held, counted)
			}
		}
	}
}
