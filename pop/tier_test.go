package pop_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
	"github.com/edgecdn/cdn/pop/upstream"
)

// tierLab is a parent PoP in front of a recording origin and two child
// PoPs whose site names it as parent, all on loopback with real TLS.
type tierLab struct {
	ca             *certs.LabCA
	origin         *recordingOrigin
	parent         *pop.Server
	parentCfg      pop.Config
	childA, childB *pop.Server
}

// startTierLab starts the origin (answering "object PATH", cacheable for
// a minute, after 200ms on paths under /slow/, tagged "catalog" under
// /tagged/), the parent (edited by
// parentEdit, if any) and the children.
func startTierLab(t *testing.T, parentEdit ...func(*pop.Config)) *tierLab {
	t.Helper()
	l := &tierLab{ca: certstest.LabCA(t)}
	l.origin = startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow/") {
			time.Sleep(200 * time.Millisecond)
		}
		if strings.HasPrefix(r.URL.Path, "/tagged/") {
			w.Header().Set("Surrogate-Key", "catalog")
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		io.WriteString(w, "object "+r.URL.Path)
	})
	l.parentCfg = poptest.Config(l.ca, l.origin.url)
	l.parentCfg.Name = "pop-parent"
	for _, edit := range parentEdit {
		edit(&l.parentCfg)
	}
	l.parent = poptest.StartPoP(t, l.parentCfg)
	l.parentCfg.Listen = l.parent.Addr().String() // to start it again on the same address
	child := func(name string) *pop.Server {
		cfg := poptest.Config(l.ca, l.origin.url)
		cfg.Name = name
		cfg.Cache.PurgeToken = "s3cret"
		cfg.Sites[0].Parent = "parent"
		cfg.Sites[0].Hosts = append(cfg.Sites[0].Hosts, "child-only.example") // a name the parent does not serve
		cfg.Upstreams["parent"] = pop.UpstreamConfig{Config: upstream.Config{Servers: []string{"https://" + l.parent.Addr().String()},
			HealthPath: pop.ReadyPath, HealthInterval: 50 * time.Millisecond, ConnectTimeout: time.Second}}
		return poptest.StartPoP(t, cfg)
	}
	l.childA, l.childB = child("pop-child-a"), child("pop-child-b")
	return l
}

// get fetches path from p as host www.cdn.lab (the same cache key at the
// parent whichever child asks), with extra header pairs.
func (l *tierLab) get(t *testing.T, p *pop.Server, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	resp, body := get(t, clients(t, l.ca)["h2"], "https://127.0.0.1:"+port(p.Addr())+path, append([]string{"Host", "www.cdn.lab"}, hdr...)...)
	return resp, string(body)
}

