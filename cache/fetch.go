package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// flight is one origin fetch that concurrent requests for the same key
// share. done closes when the leader has decided; then e is the stored
// response to serve, or nil when waiters must fetch on their own (the
// response could not be shared: private, too large, an error).
type flight struct {
	done    chan struct{}
	e       *entry
	err     error // a revalidation's transport error, for its waiters
	waiters atomic.Int64

	// started closes when the leader begins streaming a storable 200;
	// stream is set before. Waiters then stream the same bytes as they
	// arrive instead of waiting for the whole body.
	started chan struct{}
	stream  *stream

	// sliced closes when the leader found the response too large to store
	// whole and keeps it in slices: waiters serve it from them at once.
	sliced chan struct{}
}

// joinFlight returns the flight under key for the caller to wait on
// (lead false), or a new one for it to lead.
func (c *Cache) joinFlight(key string) (f *flight, lead bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[key]; ok {
		f.waiters.Add(1)
		c.stats.coalesced.Add(1)
		return f, false
	}
	f = &flight{done: make(chan struct{}), started: make(chan struct{}), sliced: make(chan struct{})}
	c.flights[key] = f
	return f, true
}

// endFlight ends a flight its caller led: later requests start their own,
// the waiters read its outcome.
func (c *Cache) endFlight(key string, f *flight) {
	c.mu.Lock()
	delete(c.flights, key)
	c.mu.Unlock()
	close(f.done)
}

// stream is a response being fetched, stored and sent at once.
type stream struct {
	e    *entry // headers and policy; body not yet set
	body *sharedBody
}

// sharedBody is a body that grows as the leader reads it; readers block
// until there is more or it ends.
type sharedBody struct {
	mu   sync.Mutex // guards buf, tail, done, err
	cond *sync.Cond
	buf  []byte // the body so far, or its head (see reserve)
	tail []byte // the tail so far, when reserve split the body
	done bool
	err  error
}

