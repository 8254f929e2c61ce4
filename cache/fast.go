package cache

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// FastHit is a stored 200 response that may be sent as it is to a plain
// request (see PlainRefuses and LookupFast). Everything in it is
// read-only.
type FastHit struct {
	Header Fields // stored fields
	// Body then Tail is the body: the cache keeps it in two allocations
	// so that Go's size classes round it up as little as possible (see
	// body.go). Tail is often empty. Write both.
	Body, Tail []byte
	Age        time.Duration // current age (RFC 9111 4.2.3)
	TTL        time.Duration // freshness left
	// LastModified is the stored Last-Modified in its canonical form, as
	// ServeHTTP sends it, or nil to send the stored value as it is.
	LastModified []string
	// Encoded holds the caller's encodings of the response, filled once
	// per stored response and valid as long as it is stored.
	Encoded *Encodings
	// Now is the clock reading (Config.Now) Age was computed at, for a
	// caller that needs the time of the hit without reading the clock
	// again.
	Now time.Time
}

// Len is the body's length, Body and Tail.
func (h *FastHit) Len() int { return len(h.Body) + len(h.Tail) }

// Encodings are slots for a stored response's header block as each
// protocol's fast path encodes it, computed on its first hit. A stored
// response is immutable, so an encoding never goes stale.
type Encodings struct {
	HTTP1, HTTP2, HTTP3 atomic.Pointer[[]byte]
}

// AppendKey appends the cache key of a request to dst, as the cache builds
// it from an *http.Request: scheme, the Host field as keyHost cuts it and
// lowercased, the path as sent and the query under mode. target is the
// request target in origin form ("/path?query"); it must not contain a
// fragment.
func AppendKey(dst []byte, https bool, host, target string, mode Query) []byte {
	if https {
		dst = append(dst, "https://"...)
	} else {
		dst = append(dst, "http://"...)
	}
	start := len(dst)
	dst, colon := appendLower(dst, host)
	if colon || len(host) > 0 && (host[0] == '[' || host[len(host)-1] == '.') {
		// A port, brackets or trailing dots (rare): cut as primaryKey does.
		dst, _ = appendLower(dst[:start], keyHost(host))
	}
	path, query, hasQuery := target, "", false
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			path, query, hasQuery = target[:i], target[i+1:], true
			break
		}
	}
	if path == "" {
		path = "/"
	}
	dst = append(dst, path...)
	switch {
	case !hasQuery || mode == QueryIgnore:
	case mode == QuerySort && query != "":
		dst = append(dst, '?')
		dst = appendSortedQuery(dst, query)
	default:
		dst = append(dst, '?')
		dst = append(dst, query...)
	}
	return dst
}

// appendLower appends s with ASCII letters lowercased, and reports
// whether s has a colon.
func appendLower(dst []byte, s string) ([]byte, bool) {
	colon := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == ':' {
			colon = true
		}
		dst = append(dst, c)
	}
	return dst, colon
}

// keyHost is the part of a Host field that enters the cache key (before
// lowercasing): without a port, and without the trailing dots of a fully
// qualified name, so that "LOCALHOST.", "localhost:1" and "localhost"
// share entries and one purge removes them all. The port never changes
// the content: the PoP routes by host name and fetches from the site's
// configured origin. A bracketed IPv6 literal keeps its brackets; a host
// with more than one colon and no brackets is kept whole (it has no port
// to cut, and must not share a key with other such hosts).
func keyHost(host string) string {
	if len(host) > 0 && host[0] == '[' {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	if i := strings.IndexByte(host, ':'); i >= 0 && strings.LastIndexByte(host, ':') == i {
		host = host[:i]
	}
	for len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1]
	}
	return host
}

// appendSortedQuery appends the &-separated parts of q sorted, as
// primaryKey does (it allocates; sorted-query sites are rarer).
func appendSortedQuery(dst []byte, q string) []byte {
	var parts []string
	for start := 0; ; {
		i := start
		for i < len(q) && q[i] != '&' {
			i++
		}
		parts = append(parts, q[start:i])
		if i == len(q) {
			break
		}
		start = i + 1
	}
	sort.Strings(parts)
	for i, p := range parts {
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = append(dst, p...)
	}
	return dst
}

