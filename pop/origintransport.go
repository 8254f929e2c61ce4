package pop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/upstream"
)

// originTransport is how a site reaches its upstream group, for the cache
// (as its cache.Route's Transport) and for the uncached proxy alike: it adds the proxy
// headers (Via, CDN-Loop, X-Forwarded-*, Early-Data) and sends the request over the
// site's upstream group, or first its parent tier, turning pool errors into statuses.
type originTransport struct {
	name  string // this PoP's
	cdn   string // this CDN's id in CDN-Loop
	loop  string // the CDN-Loop member this PoP adds
	group http.RoundTripper
	// parent is the site's parent tier (nil: none). A request goes there
	// unless it came from another PoP of this CDN or parentUp says no
	// server of the parent group is in rotation, and goes on to group
	// when the parent cannot be reached.
	parent   http.RoundTripper
	parentUp func() bool
	purges   *recentPurges
	tier     func(route string)
	// share caps the requests in flight per client address (nil: none);
	// refused counts one refused by it.
	share   *connLimiter
	refused func()
}

// errFairShare is the answer to a client over its share of the origin.
var errFairShare = errors.New("this address has too many requests to the origin in flight")

func (t *originTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.share == nil {
		return t.roundTrip(r)
	}
	addr := clientIP(r.RemoteAddr)
	if !t.share.acquire(addr) {
		t.refused()
		return nil, &upstreamError{http.StatusServiceUnavailable, errFairShare}
	}
	release := sync.OnceFunc(func() { t.share.release(addr) })
	resp, err := t.roundTrip(r)
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// releaseBody gives a fair-share slot back when the body is closed.
type releaseBody struct {
	io.ReadCloser
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (t *originTransport) roundTrip(r *http.Request) (*http.Response, error) {
	h := r.Header
	ver := "1.1 "
	switch r.ProtoMajor {
	case 2:
		ver = "2 "
	case 3:
		ver = "3 "
	}
	h["Via"] = append(h["Via"], ver+t.name)
	// X-Forwarded-For is the client's address only: an edge must not let
	// clients spoof it.
	h["X-Forwarded-For"] = []string{clientIP(r.RemoteAddr)}
	h["X-Forwarded-Host"] = []string{r.Host}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Proto"] = []string{proto}
	delete(h, "Forwarded")
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		h["Early-Data"] = []string{"1"}
	}
	fromChild := t.parent != nil && checkLoop(h, t.cdn, t.name).ours > 0
	h["Cdn-Loop"] = append(h["Cdn-Loop"], t.loop)
	start := time.Now()
	var resp *http.Response
	var err error
	switch {
	case t.parent == nil:
		resp, err = t.group.RoundTrip(r)
	case fromChild:
		t.tier("origin_from_child")
		resp, err = t.group.RoundTrip(r)
	case !t.parentUp():
		t.tier("origin_parent_down")
		resp, err = t.group.RoundTrip(r)
	default:
		resp, err = t.viaParent(r, start)
	}
	if x := exchangeOf(r.Context()); x != nil {
		x.upstreamDone(time.Since(start), resp, err)
	}
	if resp != nil {
		// An upstream's Server-Timing (a parent PoP's) follows this
		// PoP's on the response that fetched it (exchange), and is never
		// stored: a hit's timings are its own.
		delete(resp.Header, "Server-Timing")
		// X-Served-By names the PoP the client reached; a parent's name
		// is in Cache-Status and Server-Timing.
		delete(resp.Header, "X-Served-By")
	}
	if err != nil {
		if cb, ok := r.Body.(*clientBody); ok && cb.err != nil {
			if isBodyTooLarge(cb.err) {
				return nil, &upstreamError{http.StatusRequestEntityTooLarge, cb.err}
			}
			return nil, &upstreamError{http.StatusBadRequest, fmt.Errorf("request body: %w", cb.err)}
		}
		return nil, statusError(err)
	}
	v := "1.1 " + t.name
	if resp.ProtoMajor == 2 {
		v = "2 " + t.name
	}
	resp.Header["Via"] = append(resp.Header["Via"], v)
	return resp, nil
}

// viaParent sends r to the parent tier. A URL purged here a moment ago,
// or an answer that carries a tag purged here a moment ago, is asked
// (again) with Cache-Control: no-cache: the parent may not have applied
// the same purge yet, so it must not answer from its copy. When the
// parent cannot be reached or answer, or does not serve the host (421),
// a request without a body goes to the origin itself.
func (t *originTransport) viaParent(r *http.Request, start time.Time) (*http.Response, error) {
	t.tier("parent")
	h := r.Header
	bodiless := r.Body == nil || r.Body == http.NoBody
	revalidate := t.purges.coversURL(purgeKey(r.Host, r.URL), start)
	if revalidate {
		h["Cache-Control"] = append(h["Cache-Control"], "no-cache")
	}
	resp, err := t.parent.RoundTrip(r)
	if err == nil && !revalidate && bodiless && t.purges.coversTags(cache.SurrogateKeys(resp.Header), start) {
		resp.Body.Close()
		h["Cache-Control"] = append(h["Cache-Control"], "no-cache")
		resp, err = t.parent.RoundTrip(r)
	}
	if err == nil && resp.StatusCode == http.StatusMisdirectedRequest && bodiless {
		resp.Body.Close()
		t.tier("origin_misdirected")
		return t.group.RoundTrip(r)
	}
	if err != nil && r.Context().Err() == nil && bodiless {
		t.tier("origin_fallback")
		return t.group.RoundTrip(r)
	}
	return resp, err
}

// upstreamError carries the status a pool error maps to.
type upstreamError struct {
	code int
	err  error
}

// Error is what a client may read: for a failure of the origin (5xx), a
// fixed text that names no server, address or pool state; the cause stays
// reachable through Unwrap for logs. A client's own fault (4xx) is told.
func (e *upstreamError) Error() string {
	switch {
	case e.code < 500:
		return e.err.Error()
	case e.code == http.StatusServiceUnavailable && errors.Is(e.err, errFairShare):
		return errFairShare.Error()
	case e.code == http.StatusServiceUnavailable:
		return "too many requests to the origin in flight, retry shortly"
	case e.code == http.StatusGatewayTimeout:
		return "the origin did not answer in time"
	}
	return "the origin could not be reached"
}

func (e *upstreamError) Unwrap() error   { return e.err }
func (e *upstreamError) StatusCode() int { return e.code }

func statusError(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, upstream.ErrOverloaded):
		return &upstreamError{http.StatusServiceUnavailable, err}
	case errors.Is(err, upstream.ErrTimeout):
		return &upstreamError{http.StatusGatewayTimeout, err}
	case isBodyTooLarge(err):
		return &upstreamError{http.StatusRequestEntityTooLarge, err}
	}
	return &upstreamError{http.StatusBadGateway, err}
}
