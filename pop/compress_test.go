package pop_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
)

// TestCompressedHitsOnFastPaths: a textual response stored compressed at
// the edge is served in the encoding the request accepts by each
// protocol's fast path (no compression per hit: the stored encoding), with
// the fields the ordinary path sends for it.
func TestCompressedHitsOnFastPaths(t *testing.T) {
	var page bytes.Buffer
	for i := 0; page.Len() < 100<<10; i++ {
		fmt.Fprintf(&page, "<p>paragraph %d of a page that compresses well</p>\n", i)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"v1"`)
		w.Write(page.Bytes())
	}))
	defer origin.Close()
	ca := certstest.LabCA(t)
	fast := poptest.StartPoP(t, poptest.Config(ca, origin.URL))
	cfg := poptest.Config(ca, origin.URL)
	cfg.DisableFastPath = true
	slow := poptest.StartPoP(t, cfg)
	served := func(p *pop.Server, proto string) int64 {
		n := p.FastHits()
		return map[string]int64{"h1": n.HTTP1, "h2": n.HTTP2, "h3": n.HTTP3}[proto]
	}
	for proto := range clients(t, ca) {
		var fields [2]http.Header
		for i, p := range []*pop.Server{fast, slow} {
			url := "https://localhost:" + port(p.Addr()) + "/page-" + proto
			get(t, clients(t, ca)[proto], url) // miss: stored, encoded
			p.WaitCache()
			before := served(p, proto)
			resp, body := get(t, clients(t, ca)[proto], url, "Accept-Encoding", "gzip, br")
			plain, err := io.ReadAll(brotli.NewReader(bytes.NewReader(body)))
			if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "br" || err != nil || !bytes.Equal(plain, page.Bytes()) {
				t.Fatalf("%s hit with br accepted: %d, Content-Encoding %q, %d bytes (decode: %v), want the page in br",
					proto, resp.StatusCode, resp.Header.Get("Content-Encoding"), len(body), err)
			}
			if got := served(p, proto) - before; (p == fast) != (got == 1) {
				t.Errorf("%s: fast path served %d of the compressed hit (fast PoP %v)", proto, got, p == fast)
			}
			h := resp.Header.Clone()
			for _, k := range []string{"Age", "Date", "Alt-Svc"} {
				h.Del(k)
			}
			h.Set("Cache-Status", strings.Split(h.Get("Cache-Status"), "; ttl=")[0])
			h.Set("Server-Timing", timingShape(t, h.Get("Server-Timing"))) // durations differ per request
			fields[i] = h
		}
		if fmt.Sprint(fields[0]) != fmt.Sprint(fields[1]) {
			t.Errorf("%s compressed hit: fast path fields %v, ordinary path %v", proto, fields[0], fields[1])
		}
		if !strings.Contains(fields[0].Get("Vary"), "Accept-Encoding") || fields[0].Get("ETag") != `W/"v1"` {
			t.Errorf("%s compressed hit: Vary %q, ETag %q; want Accept-Encoding listed and W/\"v1\"", proto, fields[0].Get("Vary"), fields[0].Get("ETag"))
		}
	}
}

// TestTwoAcceptEncodingFields: a request with two Accept-Encoding fields
// (one of them empty or not) is not plain on any fast path, as their docs
// say: the ordinary path, which joins the fields, answers it, the
// representation its joined value picks, and the cache counts one hit for
// it, not one for the fast path's look and one for the ordinary path's.
func TestTwoAcceptEncodingFields(t *testing.T) {
	page := bytes.Repeat([]byte("<p>a page that compresses well</p>\n"), 200)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Write(page)
	}))
	defer origin.Close()
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, origin.URL))
	hits := func() string { return metric(t, p, `pop_cache_events_total{event="hit"}`) }
	for proto, c := range clients(t, ca) {
		for _, ae := range [][2]string{{"gzip", "br"}, {"", "br"}} {
			url := "https://localhost:" + port(p.Addr()) + "/page-" + proto
			get(t, c, url) // miss: stored, encoded
			p.WaitCache()
			c.CloseIdleConnections() // HTTP/1.1: the miss moved its connection off the fast loop
			hitsBefore, fastBefore := hits(), p.FastHits()
			req, _ := http.NewRequest("GET", url, nil)
			req.Header["Accept-Encoding"] = ae[:]
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s GET with Accept-Encoding %q: %v", proto, ae, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "br" {
				t.Errorf("%s GET with Accept-Encoding %q: %d, Content-Encoding %q, want 200 br", proto, ae, resp.StatusCode, resp.Header.Get("Content-Encoding"))
			}
			if n := p.FastHits(); n != fastBefore {
				t.Errorf("%s GET with Accept-Encoding %q: fast-path hits went from %+v to %+v, want the ordinary path to answer", proto, ae, fastBefore, n)
			}
			hitsAfter := hits()
			var b, a int
			fmt.Sscanf(strings.Fields(hitsBefore)[1], "%d", &b)
			fmt.Sscanf(strings.Fields(hitsAfter)[1], "%d", &a)
			if a-b != 1 {
				t.Errorf("%s GET with Accept-Encoding %q: cache hits %d -> %d, want one more", proto, ae, b, a)
			}
		}
	}
}
