package pop

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves the admin listener:
//
//	/livez    200 while the process serves at all
//	/readyz   200 only when certificates are loaded, every upstream group is
//	          warm and healthy, and the server is not draining; 503 otherwise
//	/metrics  Prometheus
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case s.draining.Load():
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
		case !s.ready.Load():
			http.Error(w, "not ready: warming upstream pools", http.StatusServiceUnavailable)
		case !s.groupsReady():
			http.Error(w, "not ready: an upstream group has no healthy warm server", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}
