package pop_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
)

// serverTiming is a Server-Timing value as the PoP writes it:
//
//	cdn-pop;desc="pop-eu", cdn-cache;desc="hit", edge;dur=0.081, origin;dur=35.214, rtt;dur=10.400
type serverTiming struct {
	pop, cache        string
	edge, origin, rtt float64 // milliseconds; origin and rtt -1 when absent
	upstream          string  // the entries after the PoP's own, as sent
}

var serverTimingRE = regexp.MustCompile(`^cdn-pop;desc="([^"\\]*)", cdn-cache;desc="(hit|stale|revalidated|miss|pass)", edge;dur=(\d+\.\d{3})(?:, origin;dur=(\d+\.\d{3}))?(?:, rtt;dur=(\d+\.\d{3}))?(?:, (.+))?$`)

// parseServerTiming reads a Server-Timing value, failing the test unless
// it has exactly the PoP's format.
func parseServerTiming(t *testing.T, v string) serverTiming {
	t.Helper()
	m := serverTimingRE.FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("Server-Timing %q does not have the PoP's format", v)
	}
	ms := func(s string) float64 {
		if s == "" {
			return -1
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("Server-Timing %q: %v", v, err)
		}
		return f
	}
	return serverTiming{pop: m[1], cache: m[2], edge: ms(m[3]), origin: ms(m[4]), rtt: ms(m[5]), upstream: m[6]}
}

var durRE = regexp.MustCompile(`dur=\d+\.\d{3}`)

// timingShape is a Server-Timing value with its durations blanked, for
// comparing responses whose timings differ; it fails the test unless the
// value has the PoP's format.
func timingShape(t *testing.T, v string) string {
	t.Helper()
	parseServerTiming(t, v)
	return durRE.ReplaceAllString(v, "dur=N")
}

// timingOrigin serves the cases of TestServerTiming: /fresh (fresh for a
// minute), /stale (stale on arrival, within stale-while-revalidate),
// /reval (stale on arrival, revalidated with its ETag every time) and
// /nostore.
func timingOrigin(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch r.URL.Path {
	case "/fresh":
		h.Set("Cache-Control", "max-age=60")
	case "/stale":
		h.Set("Cache-Control", "max-age=10, stale-while-revalidate=600")
		h.Set("Age", "20")
	case "/reval":
		h.Set("Cache-Control", "max-age=10")
		h.Set("Age", "20")
		h.Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	case "/nostore":
		h.Set("Cache-Control", "no-store")
	default:
		http.NotFound(w, r)
		return
	}
	fmt.Fprintf(w, "body of %s", r.URL.Path)
}

// TestServerTiming: every response over HTTP/1.1, HTTP/2 and HTTP/3
// carries Server-Timing in the PoP's format, with Timing-Allow-Origin: *,
// the right cache result for a miss, a fresh hit (from the fast path), a
// stale hit, a revalidated response and an uncacheable one, origin only
// when the PoP went upstream for that response, and the connection's RTT.
func TestServerTiming(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, timingOrigin)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	base := "https://localhost:" + port(p.Addr())
	steps := []struct {
		path, cache string
		origin      bool // went upstream
		fast        bool // answered by a fast path
	}{
		{"/fresh", "miss", true, false},
		{"/fresh", "hit", false, true},
		{"/stale", "miss", true, false},
		{"/stale", "stale", false, false},
		{"/reval", "miss", true, false},
		{"/reval", "revalidated", true, false},
		{"/nostore", "pass", true, false},
		{"/nostore", "pass", true, false},
		{"/missing", "pass", true, false}, // a 404 the origin gives no freshness
	}
	for _, proto := range []string{"h1", "h2", "h3"} {
		for i, st := range steps {
			url := base + st.path + "?p=" + proto
			fastBefore := p.FastHits()
			// A new client, so that a hit finds a connection the fast
			// path serves (a miss hands an HTTP/1.1 connection to net/http).
			resp, _ := get(t, clients(t, ca)[proto], url)
			p.WaitCache()
			what := fmt.Sprintf("%s step %d GET %s", proto, i, st.path)
			v := resp.Header["Server-Timing"]
			if len(v) != 1 {
				t.Errorf("%s: Server-Timing %q, want one field", what, v)
				continue
			}
			got := parseServerTiming(t, v[0])
			if got.pop != poptest.Name || got.cache != st.cache {
				t.Errorf("%s: %q, want cdn-pop %q and cdn-cache %q (Cache-Status %q)", what, v[0], poptest.Name, st.cache, resp.Header.Get("Cache-Status"))
			}
			if (got.origin >= 0) != st.origin {
				t.Errorf("%s: %q: origin present %v, want %v", what, v[0], got.origin >= 0, st.origin)
			}
			if got.rtt <= 0 || got.edge < 0 || got.upstream != "" {
				t.Errorf("%s: %q, want an rtt of the connection, an edge time and no upstream entries", what, v[0])
			}
			if tao := resp.Header.Values("Timing-Allow-Origin"); len(tao) != 1 || tao[0] != "*" {
				t.Errorf("%s: Timing-Allow-Origin %q, want *", what, tao)
			}
			fast := p.FastHits()
			if served := fast.HTTP1 + fast.HTTP2 + fast.HTTP3 - fastBefore.HTTP1 - fastBefore.HTTP2 - fastBefore.HTTP3; (served == 1) != st.fast {
				t.Errorf("%s: fast paths served %d, want fast %v", what, served, st.fast)
			}
		}
	}
}

