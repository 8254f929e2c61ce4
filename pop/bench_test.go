package pop_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/origin"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/upstream"
)

// BenchmarkServeHTTP measures the PoP's pass-through path (no cache yet):
// routing, proxy hygiene and the pooled upstream exchange with a real
// origin on loopback over plain HTTP/1.1, without the client-side TLS.
func BenchmarkServeHTTP(b *testing.B) {
	caDir := b.TempDir()
	if _, err := certs.OpenLabCA(caDir); err != nil {
		b.Fatal(err)
	}
	osrv, err := origin.New(origin.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(osrv)
	defer ts.Close()
	cfg := pop.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.CADir = caDir
	cfg.Sites = []pop.Site{{Hosts: []string{"localhost"}, Upstream: "o"}}
	cfg.Upstreams = map[string]pop.UpstreamConfig{"o": {Config: upstream.Config{Servers: []string{ts.URL}, WarmConns: 4}}}
	p, err := pop.New(cfg)
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