func newSharedBody() *sharedBody {
	b := &sharedBody{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *sharedBody) append(p []byte) {
	b.mu.Lock()
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	b.cond.Broadcast()
}

// reserve allocates a body of size bytes for fill, in the pieces it is
// stored in (newBody): the head in buf, the tail in tail, both empty.
func (b *sharedBody) reserve(size int64) {
	p := newBody(size)
	b.mu.Lock()
	b.buf, b.tail = p.head[:0], p.tail[:0]
	b.mu.Unlock()
}

// fill reads r, which sends size bytes, into the body's spare capacity
// (reserve's, or at least size in buf), the head then the tail,
// publishing each read. Only the filler changes buf and tail, so it
// reads its own without the lock; readers see only what it published.
func (b *sharedBody) fill(r io.Reader, size int64) error {
	b.mu.Lock()
	buf, tail := b.buf, b.tail
	b.mu.Unlock()
	hl := min(int64(cap(buf)), size) // the head's length; the tail has the rest
	for {
		if int64(len(buf)+len(tail)) >= size {
			var one [1]byte
			n, err := r.Read(one[:])
			switch {
			case n > 0:
				return errLongerThanLength
			case err == io.EOF:
				return nil
			case err != nil:
				return err
			}
			continue
		}
		head := int64(len(buf)) < hl
		p := tail[len(tail) : size-hl]
		if head {
			p = buf[len(buf):hl]
		}
		n, err := r.Read(p)
		if n > 0 {
			if head {
				buf = buf[:len(buf)+n]
			} else {
				tail = tail[:len(tail)+n]
			}
			b.mu.Lock()
			b.buf, b.tail = buf, tail
			b.mu.Unlock()
			b.cond.Broadcast()
		}
		if err == io.EOF {
			if int64(len(buf)+len(tail)) < size {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var errLongerThanLength = errors.New("the origin sent more than its Content-Length")

// pieces is the body read.
func (b *sharedBody) pieces() body {
	b.mu.Lock()
	defer b.mu.Unlock()
	return body{head: b.buf, tail: b.tail}
}

func (b *sharedBody) finish(err error) {
	b.mu.Lock()
	b.done, b.err = true, err
	b.mu.Unlock()
	b.cond.Broadcast()
}

// next returns the bytes after off, blocking until there are some or the
// body ended (then err is io.EOF or why it failed).
func (b *sharedBody) next(off int) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf)+len(b.tail) <= off && !b.done {
		b.cond.Wait()
	}
	if len(b.buf) > off {
		return b.buf[off:], nil
	}
	if t := off - len(b.buf); len(b.tail) > t {
		return b.tail[t:], nil
	}
	if b.err != nil {
		return nil, b.err
	}
	return nil, io.EOF
}

// plainGET is a GET for the whole body with no conditions: only those
// are answered while the body streams in.
func plainGET(r *http.Request) bool { return r.Method == http.MethodGet && wantsWholeBody(r) }

var errTooLarge = errors.New("response grew beyond the cache's max object size while streaming")

// errRevalidation5xx is what the waiters of a revalidation learn when the
// origin answered it with a server error and the leader served stale.
var errRevalidation5xx = errors.New("the origin answered the revalidation with a server error")

// errNoTransport answers a fetch for ServeHTTP without Config.Transport.
var errNoTransport = errors.New("cache: no transport configured for this request")

// fetch answers a miss. Requests for the same key share one upstream
// request (the first caller leads); the fetch runs on a context detached
// from the leader's client, so a client hanging up does not cancel it.
func (c *Cache) fetch(w http.ResponseWriter, r *http.Request, pkey string, reqCC Directives, private bool) {
	if private || reqCC.NoStore {
		c.fetchAlone(w, r, pkey, reqCC, private, nil)
		return
	}
	f, lead := c.joinFlight(pkey)
	if !lead {
		select {
		case <-f.started:
			if st := f.stream; plainGET(r) && st.e.key == entryKey(pkey, &st.e.header, r) {
				c.serveStream(w, st, "fwd=miss; detail=coalesced")
				return
			}
			<-f.done
		case <-f.sliced:
			if c.serveSliced(w, r, pkey, reqCC) {
				return
			}
			<-f.done
		case <-f.done:
		case <-r.Context().Done():
			return
		}
		// Share the leader's response unless it varies on fields this
		// request sends differently. (The store may not have applied it
		// yet: ristretto's sets are asynchronous, so use it directly.)
		if e := f.e; e != nil && e.key == entryKey(pkey, &e.header, r) {
			c.serveEntry(w, r, e, currentAge(&e.header, e.pol.timing, c.cfg.Now()), "fwd=miss; detail=coalesced")
			return
		}
		c.fetchAlone(w, r, pkey, reqCC, false, nil)
		return
	}
	defer c.endFlight(pkey, f)
	// The leader looks again inside its flight: a request that missed just
	// before another flight stored the response and ended must not fetch
	// it again (a flight ends only once its response is in the store).
	if e, _ := c.find(pkey, r, c.st.peek); e != nil { // counted by ServeHTTP's look
		if age, ok := c.acceptable(e, reqCC, c.cfg.Now()); ok {
			c.stats.hits.Add(1)
			c.serveEntry(w, r, e, age, string(appendHit(nil, e.lifetime-age)))
			f.e = e
			return
		}
	}
	f.e = c.fetchAlone(w, r, pkey, reqCC, false, f)
}

// fetchAlone fetches r upstream, stores the response when allowed and
// serves it. It returns the stored entry, if any.
func (c *Cache) fetchAlone(w http.ResponseWriter, r *http.Request, pkey string, reqCC Directives, private bool, f *flight) *entry {
	c.beginSave()
	endSave := sync.OnceFunc(c.endSave)
	defer endSave()
	// The fetch outlives its client only while someone still wants it: a
	// client that hangs up before the response is being stored, with no
	// other request waiting on the flight, cancels it (a reset request
	// must not keep an origin slot busy); a fill under way finishes, within
	// the fill budget, for the cache and the waiters.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	var filling atomic.Bool
	stop := context.AfterFunc(r.Context(), func() {
		if filling.Load() || (f != nil && f.waiters.Load() > 0) {
			return
		}
		c.stats.cancelled.Add(1)
		cancel()
	})
	defer stop()
	reqTime := c.cfg.Now()
	resp, err := c.roundTrip(withInterim(ctx, w, r), r, nil)
	if err != nil {
		c.writeError(w, err)
		return nil
	}
	detached := false // the body belongs to a fill goroutine
	defer func() {
		if !detached {
			resp.Body.Close()
		}
	}()
	respTime := c.cfg.Now()
	e, own, reason := c.storable(r, resp, pkey, reqCC, private, reqTime, respTime)
	if e == nil {
		c.writeResponse(w, resp, c.cfg.Name+"; fwd=uri-miss; detail="+reason)
		return nil
	}
	if resp.ContentLength > c.cfg.MaxObjectBytes {
		if c.sliceLarge(w, r, resp, e, own, f) {
			return nil
		}
		c.writeResponse(w, resp, c.cfg.Name+"; fwd=uri-miss; detail=too-large")
		return nil
	}
	if cs := resp.Header["Cache-Status"]; cs != nil {
		// An upstream cache's verdict (a parent tier's) precedes this
		// cache's on the response that fetched it (RFC 9211 lists
		// caches from the origin's side); the stored copy has none.
		w.Header()["Cache-Status"] = cs
	}
	if e.status == http.StatusOK && plainGET(r) && resp.ContentLength >= 0 {
		if (f == nil || f.waiters.Load() == 0) && !c.st.wouldAdmit(e.key, e.cost()+bodyAlloc(resp.ContentLength)) {
			// The store would refuse it (admission.go): send it on as it
			// comes, without a copy. A response others wait for is
			// stored, or tried: it is in demand.
			c.stats.rejected.Add(1)
			c.writeResponse(w, resp, c.cfg.Name+"; fwd=uri-miss; detail=not-admitted")
			return nil
		}
		if !c.reserveFill(resp.ContentLength) {
			// Fills in flight hold their budget: pass this one through,
			// paced by its client (the origin is held back, not buffered).
			c.writeResponse(w, resp, c.cfg.Name+"; fwd=uri-miss; detail=fill-budget")
			return nil
		}
		filling.Store(true)
		detached = true
		addFields(w.Header(), own)
		return c.fillAndServe(w, r, resp, e, f, cancel, endSave)
	}
	addFields(w.Header(), own)
	if e.status == http.StatusOK && plainGET(r) {
		return c.streamAndStore(w, r, resp, e, f)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxObjectBytes+1))
	if err != nil {
		c.writeError(w, err)
		return nil
	}
	if int64(len(b)) > c.cfg.MaxObjectBytes {
		// Too large to store: stream what was read and the rest.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
		c.writeResponse(w, resp, c.cfg.Name+"; fwd=uri-miss; detail=too-large")
		return nil
	}
	e.data = body{head: b}
	c.save(e, r)
	c.serveEntry(w, r, e, currentAge(&e.header, e.pol.timing, c.cfg.Now()), "fwd=uri-miss; stored")
	return e
}

// storable decides whether a response may be stored (RFC 9111 3, and
// Config.SetCookie, MaxVaryValueBytes) and builds its entry (without the
// body). own holds the fields the stored copy leaves out that the client
// whose request fetched the response still gets (see withhold).
func (c *Cache) storable(r *http.Request, resp *http.Response, pkey string, reqCC Directives, private bool, reqTime, respTime time.Time) (e *entry, own http.Header, reason string) {
	if r.Method != http.MethodGet {
		return nil, nil, "method"
	}
	if hasBody(r) {
		return nil, nil, "request-body"
	}
	if reqCC.NoStore {
		return nil, nil, "request-no-store"
	}
	cc, targeted := effectiveDirectives(resp.Header, c.cfg.TargetedFields)
	code := resp.StatusCode
	switch {
	case code == http.StatusPartialContent:
		return nil, nil, "partial"
	case code < 200 || code == http.StatusNotModified:
		return nil, nil, "status"
	}
	if cc.MustUnderstand {
		if !understoodStatus(code) {
			return nil, nil, "must-understand"
		}
	} else if cc.NoStore {
		return nil, nil, "no-store"
	}
	if cc.Private && cc.PrivateFields == nil {
		return nil, nil, "private"
	}
	if private && !cc.Public && cc.SMaxAge < 0 && !cc.MustRevalidate {
		return nil, nil, "authorization"
	}
	names, star := varyNames(resp.Header)
	if star {
		return nil, nil, "vary-star"
	}
	if !c.varyValuesFit(names, r.Header) {
		return nil, nil, "vary-value-too-long"
	}
	pol := newPolicy(cc, targeted, reqTime, respTime)
	fraction := c.cfg.HeuristicFraction
	if fraction < 0 {
		fraction = 0
	}
	life, heur := freshnessLifetime(code, resp.Header, pol, fraction, c.cfg.HeuristicMax)
	explicit := cc.MaxAge >= 0 || cc.SMaxAge >= 0 || cc.Public || (!targeted && resp.Header.Get("Expires") != "") ||
		cc.NoCache || cc.StaleWhileRevalidate >= 0 || cc.StaleIfError >= 0 || cc.Invalid
	if !explicit && !cacheableByDefault(code) {
		return nil, nil, "status"
	}
	if !explicit && !heur {
		return nil, nil, "no-freshness" // nothing says how long: store nothing rather than invent a TTL
	}
	h := resp.Header.Clone()
	removeHopByHop(h)
	delete(h, "Cache-Status")
	cookies := c.cookiePolicy(r)
	if _, ok := h["Set-Cookie"]; ok && cookies == CookiePass &&
		!listed(cc.PrivateFields, "Set-Cookie") && !listed(cc.NoCacheFields, "Set-Cookie") {
		return nil, nil, "set-cookie"
	}
	own = c.withhold(h, cc, cookies)
	key := pkey
	if len(names) > 0 {
		key = varyKey(pkey, names, r.Header)
	}
	return &entry{key: key, status: code, header: FieldsOf(h), pol: pol.stored(), lifetime: life, heuristic: heur, tags: strings.Join(SurrogateKeys(resp.Header), " ")}, own, ""
}

// withhold removes from h, a response's fields about to be stored, those
// that must not reach other clients: the fields cc's private= and
// no-cache= name, and Set-Cookie unless the policy is CookieStore. It
// returns them, for the client whose request fetched the response.
func (c *Cache) withhold(h http.Header, cc Directives, cookies CookiePolicy) (own http.Header) {
	take := func(f string) {
		f = http.CanonicalHeaderKey(f)
		if vs, ok := h[f]; ok {
			if own == nil {
				own = http.Header{}
			}
			own[f] = vs
			delete(h, f)
		}
	}
	for _, f := range cc.PrivateFields {
		take(f)
	}
	for _, f := range cc.NoCacheFields {
		take(f)
	}
	if cookies != CookieStore {
		take("Set-Cookie")
	}
	return own
}

// cookiePolicy is the Set-Cookie policy of r's Route.
func (c *Cache) cookiePolicy(r *http.Request) CookiePolicy { return c.route(r).SetCookie }

// listed reports whether fields (a directive's field names) has name.
func listed(fields []string, name string) bool {
	for _, f := range fields {
		if strings.EqualFold(f, name) {
			return true
		}
	}
	return false
}

// addFields adds own (from withhold) to the header of a response being
// written.
func addFields(h, own http.Header) {
	for k, vs := range own {
		h[k] = vs
	}
}

// varyValuesFit reports whether each request field in names (canonical)
// is short enough for the cache to key on (MaxVaryValueBytes).
func (c *Cache) varyValuesFit(names []string, h http.Header) bool {
	for _, n := range names {
		size := 0
		for _, v := range h[n] {
			size += len(v)
		}
		if size > c.cfg.MaxVaryValueBytes {
			return false
		}
	}
	return true
}

// SurrogateKeys are the tags a response carries for purges by tag
// (PurgeTag): the space- or comma-separated values of Surrogate-Key and
// Cache-Tag. An entry keeps them joined by single spaces (entry.tags).
func SurrogateKeys(h http.Header) []string {
	var tags []string
	for _, f := range []string{"Surrogate-Key", "Cache-Tag"} {
		for _, v := range h.Values(f) {
			for _, t := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
				tags = append(tags, t)
			}
		}
	}
	return tags
}

// save stores e (and its Vary index) for its freshness plus the longest
// window in which it may still be served or revalidated.
func (c *Cache) save(e *entry, r *http.Request) {
	e.data = e.data.pack()
	if !e.encoded {
		c.encode(e, nil)
	}
	ttl := e.lifetime + c.keepAfterStale(e)
	if names, _ := varyNames(&e.header); len(names) > 0 {
		pkey := e.key[:strings.IndexByte(e.key, 0)]
		c.st.addVariant(pkey, names, e, c.cfg.MaxVariants, ttl)
	}
	if c.st.put(e, ttl) {
		// ristretto applies sets asynchronously: wait, so that the next
		// request for this key (the flight is over) finds it. Only misses
		// pay for this.
		c.st.rc.Wait()
		c.stats.stored.Add(1)
		c.stats.storedBytes.Add(e.cost())
	} else {
		c.stats.rejected.Add(1)
		if e.vary != nil {
			e.vary.remove(e.key, e.varySeq)
		}
	}
}

// keepAfterStale is how long after it goes stale an entry is worth
// keeping: its stale-* windows, and at least a while for revalidation
// when it has a validator.
func (c *Cache) keepAfterStale(e *entry) time.Duration {
	keep := time.Duration(0)
	if v := e.pol.staleWhileRevalidate; v > 0 {
		keep = max(keep, seconds(v))
	}
	if v := e.pol.staleIfError; v > 0 {
		keep = max(keep, seconds(v))
	}
	if e.header.Get("ETag") != "" || e.header.Get("Last-Modified") != "" {
		keep = max(keep, time.Hour)
	}
	return keep
}

// revalidate validates a stale entry with the origin and serves the
// result, coalesced like a miss: the requests that find one stored
// response stale at once cause one conditional request. The leader serves
// the updated entry on 304, the new response on 200, or the stale entry
// within stale-if-error when the origin fails; the waiters get the same
// entry, or on a failure the stale entry within their own stale-if-error
// (else the leader's error). When the leader's answer cannot be shared
// (not storable, or a 5xx beyond stale-if-error), they revalidate on their
// own.
func (c *Cache) revalidate(w http.ResponseWriter, r *http.Request, e *entry, reqCC Directives) {
	key := "\x00reval\x00" + e.key
	f, lead := c.joinFlight(key)
	if !lead {
		select {
		case <-f.done:
		case <-r.Context().Done():
			return
		}
		switch {
		case f.e != nil && f.e.key == entryKey(c.primaryKey(r), &f.e.header, r):
			c.serveEntry(w, r, f.e, currentAge(&f.e.header, f.e.pol.timing, c.cfg.Now()), "fwd=stale; detail=coalesced")
		case f.err != nil && c.withinStaleIfError(e, reqCC):
			c.serveStaleIfError(w, r, e)
		case f.err != nil:
			w.Header().Set("Cache-Status", c.cfg.Name+"; fwd=stale; detail=upstream-error-beyond-stale-if-error")
			c.writeError(w, f.err)
		default:
			c.revalidateAlone(w, r, e, reqCC)
		}
		return
	}
	defer c.endFlight(key, f)
	f.e, f.err = c.revalidateAlone(w, r, e, reqCC)
}

// revalidateAlone validates e with the origin and serves the result. It
// returns the entry it served that others may share (refreshed or
// replaced), or the transport error.
func (c *Cache) revalidateAlone(w http.ResponseWriter, r *http.Request, e *entry, reqCC Directives) (*entry, error) {
	c.beginSave()
	defer c.endSave()
	newE, own, resp, err := c.validate(withInterim(context.WithoutCancel(r.Context()), w, r), r, e)
	if newE != nil {
		addFields(w.Header(), own)
		c.serveEntry(w, r, newE, currentAge(&newE.header, newE.pol.timing, c.cfg.Now()), "fwd=stale; fwd-status=304")
		return newE, nil
	}
	failed := err != nil || (resp != nil && resp.StatusCode >= 500)
	if failed && c.withinStaleIfError(e, reqCC) {
		if resp != nil {
			resp.Body.Close()
			err = errRevalidation5xx
		}
		c.serveStaleIfError(w, r, e)
		return nil, err
	}
	if err != nil {
		w.Header().Set("Cache-Status", c.cfg.Name+"; fwd=stale; detail=upstream-error-beyond-stale-if-error")
		c.writeError(w, err)
		return nil, err
	}
	defer resp.Body.Close()
	// A full response replaces the stored one when it may be stored.
	pkey := c.primaryKey(r)
	now := c.cfg.Now()
	if ne, own, _ := c.storable(r, resp, pkey, reqCC, false, now, now); ne != nil {
		b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxObjectBytes+1))
		if err == nil && int64(len(b)) <= c.cfg.MaxObjectBytes {
			ne.data = body{head: b}
			c.save(ne, r)
			addFields(w.Header(), own)
			c.serveEntry(w, r, ne, 0, "fwd=stale; fwd-status=200; stored")
			return ne, nil
		}
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	} else {
		c.st.del(e.key, false)
	}
	c.writeResponse(w, resp, c.cfg.Name+"; fwd=stale; fwd-status="+strconv.Itoa(resp.StatusCode))
	return nil, nil
}

