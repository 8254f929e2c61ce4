package cache

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// rssBytes reads the resident set size of this process.
func rssBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Skip("no VmRSS")
	return 0
}

// BenchmarkMemoryBound stores a working set ten times the cache's budget
// (640 MiB of 16 KiB objects through a 64 MiB budget) and reports
// the growth of the resident set over the budget. Run alone:
//
//	go test ./cache -run xxx -bench MemoryBound -benchtime 1x
func BenchmarkMemoryBound(b *testing.B) {
	const budget = 64 << 20
	const objSize = 16 << 10
	body := bytes.Repeat([]byte("m"), objSize)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(body)
	}))
	defer origin.Close()
	// The PoP sets this soft limit from its cache budget (see
	// pop/cmd/pop); without one, Go's GC lets the heap reach twice the
	// live data.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(budget*5/4 + 32<<20))
	runtime.GC()
	debug.FreeOSMemory()
	base := rssBytes(b)
	c, err := New(Config{Transport: originTransport{origin.URL}, MaxBytes: budget})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	objects := 10 * budget / objSize // a working set ten times the budget
	var peak int64
	for b.Loop() {
		for i := range objects {
			req := httptest.NewRequest("GET", "http://mem.lab/o/"+strconv.Itoa(i), nil)
			c.ServeHTTP(&nullWriter{h: http.Header{}}, req)
			if i%1024 == 0 {
				peak = max(peak, rssBytes(b)-base)
			}
		}
	}
	c.Wait()
	runtime.GC()
	peak = max(peak, rssBytes(b)-base)
	st := c.Stats()
	b.ReportMetric(float64(peak)/float64(budget), "rss/budget")
	b.ReportMetric(float64(st.Bytes)/float64(budget), "held/budget")
	b.ReportMetric(float64(st.Evictions), "evictions")
	b.ReportMetric(float64(peak-budget*3/2)/(1<<20), "MiB_over_1.5x_budget")
}
