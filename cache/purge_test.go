package cache

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestVouch: a response Config.Vouch does not vouch for is revalidated,
// never served as a hit, by ServeHTTP and by LookupFast: none while the
// fleet's purges are not in (ok false), and none stored before since.
func TestVouch(t *testing.T) {
	var mu sync.Mutex // guards ok, since
	ok, since := true, time.Time{}
	set := func(o bool, s time.Time) { mu.Lock(); ok, since = o, s; mu.Unlock() }
	vouch := func(time.Time) (bool, time.Time) { mu.Lock(); defer mu.Unlock(); return ok, since }
	version := "v1"
	rg := newRigWith(t, Config{Vouch: vouch}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600, stale-while-revalidate=600")
		w.Header().Set("ETag", `"`+version+`"`)
		if r.Header.Get("If-None-Match") == `"`+version+`"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte(version))
	})
	key := AppendKey(nil, false, strings.TrimPrefix(rg.front.URL, "http://"), "/o", QueryKeep)
	fast := func() bool { _, hit := rg.cache.LookupFast(key, ""); return hit }
	rg.get("/o")
	if _, body := rg.get("/o"); body != "v1" || rg.hits.Load() != 1 || !fast() {
		t.Fatalf("vouched: body %q, origin requests %d, fast hit %v; want v1 from the cache", body, rg.hits.Load(), fast())
	}
	// Catching up: a purge of /o may be on its way; ask the origin.
	version = "v2"
	set(false, time.Time{})
	if fast() {
		t.Error("LookupFast hit while the cache is not vouched for")
	}
	if resp, body := rg.get("/o"); body != "v2" || rg.hits.Load() != 2 || strings.Contains(resp.Header.Get("Cache-Status"), "; hit") {
		t.Errorf("not vouched: body %q, origin requests %d, Cache-Status %q; want v2 from the origin", body, rg.hits.Load(), resp.Header.Get("Cache-Status"))
	}
	if resp, _ := rg.get("/o", "Cache-Control", "only-if-cached"); resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("only-if-cached, not vouched: %d, want 504", resp.StatusCode)
	}
	// Vouched again, but for what was stored from now on only.
	rg.clk.add(time.Second)
	set(true, rg.clk.now())
	rg.clk.add(time.Second)
	if _, body := rg.get("/o"); body != "v2" || rg.hits.Load() != 3 {
		t.Errorf("stored before since: body %q, origin requests %d; want revalidated (3)", body, rg.hits.Load())
	}
	if _, body := rg.get("/o"); body != "v2" || rg.hits.Load() != 3 || !fast() {
		t.Errorf("revalidated after since: body %q, origin requests %d, fast hit %v; want a hit", body, rg.hits.Load(), fast())
	}
}
