package origin

import (
	"encoding/json"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
)

// Stats counts what a Server has served since New. Requests for /healthz and
// /_origin/stats are not counted.
type Stats struct {
	// Requests counts every other request, whatever its answer.
	Requests int64 `json:"requests"`
	// ByPath counts requests by URL path (without the query). Past
	// MaxStatsPaths distinct paths, new ones are counted under OtherPaths.
	ByPath map[string]int64 `json:"by_path"`
	// TLSHandshakes counts TLS handshakes (full or resumed) through
	// ServeTLS or TLSConfig.
	TLSHandshakes int64 `json:"tls_handshakes"`
}

// MaxStatsPaths bounds the distinct paths Stats.ByPath tracks, so a load
// test over millions of URLs cannot grow it without end.
const MaxStatsPaths = 100_000

// OtherPaths is the Stats.ByPath key counting paths past MaxStatsPaths. No
// URL path can collide with it: those start with "/".
const OtherPaths = "(other)"

// counters are a Server's Stats.
type counters struct {
	requests   atomic.Int64
	handshakes atomic.Int64

	mu     sync.Mutex // guards byPath
	byPath map[string]int64
}

func (c *counters) count(path string) {
	c.requests.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byPath == nil {
		c.byPath = make(map[string]int64)
	}
	if _, ok := c.byPath[path]; !ok && len(c.byPath) >= MaxStatsPaths {
		path = OtherPaths
	}
	c.byPath[path]++
}

// Stats returns a snapshot of the counts so far.
func (s *Server) Stats() Stats {
	c := &s.counters
	c.mu.Lock()
	byPath := maps.Clone(c.byPath)
	c.mu.Unlock()
	if byPath == nil {
		byPath = map[string]int64{}
	}
	return Stats{Requests: c.requests.Load(), ByPath: byPath, TLSHandshakes: c.handshakes.Load()}
}

// Requests returns how many requests for path (a URL path without query,
// such as "/gen/1k") the Server has had.
func (s *Server) Requests(path string) int64 {
	s.counters.mu.Lock()
	defer s.counters.mu.Unlock()
	return s.counters.byPath[path]
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	body, err := json.Marshal(s.Stats())
	if err != nil { // cannot happen: strings and integers only
		http.Error(w, "500 internal server error: encode stats: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.Write(append(body, '\n'))
}
