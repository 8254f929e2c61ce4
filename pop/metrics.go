package pop

import (
	"crypto/tls"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/upstream"
)

// metrics are the PoP's Prometheus series, on a registry of its own.
type metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.CounterVec // proto, code
	upstreamTime  *prometheus.HistogramVec
	handshakes    *prometheus.CounterVec // transport, resumed
	earlyData     *prometheus.CounterVec // result
	rejected      *prometheus.CounterVec // reason
	tier          *prometheus.CounterVec // route
	quicConns0RTT prometheus.Counter

	mu       sync.Mutex // guards reqCache
	reqCache map[reqKey]prometheus.Counter
}

type reqKey struct {
	proto int
	code  int
}

func newMetrics(groups map[string]*upstream.Group) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pop_requests_total", Help: "Client requests answered, by HTTP protocol and status code.",
		}, []string{"proto", "code"}),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pop_upstream_response_seconds",
			Help:    "Time from sending a request upstream to its response headers, by upstream group and outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream", "outcome"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pop_tls_handshakes_total", Help: "Completed TLS handshakes with clients, by transport (tcp, quic) and whether the session resumed.",
		}, []string{"transport", "resumed"}),
		earlyData: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pop_early_data_requests_total", Help: "HTTP/3 requests that arrived in 0-RTT early data: accepted (safe method, served) or rejected (425 Too Early).",
		}, []string{"result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pop_rejected_requests_total", Help: "Requests refused before reaching an upstream, by reason.",
		}, []string{"reason"}),
		tier: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pop_upstream_tier_total",
			Help: "Requests sent upstream by a site with a parent tier, by route: parent (to the parent PoP), origin_parent_down (directly to the origin: no parent server in rotation), origin_fallback (directly to the origin after the parent could not be reached), origin_misdirected (directly to the origin after the parent answered 421: it does not serve the host), origin_from_child (a request from another PoP of this CDN, never sent to a parent).",
		}, []string{"route"}),
		quicConns0RTT: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pop_quic_0rtt_connections_total", Help: "QUIC connections whose client used 0-RTT.",
		}),
		reqCache: map[reqKey]prometheus.Counter{},
	}
	m.reg.MustRegister(m.requests, m.upstreamTime, m.handshakes, m.earlyData, m.rejected, m.tier, m.quicConns0RTT,
		&poolCollector{groups: groups},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// request counts one answered request. Counters are cached per label pair so
// the hot path does not hash label values.
func (m *metrics) request(protoMajor, code int) {
	k := reqKey{protoMajor, code}
	m.mu.Lock()
	c, ok := m.reqCache[k]
	if !ok {
		c = m.requests.WithLabelValues(protoName(protoMajor), strconv.Itoa(code))
		m.reqCache[k] = c
	}
	m.mu.Unlock()
	c.Inc()
}

func protoName(major int) string {
	switch major {
	case 1:
		return "h1"
	case 2:
		return "h2"
	case 3:
		return "h3"
	}
	return "other"
}

// handshake returns a tls.Config.VerifyConnection hook counting handshakes.
func (m *metrics) handshake(transport string) func(tls.ConnectionState) error {
	full := m.handshakes.WithLabelValues(transport, "false")
	resumed := m.handshakes.WithLabelValues(transport, "true")
	return func(cs tls.ConnectionState) error {
		if cs.DidResume {
			resumed.Inc()
		} else {
			full.Inc()
		}
		return nil
	}
}

// poolCollector exports the upstream groups' state at scrape time.
type poolCollector struct {
	groups map[string]*upstream.Group
}

var (
	descServerUp = prometheus.NewDesc("pop_upstream_server_up",
		"1 if the origin server is healthy and its breaker is not open.", []string{"upstream", "server"}, nil)
	descBreaker = prometheus.NewDesc("pop_upstream_breaker_state",
		"Breaker state of an origin server: 0 closed, 1 half-open, 2 open.", []string{"upstream", "server"}, nil)
	descOutstanding = prometheus.NewDesc("pop_upstream_outstanding_requests",
		"Requests in flight to an origin server.", []string{"upstream", "server"}, nil)
	descDials = prometheus.NewDesc("pop_upstream_dials_total",
		"TCP connections dialled to an origin server.", []string{"upstream", "server"}, nil)
	descOriginHandshakes = prometheus.NewDesc("pop_upstream_tls_handshakes_total",
		"TLS handshakes with an origin server.", []string{"upstream", "server"}, nil)
	descFailures = prometheus.NewDesc("pop_upstream_failures_total",
		"Failed exchanges with an origin server.", []string{"upstream", "server"}, nil)
	descOverloaded = prometheus.NewDesc("pop_upstream_overloaded_total",
		"Requests refused because the group's concurrency cap (bulkhead) was full.", []string{"upstream"}, nil)
	descRetries = prometheus.NewDesc("pop_upstream_retries_total",
		"Requests retried on another origin server (after a connection failure, or a 500/502/503/504 to an idempotent request).", []string{"upstream"}, nil)
	descPanics = prometheus.NewDesc("pop_upstream_panic_routed_total",
		"Requests that found no server healthy and admitted by its breaker, and were sent to any server anyway (panic routing).", []string{"upstream"}, nil)
	descFreshRetries = prometheus.NewDesc("pop_upstream_fresh_retries_total",
		"Requests sent again on a new connection to the same server because the origin had closed the pooled connection before it could have processed them.", []string{"upstream"}, nil)
	descEjectionsCapped = prometheus.NewDesc("pop_upstream_ejections_capped_total",
		"Failures that called for ejecting a server the group's max_ejection_percent kept in.", []string{"upstream"}, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServerUp, descBreaker, descOutstanding, descDials, descOriginHandshakes, descFailures, descOverloaded, descRetries, descFreshRetries, descPanics, descEjectionsCapped} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, g := range c.groups {
		st := g.Stats()
		for _, s := range st.Servers {
			up := 0.0
			if s.Healthy && s.Breaker != upstream.BreakerOpen {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descServerUp, prometheus.GaugeValue, up, name, s.URL)
			ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, breakerValue(s.Breaker), name, s.URL)
			ch <- prometheus.MustNewConstMetric(descOutstanding, prometheus.GaugeValue, float64(s.Outstanding), name, s.URL)
			ch <- prometheus.MustNewConstMetric(descDials, prometheus.CounterValue, float64(s.Dials), name, s.URL)
			ch <- prometheus.MustNewConstMetric(descOriginHandshakes, prometheus.CounterValue, float64(s.TLSHandshakes), name, s.URL)
			ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(s.Failures), name, s.URL)
		}
		ch <- prometheus.MustNewConstMetric(descOverloaded, prometheus.CounterValue, float64(st.Overloaded), name)
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(st.Retries), name)
		ch <- prometheus.MustNewConstMetric(descFreshRetries, prometheus.CounterValue, float64(st.FreshRetries), name)
		ch <- prometheus.MustNewConstMetric(descPanics, prometheus.CounterValue, float64(st.Panics), name)
		ch <- prometheus.MustNewConstMetric(descEjectionsCapped, prometheus.CounterValue, float64(st.EjectionsCapped), name)
	}
}

func breakerValue(s upstream.BreakerState) float64 {
	switch s {
	case upstream.BreakerHalfOpen:
		return 1
	case upstream.BreakerOpen:
		return 2
	}
	return 0
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