// LookupFast returns the stored response under key (built by AppendKey) if
// it can answer a plain GET or HEAD as it is: a fresh 200 whose
// responses do not vary, that is not purged and needs no validation. The
// caller must have checked that the request is plain: GET or HEAD, no
// field PlainRefuses names, a target PlainTarget accepts and a host
// PlainHost accepts; other requests go through ServeHTTP. acceptEncoding
// is the request's Accept-Encoding (its lines joined with commas, or ""):
// a response compressed at the edge is returned in the representation it
// picks (see compress.go). A hit is counted
// as ServeHTTP counts one. It does not allocate.
func (c *Cache) LookupFast(key []byte, acceptEncoding string) (FastHit, bool) {
	if len(key) == 0 {
		return FastHit{}, false
	}
	k := unsafe.String(&key[0], len(key)) // the key is not retained
	v, ok := c.st.look(k)
	if !ok {
		// Counted here: ServeHTTP, which answers the miss, must not count
		// it again (store.counted).
		c.st.markCounted(k)
		return FastHit{}, false
	}
	e, ok := v.(*entry)
	if !ok || e.key != k || e.status != http.StatusOK {
		return FastHit{}, false // a vary index, a collision or another status
	}
	now := c.cfg.Now()
	age := e.ageAt(now)
	if age >= e.lifetime || e.purged.Load() || e.pol.alwaysValidate() || !c.vouched(e, now) {
		return FastHit{}, false
	}
	c.stats.hits.Add(1)
	if rp := e.pick(acceptEncoding); rp != nil {
		return FastHit{Header: rp.header, Body: rp.data.head, Tail: rp.data.tail, Age: age, TTL: e.lifetime - age, LastModified: e.lastModified(), Encoded: &rp.encoded, Now: now}, true
	}
	return FastHit{Header: e.header, Body: e.data.head, Tail: e.data.tail, Age: age, TTL: e.lifetime - age, LastModified: e.lastModified(), Encoded: &e.fast.encoded, Now: now}, true
}

// fastState is what an entry computes once for the requests it answers:
// its initial age (RFC 9111 4.2.3, fixed once stored), the field values a
// plain 200 response sends that the stored fields lack, and the fast
// paths' encodings.
type fastState struct {
	once    sync.Once
	initial time.Duration
	sent    *sentFields // nil when the stored fields have them as sent
	encoded Encodings
}

// sentFields are the values a plain 200 response sends for fields whose
// stored values differ: Content-Length when the stored one is not the
// body's length (or absent), Last-Modified in canonical form.
type sentFields struct {
	contentLength []string // or nil: the stored value
	lastModified  []string // or nil: the stored value
}

// prepare fills fastState on first use. It allocates (prepareBytes)
// only what the stored fields do not have already.
func (e *entry) prepare() {
	e.fast.once.Do(func() {
		e.fast.initial = currentAge(&e.header, e.pol.timing, e.pol.responseTime)
		var sent sentFields
		if !e.lengthIs(e.header.Values("Content-Length")) {
			sent.contentLength = []string{strconv.Itoa(e.data.len())}
		}
		if lm, ok := e.canonicalLastModified(); ok {
			sent.lastModified = []string{string(lm)}
		}
		if sent.contentLength != nil || sent.lastModified != nil {
			e.fast.sent = &sent
		}
	})
}

// contentLength is the Content-Length a 200 of the whole body sends.
// Call prepare first.
func (e *entry) contentLength() []string {
	if s := e.fast.sent; s != nil && s.contentLength != nil {
		return s.contentLength
	}
	return e.header.Values("Content-Length")
}

// lastModified is the Last-Modified to send in place of the stored one,
// or nil to send the stored one. Call prepare first.
func (e *entry) lastModified() []string {
	if s := e.fast.sent; s != nil {
		return s.lastModified
	}
	return nil
}

// lengthIs reports whether cl, a Content-Length's values, is the body's
// length as prepare writes it.
func (e *entry) lengthIs(cl []string) bool {
	var buf [20]byte
	return len(cl) == 1 && cl[0] == string(strconv.AppendInt(buf[:0], int64(e.data.len()), 10))
}

// canonicalLastModified is the stored Last-Modified in its canonical
// form (IMF-fixdate), when it parses as a date and is not in that form
// already (otherwise the stored value is sent as it is).
func (e *entry) canonicalLastModified() ([]byte, bool) {
	v := e.header.Get("Last-Modified")
	lm, ok := parseHTTPDate(v)
	if !ok || lm.IsZero() {
		return nil, false
	}
	b := lm.UTC().AppendFormat(make([]byte, 0, len(http.TimeFormat)), http.TimeFormat)
	return b, string(b) != v
}

// prepareBytes is what prepare allocates for e: a Content-Length value
// (a string and its slice) unless the stored one is right, and a
// Last-Modified (its slice and a string of 29 bytes, allocated as 32)
// unless the stored one is canonical or not a date, and if either, the
// sentFields that holds them.
func (e *entry) prepareBytes() int64 {
	n := int64(0)
	if !e.lengthIs(e.header.Values("Content-Length")) {
		n += 16 + allocSize(int64(len(strconv.Itoa(e.data.len()))))
	}
	if _, ok := e.canonicalLastModified(); ok {
		n += 16 + 32
	}
	if n > 0 {
		n += allocSize(int64(unsafe.Sizeof(sentFields{})))
	}
	return n
}

// ageAt is currentAge without parsing Date and Age on every request.
func (e *entry) ageAt(now time.Time) time.Duration {
	e.prepare()
	resident := now.Sub(e.pol.responseTime)
	if resident < 0 {
		resident = 0
	}
	return e.fast.initial + resident
}