// serveStaleIfError serves e, stale, because the origin failed within its
// stale-if-error window (RFC 5861 4).
func (c *Cache) serveStaleIfError(w http.ResponseWriter, r *http.Request, e *entry) {
	c.stats.stale.Add(1)
	age := currentAge(&e.header, e.pol.timing, c.cfg.Now())
	c.serveEntry(w, r, e, age, "hit; ttl="+negTTL(age-e.lifetime)+"; detail=stale-if-error")
}

func (c *Cache) withinStaleIfError(e *entry, reqCC Directives) bool {
	if !c.mayServeStale(e) {
		return false
	}
	staleness := currentAge(&e.header, e.pol.timing, c.cfg.Now()) - e.lifetime
	window := int64(-1)
	if v := e.pol.staleIfError; v >= 0 {
		window = v
	}
	if reqCC.StaleIfError > window {
		window = reqCC.StaleIfError
	}
	return window >= 0 && staleness <= seconds(window)
}

// validate sends a conditional request for e. On 304 it returns the
// updated, stored entry and the 304's fields that only this client gets
// (see withhold); otherwise the upstream response (or error).
func (c *Cache) validate(ctx context.Context, r *http.Request, e *entry) (*entry, http.Header, *http.Response, error) {
	cond := http.Header{}
	if et := e.header.Get("ETag"); et != "" {
		cond.Set("If-None-Match", et)
	}
	if lm := e.header.Get("Last-Modified"); lm != "" {
		cond.Set("If-Modified-Since", lm)
	}
	vr := r.Clone(ctx)
	vr.Method = http.MethodGet
	for _, f := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range", "Range"} {
		vr.Header.Del(f)
	}
	reqTime := c.cfg.Now()
	resp, err := c.roundTrip(ctx, vr, cond)
	if err != nil {
		return nil, nil, nil, err
	}
	if resp.StatusCode != http.StatusNotModified {
		c.stats.revalidated200.Add(1)
		return nil, nil, resp, nil
	}
	resp.Body.Close()
	c.stats.revalidated304.Add(1)
	ne, own := c.freshen(r, e, resp, reqTime, c.cfg.Now())
	return ne, own, nil, nil
}

