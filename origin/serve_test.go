package origin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
)

// site writes a small tree and returns its root.
func site(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"index.html":      "<h1>home</h1>",
		"static/app.css":  "body{}",
		"static/app.js":   "1;",
		"img/logo.bin":    "\x00\x01\x02binary",
		"docs/index.html": "<p>docs</p>",
		"0123.txt":        "0123456789",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(root, "empty"), 0o755)
	return root
}

// serve starts s over plain HTTP and returns its base URL.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return "http://" + ln.Addr().String()
}

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestOriginFiles(t *testing.T) {
	root := site(t)
	base := serve(t, newServer(t, Config{Root: root, Rules: []Rule{
		{Path: "/static/*.css", CacheControl: "public, max-age=31536000, immutable"},
		{Path: "/static/", CacheControl: "public, max-age=600"},
		{Path: "/static/*.js", CacheControl: "never-reached"},
	}}))
	tests := []struct {
		path, ctype, cc, body string
		code                  int
	}{
		{"/", "text/html; charset=utf-8", "public, max-age=60", "<h1>home</h1>", 200},
		{"/index.html", "text/html; charset=utf-8", "public, max-age=60", "<h1>home</h1>", 200},
		{"/static/app.css", "text/css; charset=utf-8", "public, max-age=31536000, immutable", "body{}", 200},
		{"/static/app.js", "text/javascript; charset=utf-8", "public, max-age=600", "1;", 200},
		{"/docs/", "text/html; charset=utf-8", "public, max-age=60", "<p>docs</p>", 200},
		{"/docs", "text/html; charset=utf-8", "public, max-age=60", "<p>docs</p>", 200},
		{"/empty/", "", "", "", 404},
		{"/missing", "", "", "", 404},
	}
	for _, tt := range tests {
		resp, body := do(t, "GET", base+tt.path)
		if resp.StatusCode != tt.code {
			t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.code)
			continue
		}
		if tt.code != 200 {
			continue
		}
		if body != tt.body || resp.Header.Get("Content-Type") != tt.ctype || resp.Header.Get("Cache-Control") != tt.cc {
			t.Errorf("GET %s = %q type %q cc %q, want %q %q %q", tt.path, body, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), tt.body, tt.ctype, tt.cc)
		}
		if et := resp.Header.Get("ETag"); !strings.HasPrefix(et, `"`) || strings.HasPrefix(et, "W/") || resp.Header.Get("Last-Modified") == "" {
			t.Errorf("GET %s: ETag %q Last-Modified %q, want a strong ETag and a date", tt.path, et, resp.Header.Get("Last-Modified"))
		}
	}
}

func TestOriginValidatorsAndRanges(t *testing.T) {
	root := site(t)
	base := serve(t, newServer(t, Config{Root: root}))
	resp, _ := do(t, "GET", base+"/0123.txt")
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	// Stable across instances.
	base2 := serve(t, newServer(t, Config{Root: root}))
	if r2, _ := do(t, "GET", base2+"/0123.txt"); r2.Header.Get("ETag") != etag {
		t.Errorf("ETag differs between two servers of the same file")
	}
	tests := []struct {
		name string
		hdr  []string
		code int
		body string
	}{
		{"If-None-Match", []string{"If-None-Match", etag}, 304, ""},
		{"If-None-Match list", []string{"If-None-Match", `"nope", ` + etag}, 304, ""},
		{"If-None-Match star", []string{"If-None-Match", "*"}, 304, ""},
		{"If-None-Match other", []string{"If-None-Match", `"nope"`}, 200, "0123456789"},
		{"If-Modified-Since", []string{"If-Modified-Since", lm}, 304, ""},
		{"single range", []string{"Range", "bytes=2-5"}, 206, "2345"},
		{"suffix range", []string{"Range", "bytes=-3"}, 206, "789"},
		{"unsatisfiable", []string{"Range", "bytes=50-60"}, 416, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, "GET", base+"/0123.txt", tt.hdr...)
			if resp.StatusCode != tt.code || (tt.code != 416 && body != tt.body) {
				t.Errorf("GET with %q = %d %q, want %d %q", tt.hdr, resp.StatusCode, body, tt.code, tt.body)
			}
		})
	}
	resp, body := do(t, "GET", base+"/0123.txt", "Range", "bytes=0-1,4-5")
	if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") || !strings.Contains(body, "01") || !strings.Contains(body, "45") {
		t.Errorf("multipart range = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	head, hbody := do(t, "HEAD", base+"/0123.txt")
	if head.StatusCode != 200 || hbody != "" || head.Header.Get("Content-Length") != "10" || head.Header.Get("ETag") != etag {
		t.Errorf("HEAD = %d %q len %q etag %q", head.StatusCode, hbody, head.Header.Get("Content-Length"), head.Header.Get("ETag"))
	}
	// A change gives a new ETag.
	later := time.Now().Add(time.Hour)
	os.WriteFile(filepath.Join(root, "0123.txt"), []byte("changed!!!"), 0o644)
	os.Chtimes(filepath.Join(root, "0123.txt"), later, later)
	if r3, _ := do(t, "GET", base+"/0123.txt"); r3.Header.Get("ETag") == etag {
		t.Errorf("ETag unchanged after the file changed")
	}
}

