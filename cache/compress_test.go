package cache

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// textBody is a compressible, deterministic page of n bytes.
func textBody(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "<li class=\"item\">item %d of the catalogue, in stock</li>\n", i)
	}
	return b.Bytes()[:n]
}

func decode(t *testing.T, coding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "gzip":
		gr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = gr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	case "":
		return body
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", coding, err)
	}
	return out
}

// TestCompressAtEdge: a textual response the origin sends uncompressed is
// stored once and served in the best encoding each request accepts, with
// Vary: Accept-Encoding, a weak ETag for encoded bodies, validators and
// ranges on the representation sent; one origin request for all of it.
func TestCompressAtEdge(t *testing.T) {
	page := textBody(100 << 10)
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"page1"`)
		w.Write(page)
	})
	rg.get("/p")
	rg.cache.Wait()
	for _, tc := range []struct{ ae, coding string }{
		{"br, gzip", "br"},
		{"gzip, deflate", "gzip"},
		{"zstd", "zstd"},
		{"gzip;q=0.5, zstd;q=0.9", "zstd"},
		{"br;q=0, gzip", "gzip"},
		{"*", "br"},
		{"identity", ""},
		{"identity;q=1, gzip;q=0.5", ""},
		{"deflate", ""},
	} {
		resp, body := rg.get("/p", "Accept-Encoding", tc.ae)
		if got := resp.Header.Get("Content-Encoding"); got != tc.coding {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", tc.ae, got, tc.coding)
			continue
		}
		if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("Accept-Encoding %q: Vary %q, want Accept-Encoding listed", tc.ae, resp.Header.Get("Vary"))
		}
		wantTag := `"page1"`
		if tc.coding != "" {
			wantTag = `W/"page1"`
			if len(body) > len(page)/2 {
				t.Errorf("%s body %d bytes for a %d-byte page", tc.coding, len(body), len(page))
			}
		}
		if got := resp.Header.Values("ETag"); len(got) != 1 || got[0] != wantTag {
			t.Errorf("Accept-Encoding %q: ETag %q, want just %s", tc.ae, got, wantTag)
		}
		if !bytes.Equal(decode(t, tc.coding, []byte(body)), page) {
			t.Errorf("Accept-Encoding %q: the %q body does not decode to the page", tc.ae, tc.coding)
		}
	}
	// Validators and ranges apply to the representation sent.
	if resp, _ := rg.get("/p", "Accept-Encoding", "br", "If-None-Match", `W/"page1"`); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match W/\"page1\" with br: %d, want 304", resp.StatusCode)
	}
	_, whole := rg.get("/p", "Accept-Encoding", "br")
	if resp, part := rg.get("/p", "Accept-Encoding", "br", "Range", "bytes=0-9"); resp.StatusCode != http.StatusPartialContent ||
		part != whole[:10] || resp.Header.Get("Content-Encoding") != "br" {
		t.Errorf("Range of the br representation: %d %q (%s), want 206 and its first 10 bytes", resp.StatusCode, part, resp.Header.Get("Content-Encoding"))
	}
	if n := rg.hits.Load(); n != 1 {
		t.Errorf("origin requests %d, want 1: every representation comes from one stored response", n)
	}
}

// TestCompressOnlyWhatHelps: bodies already encoded, of other types,
// small, or marked no-transform pass as the origin sent them.
func TestCompressOnlyWhatHelps(t *testing.T) {
	page := textBody(8 << 10)
	for _, tc := range []struct {
		name   string
		fields []string
		body   []byte
	}{
		{"already encoded", []string{"Content-Type", "text/html", "Content-Encoding", "gzip"}, page},
		{"image", []string{"Content-Type", "image/png"}, page},
		{"small", []string{"Content-Type", "text/plain"}, page[:500]},
		{"no-transform", []string{"Content-Type", "text/plain", "Cache-Control", "max-age=60, no-transform"}, page},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				for i := 0; i+1 < len(tc.fields); i += 2 {
					w.Header().Set(tc.fields[i], tc.fields[i+1])
				}
				w.Write(tc.body)
			})
			rg.get("/x")
			rg.cache.Wait()
			resp, body := rg.get("/x", "Accept-Encoding", "br, gzip, zstd")
			wantCE := ""
			if tc.name == "already encoded" {
				wantCE = "gzip"
			}
			if body != string(tc.body) || resp.Header.Get("Content-Encoding") != wantCE {
				t.Errorf("%s: Content-Encoding %q, %d bytes; want the origin's bytes as sent", tc.name, resp.Header.Get("Content-Encoding"), len(body))
			}
			if strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
				t.Errorf("%s: Vary %q: nothing varies", tc.name, resp.Header.Get("Vary"))
			}
		})
	}
}

// TestQOf: Accept-Encoding weights as RFC 9110 12.5.3 reads them.
func TestQOf(t *testing.T) {
	for _, tc := range []struct {
		ae, coding string
		want       int
	}{
		{"br", "br", 1000}, {"gzip", "br", 0}, {"*", "br", 1000}, {"*;q=0.5, br;q=0", "br", 0},
		{"*;q=0.5", "gzip", 500}, {"BR;Q=0.25", "br", 250}, {"", "identity", 1000},
		{"identity;q=0", "identity", 0}, {"*;q=0", "identity", 0}, {"gzip ; q=0.8 , br", "gzip", 800},
	} {
		if got := qOf(tc.ae, tc.coding); got != tc.want {
			t.Errorf("qOf(%q, %q) = %d, want %d", tc.ae, tc.coding, got, tc.want)
		}
	}
}

// TestCompressedContentLength: an encoded representation served through
// the conditional path (a precondition that does not match) has its own
// Content-Length, on GET and HEAD alike, as the identity one has.
func TestCompressedContentLength(t *testing.T) {
	page := textBody(100 << 10)
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"p"`)
		w.Write(page)
	})
	rg.get("/p")
	_, br := rg.get("/p", "Accept-Encoding", "br")
	for _, method := range []string{"GET", "HEAD"} {
		resp, _ := rg.do(method, "/p", "Accept-Encoding", "br", "If-None-Match", `"other"`)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "br" || resp.ContentLength != int64(len(br)) {
			t.Errorf("%s with a failing If-None-Match: %d %q, Content-Length %d, want 200 br with %d",
				method, resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.ContentLength, len(br))
		}
	}
	// A failing If-Match (strong comparison, and the tag is weak) has no body.
	if resp, body := rg.get("/p", "Accept-Encoding", "br", "If-Match", `"p"`); resp.StatusCode != http.StatusPreconditionFailed || body != "" || resp.ContentLength > 0 {
		t.Errorf("If-Match on br: %d, Content-Length %d, %d bytes; want 412 without a body", resp.StatusCode, resp.ContentLength, len(body))
	}
}