// freshen applies a 304's header fields to a stored response (RFC 9111
// 4.3.4) and stores the result, without the fields withhold takes (a
// 304's Set-Cookie is stored only under CookieStore), which it returns.
func (c *Cache) freshen(r *http.Request, e *entry, resp *http.Response, reqTime, respTime time.Time) (*entry, http.Header) {
	h := e.header.Header()
	for k, v := range resp.Header {
		switch k {
		case "Content-Length", "Content-Encoding", "Content-Range", "Transfer-Encoding", "Cache-Status":
			continue
		}
		h[k] = v
	}
	removeHopByHop(h)
	cc, targeted := effectiveDirectives(h, c.cfg.TargetedFields)
	own := c.withhold(h, cc, c.cookiePolicy(r))
	for k := range own {
		if _, ok := resp.Header[k]; !ok {
			delete(own, k) // the stored response's own field: not for this client
		}
	}
	pol := newPolicy(cc, targeted, reqTime, respTime)
	fraction := max(c.cfg.HeuristicFraction, 0)
	life, heur := freshnessLifetime(e.status, h, pol, fraction, c.cfg.HeuristicMax)
	ne := &entry{key: e.key, status: e.status, header: FieldsOf(h), data: e.data, pol: pol.stored(), lifetime: life, heuristic: heur, tags: strings.Join(SurrogateKeys(h), " ")}
	c.encode(ne, e) // the same body: e's encodings are reused
	c.save(ne, nil)
	return ne, own
}

