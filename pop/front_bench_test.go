package pop

import (
	"crypto/tls"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/origin"
	"github.com/edgecdn/cdn/pop/upstream"
)

// newFastRig is a PoP (not listening) in front of a real origin, with the
// generated object of each size stored, and its front; accessLog is its
// access_log ("" for none).
func newFastRig(tb testing.TB, accessLog string, sizes ...string) *front {
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
	return newFrontFor(tb, ts.URL, accessLog, paths...)
}

// newFrontFor is a PoP (not listening) for localhost in front of the
// origin at originURL, with the responses for paths stored, and its
// front; accessLog is its access_log ("" for none).
func newFrontFor(tb testing.TB, originURL, accessLog string, paths ...string) *front {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.AccessLog = accessLog
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
// key, lookup, the response written to w and, when the access log is
// wanted, its line. start stands for the clock read the loop makes
// before each request anyway.
func fastHit(tb testing.TB, f *front, head []byte, key []byte, w *countWriter, start time.Time) []byte {
	var req fastRequest
	key, hit, ok := f.lookup(head, &req, nil, key)
	if !ok {
		tb.Fatalf("%q is not a fast hit", head)
	}
	c := hitClient{remote: "192.0.2.7:40312", tls: tls.VersionTLS13}
	if err := f.s.answerHit(w, nil, &hit, &req, false, &c, start); err != nil {
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
// are to stay at zero (TestFastHitAllocations). The -logged variants write
// the access log to a file (the lines are encoded and written by the
// log's goroutines, on another core when there is one: cpu-ns/op is the
// whole process's CPU time per hit, theirs included).
func BenchmarkFastHit(b *testing.B) {
	for _, logged := range []bool{false, true} {
		accessLog, suffix := "", ""
		if logged {
			accessLog, suffix = filepath.Join(b.TempDir(), "access.log"), "-logged"
		}
		f := newFastRig(b, accessLog, "1k", "100k")
		for _, size := range []string{"1k", "100k"} {
			b.Run(size+suffix, func(b *testing.B) {
				head := wrkHead(size)
				var key []byte
				var w countWriter
				start := time.Now()
				cpu, dropped := processCPU(), f.s.alog.Stats().Dropped
				b.ReportAllocs()
				for b.Loop() {
					key = fastHit(b, f, head, key, &w, start)
				}
				b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
				if logged {
					// Lines the log's queues dropped make the hits cheaper
					// than a log that keeps up: this shows them.
					b.ReportMetric(float64(f.s.alog.Stats().Dropped-dropped)/float64(b.N), "dropped/op")
				}
				b.SetBytes(w.n / int64(b.N))
			})
		}
	}
}

// processCPU is the CPU time, user and system, the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFastHitAllocations: once a stored response has its header block,
// a fast-path hit allocates nothing, with the access log on or off; 100
// KiB is stored in two pieces (cache.FastHit.Tail), 1 KiB in one.
func TestFastHitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, accessLog := range []string{"", filepath.Join(t.TempDir(), "access.log")} {
		f := newFastRig(t, accessLog, "1k", "100k")
		for _, size := range []string{"1k", "100k"} {
			head := wrkHead(size)
			var key []byte
			var w countWriter
			start := time.Now()
			key = fastHit(t, f, head, key, &w, start) // builds the header block
			if n := testing.AllocsPerRun(200, func() { key = fastHit(t, f, head, key, &w, start) }); n != 0 {
				t.Errorf("a %s fast-path hit (access log %q) allocates %v times, want 0", size, accessLog, n)
			}
		}
	}
}
