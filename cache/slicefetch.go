package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Fetching objects in slices (see slice.go).

// learnFlightKey is the flight that learns (or revalidates) the object
// under pkey from one slice.
func learnFlightKey(pkey string) string { return "\x00slices\x00" + pkey }

// sliceRequest is r as a slice request is sent: a GET without the
// client's range and preconditions, which the cache answers itself.
func sliceRequest(r *http.Request) *http.Request {
	r2 := r.WithContext(r.Context()) // a shallow copy: r belongs to the caller
	r2.Method = http.MethodGet
	r2.Header = r.Header.Clone()
	for _, f := range [...]string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		delete(r2.Header, f)
	}
	return r2
}

func rangeField(first, last int64) []string {
	return []string{"bytes=" + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10)}
}

// detached is a context for an origin request that other requests may
// wait for: it outlives r's client while f has waiters, and ends with the
// client when nobody else wants it. stop releases it.
func (c *Cache) detached(r *http.Request, f *flight) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	unhook := context.AfterFunc(r.Context(), func() {
		if f.waiters.Load() == 0 {
			c.stats.cancelled.Add(1)
			cancel()
		}
	})
	return ctx, func() { unhook(); cancel() }
}

// learnSliced fetches slice k of the object under pkey (k is where r's
// range starts), coalesced with other requests learning it, to learn the
// object's size and ETag from the 206: the first origin request for an
// object is a slice request, as nginx's slice module sends. With old, the
// stored object gone stale, the request carries If-None-Match and a 304
// freshens old. It returns the object and, for the leader, slice k; or
// served when it answered r itself (an error, a stale-if-error answer, a
// small object stored whole, a part of an object it cannot slice); or
// neither: r is to be answered as if slicing were off (the origin sent a
// 200, or a part that does not cover r's range).
func (c *Cache) learnSliced(w http.ResponseWriter, r *http.Request, pkey string, reqCC Directives, k int64, old *sliced) (o *sliced, first []byte, served bool) {
	key := learnFlightKey(pkey)
	f, lead := c.joinFlight(key)
	if !lead {
		select {
		case <-f.done:
		case <-r.Context().Done():
			return nil, nil, true
		}
		if f.e != nil {
			return c.slicedFrom(f.e), nil, false
		}
		if old != nil && f.err != nil && c.withinStaleIfError(old.e, reqCC) {
			c.serveSlicedStale(w, r, old)
			return nil, nil, true
		}
		return nil, nil, false
	}
	end := sync.OnceFunc(func() { c.endFlight(key, f) })
	defer end()
	c.beginSave()
	defer c.endSave()
	ctx, stop := c.detached(r, f)
	defer stop()
	n := c.cfg.SliceBytes
	extra := http.Header{"Range": rangeField(k*n, k*n+n-1)}
	if old != nil {
		extra["If-None-Match"] = []string{old.etag}
	}
	reqTime := c.cfg.Now()
	resp, err := c.roundTrip(withInterim(ctx, w, r), sliceRequest(r), extra)
	if err != nil {
		f.err = err
		if old != nil && c.withinStaleIfError(old.e, reqCC) {
			c.serveSlicedStale(w, r, old)
			return nil, nil, true
		}
		c.writeError(w, err)
		return nil, nil, true
	}
	defer resp.Body.Close()
	respTime := c.cfg.Now()
	switch {
	case resp.StatusCode == http.StatusNotModified && old != nil:
		c.stats.revalidated304.Add(1)
		if o = c.freshenSliced(r, old, resp, reqCC, reqTime, respTime); o != nil {
			f.e = o.e
		}
		return o, nil, false
	case resp.StatusCode >= 500 && old != nil && c.withinStaleIfError(old.e, reqCC):
		f.err = sliceStatusError(resp.StatusCode)
		c.serveSlicedStale(w, r, old)
		return nil, nil, true
	case resp.StatusCode == http.StatusOK:
		// The origin ignores ranges: answered as without slicing, by a
		// request of r's own, and so are the next range misses.
		c.st.markUnsliceable(pkey)
		return nil, nil, false
	case resp.StatusCode != http.StatusPartialContent:
		// A 416 (r's range is past the end) or an error: answered as
		// without slicing, by a request of r's own.
		return nil, nil, false
	}
	if old != nil {
		c.stats.revalidated200.Add(1)
	}
	start, last, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != k*n || last != min(k*n+n, size)-1 {
		c.st.markUnsliceable(pkey)
		return nil, nil, false
	}
	whole := *resp
	whole.StatusCode = http.StatusOK
	e, own, reason := c.storable(r, &whole, pkey, reqCC, false, reqTime, respTime)
	if e != nil {
		o, reason = newSliced(e, size, n)
	}
	body := make([]byte, last-start+1)
	if _, err := io.ReadFull(resp.Body, body); err != nil {
		f.err = err
		c.writeError(w, fmt.Errorf("read slice: %w", err))
		return nil, nil, true
	}
	c.stats.sliceFetches.Add(1)
	if o == nil {
		c.st.markUnsliceable(pkey)
		end()
		return nil, nil, c.servePart(w, r, resp.Header, start, body, size, "fwd=uri-miss; detail="+reason)
	}
	if old != nil && !o.same(old) {
		c.st.dropSliced(old)
	}
	addFields(w.Header(), own)
	if start == 0 && last == size-1 && size <= c.cfg.MaxObjectBytes {
		// The whole object, small: stored as any response is.
		e.data = packBody(body) // save would pack it too
		c.save(e, r)
		end()
		c.serveEntry(w, r, e, currentAge(&e.header, e.pol.timing, c.cfg.Now()), "fwd=uri-miss; stored")
		return nil, nil, true
	}
	c.saveSliced(o)
	c.putSlice(o, k, body)
	f.e = o.e
	return o, body, false
}

