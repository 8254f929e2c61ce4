package origin

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkGen serves generated objects through the handler, without a
// network, with request logging off as in the PoP's tests.
func BenchmarkGen(b *testing.B) {
	s := newServer(b, Config{})
	for _, size := range []string{"1k", "100k", "1m"} {
		b.Run(size, func(b *testing.B) {
			n, err := ParseSize(size)
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/gen/"+size, nil)
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				w := &sink{h: http.Header{}}
				s.ServeHTTP(w, req)
				if w.code != 200 || w.n != n {
					b.Fatalf("Get(/gen/%s) = %d, %d bytes; want 200, %d", size, w.code, w.n, n)
				}
			}
		})
	}
}

// BenchmarkFile serves a file through the handler.
func BenchmarkFile(b *testing.B) {
	root := b.TempDir()
	for _, size := range []int{1 << 10, 100 << 10} {
		name := "/" + byteSize(size) + ".bin"
		if err := os.WriteFile(filepath.Join(root, name), make([]byte, size), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	s := newServer(b, Config{Root: root})
	defer s.Close()
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			req := httptest.NewRequest("GET", "/"+byteSize(size)+".bin", nil)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				w := &sink{h: http.Header{}}
				s.ServeHTTP(w, req)
				if w.code != 200 || w.n != int64(size) {
					b.Fatalf("Get(%s) = %d, %d bytes; want 200, %d", req.URL.Path, w.code, w.n, size)
				}
			}
		})
	}
}

// BenchmarkGenLoopback fetches /gen/100k over HTTP/1.1 on loopback, one
// request at a time on a kept-alive connection.
func BenchmarkGenLoopback(b *testing.B) {
	base := serve(b, newServer(b, Config{}))
	c := client(b, nil)
	b.SetBytes(100 << 10)
	b.ReportAllocs()
	for b.Loop() {
		if resp, body := do(b, c, "GET", base+"/gen/100k"); resp.StatusCode != 200 || len(body) != 100<<10 {
			b.Fatalf("Get(/gen/100k) = %d, %d bytes", resp.StatusCode, len(body))
		}
	}
}

func byteSize(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return strconv.Itoa(n>>10) + "k"
	}
	return strconv.Itoa(n)
}

// sink is a ResponseWriter that counts and drops the body.
type sink struct {
	h    http.Header
	code int
	n    int64
}

func (w *sink) Header() http.Header { return w.h }

func (w *sink) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *sink) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	w.n += int64(len(p))
	return len(p), nil
}