// TestServerTimingKeepsParents: a PoP whose upstream is another PoP (a
// parent, a shield) sends its own Server-Timing entries and then the
// parent's on the response it fetched, and only its own on hits: the
// parent's are never stored.
func TestServerTimingKeepsParents(t *testing.T) {
	ca := certstest.LabCA(t)
	pcfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	pcfg.Name = "shield"
	parent := poptest.StartPoP(t, pcfg)
	child := poptest.StartPoP(t, poptest.Config(ca, "https://127.0.0.1:"+port(parent.Addr())))
	url := "https://localhost:" + port(child.Addr()) + "/gen/1k"
	for i, st := range []struct {
		proto, cache string
		parent       bool // the shield's entries follow
	}{{"h1", "miss", true}, {"h2", "hit", false}, {"h3", "hit", false}, {"h1", "hit", false}} {
		resp, body := get(t, clients(t, ca)[st.proto], url)
		child.WaitCache()
		if resp.StatusCode != 200 || len(body) != 1024 {
			t.Fatalf("%s GET %s = %d with %d bytes", st.proto, url, resp.StatusCode, len(body))
		}
		v := resp.Header.Get("Server-Timing")
		got := parseServerTiming(t, v)
		if got.pop != poptest.Name || got.cache != st.cache {
			t.Errorf("%s request %d: %q, want the child's %s first", st.proto, i, v, st.cache)
		}
		if !st.parent {
			if got.upstream != "" {
				t.Errorf("%s request %d: %q, want no parent entries on a hit", st.proto, i, v)
			}
			continue
		}
		if !strings.HasPrefix(got.upstream, `cdn-pop;desc="shield"`) {
			t.Fatalf("%s request %d: %q, want the parent's entries after the child's", st.proto, i, v)
		}
		if up := parseServerTiming(t, got.upstream); up.cache != "miss" || up.origin < 0 {
			t.Errorf("%s request %d: parent entries %q, want the shield's miss with its origin time", st.proto, i, got.upstream)
		}
	}
	// A PoP without a cache passes everything, whatever its parent's
	// Cache-Status says.
	ncfg := poptest.Config(ca, "https://127.0.0.1:"+port(parent.Addr()))
	ncfg.Cache.Disabled = true
	nocache := poptest.StartPoP(t, ncfg)
	resp, _ := get(t, clients(t, ca)["h2"], "https://localhost:"+port(nocache.Addr())+"/gen/1k")
	v := resp.Header.Get("Server-Timing")
	if got := parseServerTiming(t, v); got.cache != "pass" || got.origin < 0 || !strings.HasPrefix(got.upstream, `cdn-pop;desc="shield", cdn-cache;desc="hit"`) {
		t.Errorf("uncached PoP: %q (Cache-Status %q), want pass with its origin time, then the shield's hit", v, resp.Header.Get("Cache-Status"))
	}
}
