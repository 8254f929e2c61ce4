package origin

import (
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

var strongETag = regexp.MustCompile(`^"[0-9a-f]{24}"$`)

func TestFiles(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{
		Root: site(t),
		Rules: []Rule{
			{Path: "/static/*.css", CacheControl: "public, max-age=31536000, immutable"},
			{Path: "/static/", CacheControl: "public, max-age=600"},
			{Path: "/static/*.js", CacheControl: "never reached: an earlier rule matches"},
			{Path: "/img/", CacheControl: ""},
		},
		DefaultCacheControl: "public, max-age=120",
	}))
	c := client(t, nil)
	html := "text/html; charset=utf-8"
	tests := []struct {
		name, path string
		code       int
		body       string
		ctype      string
		cc         string // "-" for no Cache-Control
		location   string
	}{
		{"root serves index.html", "/", 200, "<h1>home</h1>", html, "public, max-age=120", ""},
		{"index.html", "/index.html", 200, "<h1>home</h1>", html, "public, max-age=120", ""},
		{"glob rule", "/static/app.css", 200, "body{}", "text/css; charset=utf-8", "public, max-age=31536000, immutable", ""},
		{"glob star stops at slash", "/static/v2/x.css", 200, "a{}", "text/css; charset=utf-8", "public, max-age=600", ""},
		{"first match wins", "/static/app.js", 200, "1;", mime.TypeByExtension(".js"), "public, max-age=600", ""},
		{"rule without Cache-Control", "/img/logo.png", 200, "\x89PNG\r\n\x1a\n0000", "image/png", "-", ""},
		{"directory index", "/docs/", 200, "<p>docs</p>", html, "public, max-age=120", ""},
		{"sniffed type", "/data.unknownext", 200, "plain text without a known extension", "text/plain; charset=utf-8", "public, max-age=120", ""},
		{"symbolic link inside root", "/inside-link.txt", 200, "0123456789", "text/plain; charset=utf-8", "public, max-age=120", ""},
		{"directory without slash", "/docs", 301, "", "", "", "./docs/"},
		{"directory without slash keeps query", "/docs?v=2", 301, "", "", "", "./docs/?v=2"},
		{"directory without index", "/empty/", 404, "", "", "", ""},
		{"missing", "/missing.txt", 404, "", "", "", ""},
		{"file as directory", "/0123.txt/", 404, "", "", "", ""},
		{"below a file", "/0123.txt/x", 404, "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+tt.path)
			if resp.StatusCode != tt.code {
				t.Fatalf("Get(%q) = %d %q, want %d", tt.path, resp.StatusCode, body, tt.code)
			}
			if loc := resp.Header.Get("Location"); loc != tt.location {
				t.Errorf("Get(%q) Location = %q, want %q", tt.path, loc, tt.location)
			}
			if tt.code != 200 {
				return
			}
			if body != tt.body {
				t.Errorf("Get(%q) body = %q, want %q", tt.path, body, tt.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tt.ctype {
				t.Errorf("Get(%q) Content-Type = %q, want %q", tt.path, ct, tt.ctype)
			}
			cc, ok := resp.Header["Cache-Control"]
			switch {
			case tt.cc == "-" && ok:
				t.Errorf("Get(%q) Cache-Control = %q, want none", tt.path, cc)
			case tt.cc != "-" && resp.Header.Get("Cache-Control") != tt.cc:
				t.Errorf("Get(%q) Cache-Control = %q, want %q", tt.path, cc, tt.cc)
			}
			if et := resp.Header.Get("ETag"); !strongETag.MatchString(et) {
				t.Errorf("Get(%q) ETag = %q, want a strong ETag", tt.path, et)
			}
			if _, err := http.ParseTime(resp.Header.Get("Last-Modified")); err != nil {
				t.Errorf("Get(%q) Last-Modified = %q, want an HTTP date", tt.path, resp.Header.Get("Last-Modified"))
			}
			if ar := resp.Header.Get("Accept-Ranges"); ar != "bytes" {
				t.Errorf("Get(%q) Accept-Ranges = %q, want bytes", tt.path, ar)
			}
		})
	}
}