// freshenSliced applies a 304's fields to old (as freshen does to an
// entry) and stores the result, whose slices are old's; nil if the
// result may not be stored any more.
func (c *Cache) freshenSliced(r *http.Request, old *sliced, resp *http.Response, reqCC Directives, reqTime, respTime time.Time) *sliced {
	h := old.e.header.Header()
	for k, v := range resp.Header {
		switch k {
		case "Content-Length", "Content-Encoding", "Content-Range", "Transfer-Encoding", "Cache-Status", "Etag":
			continue
		}
		h[k] = v
	}
	e, _, _ := c.storable(r, &http.Response{StatusCode: http.StatusOK, Header: h}, old.e.key, reqCC, false, reqTime, respTime)
	if e == nil {
		c.st.dropSliced(old)
		return nil
	}
	o, _ := newSliced(e, old.size, old.slice)
	if o == nil || !o.same(old) {
		c.st.dropSliced(old)
		return nil
	}
	c.saveSliced(o)
	return o
}

// sliceLarge is fetchAlone's way out for a storable 200 too large to
// store whole (the hook in fetchAlone): the object is kept in slices from
// now on, and r is answered from them. The 200's body supplies the
// slices r's answer reads in order, as long as nobody else has fetched
// them; f's waiters, released at once, read the same slices. It reports
// false when the object cannot be sliced (see newSliced).
func (c *Cache) sliceLarge(w http.ResponseWriter, r *http.Request, resp *http.Response, e *entry, own http.Header, f *flight) bool {
	if c.cfg.SliceBytes <= 0 || r.Method != http.MethodGet || e.status != http.StatusOK {
		return false
	}
	o, _ := newSliced(e, resp.ContentLength, c.cfg.SliceBytes)
	if o == nil {
		return false
	}
	c.saveSliced(o)
	if f != nil && f.sliced != nil {
		close(f.sliced)
	}
	addFields(w.Header(), own)
	src := &sliceSource{body: resp.Body}
	defer src.drop()
	status := "fwd=uri-miss; stored; detail=sliced"
	c.serveFromSlices(w, r, o, sliceAnswer{age: currentAge(&o.e.header, o.e.pol.timing, c.cfg.Now()), hit: status, miss: status, src: src, k: -1})
	return true
}

// sliceSource is the body of an origin's 200 for a whole object, read in
// order, slice by slice, by the one response that fetched it, while the
// slices it gets to are not stored or being fetched by others.
type sliceSource struct {
	body io.ReadCloser
	off  int64
}

