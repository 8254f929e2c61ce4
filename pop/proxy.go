package pop

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/upstream"
)

// site is one configured site, as serve routes a request to it once: its
// name, the proxy to its upstream group for the uncached path, and the
// cache.Route the cache gets with each of its requests.
type site struct {
	name   string                 // for logs
	groups []*upstream.Group      // its upstream group, then its parent tier if any
	proxy  *httputil.ReverseProxy // uncached path: upgrades, or no cache
	route  cache.Route            // the cached path: originTransport, query mode, Set-Cookie policy
	strip  []string               // canonical request fields removed before anything else
	deny   []string               // path prefixes answered 404, never forwarded
}

// down reports whether none of the site's groups has a server in
// rotation: neither the origin nor a parent tier can be reached.
func (st *site) down() bool {
	for _, g := range st.groups {
		if g.Ready() {
			return false
		}
	}
	return true
}

// newSite builds the reverse proxy of a site. httputil.ReverseProxy strips
// hop-by-hop headers and those named in Connection, in both directions; the
// rewrite adds Via, X-Forwarded-For/-Host/-Proto and Early-Data.
func (s *Server) newSite(name string, groupName string, g *upstream.Group, parentName string, pg *upstream.Group) *site {
	transport := &originTransport{name: s.cfg.Name, cdn: s.cfg.CDN, loop: s.cfg.CDN + "; pop=" + s.cfg.Name,
		group: newTimedTransport(g, s.metrics.upstreamTime, groupName), share: s.upShare,
		refused: func() { s.metrics.rejected.WithLabelValues("upstream_share").Inc() }}
	st := &site{name: name, groups: []*upstream.Group{g}}
	if pg != nil {
		transport.parent = newTimedTransport(pg, s.metrics.upstreamTime, parentName)
		transport.parentUp = pg.Ready
		transport.purges = s.purges
		transport.tier = func(route string) { s.metrics.tier.WithLabelValues(route).Inc() }
		st.groups = append(st.groups, pg)
	}
	st.route = cache.Route{Transport: transport, OriginDown: st.down}
	// The proxy strips hop-by-hop fields (and those named in Connection)
	// both ways; originTransport adds Via, X-Forwarded-* and Early-Data,
	// as it does for the cache.
	st.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The group picks the origin server; the URL only has to be
			// absolute. The Host header stays the client's.
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Host
			pr.Out.Host = pr.In.Host
		},
		Transport:    transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { s.proxyError(w, r, st.name, err) },
		ErrorLog:     log.New(slogWriter{s.log}, "", 0),
		BufferPool:   s.buffers,
	}
	return st
}

// proxyError answers a failed upstream exchange: 503 with Retry-After when
// the bulkhead is full, 504 on a timeout, 502 otherwise. A client that went
// away gets nothing.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, site string, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		s.metrics.rejected.WithLabelValues("client_gone").Inc()
		w.WriteHeader(499) // nginx's "client closed request"; nobody reads it
		return
	}
	// One mapping for both paths: statusError, and upstreamError's text,
	// which names no server (the cache path writes the same).
	code, msg := http.StatusBadGateway, "the origin could not be reached"
	var ue *upstreamError
	if errors.As(err, &ue) || errors.As(statusError(err), &ue) {
		code, msg = ue.code, ue.Error()
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	s.log.Debug("upstream error", "site", site, "host", r.Host, "path", r.URL.Path, "status", code, "error", err)
	http.Error(w, fmt.Sprintf("%d %s: %s", code, http.StatusText(code), msg), code)
}

func isBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// timedTransport measures the time to response headers per group.
type timedTransport struct {
	next      http.RoundTripper
	ok, error prometheus.Observer
}

func newTimedTransport(next http.RoundTripper, hist *prometheus.HistogramVec, group string) *timedTransport {
	return &timedTransport{next: next, ok: hist.WithLabelValues(group, "ok"), error: hist.WithLabelValues(group, "error")}
}

func (t *timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		t.error.Observe(time.Since(start).Seconds())
	} else {
		t.ok.Observe(time.Since(start).Seconds())
	}
	return resp, err
}

// bufferPool lends 32 KiB copy buffers to the reverse proxy.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// slogWriter adapts the reverse proxy's log.Logger to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}
