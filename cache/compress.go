package cache

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression at the edge. When the origin sends a stored 200 of a
// compressible type without a Content-Encoding, the cache encodes it once,
// when it stores it, with Brotli, zstd and gzip, and keeps each encoding
// that saves at least a tenth beside the identity body. A request gets the
// best one its Accept-Encoding allows (br, then zstd, then gzip, then
// identity; q-values and q=0 honoured), from the store as it is: a
// compressed hit costs no compression, on the fast paths too (LookupFast
// takes the Accept-Encoding). Every representation of such a response is
// sent with Vary: Accept-Encoding; an encoded one with its Content-Encoding
// and the stored ETag made weak (RFC 9110 8.8.1: the encoded bytes are not
// the identity bytes). Ranges and validators apply to the representation
// sent. Responses marked no-transform, already encoded, partial, or
// shorter than Config.CompressMinBytes pass as they are.

// rep is one representation of a stored response as it is sent.
type rep struct {
	coding        string // "" (identity), "br", "zstd" or "gzip"
	header        Fields // the stored fields, Vary with Accept-Encoding, and for an encoding its Content-Encoding and a weak ETag
	data          body
	contentLength []string
	encoded       Encodings // the fast paths' encodings of this representation
}

// codings are the encodings the cache makes, in order of preference.
var codings = [...]string{"br", "zstd", "gzip"}

// compressibleType reports whether a Content-Type is worth compressing.
func compressibleType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	if strings.HasPrefix(mt, "text/") {
		return true
	}
	switch mt {
	case "application/json", "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/xml", "application/xhtml+xml", "application/rss+xml", "application/atom+xml",
		"application/manifest+json", "application/ld+json", "application/wasm", "image/svg+xml",
		"application/x-font-ttf", "font/ttf", "font/otf", "application/vnd.ms-fontobject":
		return true
	}
	return strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml")
}

// compressible reports whether the cache encodes e when it stores it;
// size is the body's length, or -1 when it is not known yet.
func (c *Cache) compressible(e *entry, size int64) bool {
	h := e.header
	return c.cfg.CompressMinBytes >= 0 && e.status == http.StatusOK &&
		(size < 0 || size >= int64(c.cfg.CompressMinBytes)) &&
		h.Get("Content-Encoding") == "" && h.Get("Content-Range") == "" &&
		!e.pol.noTransform && compressibleType(h.Get("Content-Type"))
}

// withVaryAcceptEncoding returns vary with Accept-Encoding listed.
func withVaryAcceptEncoding(vary []string) []string {
	for _, v := range vary {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, "Accept-Encoding") {
				return vary
			}
		}
	}
	return append(append([]string(nil), vary...), "Accept-Encoding")
}

// weakETag returns an entity tag made weak.
func weakETag(tag string) string {
	if tag == "" || strings.HasPrefix(tag, "W/") {
		return tag
	}
	return "W/" + tag
}

// encode makes e's representations when e is compressible (see the top of
// this file). prev is the response e replaces after a revalidation, whose
// encodings are reused when the body is the same.
func (c *Cache) encode(e *entry, prev *entry) {
	e.encoded = true
	size := e.data.len()
	if !c.compressible(e, int64(size)) {
		return
	}
	ih := e.header.without("Content-Length") // each representation has its own
	identity := &rep{header: ih.with("Vary", withVaryAcceptEncoding(ih.Values("Vary"))...), data: e.data}
	reps := []*rep{identity}
	for _, coding := range codings {
		var data body
		if prev != nil && len(prev.reps) > 0 && prev.data.same(e.data) {
			for _, p := range prev.reps[1:] {
				if p.coding == coding {
					data = p.data
				}
			}
		} else if b := compress(coding, e.data); b != nil {
			data = packBody(b)
		}
		if data.len() == 0 || data.len() > size-size/10 {
			continue // not worth it
		}
		h := identity.header.with("Content-Encoding", coding)
		if tag := h.Get("ETag"); tag != "" {
			h = h.with("ETag", weakETag(tag))
		}
		reps = append(reps, &rep{coding: coding, header: h, data: data})
	}
	if len(reps) == 1 {
		return // nothing compressed well: the response is served as it came
	}
	for _, r := range reps {
		r.contentLength = []string{strconv.Itoa(r.data.len())}
	}
	e.reps = reps
}

// compress encodes body with coding; nil on failure.
func compress(coding string, body body) []byte {
	var b bytes.Buffer
	b.Grow(body.len() / 3)
	var w io.WriteCloser
	switch coding {
	case "br":
		w = brotli.NewWriterLevel(&b, 5)
	case "gzip":
		gw, err := gzip.NewWriterLevel(&b, 6)
		if err != nil {
			return nil
		}
		w = gw
	case "zstd":
		zw, err := zstd.NewWriter(&b, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil
		}
		w = zw
	default:
		return nil
	}
	if err := body.writeTo(w); err != nil {
		return nil
	}
	if err := w.Close(); err != nil {
		return nil
	}
	return b.Bytes()
}

// pick returns the representation of e to send for an Accept-Encoding
// value (all the request's lines joined), or nil when e has only one.
func (e *entry) pick(acceptEncoding string) *rep {
	if len(e.reps) == 0 {
		return nil
	}
	// Scores are twice the weight, plus one for an encoding: at equal
	// weight an encoding beats identity, and the first encoding in order
	// of preference beats the others. Identity competes only when the
	// request lists it (acceptable by default means acceptable, not
	// preferred); refused or not listed, it is the answer of last resort.
	best, bestScore := e.reps[0], 0
	if q, listed := weight(acceptEncoding, "identity"); listed {
		bestScore = 2 * q
	}
	for _, r := range e.reps[1:] {
		if q := qOf(acceptEncoding, r.coding); q > 0 && 2*q+1 > bestScore {
			best, bestScore = r, 2*q+1
		}
	}
	return best
}

// qOf is the quality Accept-Encoding gives coding, in thousandths (RFC
// 9110 12.5.3): its own member, else "*", else 0 for a coding and 1000
// for identity (acceptable unless refused). It does not allocate.
func qOf(ae, coding string) int {
	q, _ := weight(ae, coding)
	return q
}

// weight is qOf, and whether the field lists coding itself.
func weight(ae, coding string) (int, bool) {
	star, own := -1, -1
	for ae != "" {
		var member string
		member, ae, _ = strings.Cut(ae, ",")
		name, params, _ := strings.Cut(member, ";")
		name = strings.TrimSpace(name)
		q := 1000
		if params = strings.TrimSpace(params); params != "" {
			q = weightParam(params)
		}
		switch {
		case strings.EqualFold(name, coding):
			own = q
		case name == "*":
			star = q
		}
	}
	switch {
	case own >= 0:
		return own, true
	case star >= 0:
		return star, false
	case coding == "identity":
		return 1000, false
	}
	return 0, false
}

// weightParam reads a member's parameters, "q=0.8" (any case, spaces
// around "=" tolerated) as 800; anything else counts as 1000, the
// default weight.
func weightParam(p string) int {
	name, v, ok := strings.Cut(p, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
		return 1000
	}
	if q, ok := parseQ(strings.TrimSpace(v)); ok {
		return q
	}
	return 1000
}
