package cache

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Objects kept in slices. An object larger than Config.MaxObjectBytes, or
// one a Range request missed, is fetched from the origin in aligned
// ranges of Config.SliceBytes ("slices"), each stored as its own entry
// and fetched at most once at a time (a flight per slice), and answered
// from them: whole (streamed in order), any range, HEAD and the
// preconditions, through http.ServeContent over a reader that fetches a
// slice when it gets to it. The object itself (its fields, size, ETag and
// freshness) is a small sliced value stored under its primary key in
// place of an entry; its slices are keyed by the primary key, the ETag,
// the size and the slice's index, so slices of two versions of an object
// can never be served together. slicefetch.go fetches, sliceserve.go
// serves.

// sliced is an object kept in slices: stored under its primary key where
// an entry would be, so code that looks for entries does not see it.
type sliced struct {
	e      *entry // the object as a 200: its fields (Content-Length: size), policy and lifetime; no body
	size   int64
	etag   string // strong: every slice must carry it
	slice  int64  // bytes per slice
	prefix string // of the slices' keys
}

// newSliced makes e, a storable 200 (or a 206 made one) of size bytes,
// an object kept in slices of n bytes, or returns nil with why it cannot
// be: it varies (each variant would need its slices), or it has no strong
// ETag to check every slice against.
func newSliced(e *entry, size, n int64) (*sliced, string) {
	if names, star := varyNames(&e.header); star || len(names) > 0 {
		return nil, "vary"
	}
	etag := e.header.Get("ETag")
	if !strongETag(etag) {
		return nil, "no-strong-etag"
	}
	if size <= 0 {
		return nil, "empty"
	}
	e.header = e.header.without("Content-Range")
	e.header = e.header.with("Content-Length", strconv.FormatInt(size, 10))
	e.data = body{}
	prefix := e.key + "\x00slice\x00" + etag + "\x00" + strconv.FormatInt(size, 10) + "\x00"
	return &sliced{e: e, size: size, etag: etag, slice: n, prefix: prefix}, ""
}

// slicedFrom is the object whose entry (sliced.e) a flight handed over.
func (c *Cache) slicedFrom(e *entry) *sliced {
	size, _ := strconv.ParseInt(e.header.Get("Content-Length"), 10, 64)
	etag := e.header.Get("ETag")
	return &sliced{e: e, size: size, etag: etag, slice: c.cfg.SliceBytes,
		prefix: e.key + "\x00slice\x00" + etag + "\x00" + strconv.FormatInt(size, 10) + "\x00"}
}

// strongETag reports whether tag is a strong entity-tag (RFC 9110 8.8.3).
func strongETag(tag string) bool {
	return len(tag) >= 2 && tag[0] == '"' && tag[len(tag)-1] == '"' && !strings.Contains(tag[1:len(tag)-1], `"`)
}

func (o *sliced) count() int64 { return (o.size + o.slice - 1) / o.slice }

// bounds are the first and last byte of slice k.
func (o *sliced) bounds(k int64) (first, last int64) {
	first = k * o.slice
	return first, min(first+o.slice, o.size) - 1
}

func (o *sliced) sliceKey(k int64) string { return o.prefix + strconv.FormatInt(k, 10) }

// same reports whether p is the same version of the same object.
func (o *sliced) same(p *sliced) bool { return p != nil && p.prefix == o.prefix }

// cost is the bytes of the object's own value (its slices are entries).
func (o *sliced) cost() int64 { return o.e.cost() + int64(len(o.prefix)) + 64 }

// ttl is how long the object and its slices are kept.
func (c *Cache) slicedTTL(o *sliced) time.Duration { return o.e.lifetime + c.keepAfterStale(o.e) }

// getSliced returns the object kept in slices under key, if any.
func (s *store) getSliced(key string) *sliced {
	v, ok := s.look(key)
	if !ok {
		return nil
	}
	o, ok := v.(*sliced)
	if !ok || o.e.key != key {
		return nil
	}
	return o
}

// putSliced stores o under its primary key, with its surrogate keys.
func (s *store) putSliced(o *sliced, ttl time.Duration) bool {
	if ttl <= 0 {
		ttl = time.Second
	}
	ok := s.set(o.e.key, o, o.cost(), ttl)
	if ok && len(o.e.tags) > 0 {
		s.mu.Lock()
		for t := range strings.FieldsSeq(o.e.tags) {
			m := s.tags[t]
			if m == nil {
				m = map[string]struct{}{}
				s.tags[t] = m
			}
			m[o.e.key] = struct{}{}
		}
		s.mu.Unlock()
	}
	return ok
}