func TestFileETag(t *testing.T) {
	poll.CheckGoroutines(t)
	root := site(t)
	mtime := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	for _, name := range []string{"0123.txt", "static/app.css", "static/app.js"} {
		if err := os.Chtimes(filepath.Join(root, name), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	c := client(t, nil)
	etag := func(base, path string) string {
		t.Helper()
		resp, _ := do(t, c, "GET", base+path)
		return resp.Header.Get("ETag")
	}
	first := serve(t, newServer(t, Config{Root: root}))
	orig := etag(first, "/0123.txt")

	t.Run("stable across requests and servers", func(t *testing.T) {
		if again := etag(first, "/0123.txt"); again != orig {
			t.Errorf("Get(/0123.txt) ETag = %q, then %q; want them equal", orig, again)
		}
		other := serve(t, newServer(t, Config{Root: root}))
		if got := etag(other, "/0123.txt"); got != orig {
			t.Errorf("Get(/0123.txt) ETag from a second server = %q, want %q", got, orig)
		}
	})
	t.Run("differs between files", func(t *testing.T) {
		// Same size and modification time, different paths.
		if css, js := etag(first, "/static/app.css"), etag(first, "/static/app.js"); css == js {
			t.Errorf("two files share ETag %q", css)
		}
	})
	t.Run("changes with the file", func(t *testing.T) {
		p := filepath.Join(root, "0123.txt")
		if err := os.WriteFile(p, []byte("9876543210"), 0o644); err != nil {
			t.Fatal(err)
		}
		later := mtime.Add(time.Nanosecond)
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
		if got := etag(first, "/0123.txt"); got == orig || !strongETag.MatchString(got) {
			t.Errorf("Get(/0123.txt) ETag after a rewrite = %q, want a new strong ETag (was %q)", got, orig)
		}
	})
}

func TestFileConditional(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{Root: site(t)}))
	c := client(t, nil)
	resp, _ := do(t, c, "GET", base+"/0123.txt")
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	lmTime, _ := http.ParseTime(lm)
	before := lmTime.Add(-time.Hour).Format(http.TimeFormat)
	tests := []struct {
		name string
		hdr  []string
		code int
	}{
		{"If-None-Match same", []string{"If-None-Match", etag}, 304},
		{"If-None-Match in a list", []string{"If-None-Match", `"other", ` + etag}, 304},
		{"If-None-Match star", []string{"If-None-Match", "*"}, 304},
		{"If-None-Match weak form", []string{"If-None-Match", "W/" + etag}, 304},
		{"If-None-Match other", []string{"If-None-Match", `"other"`}, 200},
		{"If-Modified-Since same", []string{"If-Modified-Since", lm}, 304},
		{"If-Modified-Since earlier", []string{"If-Modified-Since", before}, 200},
		{"If-None-Match wins over If-Modified-Since", []string{"If-None-Match", `"other"`, "If-Modified-Since", lm}, 200},
		{"If-Match other", []string{"If-Match", `"other"`}, 412},
		{"If-Match same", []string{"If-Match", etag}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/0123.txt", tt.hdr...)
			if resp.StatusCode != tt.code {
				t.Fatalf("Get(/0123.txt, %q) = %d, want %d", tt.hdr, resp.StatusCode, tt.code)
			}
			switch tt.code {
			case 304:
				if body != "" || resp.Header.Get("ETag") != etag || resp.Header.Get("Cache-Control") == "" {
					t.Errorf("Get(/0123.txt, %q) = 304 body %q ETag %q Cache-Control %q, want no body, ETag %q and Cache-Control",
						tt.hdr, body, resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"), etag)
				}
			case 200:
				if body != "0123456789" {
					t.Errorf("Get(/0123.txt, %q) body = %q, want the file", tt.hdr, body)
				}
			}
		})
	}
}

func TestFileRanges(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{Root: site(t)}))
	c := client(t, nil)
	resp, _ := do(t, c, "GET", base+"/0123.txt")
	etag := resp.Header.Get("ETag")
	tests := []struct {
		name         string
		hdr          []string
		code         int
		body, crange string
	}{
		{"single", []string{"Range", "bytes=2-5"}, 206, "2345", "bytes 2-5/10"},
		{"open end", []string{"Range", "bytes=7-"}, 206, "789", "bytes 7-9/10"},
		{"suffix", []string{"Range", "bytes=-3"}, 206, "789", "bytes 7-9/10"},
		{"past the end is cut", []string{"Range", "bytes=8-100"}, 206, "89", "bytes 8-9/10"},
		{"unsatisfiable", []string{"Range", "bytes=50-60"}, 416, "", "bytes */10"},
		{"If-Range current", []string{"Range", "bytes=0-1", "If-Range", etag}, 206, "01", "bytes 0-1/10"},
		{"If-Range stale", []string{"Range", "bytes=0-1", "If-Range", `"stale"`}, 200, "0123456789", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/0123.txt", tt.hdr...)
			if resp.StatusCode != tt.code {
				t.Fatalf("Get(/0123.txt, %q) = %d, want %d", tt.hdr, resp.StatusCode, tt.code)
			}
			if tt.code != 416 && body != tt.body {
				t.Errorf("Get(/0123.txt, %q) body = %q, want %q", tt.hdr, body, tt.body)
			}
			if cr := resp.Header.Get("Content-Range"); cr != tt.crange {
				t.Errorf("Get(/0123.txt, %q) Content-Range = %q, want %q", tt.hdr, cr, tt.crange)
			}
		})
	}
	t.Run("multipart", func(t *testing.T) {
		resp, body := do(t, c, "GET", base+"/0123.txt", "Range", "bytes=0-1,4-5,-1")
		parts := multipartRanges(t, resp, body)
		want := []string{"bytes 0-1/10 text/plain; charset=utf-8 01", "bytes 4-5/10 text/plain; charset=utf-8 45", "bytes 9-9/10 text/plain; charset=utf-8 9"}
		if resp.StatusCode != 206 || strings.Join(parts, "|") != strings.Join(want, "|") {
			t.Errorf("Get(/0123.txt, bytes=0-1,4-5,-1) = %d %q, want 206 %q", resp.StatusCode, parts, want)
		}
	})
}

