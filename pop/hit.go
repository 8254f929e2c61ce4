package pop

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/cache"
)

// This file owns the PoP's plain hit, which three fast paths serve: the
// HTTP/1.1 loop (h1fast.go), the HTTP/2 server's reader (h2hits.go) and
// the HTTP/3 hit path (h3hit.go). What makes a request plain is the
// cache's to say (cache.PlainRefuses, PlainTarget, PlainHost); what a hit
// sends is built here, once: hitFields for the fields that are the same
// on every hit of a stored response, appendHitValues for Age, Cache-Status
// and Date; and admit and release are the one gate every request passes,
// fast or not. The protocol paths only encode.

// verdict is admit's answer.
type verdict uint8

const (
	admitted    verdict = iota
	overloaded          // over limits.max_inflight: 503
	rateLimited         // over the address's rate: 429
)

// admit lets a request in: within its address's rate first (ip from
// limitKey; every request it lets through takes a token, as a flood must
// pay for its requests whatever else happens to them), then under the
// in-flight cap. An admitted request is released with release once
// answered.
func (s *Server) admit(ip string) verdict {
	if s.limiter != nil && !s.peers.has(ip) && !s.limiter.allow(ip) {
		return rateLimited
	}
	if s.maxInflight > 0 && s.inflight.Add(1) > s.maxInflight {
		s.inflight.Add(-1)
		return overloaded
	}
	return admitted
}

// admitHit is admit for a fast path, which passes a refused request to the
// ordinary path to be answered (429 or 503): a request the in-flight cap
// would refuse is passed before it takes a rate token, so that the
// ordinary path's admit does not charge it twice (only when the cap fills
// between the two checks does a request take a second token).
func (s *Server) admitHit(ip string) bool {
	if s.maxInflight > 0 && s.inflight.Load() >= s.maxInflight {
		return false
	}
	return s.admit(ip) == admitted
}

// release ends an admitted request.
func (s *Server) release() {
	if s.maxInflight > 0 {
		s.inflight.Add(-1)
	}
}

// limitKey is what the rate limit counts a remote address as: its IP, or
// "" without a rate limit (no parsing then).
func (s *Server) limitKey(remote string) string {
	if s.limiter == nil {
		return ""
	}
	return clientIP(remote)
}

var acceptRangesBytes = []string{"bytes"}

// hitFields are the fields a hit sends that are the same on every hit of
// a stored response, as the ordinary path (ServeHTTP, the cache's
// serveEntry) sends them for a plain request: X-Served-By and, when
// altSvc, Alt-Svc under the stored fields; Accept-Ranges and
// Content-Length as http.ServeContent sets them; Last-Modified in the
// cache's canonical form. Age, Cache-Status and (when the origin sent
// none) Date change per request: see appendHitValues.
func (s *Server) hitFields(hit *cache.FastHit, altSvc bool) http.Header {
	h := make(http.Header, hit.Header.Len()+4)
	h["X-Served-By"] = s.servedBy
	if altSvc && s.altSvc != nil {
		h["Alt-Svc"] = s.altSvc
	}
	for k, v := range hit.Header.All() {
		h[k] = v
	}
	delete(h, "Age")
	delete(h, "Cache-Status")
	delete(h, "Connection")
	h["Accept-Ranges"] = acceptRangesBytes
	h["Content-Length"] = []string{strconv.Itoa(hit.Len())}
	h["Timing-Allow-Origin"] = timingAllowAll // Server-Timing is per request: see appendHitValues
	if hit.LastModified != nil {
		h["Last-Modified"] = hit.LastModified
	}
	return h
}

// hitValues are the values of a hit's per-request fields, views of the
// buffer appendHitValues filled. date is empty when the stored response
// has a Date of its own (which hitFields carries).
type hitValues struct{ age, status, date, timing []byte }

// appendHitValues appends a hit's Age, Cache-Status, Date and
// Server-Timing values to b: the Date is the hit's (FastHit.Now), edge
// the time from reading the request to the lookup's clock reading (the
// fast paths read no clock of their own to end it: encoding the answer
// takes microseconds), rtt the connection's, or 0.
func (s *Server) appendHitValues(b []byte, hit *cache.FastHit, edge, rtt time.Duration) ([]byte, hitValues) {
	i := len(b)
	b = cache.AppendAge(b, hit.Age)
	j := len(b)
	b = cache.AppendHitStatus(b, s.cfg.Name, hit.TTL)
	k := len(b)
	if !hit.Header.Has("Date") {
		b = hit.Now.UTC().AppendFormat(b, http.TimeFormat)
	}
	l := len(b)
	b = s.appendServerTiming(b, cache.ResultHit, edge, 0, rtt, nil)
	return b, hitValues{age: b[i:j], status: b[j:k], date: b[k:l], timing: b[l:]}
}

// encoding returns a stored response's encoding in slot, making it with
// encode on the first hit. It keeps an exact copy: the spare room encode's
// appends grew (up to as much again) is not kept with every stored
// response, whose cost counts its block (cache.Fields.EncodingBytes).
func encoding(slot *atomic.Pointer[[]byte], encode func() []byte) []byte {
	if p := slot.Load(); p != nil {
		return *p
	}
	b := encode()
	b = append(make([]byte, 0, len(b)), b...)
	slot.CompareAndSwap(nil, &b)
	return *slot.Load()
}

// fastHitCounters count the hits the fast paths serve, by protocol (the
// HTTP major version, 1 to 3): in pop_requests_total{code="200"}, as the
// ordinary path counts its responses, and for FastHits.
type fastHitCounters struct {
	ok200 [4]prometheus.Counter
	n     [4]atomic.Int64
}

func newFastHitCounters(m *metrics) *fastHitCounters {
	c := &fastHitCounters{}
	for major, proto := range []string{1: "h1", 2: "h2", 3: "h3"} {
		if proto != "" {
			c.ok200[major] = m.requests.WithLabelValues(proto, "200")
		}
	}
	return c
}

// count counts one hit served over HTTP/major.
func (c *fastHitCounters) count(major int) {
	c.ok200[major].Inc()
	c.n[major].Add(1)
}

// FastHits is how many cache hits each fast path has served since start:
// the HTTP/1.1 loop, the HTTP/2 server's reader and the HTTP/3 hit path.
// Hits the ordinary path served are not among them.
type FastHits struct{ HTTP1, HTTP2, HTTP3 int64 }

// FastHits reports the fast paths' hit counts.
func (s *Server) FastHits() FastHits {
	c := s.fastHits
	return FastHits{HTTP1: c.n[1].Load(), HTTP2: c.n[2].Load(), HTTP3: c.n[3].Load()}
}