// revalidateInBackground refreshes e once per key (stale-while-revalidate).
func (c *Cache) revalidateInBackground(r *http.Request, e *entry) {
	bkey := "\x00bg\x00" + e.key
	c.mu.Lock()
	if _, busy := c.flights[bkey]; busy {
		c.mu.Unlock()
		return
	}
	f := &flight{done: make(chan struct{})}
	c.flights[bkey] = f
	c.mu.Unlock()
	rt := c.route(r)
	ctx := context.WithValue(c.ctx, routeKey{}, &rt) // the cache's lifetime, the request's Route
	req := r.Clone(ctx)
	c.wg.Go(func() {
		defer func() {
			c.mu.Lock()
			delete(c.flights, bkey)
			c.mu.Unlock()
			close(f.done)
		}()
		_, _, resp, err := c.validate(ctx, req, e)
		if err != nil {
			c.cfg.Logger.Debug("background revalidation", "key", e.key, "error", err)
			return
		}
		if resp == nil {
			return
		}
		defer resp.Body.Close()
		now := c.cfg.Now()
		if ne, _, _ := c.storable(req, resp, c.primaryKey(req), emptyDirectives(), false, now, now); ne != nil {
			if b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxObjectBytes+1)); err == nil && int64(len(b)) <= c.cfg.MaxObjectBytes {
				ne.data = body{head: b}
				c.save(ne, req)
			}
		}
	})
}