// multipartRanges returns each part of a multipart/byteranges answer as
// "Content-Range Content-Type body".
func multipartRanges(t *testing.T, resp *http.Response, body string) []string {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("Content-Type = %q, want multipart/byteranges", resp.Header.Get("Content-Type"))
	}
	var parts []string
	mr := multipart.NewReader(strings.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return parts
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		b, _ := io.ReadAll(p)
		parts = append(parts, p.Header.Get("Content-Range")+" "+p.Header.Get("Content-Type")+" "+string(b))
	}
}

func TestFileHEAD(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{Root: site(t)}))
	c := client(t, nil)
	for _, p := range []string{"/", "/0123.txt", "/static/app.css", "/img/logo.png", "/missing", "/gen/100k", "/healthz"} {
		t.Run(p, func(t *testing.T) {
			get, body := do(t, c, "GET", base+p)
			head, hbody := do(t, c, "HEAD", base+p)
			if head.StatusCode != get.StatusCode || hbody != "" {
				t.Errorf("Head(%q) = %d with %d body bytes, want %d with none", p, head.StatusCode, len(hbody), get.StatusCode)
			}
			if get.StatusCode == 200 && head.ContentLength != int64(len(body)) {
				t.Errorf("Head(%q) Content-Length = %d, want %d", p, head.ContentLength, len(body))
			}
			for _, h := range []string{"Content-Type", "ETag", "Last-Modified", "Cache-Control", "Accept-Ranges"} {
				if g, hv := get.Header.Get(h), head.Header.Get(h); g != hv {
					t.Errorf("Head(%q) %s = %q, want %q as for GET", p, h, hv, g)
				}
			}
		})
	}
}

func TestFileEscapes(t *testing.T) {
	poll.CheckGoroutines(t)
	parent := t.TempDir()
	root := filepath.Join(parent, "www")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(parent, "outside")
	os.Mkdir(outside, 0o755)
	for _, p := range []string{filepath.Join(parent, "secret.txt"), filepath.Join(outside, "secret.txt")} {
		if err := os.WriteFile(p, []byte("SECRET"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"relative-link.txt": "../secret.txt",
		"absolute-link.txt": filepath.Join(parent, "secret.txt"),
		"outdir":            outside,
		"etc":               "/etc",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	base := serve(t, newServer(t, Config{Root: root}))
	for _, target := range []string{
		"/../secret.txt",
		"/../etc/passwd",
		"/%2e%2e/secret.txt",
		"/%2E%2E/secret.txt",
		"/..%2fsecret.txt",
		"/%2e%2e%2fsecret.txt",
		"/static/../../secret.txt",
		"/./../secret.txt",
		"//../secret.txt",
		"/..\\secret.txt",
		"/relative-link.txt",
		"/absolute-link.txt",
		"/outdir/secret.txt",
		"/etc/passwd",
		"/etc/",
	} {
		t.Run(target, func(t *testing.T) {
			reply := rawGet(t, base, target)
			status, _, _ := strings.Cut(reply, "\r\n")
			if strings.Contains(reply, "SECRET") || strings.Contains(reply, "root:") || strings.Contains(status, " 200 ") {
				t.Errorf("Get(%q) = %q, want it refused", target, reply)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{Root: site(t)}))
	c := client(t, nil)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, p := range []string{"/index.html", "/gen/1k", "/healthz", "/_origin/stats"} {
			t.Run(m+p, func(t *testing.T) {
				resp, _ := do(t, c, m, base+p)
				if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
					t.Errorf("%s(%q) = %d Allow %q, want 405 Allow %q", m, p, resp.StatusCode, resp.Header.Get("Allow"), "GET, HEAD")
				}
			})
		}
	}
}

func TestNoRoot(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{}))
	c := client(t, nil)
	for _, p := range []string{"/", "/index.html", "/etc/passwd"} {
		if resp, body := do(t, c, "GET", base+p); resp.StatusCode != 404 {
			t.Errorf("Get(%q) = %d %q, want 404", p, resp.StatusCode, body)
		}
	}
}