// delSliced removes the object kept in slices under key and its slices,
// or marks it stale (soft); it returns 1 if there was one, else 0.
func (s *store) delSliced(key string, soft bool) int {
	o := s.getSliced(key)
	if o == nil {
		return 0
	}
	if soft {
		o.e.purged.Store(true)
		return 1
	}
	s.dropSliced(o)
	return 1
}

// dropSliced removes o's slices, and o if it is still the version stored.
func (s *store) dropSliced(o *sliced) {
	if cur := s.getSliced(o.e.key); o.same(cur) {
		s.forgetTags(cur.e)
		s.drop(o.e.key)
	}
	for k := range o.count() {
		s.drop(o.sliceKey(k))
	}
}

// unsliceable marks a primary key whose object the cache found it cannot
// keep in slices (see newSliced, and origins that ignore ranges), so that
// its Range misses go to the origin as they came, for a while, instead of
// as a slice request first.
type unsliceable struct{ key string }

// unsliceableFor is how long the mark lasts: a changed object is sliced
// at the latest this long after it could be.
const unsliceableFor = 5 * time.Minute

func unsliceableKey(pkey string) string { return pkey + "\x00unsliceable" }

func (s *store) markUnsliceable(pkey string) {
	k := unsliceableKey(pkey)
	s.set(k, &unsliceable{key: k}, int64(len(k)+64), unsliceableFor)
}

func (s *store) isUnsliceable(pkey string) bool {
	k := unsliceableKey(pkey)
	v, ok := s.look(k)
	if !ok {
		return false
	}
	u, ok := v.(*unsliceable)
	return ok && u.key == k
}

// saveSliced stores o (a new object, or one freshened).
func (c *Cache) saveSliced(o *sliced) {
	if c.st.putSliced(o, c.slicedTTL(o)) {
		c.st.rc.Wait() // the next request must find it (see save)
		c.stats.stored.Add(1)
	} else {
		c.stats.rejected.Add(1)
	}
}

// putSlice stores slice k of o. A slice whose object was dropped meanwhile
// (another version came) is removed again, so no orphan of an old version
// outlives the drop.
func (c *Cache) putSlice(o *sliced, k int64, b []byte) {
	e := &entry{key: o.sliceKey(k), status: http.StatusPartialContent, data: body{head: b}} // one piece: see slice
	if !c.st.set(e.key, e, e.cost(), c.slicedTTL(o)) {
		c.stats.rejected.Add(1)
		return
	}
	c.st.rc.Wait()
	if !o.same(c.st.getSliced(o.e.key)) {
		c.st.drop(e.key)
		return
	}
	c.stats.storedBytes.Add(e.cost())
}

// Errors of slice fetches.
var (
	errChanged  = errors.New("the origin's object changed while it was fetched in slices")
	errBadSlice = errors.New("the origin answered a slice request with another range")
)

// sliceStatusError is a slice request the origin answered with neither
// 206 nor 200.
type sliceStatusError int

func (e sliceStatusError) Error() string {
	return fmt.Sprintf("the origin answered a slice request with %d", int(e))
}

// parseContentRange parses "bytes first-last/size" (RFC 9110 14.4) with a
// known size.
func parseContentRange(v string) (first, last, size int64, ok bool) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, false
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, false
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseInt(a, 10, 64)
	last, err2 = strconv.ParseInt(b, 10, 64)
	size, err3 = strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || last < first || size <= last {
		return 0, 0, 0, false
	}
	return first, last, size, true
}

// firstRange parses the first range of a Range field: from is its first
// byte, or -1 for a suffix range ("-500"), whose place is not known
// before the size is. ok is false for another unit or a malformed range.
func firstRange(v string) (from int64, ok bool) {
	spec, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return 0, false
	}
	part, _, _ := strings.Cut(spec, ",")
	a, b, ok := strings.Cut(strings.TrimSpace(part), "-")
	if !ok {
		return 0, false
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		return -1, err == nil && n > 0
	}
	from, err := strconv.ParseInt(a, 10, 64)
	if err != nil || from < 0 {
		return 0, false
	}
	if b != "" {
		if to, err := strconv.ParseInt(b, 10, 64); err != nil || to < from {
			return 0, false
		}
	}
	return from, true
}

// singleRange resolves a Range field of one range against size: its
// first and last byte. ok is false for several ranges, another unit, a
// malformed or an unsatisfiable range.
func singleRange(v string, size int64) (first, last int64, ok bool) {
	spec, ok := strings.CutPrefix(v, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size - 1, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 || first >= size {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		to, err := strconv.ParseInt(b, 10, 64)
		if err != nil || to < first {
			return 0, 0, false
		}
		last = min(to, size-1)
	}
	return first, last, true
}
