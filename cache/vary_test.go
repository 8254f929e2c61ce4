package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// heapInuse is the Go heap in use after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestVaryIndexHeapBounded: an origin that varies on a request field the
// client controls (Vary: X-Foo) and 12,000 requests, each with a value of
// its own, keep the Go heap within twice an 8 MiB budget: the Vary index
// is counted at its real size, holds at most MaxVariants variants per URL,
// and values longer than MaxVaryValueBytes are never stored.
func TestVaryIndexHeapBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("12,000 requests per case")
	}
	const budget = 8 << 20
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Vary", "X-Foo")
		w.Write([]byte("v"))
	}))
	defer origin.Close()
	tests := []struct {
		name   string
		urls   int // requests spread over this many URLs
		valLen int // bytes of each X-Foo value
	}{
		{"one URL, values under the length cap", 1, 1000},
		{"200 URLs, fewer variants than the cap each", 200, 1000},
		{"one URL, values over the length cap", 1, 4 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{Transport: originTransport{origin.URL}, MaxBytes: budget})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := heapInuse()
			for i := range 12_000 {
				r := httptest.NewRequest("GET", fmt.Sprintf("http://vary.lab/o/%d", i%tt.urls), nil)
				r.Header.Set("X-Foo", fmt.Sprintf("%08d", i)+strings.Repeat("f", tt.valLen-8))
				w := &nullWriter{h: http.Header{}}
				c.ServeHTTP(w, r)
				if w.code != http.StatusOK {
					t.Fatalf("request %d: status %d, want 200", i, w.code)
				}
			}
			c.Wait()
			after := heapInuse()
			grown := int64(after) - int64(before)
			t.Logf("heap in use %.1f MiB before, %.1f MiB after 12,000 variants (grew %.1f MiB; budget %d MiB); cache holds %.1f MiB",
				float64(before)/(1<<20), float64(after)/(1<<20), float64(grown)/(1<<20), budget>>20, float64(c.Stats().Bytes)/(1<<20))
			if grown > 2*budget {
				t.Errorf("heap grew %.1f MiB, want at most %d MiB (twice the budget)", float64(grown)/(1<<20), 2*budget>>20)
			}
			runtime.KeepAlive(c)
		})
	}
}

// varyRig is an origin that varies on X-Foo and echoes it, behind a cache
// with cfg (its Transport and Now are filled in).
func varyRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	return newRigWith(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "X-Foo")
		fmt.Fprintf(w, "foo=%s", r.Header.Get("X-Foo"))
	})
}

// TestVaryVariantCap: a URL keeps at most MaxVariants variants; storing
// one more evicts the least recently stored, which is fetched again, and
// a purge of the URL removes exactly the variants kept.
func TestVaryVariantCap(t *testing.T) {
	rg := varyRig(t, Config{MaxVariants: 4})
	for i := range 6 {
		rg.get("/v", "X-Foo", strconv.Itoa(i))
	}
	hits := rg.hits.Load()
	for _, v := range []string{"2", "3", "4", "5"} {
		if _, body := rg.get("/v", "X-Foo", v); body != "foo="+v {
			t.Errorf("X-Foo: %s got %q", v, body)
		}
	}
	if got := rg.hits.Load() - hits; got != 0 {
		t.Errorf("the 4 most recent variants: %d origin requests, want 0 (all stored)", got)
	}
	rg.get("/v", "X-Foo", "0")
	if got := rg.hits.Load() - hits; got != 1 {
		t.Errorf("the oldest variant: %d origin requests, want 1 (evicted by the cap)", got)
	}
	// "0" came back and pushed "2" out: 3, 4, 5, 0 remain.
	if n, err := rg.cache.PurgeURL(rg.front.URL+"/v", false); err != nil || n != 4 {
		t.Errorf("PurgeURL = %d, %v; want 4 (the cap)", n, err)
	}
}

// TestVaryValueTooLong: a request whose varied field is longer than
// MaxVaryValueBytes gets the origin's answer, never an error, and the
// cache neither stores it nor answers it from a stored variant.
func TestVaryValueTooLong(t *testing.T) {
	rg := varyRig(t, Config{MaxVaryValueBytes: 64})
	long := strings.Repeat("x", 65)
	for i := range 2 {
		resp, body := rg.get("/v", "X-Foo", long)
		if resp.StatusCode != 200 || body != "foo="+long {
			t.Fatalf("request %d with a long X-Foo: %d %q, want the origin's 200", i, resp.StatusCode, body)
		}
	}
	if h := rg.hits.Load(); h != 2 {
		t.Errorf("two requests with a long X-Foo: %d origin requests, want 2 (not stored)", h)
	}
	// Now the index exists: a long value is passed through, a short one
	// stored.
	rg.get("/v", "X-Foo", "short")
	rg.get("/v", "X-Foo", "short")
	resp, body := rg.get("/v", "X-Foo", long)
	if h := rg.hits.Load(); h != 4 || body != "foo="+long {
		t.Errorf("after a short value was stored: %d origin requests, body %q; want 4 and the long value's answer", h, body)
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=bypass") {
		t.Errorf("Cache-Status %q, want fwd=bypass", cs)
	}
	// Two lines that are long together count as one long value.
	rg.get("/v", "X-Foo", long[:40], "X-Foo", long[:40])
	if h := rg.hits.Load(); h != 5 {
		t.Errorf("X-Foo in two lines of 40 bytes: %d origin requests, want 5", h)
	}
	if p := rg.cache.Stats().Passed; p != 2 {
		t.Errorf("Stats().Passed = %d, want 2", p)
	}
}
