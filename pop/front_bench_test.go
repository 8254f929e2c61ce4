package pop

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/origin"
	"github.com/edgecdn/cdn/pop/upstream"
)

// newFastRig is a PoP (not listening) in front of a real origin, with the
// generated object of each size stored, and its front.
func newFastRig(tb testing.TB, sizes ...string) *front {
	tb.Helper()
	o, err := origin.New(origin.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(o)
	tb.Cleanup(ts.Close)
	paths := make([]string, len(sizes))
	for i, size := range sizes {
		paths[i] = "/gen/" + size
	}
	return newFrontFor(tb, ts.URL, paths...)
}

// newFrontFor is a PoP (not listening) for localhost in front of the
// origin at originURL, with the responses for paths stored, and its front.
func newFrontFor(tb testing.TB, originURL string, paths ...string) *front {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.CADir = certstest.LabCA(tb).Dir()
	cfg.Sites = []Site{{Hosts: []string{"localhost"}, Upstream: "o"}}
	cfg.Upstreams = map[string]UpstreamConfig{"o": {Config: upstream.Config{Servers: []string{originURL}}}}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	for _, path := range paths {
		r := httptest.NewRequest("GET", "https://localhost"+path, nil)
		r.TLS = &tls.ConnectionState{}
		s.ServeHTTP(httptest.NewRecorder(), r)
	}
	s.cache.Wait()
	return newFront(s, nil, nil)
}

// fastHit is the fast loop's work for one request head: parse, route,
// key, lookup, and the response written to w.
func fastHit(tb testing.TB, f *front, head []byte, key []byte, w *countWriter) []byte {
	var req fastRequest
	key, hit, ok := f.lookup(head, &req, nil, key)
	if !ok {
		tb.Fatalf("%q is not a fast hit", head)
	}
	if err := f.s.writeHit(w, nil, &hit, req.head, false); err != nil {
		tb.Fatal(err)
	}
	return key
}

// countWriter counts and drops what is written.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func wrkHead(size string) []byte {
	return []byte("GET /gen/" + size + " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
}

// BenchmarkFastHit is the fast loop's CPU for one HTTP/1.1 cache hit
// without the network and TLS: run with -benchmem; the allocations per hit
// are to stay at zero (TestFastHitAllocations).
func BenchmarkFastHit(b *testing.B) {
	f := newFastRig(b, "1k", "100k")
	for _, size := range []string{"1k", "100k"} {
		b.Run(size, func(b *testing.B) {
			head := wrkHead(size)
			var key []byte
			var w countWriter
			b.ReportAllocs()
			for b.Loop() {
				key = fastHit(b, f, head, key, &w)
			}
			b.SetBytes(w.n / int64(b.N))
		})
	}
}

// TestFastHitAllocations: once a stored response has its header block,
// a fast-path hit allocates nothing.
func TestFastHitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	f := newFastRig(t, "1k")
	head := wrkHead("1k")
	var key []byte
	var w countWriter
	key = fastHit(t, f, head, key, &w) // builds the header block
	if n := testing.AllocsPerRun(200, func() { key = fastHit(t, f, head, key, &w) }); n != 0 {
		t.Errorf("a 1 KiB fast-path hit allocates %v times, want 0", n)
	}
}
