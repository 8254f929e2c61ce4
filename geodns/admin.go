package geodns

import (
	"encoding/json"
	"net/http"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves /healthz, /status (PoP health and the routing table
// per configured region and network) and /metrics.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st := s.state.Load()
		type pop struct {
			Name        string `json:"name"`
			Healthy     bool   `json:"healthy"`
			Degraded    bool   `json:"degraded"` // passes, but its origin is down
			Checked     bool   `json:"checked"`  // a health result has been seen
			Transitions int64  `json:"transitions"`
		}
		out := struct {
			PoPs    []pop               `json:"pops"`
			Routing map[string][]string `json:"routing"` // network -> PoPs most answers name
			Latency *latencyStatus      `json:"latency,omitempty"`
		}{Routing: map[string][]string{}}
		for _, p := range st.pops {
			out.PoPs = append(out.PoPs, pop{p.cfg.Name, p.healthy.Load(), p.degraded.Load(), p.seen.Load(), p.transitions.Load()})
		}
		for _, n := range st.networks {
			r := st.route(s.rtt, st.pops, n.prefix.Addr(), n.loc, st.answers)
			if len(r.options) > 0 {
				for _, p := range r.options[0].pops {
					out.Routing[n.prefix.String()] = append(out.Routing[n.prefix.String()], p.cfg.Name)
				}
			}
		}
		if st.steering {
			out.Latency = s.latencyStatus(st)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}

type metrics struct {
	reg     *prometheus.Registry
	queries *prometheus.CounterVec // qtype, rcode
	answers *prometheus.CounterVec // pop
	limited *prometheus.CounterVec // action
	pulls   *prometheus.CounterVec // pop, result
	reasons *prometheus.CounterVec // how: geo, latency, explore
	batches prometheus.Histogram   // datagrams per read of the batch loops
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "geodns_queries_total",
			Help: "Queries answered, by query type and response code."}, []string{"qtype", "rcode"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "geodns_pop_answers_total",
			Help: "Geo-routed answers that named a PoP."}, []string{"pop"}),
	}
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "geodns_rate_limited_total",
		Help: "UDP responses withheld by response rate limiting: dropped, or slipped as truncated."}, []string{"action"})
	m.pulls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "geodns_rtt_pulls_total",
		Help: "Fetches of a PoP's RTT table (rtt_url), by result."}, []string{"pop", "result"})
	m.reasons = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "geodns_steering_answers_total",
		Help: "Geo-routed answers by what decided them: geo (location), latency (measured RTT) or explore (a share sent to other PoPs to measure them)."}, []string{"how"})
	m.batches = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "geodns_udp_batch_datagrams",
		Help:    "Datagrams per read of the UDP batch loops: about 1 while the server keeps up with queries as they come, more under load (udp_hold gathers them).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 6)})
	m.reg.MustRegister(m.queries, m.answers, m.limited, m.pulls, m.reasons, m.batches)
	return m
}

func (m *metrics) register(s *Server) {
	m.reg.MustRegister(healthCollector{s})
}

func (m *metrics) query(req, resp *dns.Msg) { m.queryCounter(req, resp).Inc() }

// queryCounter is the geodns_queries_total series resp counts in.
func (m *metrics) queryCounter(req, resp *dns.Msg) prometheus.Counter {
	qtype := "none"
	if len(req.Question) == 1 {
		qtype = dns.TypeToString[req.Question[0].Qtype]
	}
	return m.queries.WithLabelValues(qtype, rcodeName(resp.Rcode))
}

// rcodeName is dns.RcodeToString but for 16, which is BADVERS here (we
// speak no TSIG, whose BADSIG shares the number).
func rcodeName(rcode int) string {
	if rcode == dns.RcodeBadVers {
		return "BADVERS"
	}
	return dns.RcodeToString[rcode]
}

// steered counts a geo answer: the PoPs it named and what decided it.
func (m *metrics) steered(r route, o *option) {
	for _, c := range m.steeredCounters(r, o) {
		c.Inc()
	}
}

// steeredCounters are the series a geo answer with o counts in.
func (m *metrics) steeredCounters(r route, o *option) []prometheus.Counter {
	var out []prometheus.Counter
	for _, p := range o.pops {
		out = append(out, m.answers.WithLabelValues(p.cfg.Name))
	}
	switch {
	case o.explore:
		out = append(out, m.reasons.WithLabelValues("explore"))
	case r.steered:
		out = append(out, m.reasons.WithLabelValues("latency"))
	default:
		out = append(out, m.reasons.WithLabelValues("geo"))
	}
	return out
}

// limit counts a UDP response that rate limiting withheld.
func (m *metrics) limit(v verdict) {
	switch v {
	case drop:
		m.limited.WithLabelValues("drop").Inc()
	case slipTC:
		m.limited.WithLabelValues("slip").Inc()
	}
}

type healthCollector struct{ s *Server }

var (
	descUp          = prometheus.NewDesc("geodns_pop_healthy", "1 if the PoP passes its health check.", []string{"pop"}, nil)
	descDegraded    = prometheus.NewDesc("geodns_pop_degraded", "1 if the PoP's last passing check said X-PoP-Degraded: 1 (its origin is down).", []string{"pop"}, nil)
	descTransitions = prometheus.NewDesc("geodns_pop_health_transitions_total", "Health changes of the PoP.", []string{"pop"}, nil)
)

func (h healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUp
	ch <- descDegraded
	ch <- descTransitions
}

func (h healthCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range h.s.state.Load().pops {
		up := 0.0
		if p.healthy.Load() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, p.cfg.Name)
		degraded := 0.0
		if p.degraded.Load() {
			degraded = 1
		}
		ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, degraded, p.cfg.Name)
		ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(p.transitions.Load()), p.cfg.Name)
	}
}
