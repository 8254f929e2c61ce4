package pop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/upstream"
)

// CacheConfig configures the PoP's shared cache (package cache).
type CacheConfig struct {
	// Disabled turns caching off: every request goes to the origin.
	Disabled bool `yaml:"disabled"`
	// MaxBytes is the memory budget. If zero, 256 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxObjectBytes is the largest body stored. If zero, 8 MiB.
	MaxObjectBytes int64 `yaml:"max_object_bytes"`
	// TargetedFields replace Cache-Control for this cache when present
	// (RFC 9213). If empty, CDN-Cache-Control then Surrogate-Control.
	TargetedFields []string `yaml:"targeted_fields"`
	// PurgeToken authorises purges on the admin listener (Authorization:
	// Bearer TOKEN). If empty, purging is off.
	PurgeToken string `yaml:"purge_token"`
	// MaxVariants caps the stored variants of one URL whose response
	// varies (Vary); the oldest is evicted. If zero, 64.
	MaxVariants int `yaml:"max_variants"`
	// MaxVaryValueBytes caps a request field a Vary names for the cache to
	// key on it; a longer one is passed to the origin uncached. If zero,
	// 1 KiB.
	MaxVaryValueBytes int `yaml:"max_vary_value_bytes"`
	// SetCookie is what happens to storable responses with Set-Cookie:
	// strip (if empty: stored without it, the fetching client still gets
	// it), store (RFC 9111: replayed to everyone) or pass (not stored).
	// A site's set_cookie overrides it.
	SetCookie string `yaml:"set_cookie"`
	// WriteStallTimeout bounds each write of a relayed body: a client that
	// stops reading for this long loses the response (and the origin
	// stream it held). If zero, 30s.
	WriteStallTimeout time.Duration `yaml:"write_stall_timeout"`
}

// originTransport is what the cache fetches through: it adds the proxy
// headers (Via, X-Forwarded-*, Early-Data) and sends the request over the
// site's upstream group, turning pool errors into statuses.
type originTransport struct {
	name  string
	group http.RoundTripper
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
	resp, err := t.group.RoundTrip(r)
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

// isUpgrade reports a protocol upgrade (WebSocket): those bypass the cache
// through the reverse proxy, which can tunnel them.
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// cacheCollector exports the cache's counters.
type cacheCollector struct{ c *cache.Cache }

var (
	descCacheEvents = prometheus.NewDesc("pop_cache_events_total", "Cache decisions by kind: hit, miss, stale (served stale), revalidated_304, revalidated_200, coalesced (waited for another's fetch), stored, rejected (admission), passed (sent past the cache: a request body, a varied value too long), cancelled (origin fetch cancelled: its client left and nobody else wanted it), fill_budget (passed through: the fill budget was in use).", []string{"event"}, nil)
	descCacheBytes  = prometheus.NewDesc("pop_cache_bytes", "Bytes held by the cache.", nil, nil)
	descCacheEvict  = prometheus.NewDesc("pop_cache_evictions_total", "Responses evicted from the cache.", nil, nil)
	descCacheRatio  = prometheus.NewDesc("pop_cache_hit_ratio", "Hits (fresh or stale) over hits plus misses since start.", nil, nil)
)

func (cc cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCacheEvents
	ch <- descCacheBytes
	ch <- descCacheEvict
	ch <- descCacheRatio
}

func (cc cacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := cc.c.Stats()
	for name, v := range map[string]int64{"hit": s.Hits, "miss": s.Misses, "stale": s.Stale, "revalidated_304": s.Revalidated304,
		"revalidated_200": s.Revalidated200, "coalesced": s.Coalesced, "stored": s.Stored, "rejected": s.Rejected,
		"passed": s.Passed, "cancelled": s.Cancelled, "fill_budget": s.FillBudget} {
		ch <- prometheus.MustNewConstMetric(descCacheEvents, prometheus.CounterValue, float64(v), name)
	}
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(descCacheEvict, prometheus.CounterValue, float64(s.Evictions))
	ratio := 0.0
	if total := s.Hits + s.Stale + s.Misses; total > 0 {
		ratio = float64(s.Hits+s.Stale) / float64(total)
	}
	ch <- prometheus.MustNewConstMetric(descCacheRatio, prometheus.GaugeValue, ratio)
}
