package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Cache.
type Config struct {
	// Transport fetches what the cache cannot answer for ServeHTTP (a
	// Route passed to ServeRoute brings its own). The request it gets has
	// hop-by-hop headers removed and an absolute URL. If nil, ServeHTTP
	// answers what it cannot serve from the cache with 502.
	Transport http.RoundTripper
	// MaxBytes is the memory budget for stored responses. If zero, 256 MiB.
	MaxBytes int64
	// MaxObjectBytes is the largest body stored whole; larger ones are
	// kept in slices (SliceBytes), or stream through when slicing is off
	// or the response cannot be sliced. If zero, 8 MiB or a sixteenth of
	// MaxBytes, whichever is less: one object never takes more than a
	// small share of the budget (it would evict many popular ones).
	MaxObjectBytes int64
	// SliceBytes is the size of the aligned ranges ("slices") in which
	// the cache fetches, stores and serves objects larger than
	// MaxObjectBytes and objects a Range request misses (see slice.go):
	// each slice is an entry of its own, fetched once however many
	// clients want it, and checked against the object's strong ETag;
	// 1 MiB (1<<20) is a good size. If zero or negative, no slicing, the
	// default: a Range request that misses is passed on as it came, its
	// 206 is not stored, and objects above MaxObjectBytes stream through.
	// Slicing is a choice (as nginx's slice module is) because each
	// response being sent holds up to two slices in memory whatever its
	// client's pace: many stalled clients of distinct large objects hold
	// that much each, beside the cache's budget.
	SliceBytes int64
	// TargetedFields are the cache-control fields that, when present,
	// replace Cache-Control for this cache (RFC 9213), in order of
	// precedence. If nil, CDN-Cache-Control then Surrogate-Control.
	TargetedFields []string
	// HeuristicFraction of the time since Last-Modified is the freshness of
	// responses without explicit freshness. If zero, 0.1; negative: none.
	HeuristicFraction float64
	// HeuristicMax caps heuristic freshness. If zero, 24h.
	HeuristicMax time.Duration
	// WriteStallTimeout bounds each write of a body the cache relays from
	// the origin or from a response being stored: a client that stops
	// reading for this long loses the response, and with it the origin
	// stream (and window) a pass-through holds. If zero, 30s.
	WriteStallTimeout time.Duration
	// CompressMinBytes is the smallest body the cache compresses at the
	// edge (see compress.go): a stored 200 of a textual type without
	// Content-Encoding is kept in Brotli, zstd and gzip too, each sent to
	// the clients that accept it. If zero, 1 KiB; negative: no
	// compression.
	CompressMinBytes int
	// Name is this cache's name in Cache-Status. If empty, "edgecdn".
	Name string
	// Query says how the query string enters the cache key for ServeHTTP.
	// If zero, QueryKeep.
	Query Query
	// MaxVariants caps the responses stored for one URL whose responses
	// vary (Vary); storing one more evicts the least recently stored. If
	// zero, 64.
	MaxVariants int
	// MaxVaryValueBytes caps the length of a request field that a Vary
	// names (all its lines together) for the cache to key on it: a
	// request whose value is longer is passed to the origin, and the
	// answer is neither served from nor stored in the cache. If zero,
	// 1 KiB.
	MaxVaryValueBytes int
	// SetCookie says what happens to storable responses that carry
	// Set-Cookie, for ServeHTTP. If zero, CookieStrip.
	SetCookie CookiePolicy
	// Vouch, if set, says which stored responses may still be served
	// without asking the origin. With a control plane that purges across
	// a fleet (pop/fleet), ok is false while this cache catches up with
	// purges it missed, and responses stored before since may have been
	// purged unseen. A response it does not vouch for is revalidated,
	// never served as a hit or stale. Called on every lookup, so it must
	// be cheap. If nil, every stored response is vouched for.
	Vouch func(now time.Time) (ok bool, since time.Time)
	// Logger receives background errors. If nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Query is how a request's query string enters the cache key.
type Query int

// Query modes.
const (
	QueryKeep   Query = iota // as sent
	QuerySort                // parameters sorted, so ?a=1&b=2 and ?b=2&a=1 share an entry
	QueryIgnore              // dropped: every query of a path shares one entry
)

// ParseQuery parses "keep", "sort" or "ignore" (empty is keep).
func ParseQuery(s string) (Query, error) {
	switch s {
	case "", "keep":
		return QueryKeep, nil
	case "sort":
		return QuerySort, nil
	case "ignore":
		return QueryIgnore, nil
	}
	return QueryKeep, fmt.Errorf("query %q: want keep, sort or ignore", s)
}

// CookiePolicy is what the cache does with a storable response that
// carries Set-Cookie. Whatever the policy, the client whose request
// fetched the response gets its Set-Cookie. Set-Cookie that the origin
// excluded with private="set-cookie" or no-cache="set-cookie" is never
// stored, and such a response counts as one without Set-Cookie.
type CookiePolicy int

// Cookie policies.
const (
	CookieStrip CookiePolicy = iota // store the response without Set-Cookie: later clients get no cookie
	CookieStore                     // store it with Set-Cookie, replayed to every client (RFC 9111 3)
	CookiePass                      // do not store it
)

func (p CookiePolicy) String() string {
	switch p {
	case CookieStrip:
		return "strip"
	case CookieStore:
		return "store"
	case CookiePass:
		return "pass"
	}
	return "CookiePolicy(" + strconv.Itoa(int(p)) + ")"
}

// ParseCookiePolicy parses "strip", "store" or "pass" (empty is strip).
func ParseCookiePolicy(s string) (CookiePolicy, error) {
	switch s {
	case "", "strip":
		return CookieStrip, nil
	case "store":
		return CookieStore, nil
	case "pass":
		return CookiePass, nil
	}
	return CookieStrip, fmt.Errorf("set_cookie %q: want strip, store or pass", s)
}

// Cache is an RFC 9111 shared cache in front of Config.Transport. It is an
// http.Handler.
type Cache struct {
	cfg   Config
	st    *store
	stats Stats

	mu      sync.Mutex // guards flights, saving
	flights map[string]*flight
	saving  int          // fetches that may still store a response
	idle    *sync.Cond   // signalled when saving drops to zero
	filling atomic.Int64 // bytes reserved by responses being stored as they arrive

	copyBufs sync.Pool // of *[]byte of 32 KiB, for relaying bodies (writeResponse)

	ctx    context.Context // ends background revalidations
	cancel context.CancelFunc
	wg     sync.WaitGroup // owns background revalidations
}

// New validates cfg and returns a Cache. Close it to stop its goroutines.
func New(cfg Config) (*Cache, error) {
	var problems []error
	if cfg.MaxBytes < 0 || cfg.MaxObjectBytes < 0 {
		problems = append(problems, errors.New("cache: max_bytes and max_object_bytes must be 0 (default) or more"))
	}
	if cfg.MaxVariants < 0 {
		problems = append(problems, fmt.Errorf("cache: max_variants %d: want 0 (default, 64) or more", cfg.MaxVariants))
	}
	if cfg.MaxVaryValueBytes < 0 {
		problems = append(problems, fmt.Errorf("cache: max_vary_value_bytes %d: want 0 (default, 1024) or more", cfg.MaxVaryValueBytes))
	}
	if cfg.SetCookie < CookieStrip || cfg.SetCookie > CookiePass {
		problems = append(problems, fmt.Errorf("cache: set_cookie %d: want CookieStrip, CookieStore or CookiePass", cfg.SetCookie))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.CompressMinBytes == 0 {
		cfg.CompressMinBytes = 1 << 10
	}
	if cfg.MaxObjectBytes == 0 {
		cfg.MaxObjectBytes = min(8<<20, max(cfg.MaxBytes, 0)/16)
	}
	if cfg.MaxVariants == 0 {
		cfg.MaxVariants = 64
	}
	if cfg.MaxVaryValueBytes == 0 {
		cfg.MaxVaryValueBytes = 1 << 10
	}
	if cfg.TargetedFields == nil {
		cfg.TargetedFields = []string{"CDN-Cache-Control", "Surrogate-Control"}
	}
	if cfg.HeuristicFraction == 0 {
		cfg.HeuristicFraction = 0.1
	}
	if cfg.WriteStallTimeout == 0 {
		cfg.WriteStallTimeout = 30 * time.Second
	}
	if cfg.HeuristicMax == 0 {
		cfg.HeuristicMax = 24 * time.Hour
	}
	if cfg.Name == "" {
		cfg.Name = "edgecdn"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := newStore(cfg.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{cfg: cfg, st: st, flights: map[string]*flight{}}
	c.idle = sync.NewCond(&c.mu)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close stops background revalidations and frees the store.
func (c *Cache) Close() error {
	c.cancel()
	c.wg.Wait()
	c.st.close()
	return nil
}

// Wait blocks until fetches in progress have stored their responses and
// the store has applied them (ristretto sets are asynchronous); for tests.
func (c *Cache) Wait() {
	c.mu.Lock()
	for c.saving > 0 {
		c.idle.Wait()
	}
	c.mu.Unlock()
	c.st.rc.Wait()
}

// beginSave and endSave bracket work that may store a response, for Wait.
func (c *Cache) beginSave() {
	c.mu.Lock()
	c.saving++
	c.mu.Unlock()
}

func (c *Cache) endSave() {
	c.mu.Lock()
	c.saving--
	if c.saving == 0 {
		c.idle.Broadcast()
	}
	c.mu.Unlock()
}

// Route is how the cache treats the requests of one site: where their
// misses go, how their query enters the key and what happens to
// Set-Cookie. A caller serving several sites (the PoP) resolves a
// request's site once and hands the cache its Route with ServeRoute; the
// cache never asks the caller again, and background work (revalidation)
// keeps the Route of the request that started it.
type Route struct {
	Transport http.RoundTripper // required
	Query     Query
	SetCookie CookiePolicy
	// OriginDown, if set, reports that the route's origin is known to be
	// down (no server passes its health checks). A stale entry within its
	// stale-if-error window is then served at once, refreshed in the
	// background, instead of after the origin fails (which a partitioned
	// origin does only at the connect timeout): Varnish's grace with a
	// sick backend.
	OriginDown func() bool
}

type routeKey struct{}

// ServeRoute answers r as ServeHTTP does, with rt in place of the
// Config's Transport, Query and SetCookie.
func (c *Cache) ServeRoute(w http.ResponseWriter, r *http.Request, rt *Route) {
	c.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
}

// route is the Route r came with, or the Config's.
func (c *Cache) route(r *http.Request) Route {
	if rt, ok := r.Context().Value(routeKey{}).(*Route); ok {
		return *rt
	}
	return Route{Transport: c.cfg.Transport, Query: c.cfg.Query, SetCookie: c.cfg.SetCookie}
}

// ServeHTTP answers r from the cache or through the Config's transport.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		c.serveCacheable(w, r)
	default:
		c.serveUnsafe(w, r)
	}
}

// primaryKey is scheme, host (see keyHost), path and query (as
// configured).
func (c *Cache) primaryKey(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.URL.Scheme == "https" {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	host = strings.ToLower(keyHost(host))
	q := r.URL.RawQuery
	mode := c.route(r).Query
	switch {
	case mode == QueryIgnore:
		q = ""
	case mode == QuerySort && q != "":
		parts := strings.Split(q, "&")
		sort.Strings(parts)
		q = strings.Join(parts, "&")
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	if q != "" || (r.URL.ForceQuery && mode != QueryIgnore) {
		return scheme + "://" + host + path + "?" + q
	}
	return scheme + "://" + host + path
}

// requestDirectives are the request's Cache-Control, with Pragma: no-cache
// honoured when Cache-Control is absent (RFC 9111 5.4).
func requestDirectives(r *http.Request) Directives {
	lines := r.Header.Values("Cache-Control")
	d := ParseCacheControl(lines)
	if len(lines) == 0 {
		for _, p := range r.Header.Values("Pragma") {
			if strings.Contains(strings.ToLower(p), "no-cache") {
				d.NoCache = true
			}
		}
	}
	return d
}

// lookup finds the stored response for r, following Vary: only a variant
// the index lists answers (one it evicted or forgot may linger in the
// store until ristretto drops it). bypass reports a request whose varied
// field is too long to key on (MaxVaryValueBytes).
func (c *Cache) lookup(pkey string, r *http.Request) (e *entry, bypass bool) {
	return c.find(pkey, r, c.st.lookFirst)
}

// find is lookup reading the store with get: store.get counts the access
// (a request's first look), store.peek does not count an absent key (a
// look again within the same request).
func (c *Cache) find(pkey string, r *http.Request, get func(string) any) (e *entry, bypass bool) {
	switch v := get(pkey).(type) {
	case *entry:
		if v.key == pkey {
			return v, false
		}
	case *varyIndex:
		if v.key != pkey {
			return nil, false
		}
		if !c.varyValuesFit(v.names, r.Header) {
			return nil, true
		}
		key := varyKey(pkey, v.names, r.Header)
		if !v.has(key) {
			return nil, false
		}
		if e, ok := get(key).(*entry); ok && e.key == key {
			return e, false
		}
	}
	return nil, false
}

// hasBody reports whether a request carries a body (Content-Length above
// zero or Transfer-Encoding). Such GETs and HEADs are passed through: the
// body may change the answer, and the cache key has no body in it.
func hasBody(r *http.Request) bool {
	if r.ContentLength > 0 || len(r.TransferEncoding) > 0 {
		return true
	}
	_, te := r.Header["Transfer-Encoding"]
	return te
}

// fresh reports whether e, at age, may be served without validation
// (RFC 9111 4.2): within its lifetime, not purged, no unqualified
// no-cache.
func (c *Cache) fresh(e *entry, age time.Duration) bool {
	return age < e.lifetime && !e.purged.Load() && !e.pol.alwaysValidate()
}

// vouched reports whether Config.Vouch lets e be served at now without
// asking the origin.
func (c *Cache) vouched(e *entry, now time.Time) bool {
	if c.cfg.Vouch == nil {
		return true
	}
	ok, since := c.cfg.Vouch(now)
	return ok && !e.pol.responseTime.Before(since)
}

// acceptable reports whether e answers a request with directives reqCC
// now as a fresh hit (fresh, and within the request's no-cache, max-age
// and min-fresh), and e's age.
func (c *Cache) acceptable(e *entry, reqCC Directives, now time.Time) (time.Duration, bool) {
	age := e.ageAt(now)
	return age, c.fresh(e, age) && !reqCC.NoCache &&
		(reqCC.MaxAge < 0 || age <= seconds(reqCC.MaxAge)) &&
		(reqCC.MinFresh < 0 || e.lifetime-age >= seconds(reqCC.MinFresh))
}

func (c *Cache) serveCacheable(w http.ResponseWriter, r *http.Request) {
	if hasBody(r) {
		c.pass(w, r, "fwd=request; detail=request-body")
		return
	}
	if v := r.Header.Get("Range"); v != "" && ignoreRange(v, -1) {
		// Answered whole, and fetched whole on a miss (see ignoreRange).
		r = withoutRange(r)
	}
	reqCC := requestDirectives(r)
	pkey := c.primaryKey(r)
	// A request with credentials is never answered from another user's
	// response: it goes upstream (and may store the answer only if the
	// origin marks it shareable).
	private := r.Header.Get("Authorization") != ""
	var e *entry
	if !private {
		var bypass bool
		if e, bypass = c.lookup(pkey, r); bypass {
			c.pass(w, r, "fwd=bypass; detail=vary-value-too-long")
			return
		}
	}
	now := c.cfg.Now()
	if e != nil && !c.vouched(e, now) {
		if reqCC.OnlyIfCached {
			c.gatewayTimeout(w, "only-if-cached and the stored response must be revalidated (the fleet's purges are not in)")
			return
		}
		c.revalidate(w, r, e, reqCC)
		return
	}
	if e != nil {
		age, acceptable := c.acceptable(e, reqCC, now)
		if acceptable {
			c.stats.hits.Add(1)
			c.serveEntry(w, r, e, age, string(appendHit(nil, e.lifetime-age)))
			return
		}
		fresh := c.fresh(e, age)
		staleness := age - e.lifetime
		if !fresh && c.mayServeStale(e) && !reqCC.NoCache {
			if reqCC.MaxStaleAny || (reqCC.MaxStale >= 0 && staleness <= seconds(reqCC.MaxStale)) {
				c.stats.stale.Add(1)
				c.serveEntry(w, r, e, age, "hit; ttl="+negTTL(staleness)+"; detail=max-stale")
				return
			}
			if swr := e.pol.staleWhileRevalidate; swr >= 0 && staleness <= seconds(swr) {
				c.stats.stale.Add(1)
				c.revalidateInBackground(r, e)
				c.serveEntry(w, r, e, age, "hit; ttl="+negTTL(staleness)+"; detail=stale-while-revalidate")
				return
			}
			if down := c.route(r).OriginDown; down != nil && down() && c.withinStaleIfError(e, reqCC) {
				c.stats.stale.Add(1)
				c.revalidateInBackground(r, e) // one per key: refreshed once the origin answers
				c.serveEntry(w, r, e, age, "hit; ttl="+negTTL(staleness)+"; detail=stale-if-error-origin-down")
				return
			}
		}
		if reqCC.OnlyIfCached {
			c.gatewayTimeout(w, "only-if-cached and the stored response is stale")
			return
		}
		c.revalidate(w, r, e, reqCC)
		return
	}
	if !private && c.serveSliced(w, r, pkey, reqCC) {
		return
	}
	if reqCC.OnlyIfCached {
		c.gatewayTimeout(w, "only-if-cached and nothing is stored")
		return
	}
	c.stats.misses.Add(1)
	c.fetch(w, r, pkey, reqCC, private)
}

// mayServeStale: must-revalidate, proxy-revalidate, s-maxage and no-cache
// forbid serving a stale response (RFC 9111 4.2.4, 5.2.2).
func (c *Cache) mayServeStale(e *entry) bool {
	p := e.pol
	return !p.mustRevalidate && !p.proxyRevalidate && !p.sMaxAge && !p.noCache
}

func negTTL(staleness time.Duration) string { return "-" + formatAge(staleness) }

func (c *Cache) gatewayTimeout(w http.ResponseWriter, why string) {
	w.Header().Set("Cache-Status", c.cfg.Name+"; fwd=miss; detail=only-if-cached")
	http.Error(w, "504 gateway timeout: "+why, http.StatusGatewayTimeout)
}

// serveEntry writes a stored response with its Age and Cache-Status,
// answering conditional and range requests from it.
func (c *Cache) serveEntry(w http.ResponseWriter, r *http.Request, e *entry, age time.Duration, status string) {
	h := w.Header()
	e.prepare()
	header, body, contentLength := &e.header, e.data, e.contentLength()
	if rp := e.pick(strings.Join(r.Header["Accept-Encoding"], ",")); rp != nil {
		header, body, contentLength = &rp.header, rp.data, rp.contentLength
	}
	for k, v := range header.All() {
		h[k] = v
	}
	h["Age"] = []string{formatAge(age)}
	appendCacheStatus(h, c.cfg.Name+"; "+status)
	if e.status != http.StatusOK {
		w.WriteHeader(e.status)
		if r.Method != http.MethodHead {
			body.writeTo(w)
		}
		return
	}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: serve what the origin sent
	}
	if wantsWholeBody(r) {
		// What http.ServeContent sends for a full 200, without its
		// precondition and range machinery and its copy buffer.
		h["Accept-Ranges"] = acceptRangesBytes
		h["Content-Length"] = contentLength
		if lm := e.lastModified(); lm != nil {
			h["Last-Modified"] = lm
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			body.writeTo(w)
		}
		return
	}
	delete(h, "Content-Length")
	r = datePreconditions(r)
	if notModifiedByDate(r, &e.header, e.pol.responseTime) {
		// As ServeContent answers with a Last-Modified to compare.
		delete(h, "Content-Type")
		delete(h, "Content-Encoding")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if v := r.Header.Get("Range"); v != "" && ignoreRange(v, int64(body.len())) {
		r = withoutRange(r)
	}
	var modtime time.Time
	if lm, ok := parseHTTPDate(header.Get("Last-Modified")); ok {
		modtime = lm
	}
	// ServeContent evaluates If-None-Match (weak comparison, lists, *)
	// before If-Modified-Since, If-Match, If-Range and Range (single and
	// multipart, at most maxRanges ascending parts: see ignoreRange)
	// against the stored ETag and Last-Modified, and HEAD.
	if _, ok := h["Content-Encoding"]; ok {
		w = wholeLength{w, contentLength}
	}
	http.ServeContent(w, r, "", modtime, body.reader())
}

// wholeLength is a ResponseWriter for http.ServeContent, which leaves
// Content-Length out of a whole 200 beside a Content-Encoding: its
// WriteHeader(200) adds n, the length of the representation sent. (A 206
// has its own, and 304, 412 and 416 have none.)
type wholeLength struct {
	http.ResponseWriter
	n []string
}

func (w wholeLength) WriteHeader(code int) {
	if h := w.Header(); code == http.StatusOK && h["Content-Length"] == nil {
		h["Content-Length"] = w.n
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w wholeLength) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var acceptRangesBytes = []string{"bytes"}

func appendCacheStatus(h http.Header, v string) {
	if prior := h.Get("Cache-Status"); prior != "" {
		h.Set("Cache-Status", prior+", "+v)
		return
	}
	h["Cache-Status"] = []string{v}
}

// serveUnsafe forwards a request with a method the cache does not store
// and, if it succeeds, invalidates the target and same-origin Location and
// Content-Location (RFC 9111 4.4).
func (c *Cache) serveUnsafe(w http.ResponseWriter, r *http.Request) {
	resp, err := c.roundTrip(withInterim(r.Context(), w, r), r, nil)
	if err != nil {
		c.writeError(w, err)
		return
	}
	defer resp.Body.Close()
	if safe := r.Method == http.MethodOptions || r.Method == http.MethodTrace; !safe && resp.StatusCode < 400 {
		pkey := c.primaryKey(r)
		c.st.del(pkey, false)
		base, _ := url.Parse(pkey)
		for _, f := range []string{"Location", "Content-Location"} {
			if v := resp.Header.Get(f); v != "" && base != nil {
				if u, err := base.Parse(v); err == nil && strings.ToLower(keyHost(u.Host)) == base.Host && u.Scheme == base.Scheme {
					c.st.del(c.urlKey(u), false)
				}
			}
		}
	}
	c.writeResponse(w, resp, c.cfg.Name+"; fwd=method")
}

// pass forwards r, body and all, and copies the answer to the client,
// leaving the store alone.
func (c *Cache) pass(w http.ResponseWriter, r *http.Request, status string) {
	c.stats.passed.Add(1)
	resp, err := c.roundTrip(withInterim(r.Context(), w, r), r, nil)
	if err != nil {
		c.writeError(w, err)
		return
	}
	defer resp.Body.Close()
	c.writeResponse(w, resp, c.cfg.Name+"; "+status)
}

// writeError reports a failed upstream exchange as a Transport error:
// callers that want 502/504 mapping wrap the Transport.
func (c *Cache) writeError(w http.ResponseWriter, err error) {
	if te, ok := errors.AsType[*transferCodingError](err); ok {
		c.cfg.Logger.Warn("origin response with a transfer coding the proxy cannot decode", "url", te.url, "error", te, "cause", te.cause)
		if w.Header().Get("Cache-Status") == "" {
			w.Header().Set("Cache-Status", c.cfg.Name+"; fwd=miss; detail=unsupported-transfer-coding")
		}
		http.Error(w, "502 Bad Gateway: "+te.Error(), http.StatusBadGateway)
		return
	}
	code := http.StatusBadGateway
	var se interface{ StatusCode() int }
	if errors.As(err, &se) {
		code = se.StatusCode()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	if r := w.Header(); code == http.StatusServiceUnavailable {
		r.Set("Retry-After", "1")
	}
	if w.Header().Get("Cache-Status") == "" {
		w.Header().Set("Cache-Status", c.cfg.Name+"; fwd=miss; detail=upstream-error")
	}
	http.Error(w, fmt.Sprintf("%d %s: %v", code, http.StatusText(code), err), code)
}

// writeResponse copies an upstream response to the client.
func (c *Cache) writeResponse(w http.ResponseWriter, resp *http.Response, status string) {
	// The upstream's hop-by-hop fields go; the handler's own (a
	// Connection: close the PoP decided on) stay.
	removeHopByHop(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	appendCacheStatus(h, status)
	w.WriteHeader(resp.StatusCode)
	sw := c.stallWriter(w)
	defer sw.done()
	buf, _ := c.copyBufs.Get().(*[]byte)
	if buf == nil {
		b := make([]byte, 32<<10)
		buf = &b
	}
	io.CopyBuffer(sw, resp.Body, *buf)
	c.copyBufs.Put(buf)
}

// stallWriter flushes every write to w and gives it a deadline of
// WriteStallTimeout, where
// the writer supports deadlines (net/http's); done clears it, so a kept-
// alive connection's next response is not cut by a deadline of this one.
func (c *Cache) stallWriter(w http.ResponseWriter) *deadlineWriter {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w), d: c.cfg.WriteStallTimeout}
}

type deadlineWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	d   time.Duration
	set bool
}

// Write sends p at once (a relayed body reaches the client as it arrives
// from the origin), within the deadline.
func (dw *deadlineWriter) Write(p []byte) (int, error) {
	if dw.rc.SetWriteDeadline(time.Now().Add(dw.d)) == nil {
		dw.set = true
	}
	n, err := dw.w.Write(p)
	if err == nil {
		err = dw.rc.Flush()
		if errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	return n, err
}

func (dw *deadlineWriter) done() {
	if dw.set {
		dw.rc.SetWriteDeadline(time.Time{})
	}
}

// roundTrip sends an upstream request derived from r, with extra headers.
func (c *Cache) roundTrip(ctx context.Context, r *http.Request, extra http.Header) (*http.Response, error) {
	out := r.Clone(ctx)
	out.RequestURI = ""
	if out.URL.Host == "" {
		out.URL.Host = r.Host
	}
	if out.URL.Scheme == "" {
		out.URL.Scheme = "http"
		if r.TLS != nil {
			out.URL.Scheme = "https"
		}
	}
	removeHopByHop(out.Header)
	for k, v := range extra {
		out.Header[k] = v
	}
	t := c.route(r).Transport
	if t == nil {
		return nil, errNoTransport
	}
	resp, err := t.RoundTrip(out)
	if err == nil {
		if coding, ok := undecodedCoding(resp); ok {
			resp.Body.Close()
			return nil, &transferCodingError{coding: strconv.Quote(coding), url: r.Host + r.URL.RequestURI()}
		}
	} else if coding, ok := refusedCoding(err); ok {
		return nil, &transferCodingError{coding: coding, url: r.Host + r.URL.RequestURI(), cause: err}
	}
	return resp, err
}

// transferCodingError is an origin response framed with a transfer coding
// this proxy cannot decode: anything but chunked (RFC 9112 6.1, 7). Its
// message names the coding and no address; url (the request's) and cause
// (the transport's error, which may name the origin) are for the log.
type transferCodingError struct {
	coding string // quoted
	url    string // the request's host and target
	cause  error
}

func (e *transferCodingError) Error() string {
	return "the origin's response has Transfer-Encoding " + e.coding + ": this proxy decodes no transfer coding but chunked"
}

func (e *transferCodingError) Unwrap() error { return e.cause }

// undecodedCoding reports a response that a transport handed over still
// framed with a transfer coding: net/http's decodes chunked alone (and
// refuses the rest, see refusedCoding).
func undecodedCoding(resp *http.Response) (string, bool) {
	for _, te := range [][]string{resp.TransferEncoding, resp.Header["Transfer-Encoding"]} {
		if len(te) > 1 || len(te) == 1 && !strings.EqualFold(te[0], "chunked") {
			return strings.Join(te, ", "), true
		}
	}
	return "", false
}

// refusedCoding finds in err's chain net/http's refusal of a response's
// Transfer-Encoding and returns the coding as it quotes it. The error's
// type is not exported: its message is matched.
func refusedCoding(err error) (string, bool) {
	for ; err != nil; err = errors.Unwrap(err) {
		msg := err.Error()
		for _, p := range [...]string{"unsupported transfer encoding: ", "too many transfer encodings: "} {
			if coding, ok := strings.CutPrefix(msg, p); ok {
				if len(coding) > 100 {
					coding = strings.ToValidUTF8(coding[:100], "") + "..."
				}
				return coding, true
			}
		}
	}
	return "", false
}

// hopByHop are the connection-specific fields (RFC 9110 7.6.1).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes hop-by-hop fields and those named in Connection.
func removeHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				h.Del(n)
			}
		}
	}
	for _, n := range hopByHop {
		delete(h, n)
	}
}