// entryKey is the key a request would have for a stored response with
// header h: the primary key, plus the Vary part when it varies.
func entryKey(pkey string, h fieldReader, r *http.Request) string {
	if names, _ := varyNames(h); len(names) > 0 {
		return varyKey(pkey, names, r.Header)
	}
	return pkey
}

// fillAndServe stores a response of known length while serving it: one
// goroutine (owned by the cache's save group) reads the origin into the
// shared body at the origin's pace and stores it, and the leader's client
// is served from that body like every coalesced waiter. A client that
// reads slowly (or not at all) therefore holds no origin window and
// no copy: only a reference to the body being stored, which counts in
// the fill budget while it fills and in the cache once stored. It
// returns the stored entry once the client has it all, or nil.
func (c *Cache) fillAndServe(w http.ResponseWriter, r *http.Request, resp *http.Response, e *entry, f *flight, cancel context.CancelFunc, endSave func()) *entry {
	st := &stream{e: e, body: newSharedBody()}
	e.header = e.header.with("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	// The body's allocations (see body.go), which its cost counts; read
	// into directly, with no buffer between.
	st.body.reserve(resp.ContentLength)
	stored := make(chan *entry, 1)
	c.beginSave()
	go func() {
		defer c.endSave()
		defer c.releaseFill(resp.ContentLength)
		defer cancel()
		defer resp.Body.Close()
		if err := st.body.fill(resp.Body, resp.ContentLength); err != nil {
			st.body.finish(err)
			stored <- nil
			return
		}
		st.body.finish(nil)
		e.data = st.body.pieces()
		c.save(e, r)
		stored <- e
	}()
	if f != nil {
		f.stream = st
		close(f.started)
	}
	endSave() // the fill goroutine holds the save now: Wait need not wait for this client
	c.serveStream(w, st, "fwd=uri-miss; stored")
	// Even when the client left, the flight lasts until the response is
	// stored (or failed), so that requests arriving meanwhile wait for it
	// instead of fetching again.
	return <-stored
}

// reserveFill takes n bytes of the fill budget (a quarter of MaxBytes:
// responses being stored while they are fetched), or reports false.
func (c *Cache) reserveFill(n int64) bool {
	limit := c.cfg.MaxBytes / 4
	if c.filling.Add(n) > limit && n > 0 {
		c.filling.Add(-n)
		c.stats.fillBudget.Add(1)
		return false
	}
	return true
}

func (c *Cache) releaseFill(n int64) { c.filling.Add(-n) }

// streamAndStore sends a storable 200 to the client as it arrives, shares
// it with coalesced waiters, and stores it when complete. A body that grows
// beyond MaxObjectBytes (no Content-Length) is not stored; the leader's
// client still gets all of it, waiters are cut off.
func (c *Cache) streamAndStore(w http.ResponseWriter, r *http.Request, resp *http.Response, e *entry, f *flight) *entry {
	st := &stream{e: e, body: newSharedBody()}
	if resp.ContentLength >= 0 {
		e.header = e.header.with("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		st.body.buf = make([]byte, 0, resp.ContentLength) // no garbage from growing
	}
	if f != nil {
		f.stream = st
		close(f.started)
	}
	h := w.Header()
	for k, v := range e.header.All() {
		h[k] = v
	}
	if c.compressible(e, resp.ContentLength) {
		h["Vary"] = withVaryAcceptEncoding(h["Vary"]) // identity now; its hits may be encoded
	}
	h["Age"] = []string{formatAge(currentAge(&e.header, e.pol.timing, c.cfg.Now()))}
	appendCacheStatus(h, c.cfg.Name+"; fwd=uri-miss; stored")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	clientOK := true
	buf := make([]byte, 32<<10)
	size := int64(0)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			size += int64(n)
			if size <= c.cfg.MaxObjectBytes {
				st.body.append(buf[:n])
			} else if size-int64(n) <= c.cfg.MaxObjectBytes {
				st.body.finish(errTooLarge)
			}
			if clientOK {
				if _, werr := w.Write(buf[:n]); werr != nil {
					clientOK = false // keep reading: the store and the waiters want it
				} else {
					rc.Flush() // the client gets each chunk as it arrives
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			st.body.finish(err)
			if clientOK {
				panic(http.ErrAbortHandler) // cut the response: it is incomplete
			}
			return nil
		}
	}
	if size > c.cfg.MaxObjectBytes {
		return nil
	}
	st.body.finish(nil)
	e.data = st.body.pieces()
	c.save(e, r)
	return e
}

// serveStream sends a response that another request is fetching, as its
// bytes arrive.
func (c *Cache) serveStream(w http.ResponseWriter, st *stream, status string) bool {
	h := w.Header()
	for k, v := range st.e.header.All() {
		h[k] = v
	}
	if c.compressible(st.e, -1) {
		h["Vary"] = withVaryAcceptEncoding(h["Vary"]) // identity now; its hits may be encoded
	}
	h["Age"] = []string{formatAge(currentAge(&st.e.header, st.e.pol.timing, c.cfg.Now()))}
	appendCacheStatus(h, c.cfg.Name+"; "+status)
	w.WriteHeader(http.StatusOK)
	sw := c.stallWriter(w)
	defer sw.done()
	off := 0
	for {
		p, err := st.body.next(off)
		if len(p) > 0 {
			if _, werr := sw.Write(p); werr != nil {
				return false
			}
			off += len(p)
		}
		if err == io.EOF {
			return true
		}
		if err != nil {
			panic(http.ErrAbortHandler) // the shared fetch failed midway
		}
	}
}