// originRequests returns the origin's requests for path.
func (l *tierLab) originRequests(path string) []*http.Request {
	var out []*http.Request
	for _, r := range l.origin.requests() {
		if r.URL.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// TestTieredCache: children's misses go through the parent, which
// fetches once for all (Cache-Status lists both layers, CDN-Loop both
// PoPs); a request that already passed this CDN goes straight to the
// origin, and one that passed this PoP or the CDN twice is refused (508).
func TestTieredCache(t *testing.T) {
	l := startTierLab(t)

	// One cold object asked at once at both children and at the parent:
	// one origin request.
	var wg sync.WaitGroup
	for _, p := range []*pop.Server{l.childA, l.childB, l.parent} {
		wg.Go(func() {
			if resp, body := l.get(t, p, "/slow/cold"); resp.StatusCode != 200 || body != "object /slow/cold" {
				t.Errorf("GET /slow/cold = %d %q", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if n := len(l.originRequests("/slow/cold")); n != 1 {
		t.Errorf("origin requests for a cold object asked at once at three PoPs = %d, want 1", n)
	}

	// A child's miss: the parent's Cache-Status first (nearer the
	// origin, RFC 9211), then the child's; the origin sees both PoPs in
	// CDN-Loop.
	resp, _ := l.get(t, l.childA, "/a")
	cs := resp.Header.Get("Cache-Status")
	if !strings.HasPrefix(cs, "pop-parent; fwd=uri-miss") || !strings.Contains(cs, ", pop-child-a; fwd=uri-miss") {
		t.Errorf("Cache-Status of a child's miss = %q, want the parent's miss, then the child's", cs)
	}
	if by := resp.Header.Values("X-Served-By"); len(by) != 1 || by[0] != "pop-child-a" {
		t.Errorf("X-Served-By of a child's miss = %q, want the child alone", by)
	}
	reqs := l.originRequests("/a")
	if len(reqs) != 1 {
		t.Fatalf("origin requests for /a = %d, want 1", len(reqs))
	}
	if loop := strings.Join(reqs[0].Header.Values("Cdn-Loop"), ", "); loop != "edgecdn; pop=pop-child-a, edgecdn; pop=pop-parent" {
		t.Errorf("CDN-Loop at the origin = %q, want the child's member, then the parent's", loop)
	}
	// The other child: a hit at the parent.
	l.parent.WaitCache()
	resp, _ = l.get(t, l.childB, "/a")
	if cs := resp.Header.Get("Cache-Status"); !strings.HasPrefix(cs, "pop-parent; hit") || !strings.Contains(cs, ", pop-child-b; fwd=uri-miss") {
		t.Errorf("Cache-Status of the other child's miss = %q, want the parent's hit, then the child's miss", cs)
	}
	if n := len(l.originRequests("/a")); n != 1 {
		t.Errorf("origin requests for /a after the second child = %d, want 1", n)
	}

	// A request that already passed another PoP of this CDN is never
	// sent to a parent again.
	l.get(t, l.childA, "/from-peer", "CDN-Loop", "edgecdn; pop=pop-elsewhere")
	reqs = l.originRequests("/from-peer")
	if len(reqs) != 1 || strings.Join(reqs[0].Header.Values("Cdn-Loop"), ", ") != "edgecdn; pop=pop-elsewhere, edgecdn; pop=pop-child-a" {
		t.Errorf("a request from another PoP: origin requests %v, want one, straight from the child", cdnLoops(reqs))
	}
	// Another CDN's member counts for nothing.
	l.get(t, l.childA, "/other-cdn", "CDN-Loop", "othercdn")
	if reqs := l.originRequests("/other-cdn"); len(reqs) != 1 || !strings.Contains(strings.Join(reqs[0].Header.Values("Cdn-Loop"), ", "), "pop=pop-parent") {
		t.Errorf("a request from another CDN: origin requests %v, want one, through the parent", cdnLoops(reqs))
	}
	for _, loop := range []string{"edgecdn; pop=pop-child-a", "edgecdn; pop=x, EdgeCDN; pop=y", `edgecdn;pop="pop-child-a"`} {
		if resp, body := l.get(t, l.childA, "/loop", "CDN-Loop", loop); resp.StatusCode != http.StatusLoopDetected {
			t.Errorf("CDN-Loop %q = %d %q, want 508", loop, resp.StatusCode, body)
		}
	}
	if n := len(l.originRequests("/loop")); n != 0 {
		t.Errorf("origin requests for looping requests = %d, want 0", n)
	}
}

func cdnLoops(reqs []*http.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, strings.Join(r.Header.Values("Cdn-Loop"), ", "))
	}
	return out
}

// TestTieredCacheParentDown: with the parent stopped, children fetch from
// the origin themselves, every request succeeding, at once (a refused
// connection) and once health checks take the parent out; when it comes
// back they use it again.
func TestTieredCacheParentDown(t *testing.T) {
	l := startTierLab(t)
	l.parent.Close()
	viaParent := func(path string) bool {
		reqs := l.originRequests(path)
		if len(reqs) != 1 {
			t.Fatalf("origin requests for %s = %d, want 1", path, len(reqs))
		}
		return strings.Contains(strings.Join(reqs[0].Header.Values("Cdn-Loop"), ", "), "pop-parent")
	}
	for i, p := range []*pop.Server{l.childA, l.childB} {
		path := "/down/" + string(rune('a'+i))
		if resp, body := l.get(t, p, path); resp.StatusCode != 200 || body != "object "+path {
			t.Fatalf("GET %s with the parent stopped = %d %q, want the object", path, resp.StatusCode, body)
		}
		if viaParent(path) {
			t.Errorf("%s reached the origin through the stopped parent", path)
		}
	}
	admin := l.childA.AdminAddr().String()
	poll.Until(t, "the parent to leave rotation", func() bool {
		resp, _ := l.get(t, l.childA, "/down/probe"+time.Now().Format("150405.000000"))
		return resp.StatusCode == 200 && metricValue(t, admin, `pop_upstream_tier_total{route="origin_parent_down"}`) != "missing"
	})
	if v := metricValue(t, admin, `pop_upstream_tier_total{route="origin_fallback"}`); v == "missing" {
		t.Errorf("pop_upstream_tier_total{route=\"origin_fallback\"} missing: the first request after the stop should have fallen back")
	}
	// The child is not degraded: its origin is up.
	if code, deg, _ := adminGet(t, admin, "/readyz"); code != 200 || deg != "" {
		t.Errorf("/readyz with the parent down, the origin up = %d degraded %q, want 200, not degraded", code, deg)
	}

	// The parent is back, on the same address.
	poptest.StartPoP(t, l.parentCfg)
	n := 0
	poll.Until(t, "children to use the parent again", func() bool {
		n++
		path := "/back/" + time.Now().Format("150405.000000")
		if resp, _ := l.get(t, l.childB, path); resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d", path, resp.StatusCode)
		}
		return viaParent(path)
	})
}

// purge posts a purge (query: url=... or tag=...) to p's admin listener.
func (l *tierLab) purge(t *testing.T, p *pop.Server, query string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+p.AdminAddr().String()+"/purge?"+query, nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("purge %s: %v %v", query, resp, err)
	}
	resp.Body.Close()
}

// TestTieredCachePurgeRevalidatesAtParent: a child's fetch right after a
// purge asks the parent to revalidate (the parent may not have applied
// the same purge yet), so the child never stores the parent's copy of
// what it just purged: by URL before it asks, by tag once the parent's
// answer shows the purged tag. Other objects still come from the
// parent's cache.
func TestTieredCachePurgeRevalidatesAtParent(t *testing.T) {
	l := startTierLab(t)
	l.get(t, l.childA, "/p")
	l.get(t, l.childB, "/p?v=2") // another object on the same path, in the parent's cache
	l.get(t, l.childA, "/tagged/t")
	l.get(t, l.childB, "/other")
	l.parent.WaitCache()
	l.childA.WaitCache()
	l.purge(t, l.childA, "url=https://www.cdn.lab/p")
	// Only the child purged: without the revalidation the parent would
	// answer from its copy and the origin would not be asked.
	l.get(t, l.childA, "/p")
	// The same path with another query is another object: the parent's copy.
	l.get(t, l.childA, "/p?v=2")
	var reqs []*http.Request
	for _, r := range l.originRequests("/p") {
		if r.URL.RawQuery == "" {
			reqs = append(reqs, r)
		} else if r.URL.RawQuery != "v=2" || len(l.originRequests("/p")) != 3 {
			t.Errorf("origin requests for /p?v=2 after a purge of /p: %d in all for /p, want the one fill (the parent's copy of another object)", len(l.originRequests("/p")))
		}
	}
	if len(reqs) != 2 {
		t.Fatalf("origin requests for /p after a purge at the child = %d, want 2 (the fill and the parent's revalidation)", len(reqs))
	}
	if inm := reqs[1].Header.Get("If-None-Match"); inm != `"v1"` {
		t.Errorf("the parent's second request If-None-Match = %q, want a revalidation of \"v1\"", inm)
	}
	// Another child, which purged nothing, still gets the parent's copy.
	l.get(t, l.childB, "/p")
	if n := len(l.originRequests("/p")); n != 3 {
		t.Errorf("origin requests for /p and /p?v=2 after the other child's fetch = %d, want still 3", n)
	}

	// By tag: the answer carrying the purged tag is asked again with
	// no-cache; an object without it comes from the parent's copy.
	l.purge(t, l.childA, "tag=catalog")
	if resp, body := l.get(t, l.childA, "/tagged/t"); resp.StatusCode != 200 || body != "object /tagged/t" {
		t.Fatalf("GET /tagged/t after the tag purge = %d %q", resp.StatusCode, body)
	}
	if n := len(l.originRequests("/tagged/t")); n != 2 {
		t.Errorf("origin requests for /tagged/t after a purge of its tag at the child = %d, want 2 (the fill and the parent's revalidation)", n)
	}
	l.get(t, l.childA, "/other")
	if n := len(l.originRequests("/other")); n != 1 {
		t.Errorf("origin requests for an untagged object after a tag purge = %d, want 1 (the parent's copy)", n)
	}
}

// TestTieredCacheMisdirectedAtParent: a host the child serves and its
// parent does not (the parent answers 421) is fetched from the origin.
func TestTieredCacheMisdirectedAtParent(t *testing.T) {
	l := startTierLab(t)
	resp, body := l.get(t, l.childA, "/mine", "Host", "child-only.example")
	if resp.StatusCode != 200 || body != "object /mine" {
		t.Fatalf("GET child-only.example/mine = %d %q, want the object from the origin", resp.StatusCode, body)
	}
	reqs := l.originRequests("/mine")
	if len(reqs) != 1 || strings.Contains(strings.Join(reqs[0].Header.Values("Cdn-Loop"), ", "), "pop-parent") {
		t.Errorf("origin requests for a host the parent does not serve: %v, want one, from the child directly", cdnLoops(reqs))
	}
	if v := metricValue(t, l.childA.AdminAddr().String(), `pop_upstream_tier_total{route="origin_misdirected"}`); v != "1" {
		t.Errorf(`pop_upstream_tier_total{route="origin_misdirected"} = %s, want 1`, v)
	}
}

// TestTieredCachePeersExemptFromPerAddressLimits: a parent holds its
// children (limits.peers) to its totals only. With one origin request in
// flight per client address, two concurrent misses from one child both
// succeed at a parent that knows it as a peer; at one that does not, one
// of them is refused (503) — the limit a child would otherwise meet.
func TestTieredCachePeersExemptFromPerAddressLimits(t *testing.T) {
	for _, peer := range []bool{true, false} {
		t.Run(map[bool]string{true: "peer", false: "not a peer"}[peer], func(t *testing.T) {
			l := startTierLab(t, func(c *pop.Config) {
				c.Limits.MaxUpstreamPerAddr = 1
				if peer {
					c.Limits.Peers = []string{"127.0.0.0/8"}
				}
			})
			codes := make([]int, 2)
			var wg sync.WaitGroup
			for i := range codes {
				wg.Go(func() {
					resp, _ := l.get(t, l.childA, "/slow/peer-"+string(rune('a'+i)))
					codes[i] = resp.StatusCode
				})
			}
			wg.Wait()
			refused := (codes[0] == 503) != (codes[1] == 503)
			if peer && (codes[0] != 200 || codes[1] != 200) {
				t.Errorf("two concurrent misses from a peer child: %v, want both 200", codes)
			}
			if !peer && !refused {
				t.Errorf("two concurrent misses from a child that is not a peer, one origin request per address: %v, want one 503", codes)
			}
		})
	}
}
