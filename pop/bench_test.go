package pop_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
)

// BenchmarkServeHTTP measures the PoP's pass-through path (no cache yet):
// routing, proxy hygiene and the pooled upstream exchange with a real
// origin on loopback over plain HTTP/1.1, without the client-side TLS.
func BenchmarkServeHTTP(b *testing.B) {
	cfg := poptest.Config(certstest.LabCA(b), poptest.StartGenOrigin(b))
	u := cfg.Upstreams["origin"]
	u.WarmConns = 4
	cfg.Upstreams["origin"] = u
	p, err := pop.New(cfg) // not listening: the benchmark calls ServeHTTP
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	for _, size := range []string{"1k", "100k"} {
		b.Run(size, func(b *testing.B) {
			req := httptest.NewRequest("GET", "https://localhost/gen/"+size, nil)
			b.ReportAllocs()
			for b.Loop() {
				w := &discardWriter{h: http.Header{}}
				p.ServeHTTP(w, req)
				if w.code != 200 {
					b.Fatalf("status %d", w.code)
				}
				b.SetBytes(w.n)
			}
		})
	}
}

// discardWriter is a ResponseWriter that counts and drops the body.
type discardWriter struct {
	h    http.Header
	code int
	n    int64
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(c int) {
	if w.code == 0 {
		w.code = c
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	n, _ := io.Discard.Write(p)
	w.n += int64(n)
	return n, nil
}
