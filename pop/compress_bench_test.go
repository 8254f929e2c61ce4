package pop

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkCompressedHit is the HTTP/1.1 fast loop's work for one hit of
// a 100 KiB HTML page stored compressed at the edge, asked for with
// "Accept-Encoding: br, gzip" (the br body is sent) and without it (the
// identity body): the CPU per hit and, as MB/s over the bytes written,
// what goes on the wire. A compressed hit compresses nothing: the stored
// encoding is sent.
func BenchmarkCompressedHit(b *testing.B) {
	var page bytes.Buffer
	for i := 0; page.Len() < 100<<10; i++ {
		fmt.Fprintf(&page, "<li class=\"item\">item %d of the catalogue, in stock, ships tomorrow</li>\n", i)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(page.Bytes()[:100<<10])
	}))
	b.Cleanup(ts.Close)
	f := newFrontFor(b, ts.URL, "", "/page.html")
	for _, tc := range []struct{ name, ae string }{{"br", "Accept-Encoding: br, gzip\r\n"}, {"identity", ""}} {
		b.Run(tc.name, func(b *testing.B) {
			head := []byte("GET /page.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\n" + tc.ae + "\r\n")
			var key []byte
			var w countWriter
			start := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				key = fastHit(b, f, head, key, &w, start)
			}
			b.SetBytes(w.n / int64(b.N))
			b.ReportMetric(float64(w.n)/float64(b.N), "wire-bytes/op")
		})
	}
}
