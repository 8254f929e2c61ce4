package cache

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Answering requests from objects kept in slices (see slice.go).

// serveSliced answers a GET or HEAD that found no entry under pkey (the
// hook in serveCacheable) from the object kept in slices there, or, for
// a GET with a Range, starts keeping it (learnSliced). It reports false
// when it has not answered r: slicing is off, nothing is sliced under
// pkey and r is not a range request, or the object turned out not to be
// one to slice before anything was sent.
//
// A request whose first slice finds the object changed before anything
// was sent starts again once (learning the new version), instead of
// getting a 502.
func (c *Cache) serveSliced(w http.ResponseWriter, r *http.Request, pkey string, reqCC Directives) bool {
	if c.cfg.SliceBytes <= 0 || reqCC.NoStore {
		return false
	}
	served, changed := c.trySliced(w, r, pkey, reqCC, true)
	if changed {
		served, _ = c.trySliced(w, r, pkey, reqCC, false)
	}
	return served
}

// trySliced is serveSliced, once; with retry, changed reports that r was
// not answered because the object changed before its first byte.
func (c *Cache) trySliced(w http.ResponseWriter, r *http.Request, pkey string, reqCC Directives, retry bool) (served, changed bool) {
	o := c.st.getSliced(pkey)
	if o == nil {
		if reqCC.OnlyIfCached || r.Method != http.MethodGet {
			return false, false
		}
		from, ranged := firstRange(r.Header.Get("Range"))
		if !ranged {
			return c.awaitLearning(w, r, pkey, retry)
		}
		if c.st.isUnsliceable(pkey) {
			return false, false
		}
		k := max(from, 0) / c.cfg.SliceBytes
		o, first, served := c.learnSliced(w, r, pkey, reqCC, k, nil)
		if served {
			c.stats.misses.Add(1)
		}
		if served || o == nil {
			return served, false
		}
		c.stats.misses.Add(1)
		status := "fwd=uri-miss; stored; detail=sliced"
		return true, c.serveFromSlices(w, r, o, sliceAnswer{hit: status, miss: status, k: k, body: first, retry: retry})
	}
	age, ok := c.acceptable(o.e, reqCC, c.cfg.Now())
	if ok {
		c.stats.hits.Add(1)
		hit := string(appendHit(nil, o.e.lifetime-age)) + "; detail=sliced"
		return true, c.serveFromSlices(w, r, o, sliceAnswer{age: age, hit: hit, miss: "fwd=partial; detail=sliced", k: -1, retry: retry})
	}
	if reqCC.OnlyIfCached {
		c.gatewayTimeout(w, "only-if-cached and the stored response is stale")
		return true, false
	}
	// Stale: one conditional slice request (coalesced) for all the
	// requests that find it so; a 304 keeps the slices.
	k := int64(0)
	if from, ok := firstRange(r.Header.Get("Range")); ok && from >= 0 && from < o.size {
		k = from / o.slice
	}
	no, first, served := c.learnSliced(w, r, pkey, reqCC, k, o)
	if served || no == nil {
		return served, false
	}
	status := "fwd=stale; detail=sliced"
	return true, c.serveFromSlices(w, r, no, sliceAnswer{hit: status, miss: status, k: k, body: first, retry: retry})
}

// awaitLearning answers a GET without a Range from the object a range
// request is learning under pkey, once it has, instead of fetching the
// object whole beside it. It reports false when nothing is being learned
// or the learning ended without an object.
func (c *Cache) awaitLearning(w http.ResponseWriter, r *http.Request, pkey string, retry bool) (served, changed bool) {
	c.mu.Lock()
	f, ok := c.flights[learnFlightKey(pkey)]
	if ok {
		f.waiters.Add(1)
		c.stats.coalesced.Add(1)
	}
	c.mu.Unlock()
	if !ok {
		return false, false
	}
	select {
	case <-f.done:
	case <-r.Context().Done():
		return true, false
	}
	if f.e == nil {
		return false, false
	}
	o := c.slicedFrom(f.e)
	c.stats.misses.Add(1)
	status := "fwd=uri-miss; detail=sliced"
	return true, c.serveFromSlices(w, r, o, sliceAnswer{age: currentAge(&o.e.header, o.e.pol.timing, c.cfg.Now()), hit: status, miss: status, k: -1, retry: retry})
}

