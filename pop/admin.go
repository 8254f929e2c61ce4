package pop

import (
	"crypto/subtle"
	"encoding/json"
	"github.com/edgecdn/cdn/pop/fleet"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/edgecdn/cdn/certs"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// purgeEverywhere is POST /purge in a fleet: the purges go to every PoP
// through the control plane, and the answer says, per purge, which PoPs
// acknowledged it, how long each took and which did not answer in
// fleet.ack_wait. A purge the control plane does not take is a 503 that
// says so (and what was published before it).
func (s *Server) purgeEverywhere(w http.ResponseWriter, r *http.Request, urls, tags []string, soft bool) {
	type ack struct {
		PoP       string  `json:"pop"`
		Purged    int     `json:"purged"`
		LatencyMs float64 `json:"latency_ms"`
		Error     string  `json:"error,omitempty"`
	}
	type result struct {
		URL     string   `json:"url,omitempty"`
		Tag     string   `json:"tag,omitempty"`
		Acks    []ack    `json:"acks"`
		Missing []string `json:"missing,omitempty"`
	}
	out := struct {
		Soft    bool     `json:"soft"`
		Fleet   bool     `json:"fleet"`
		Results []result `json:"results"`
		Error   string   `json:"error,omitempty"`
	}{Soft: soft, Fleet: true}
	res, err := s.purgeFleet(r.Context(), urls, tags, soft)
	for i, fr := range res {
		rr := result{Missing: fr.Missing()}
		if i < len(urls) {
			rr.URL = urls[i]
		} else {
			rr.Tag = tags[i-len(urls)]
		}
		for _, p := range fr.Expected {
			if a, ok := fr.Acks[p]; ok {
				rr.Acks = append(rr.Acks, ack{PoP: p, Purged: a.Removed, LatencyMs: float64(a.Latency.Microseconds()) / 1000, Error: a.Error})
			}
		}
		out.Results = append(out.Results, rr)
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		out.Error = "purge: " + err.Error() + "; not purged from there on"
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(out)
}

// adminHandler serves the admin listener:
//
//	/livez    200 while the process serves at all
//	/readyz   200 when the PoP can serve: certificates are loaded and valid
//	          for longer than tls.min_validity, the first upstream warm-up
//	          was attempted, and the server is not draining; 503 otherwise,
//	          saying which. An upstream group with no healthy server does
//	          not make it 503 (cached and stale content is still served):
//	          it is degraded, with X-PoP-Degraded: 1 and a body of
//	          "ready; degraded: upstream NAME has no healthy server", and
//	          pop_degraded 1 in /metrics
//	/metrics  Prometheus
//	/rtt      the round trips to client prefixes (/24, /48) measured on
//	          the connections this PoP terminated, as one line of JSON
//	          (clientrtt.Report), for geodns's latency steering:
//	          {"pop":"NAME","prefixes":[{"prefix":"10.77.4.0/24",
//	          "rtt_ms":10.25,"min_ms":9.8,"samples":12,"age_ms":1500}]}
//	/purge    POST ?url=URL or ?tag=KEY (&soft=1), with Authorization:
//	          Bearer cache.purge_token: purges this PoP's cache or, with
//	          fleet.url, every PoP's through the control plane (JSON)
//	/logs     the access log's lines as they happen, newline-delimited
//	          JSON (package accesslog documents the fields), whether or
//	          not access_log writes a file; filtered by query parameters
//	          status=404 or 5xx, cache=hit|stale|revalidated|miss|pass,
//	          path=/prefix, client=CIDR and sample=0.1 (comma lists and
//	          repeats are ors, different parameters ands; a bad one is
//	          400 naming it). Followers are many at once; one that reads
//	          too slowly is dropped (its stream ends,
//	          pop_logs_followers_dropped_total) and never slows serving
//	          or the others
//	/ca.pem   the lab CA's root certificate, when the PoP uses a lab CA (404
//	          otherwise): what clients trust (curl --cacert)
//	/spki     the served certificate's SPKI pin, when it is known up front:
//	          what Chromium's --ignore-certificate-errors-spki-list takes
//	/debug/pprof/  Go profiles, only with Config.Pprof
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		degraded := s.degradedGroups()
		if len(degraded) > 0 {
			w.Header().Set("X-PoP-Degraded", "1")
		}
		switch {
		case s.draining.Load():
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
		case !s.ready.Load():
			http.Error(w, "not ready: warming upstream pools", http.StatusServiceUnavailable)
		case s.certExpiring():
			http.Error(w, "not ready: the certificate expires at "+s.tls.currentLeaf().NotAfter.UTC().Format(time.RFC3339)+", within tls.min_validity", http.StatusServiceUnavailable)
		case len(degraded) > 0:
			what := "upstream " + degraded[0] + " has"
			if len(degraded) > 1 {
				what = "upstreams " + strings.Join(degraded, ", ") + " have"
			}
			w.Write([]byte("ready; degraded: " + what + " no healthy server\n"))
		default:
			w.Write([]byte("ready\n"))
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /rtt", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.rtt.table.Report(s.cfg.Name))
	})
	mux.HandleFunc("POST /purge", s.purge)
	mux.HandleFunc("GET /logs", s.followLogs)
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, r *http.Request) {
		ca := s.LabCA()
		if ca == nil {
			http.Error(w, "this PoP uses no lab CA", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(ca.RootPEM())
	})
	mux.HandleFunc("GET /spki", func(w http.ResponseWriter, r *http.Request) {
		leaf := s.Leaf()
		if leaf == nil {
			http.Error(w, "the certificate is not known up front (ACME)", http.StatusNotFound)
			return
		}
		w.Write([]byte(certs.SPKIPin(leaf.Leaf) + "\n"))
	})
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// certExpiring reports whether the served certificate (when known) expires
// within tls.min_validity.
func (s *Server) certExpiring() bool {
	min := s.cfg.TLS.MinValidity
	if min == 0 {
		min = 24 * time.Hour
	}
	leaf := s.tls.currentLeaf()
	return min > 0 && leaf != nil && time.Until(leaf.NotAfter) < min
}

// purge removes cached responses: POST /purge?url=URL or ?tag=KEY (both may
// repeat), &soft=1 to mark them stale instead. It needs
// "Authorization: Bearer TOKEN" with cache.purge_token; without a
// configured token purging is off. It answers with what it purged, as JSON.
func (s *Server) purge(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	token := s.cfg.Cache.PurgeToken
	switch {
	case s.cache == nil:
		http.Error(w, "purge: the cache is disabled", http.StatusNotFound)
		return
	case token == "":
		http.Error(w, "purge: off, set cache.purge_token in the config to enable it", http.StatusForbidden)
		return
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1:
		w.Header().Set("WWW-Authenticate", `Bearer realm="purge"`)
		http.Error(w, "purge: want Authorization: Bearer <cache.purge_token>", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	soft := q.Get("soft") == "1" || q.Get("soft") == "true"
	type result struct {
		URL    string `json:"url,omitempty"`
		Tag    string `json:"tag,omitempty"`
		Purged int    `json:"purged"`
	}
	var out struct {
		Soft    bool     `json:"soft"`
		Results []result `json:"results"`
	}
	out.Soft = soft
	if len(q["url"]) == 0 && len(q["tag"]) == 0 {
		http.Error(w, "purge: want ?url=https://host/path or ?tag=KEY", http.StatusBadRequest)
		return
	}
	if s.cfg.Fleet.URL != "" {
		s.purgeEverywhere(w, r, q["url"], q["tag"], soft)
		return
	}
	for _, u := range q["url"] {
		n, err := s.applyPurge(fleet.Purge{URL: u, Soft: soft})
		if err != nil {
			http.Error(w, "purge: "+err.Error(), http.StatusBadRequest)
			return
		}
		out.Results = append(out.Results, result{URL: u, Purged: n})
	}
	for _, t := range q["tag"] {
		n, _ := s.applyPurge(fleet.Purge{Tag: t, Soft: soft})
		out.Results = append(out.Results, result{Tag: t, Purged: n})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