func TestOriginRefusesEscapes(t *testing.T) {
	root := site(t)
	outside := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(outside, []byte("SECRET"), 0o644)
	os.Symlink(outside, filepath.Join(root, "link.txt"))
	base := serve(t, newServer(t, Config{Root: root}))
	for _, p := range []string{"/../secret.txt", "/%2e%2e/secret.txt", "/static/../../secret.txt", "/link.txt", "/..%2fsecret.txt"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "GET "+p+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		reply, _ := io.ReadAll(conn)
		conn.Close()
		if bytes.Contains(reply, []byte("SECRET")) {
			t.Errorf("GET %s served a file outside the root", p)
		}
	}
	resp, _ := do(t, "POST", base+"/index.html")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST = %d Allow %q, want 405 with Allow", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestOriginGenerated(t *testing.T) {
	base := serve(t, newServer(t, Config{}))
	for _, tt := range []struct {
		size string
		n    int
	}{{"0", 0}, {"1", 1}, {"1k", 1024}, {"100k", 100 << 10}, {"1m", 1 << 20}} {
		resp, body := do(t, "GET", base+"/gen/"+tt.size)
		_, again := do(t, "GET", base+"/gen/"+tt.size)
		if resp.StatusCode != 200 || len(body) != tt.n || resp.Header.Get("Content-Length") != strconv.Itoa(tt.n) || body != again {
			t.Errorf("GET /gen/%s = %d, %d bytes (len %q), want %d identical bytes", tt.size, resp.StatusCode, len(body), resp.Header.Get("Content-Length"), tt.n)
		}
		if resp.Header.Get("Cache-Control") != "public, max-age=3600" || resp.Header.Get("ETag") == "" {
			t.Errorf("GET /gen/%s: headers %v", tt.size, resp.Header)
		}
	}
	for _, bad := range []string{"abc", "-1", "2g", "1.5k", "", "+5"} {
		resp, body := do(t, "GET", base+"/gen/"+bad)
		if resp.StatusCode != 400 || !strings.Contains(body, strconv.Quote(bad)) {
			t.Errorf("GET /gen/%s = %d %q, want 400 naming the size", bad, resp.StatusCode, body)
		}
	}
	resp, _ := do(t, "GET", base+"/gen/10?cc=no-store&vary=Accept-Encoding")
	if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Vary") != "Accept-Encoding" {
		t.Errorf("query knobs: %v", resp.Header)
	}
	if resp, _ := do(t, "GET", base+"/gen/10?cc="); resp.Header.Get("Cache-Control") != "" {
		t.Errorf("?cc= left Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	if resp, _ := do(t, "GET", base+"/gen/10?status=503"); resp.StatusCode != 503 {
		t.Errorf("?status=503 = %d", resp.StatusCode)
	}
	if resp, body := do(t, "GET", base+"/gen/1k", "Range", "bytes=0-9"); resp.StatusCode != 206 || len(body) != 10 {
		t.Errorf("range on /gen = %d %d bytes", resp.StatusCode, len(body))
	}
	// ?delay ends when the client goes away.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/gen/1k?delay=10s", nil)
	start := time.Now()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Errorf("delayed request returned before its delay")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("cancelled delayed request took %v", time.Since(start))
	}
}

func TestOriginStatsAndTLS(t *testing.T) {
	s := newServer(t, Config{Root: site(t)})
	ca, err := certs.OpenLabCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ca.Issue("127.0.0.1")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.ServeTLS(ln, cert)
	t.Cleanup(func() { s.Close() })
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.RootPool()}, ForceAttemptHTTP2: true}}
	base := "https://" + ln.Addr().String()
	for _, p := range []string{"/index.html", "/index.html", "/gen/1k", "/healthz"} {
		resp, err := c.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("GET %s over TLS: %s, want HTTP/2", p, resp.Proto)
		}
	}
	resp, err := c.Get(base + "/_origin/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Requests != 3 || st.ByPath["/index.html"] != 2 || st.ByPath["/gen/1k"] != 1 || st.TLSHandshakes != 1 {
		t.Errorf("stats = %+v, want 3 requests (2 index, 1 gen, health not counted) over 1 handshake", st)
	}
	if s.Requests("/index.html") != 2 {
		t.Errorf("Requests(/index.html) = %d, want 2", s.Requests("/index.html"))
	}
}

func TestOriginConfig(t *testing.T) {
	if _, err := ParseConfig([]byte("root: /tmp\nrulez: []\n")); err == nil || !strings.Contains(err.Error(), "rulez") {
		t.Errorf("unknown field: %v, want it named", err)
	}
	_, err := ParseConfig([]byte("root: /definitely/missing\nrules:\n- {path: /a/, cache_control: x}\n- {path: 'b[', cache_control: ''}\n"))
	for _, want := range []string{"root:", "rules[1].path", "rules[1].cache_control"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig = %v, want it to name %s", err, want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1k", "100k", "1m", "1g", "2g", "abc", "-1", "+1", "99999999999999999999k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 || n > MaxGenSize {
			t.Fatalf("ParseSize(%q) = %d, outside 0..%d", s, n, MaxGenSize)
		}
		if n2, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || n2 != n {
			t.Fatalf("ParseSize(%d) = %d, %v; want it to round-trip", n, n2, err)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("rules:\n- {path: /static/*.css, cache_control: max-age=1}\n"))
	f.Add([]byte("default_cache_control: no-store\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config fails Validate: %v", err)
		}
	})
}

func BenchmarkGen(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []string{"1k", "100k"} {
		b.Run(size, func(b *testing.B) {
			n, _ := ParseSize(size)
			req, _ := http.NewRequest("GET", "/gen/"+size, nil)
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				w := &sink{h: http.Header{}}
				s.ServeHTTP(w, req)
			}
		})
	}
}

type sink struct{ h http.Header }

func (w *sink) Header() http.Header         { return w.h }
func (w *sink) WriteHeader(int)             {}
func (w *sink) Write(p []byte) (int, error) { return len(p), nil }