// serveSlicedStale serves o, stale, because the origin failed within its
// stale-if-error window.
func (c *Cache) serveSlicedStale(w http.ResponseWriter, r *http.Request, o *sliced) {
	c.stats.stale.Add(1)
	age := currentAge(&o.e.header, o.e.pol.timing, c.cfg.Now())
	status := "hit; ttl=" + negTTL(age-o.e.lifetime) + "; detail=stale-if-error"
	c.serveFromSlices(w, r, o, sliceAnswer{age: age, hit: status, miss: status, k: -1})
}

// sliceAnswer is how serveFromSlices answers.
type sliceAnswer struct {
	age       time.Duration
	hit, miss string       // Cache-Status when the first slice the answer needs is stored / fetched
	src       *sliceSource // the caller's 200 body, or nil
	k         int64        // the slice the caller has in body, or -1
	body      []byte
	// retry: if the object changed before the first byte, nothing is
	// sent and serveFromSlices reports it, for the caller to start again.
	retry bool
}

// serveFromSlices answers r from o with http.ServeContent, as serveEntry
// answers from a body: preconditions against o's ETag and Last-Modified,
// a single range or several, 416, HEAD. Its reader fetches each slice
// when it gets to it, and holds one at a time. A slice that cannot be had
// before the status line is sent makes the answer a 502 (or, for a
// changed object with a.retry, no answer: changed); after, it cuts the
// response. Either way no body mixes two versions.
func (c *Cache) serveFromSlices(w http.ResponseWriter, r *http.Request, o *sliced, a sliceAnswer) (changed bool) {
	h := w.Header()
	var saved http.Header
	if a.retry {
		saved = h.Clone()
	}
	for k, v := range o.e.header.All() {
		h[k] = v
	}
	delete(h, "Content-Length") // ServeContent sets it for what it sends
	h["Age"] = []string{formatAge(a.age)}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: serve what the origin sent
	}
	r = datePreconditions(r)
	if notModifiedByDate(r, &o.e.header, o.e.pol.responseTime) {
		delete(h, "Content-Type")
		appendCacheStatus(h, c.cfg.Name+"; "+a.hit)
		w.WriteHeader(http.StatusNotModified)
		return false
	}
	if v := r.Header.Get("Range"); v != "" && ignoreRange(v, o.size) {
		r = withoutRange(r)
	}
	var modtime time.Time
	if lm, ok := parseHTTPDate(o.e.header.Get("Last-Modified")); ok {
		modtime = lm
	}
	rd := &sliceReader{c: c, r: r, o: o, src: a.src, k: -1}
	if a.body != nil && a.k >= 0 {
		rd.k, rd.cur = a.k, a.body
	}
	sw := &sliceWriter{ResponseWriter: w, c: c, rd: rd, head: r.Method == http.MethodHead, a: &a, dw: c.stallWriter(w)}
	http.ServeContent(sw, r, "", modtime, rd)
	sw.dw.done()
	if sw.changed {
		clear(h)
		for k, v := range saved {
			h[k] = v
		}
		return true
	}
	if sw.wroteHeader && rd.failure() != nil {
		panic(http.ErrAbortHandler) // cut the response: the rest cannot be had
	}
	return false
}

// sliceReader reads an object kept in slices for http.ServeContent,
// fetching each slice when it gets to it.
type sliceReader struct {
	c   *Cache
	r   *http.Request
	o   *sliced
	src *sliceSource
	pos int64
	k   int64  // index of cur, or -1
	cur []byte // slice k

	mu  sync.Mutex // guards err: ServeContent reads the parts of a multipart answer on a goroutine of its own
	err error      // why a slice could not be had
}

func (rd *sliceReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += rd.pos
	case io.SeekEnd:
		off += rd.o.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if off < 0 {
		return 0, errors.New("seek: negative position")
	}
	rd.pos = off
	return off, nil
}

func (rd *sliceReader) Read(p []byte) (int, error) {
	if rd.pos >= rd.o.size {
		return 0, io.EOF
	}
	if _, err := rd.load(rd.pos / rd.o.slice); err != nil {
		return 0, err
	}
	n := copy(p, rd.cur[rd.pos-rd.k*rd.o.slice:])
	rd.pos += int64(n)
	return n, nil
}

// preload gets the slice at the read position, before the status line.
func (rd *sliceReader) preload() (fetched bool, err error) {
	if rd.pos >= rd.o.size {
		return false, nil
	}
	return rd.load(rd.pos / rd.o.slice)
}