func (s *sliceSource) at(off int64) bool { return s != nil && s.body != nil && s.off == off }

// drop closes the body: the slices still to come are fetched as ranges.
func (s *sliceSource) drop() {
	if s != nil && s.body != nil {
		s.body.Close()
		s.body = nil
	}
}

// slice returns slice k of o: stored, or fetched once for all the
// requests that want it at the same time (the first leads). src, the
// caller's own 200 body, is used when it is at the slice's start and the
// caller leads; else it is dropped. fetched reports an origin request.
func (c *Cache) slice(r *http.Request, o *sliced, k int64, src *sliceSource) (body []byte, fetched bool, err error) {
	sk := o.sliceKey(k)
	for {
		if e := c.st.getEntry(sk); e != nil {
			src.drop()
			return e.data.flat(), false, nil
		}
		key := "\x00slice\x00" + sk
		f, lead := c.joinFlight(key)
		if lead {
			body, err := c.leadSlice(key, f, r, o, k, src)
			return body, true, err
		}
		src.drop()
		select {
		case <-f.done:
		case <-r.Context().Done():
			return nil, false, r.Context().Err()
		}
		if f.e != nil {
			return f.e.data.flat(), false, nil
		}
		if !errors.Is(f.err, context.Canceled) {
			return nil, false, f.err
		}
		// The leader's client left before anyone else waited: fetch anew.
	}
}

// leadSlice fetches slice k of o for flight f and stores it. A changed
// object drops all of o's slices.
func (c *Cache) leadSlice(key string, f *flight, r *http.Request, o *sliced, k int64, src *sliceSource) ([]byte, error) {
	defer c.endFlight(key, f)
	c.beginSave()
	defer c.endSave()
	// The leader looks again: a flight that ended just before this one
	// began has stored the slice.
	if e := c.st.getEntry(o.sliceKey(k)); e != nil {
		src.drop()
		f.e = e
		return e.data.flat(), nil
	}
	ctx, stop := c.detached(r, f)
	defer stop()
	b, err := c.fetchSlice(ctx, r, o, k, src)
	if err != nil {
		if errors.Is(err, errChanged) {
			c.st.dropSliced(o)
		}
		f.err = err
		return nil, err
	}
	c.stats.sliceFetches.Add(1)
	c.putSlice(o, k, b)
	f.e = &entry{key: o.sliceKey(k), data: body{head: b}}
	return b, nil
}

// fetchSlice reads slice k of o from src when it is there, else asks the
// origin for it with If-Match: o's ETag. A 206 must carry that ETag, the
// range asked and o's size; a 412, another ETag or another size means
// the object changed (errChanged). A 200 with o's ETag (an origin that
// ignores ranges) is read up to the slice.
func (c *Cache) fetchSlice(ctx context.Context, r *http.Request, o *sliced, k int64, src *sliceSource) ([]byte, error) {
	first, last := o.bounds(k)
	body := make([]byte, last-first+1)
	if src.at(first) {
		if _, err := io.ReadFull(src.body, body); err == nil {
			src.off += int64(len(body))
			return body, nil
		}
		src.drop() // ask for it as a range
	}
	src.drop()
	resp, err := c.roundTrip(ctx, sliceRequest(r), http.Header{"Range": rangeField(first, last), "If-Match": {o.etag}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if resp.Header.Get("ETag") != o.etag {
			return nil, errChanged
		}
		f, l, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && size != o.size {
			return nil, errChanged
		}
		if !ok || f != first || l != last {
			return nil, errBadSlice
		}
	case http.StatusOK:
		if resp.Header.Get("ETag") != o.etag || resp.ContentLength >= 0 && resp.ContentLength != o.size {
			return nil, errChanged
		}
		if _, err := io.CopyN(io.Discard, resp.Body, first); err != nil {
			return nil, fmt.Errorf("read slice: %w", err)
		}
	case http.StatusPreconditionFailed:
		return nil, errChanged
	default:
		return nil, sliceStatusError(resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, body); err != nil {
		return nil, fmt.Errorf("read slice: %w", err)
	}
	return body, nil
}
