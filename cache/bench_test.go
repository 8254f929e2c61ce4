package cache

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// BenchmarkHit measures the handler-level hit path: lookup, freshness and
// writing a stored response, for 1 KiB and 100 KiB objects.
func BenchmarkHit(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			body := bytes.Repeat([]byte("x"), size)
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=3600")
				w.Header().Set("ETag", `"b"`)
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Write(body)
			}))
			defer origin.Close()
			c, err := New(Config{Transport: originTransport{origin.URL}})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := httptest.NewRequest("GET", "http://bench.lab/obj", nil)
			c.ServeHTTP(httptest.NewRecorder(), req)
			c.Wait()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				w := &nullWriter{h: make(http.Header, 8)}
				c.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
			if c.Stats().Hits == 0 {
				b.Fatal("no hits")
			}
		})
	}
}

type nullWriter struct {
	h    http.Header
	code int
}

func (w *nullWriter) Header() http.Header { return w.h }
func (w *nullWriter) WriteHeader(c int)   { w.code = c }
func (w *nullWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return len(p), nil
}

// BenchmarkStore measures the store alone: LookupFast (one hash, no
// allocation) on a hit, and storing a 1 KiB response through the handler
// (miss path: fetch from a loopback origin, admission, insert).
func BenchmarkStore(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(body)
	}))
	defer origin.Close()
	c, err := New(Config{Transport: originTransport{origin.URL}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://bench.lab/obj", nil))
	c.Wait()
	b.Run("lookup", func(b *testing.B) {
		key := AppendKey(nil, false, "bench.lab", "/obj", QueryKeep)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := c.LookupFast(key, ""); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("store-1KiB", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			w := &nullWriter{h: make(http.Header, 8)}
			c.ServeHTTP(w, httptest.NewRequest("GET", "http://bench.lab/obj?"+strconv.Itoa(i), nil))
		}
	})
}

// BenchmarkFastAppendKey measures building a fast-path key, for a host as
// clients usually send it and for one keyHost must cut.
func BenchmarkFastAppendKey(b *testing.B) {
	for _, host := range []string{"www.cdn.lab", "WWW.CDN.LAB.:8443"} {
		b.Run(host, func(b *testing.B) {
			key := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				key = AppendKey(key[:0], true, host, "/static/app.css?v=12", QueryKeep)
			}
		})
	}
}