func (rd *sliceReader) load(k int64) (fetched bool, err error) {
	if k == rd.k {
		return false, nil
	}
	if err := rd.failure(); err != nil {
		return false, err
	}
	rd.k, rd.cur = -1, nil // the previous slice is not kept while the next comes
	body, fetched, err := rd.c.slice(rd.r, rd.o, k, rd.src)
	if first, last := rd.o.bounds(k); err == nil && int64(len(body)) != last-first+1 {
		err = errBadSlice
	}
	if err != nil {
		rd.mu.Lock()
		rd.err = err
		rd.mu.Unlock()
		return false, err
	}
	rd.k, rd.cur = k, body
	return fetched, nil
}

func (rd *sliceReader) failure() error {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.err
}

// errAnswered is what writes get after a 502 replaced the answer.
var errAnswered = errors.New("the response was replaced by an error")

// sliceWriter is the ResponseWriter ServeContent writes to: before a 200
// or a single part's 206 goes out it has the first slice the body needs
// fetched (a failure becomes a 502 instead), it sets Cache-Status, and it
// bounds every write by WriteStallTimeout.
type sliceWriter struct {
	http.ResponseWriter
	c                   *Cache
	rd                  *sliceReader
	dw                  *deadlineWriter
	head                bool
	a                   *sliceAnswer
	failed, wroteHeader bool
	changed             bool // failed: the object changed, and the caller starts again
}

func (sw *sliceWriter) WriteHeader(code int) {
	if sw.wroteHeader || sw.failed {
		return
	}
	h := sw.Header()
	status := sw.a.hit
	if (code == http.StatusOK || code == http.StatusPartialContent) && !sw.head &&
		!strings.HasPrefix(h.Get("Content-Type"), "multipart/byteranges") {
		fetched, err := sw.rd.preload()
		if err != nil {
			sw.failed = true
			if sw.changed = sw.a.retry && errors.Is(err, errChanged); sw.changed {
				return // serveFromSlices puts the header back
			}
			clear(h)
			detail := "upstream-error"
			if errors.Is(err, errChanged) {
				detail = "object-changed"
			}
			h.Set("Cache-Status", sw.c.cfg.Name+"; "+sw.a.miss+"; detail="+detail)
			sw.c.writeError(sw.ResponseWriter, err)
			return
		}
		if fetched {
			status = sw.a.miss
		}
	}
	appendCacheStatus(h, sw.c.cfg.Name+"; "+status)
	sw.wroteHeader = true
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *sliceWriter) Write(p []byte) (int, error) {
	if !sw.wroteHeader {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.failed {
		return 0, errAnswered
	}
	return sw.dw.Write(p)
}

func (sw *sliceWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// servePart answers r, whose single range lies within the part
// [start, start+len(body)) of a size-byte object, from that part: the
// answer of an origin to a slice request for an object the cache does
// not keep in slices. It reports false when r asks for more, or has
// preconditions (which may ask for the whole).
func (c *Cache) servePart(w http.ResponseWriter, r *http.Request, hdr http.Header, start int64, body []byte, size int64, status string) bool {
	for _, f := range [...]string{"If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if _, ok := r.Header[f]; ok {
			return false
		}
	}
	first, last, ok := singleRange(r.Header.Get("Range"), size)
	if !ok || first < start || last >= start+int64(len(body)) {
		return false
	}
	fields := hdr.Clone()
	removeHopByHop(fields)
	delete(fields, "Content-Length")
	delete(fields, "Content-Range")
	h := w.Header()
	for k, v := range fields {
		h[k] = v
	}
	appendCacheStatus(h, c.cfg.Name+"; "+status)
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil
	}
	http.ServeContent(w, r, "", time.Time{}, &partReader{start: start, body: body, size: size})
	return true
}

// partReader reads the part [start, start+len(body)) of a size-byte
// object for ServeContent; servePart has checked that nothing else is read.
type partReader struct {
	start int64
	body  []byte
	size  int64
	pos   int64
}

func (p *partReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += p.pos
	case io.SeekEnd:
		off += p.size
	}
	p.pos = off
	return off, nil
}

func (p *partReader) Read(b []byte) (int, error) {
	if p.pos < p.start || p.pos >= p.start+int64(len(p.body)) {
		return 0, errBadSlice
	}
	n := copy(b, p.body[p.pos-p.start:])
	p.pos += int64(n)
	return n, nil
}
