package pop

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/accesslog"
	"github.com/edgecdn/cdn/pop/upstream"
)

// This file owns what a response says about its own making: the
// Server-Timing field every response carries, on the fast paths and the
// ordinary path alike, and the per-request timings the access log
// (logs.go) records.
//
//	Server-Timing: cdn-pop;desc="pop-eu", cdn-cache;desc="hit", edge;dur=0.081, origin;dur=35.214, rtt;dur=10.400
//
// cdn-pop is the PoP's name; cdn-cache the cache.Result; edge the
// milliseconds the PoP spent on the response, from the request read to
// the response's header written, less origin; origin the milliseconds to
// the upstream's response header, only when this response went upstream
// (a coalesced miss that waited for another request's fetch has none);
// rtt the client connection's smoothed round-trip time (TCP_INFO, or
// quic-go's estimate), when known. An upstream response's own
// Server-Timing (a parent PoP's) follows ours; it is never stored, so a
// hit carries only fresh values. Timing-Allow-Origin: * lets a page's
// scripts read it.

var timingAllowAll = []string{"*"}

// stPrefix builds `cdn-pop;desc="NAME", cdn-cache;desc="` for a PoP name.
func stPrefix(name string) []byte {
	b := []byte(`cdn-pop;desc="`)
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, name[i])
	}
	return append(b, `", cdn-cache;desc="`...)
}

// appendServerTiming appends the PoP's Server-Timing value. origin and
// rtt are left out when zero; upstream's entries follow ours.
func (s *Server) appendServerTiming(b []byte, result cache.Result, edge, origin, rtt time.Duration, upstream []string) []byte {
	if result == cache.ResultHit {
		b = append(b, s.stHit...) // one copy on the fast paths
	} else {
		b = append(b, s.stPrefix...)
		b = append(b, result...)
		b = append(b, `", edge;dur=`...)
	}
	b = accesslog.AppendMillis(b, edge)
	if origin > 0 {
		b = append(b, ", origin;dur="...)
		b = accesslog.AppendMillis(b, origin)
	}
	if rtt > 0 {
		b = append(b, ", rtt;dur="...)
		b = accesslog.AppendMillis(b, rtt)
	}
	for _, v := range upstream {
		if v = strings.TrimSpace(v); v != "" {
			b = append(append(b, ", "...), v...)
		}
	}
	return b
}

// exchange is what the ordinary path learns about one request while
// serving it: when it was read and, from originTransport, what the
// upstream took. The transport may report from a fetch that outlives the
// request (a coalesced miss whose client left), hence the mutex.
type exchange struct {
	start time.Time

	mu       sync.Mutex // guards origin, upstream, timing
	origin   time.Duration
	upstream string   // the server that answered, host:port
	timing   []string // the upstream's Server-Timing

	// Set when the response's header is written (statusWriter.stamp).
	ttfb        time.Duration
	result      cache.Result
	cacheStatus string
}

type exchangeKey struct{}

// exchangeOf returns the request's exchange, or nil (a background
// revalidation has none).
func exchangeOf(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// upstreamDone records the first upstream exchange of a request: how
// long it took to the response's header (or to failing), which server
// answered and its Server-Timing.
func (x *exchange) upstreamDone(d time.Duration, resp *http.Response, err error) {
	var server string
	var timing []string
	switch {
	case resp != nil:
		if resp.Request != nil && resp.Request.URL != nil {
			server = resp.Request.URL.Host
		}
		timing = resp.Header["Server-Timing"]
	case err != nil:
		if ue, ok := errors.AsType[*upstream.Error](err); ok {
			if u, perr := url.Parse(ue.Server); perr == nil {
				server = u.Host
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.origin > 0 {
		return
	}
	x.origin, x.upstream, x.timing = max(d, time.Nanosecond), server, timing
}

func (x *exchange) upstreamTimes() (time.Duration, string, []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.origin, x.upstream, x.timing
}

// connKey is the context key of a request's client connection: the
// *corkConn under a TCP connection's TLS, or the *quic.Conn.
type connKey struct{}

// connRTT is the smoothed RTT of the connection a request came on, or 0.
func connRTT(ctx context.Context, now time.Time) time.Duration {
	switch c := ctx.Value(connKey{}).(type) {
	case *corkConn:
		return c.rtt.current(now, 0)
	case *quic.Conn:
		return c.ConnectionStats().SmoothedRTT
	}
	return 0
}

// stamp adds Server-Timing and Timing-Allow-Origin to the response's
// header, once, as the final header is about to be written, and notes
// what the access log wants of that moment.
func (w *statusWriter) stamp() {
	if w.stamped {
		return
	}
	w.stamped = true
	now := time.Now()
	x := w.x
	h := w.ResponseWriter.Header()
	x.ttfb = now.Sub(x.start)
	cs := h["Cache-Status"]
	if len(cs) > 0 {
		x.cacheStatus = cs[len(cs)-1]
	}
	x.result = cache.ResultPass
	if w.s.ownCacheStatus(x.cacheStatus) {
		x.result = cache.ResultOf(x.cacheStatus)
	}
	origin, _, timing := x.upstreamTimes()
	var buf [256]byte
	b := w.s.appendServerTiming(buf[:0], x.result, x.ttfb-origin, origin, connRTT(w.ctx, now), timing)
	h["Server-Timing"] = []string{string(b)}
	h["Timing-Allow-Origin"] = timingAllowAll
}

// ownCacheStatus reports whether the last entry of a Cache-Status value
// is this PoP's: without a cache, a proxied response carries only its
// upstream's, which says nothing of what this PoP did.
func (s *Server) ownCacheStatus(v string) bool {
	entry := strings.TrimSpace(v[strings.LastIndexByte(v, ',')+1:])
	name, _, _ := strings.Cut(entry, ";")
	return name == s.cfg.Name
}
