package pop_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/quic-go/quic-go/http3"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
)

// oddOrigin answers every path with a response that has what the
// ordinary path must treat with care:
// no Date, no Content-Type, a Cache-Status from upstream, a
// Last-Modified in the RFC 850 form, and a field sent twice.
func oddOrigin(t *testing.T) string {
	return startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Date"] = nil
		h["Content-Type"] = nil
		h.Set("Cache-Control", "public, max-age=600")
		h.Set("Cache-Status", "shield; hit")
		h.Set("Last-Modified", "Monday, 02-Jan-06 15:04:05 GMT")
		h.Set("ETag", `"odd"`)
		h.Add("X-Twice", "one")
		h.Add("X-Twice", "two")
		w.Write(bytes.Repeat([]byte("odd "), 300))
	}).url
}

// TestH3FastPathMatchesWriter: an HTTP/3 hit the PoP writes to the stream
// itself has the same status, fields and bytes as the same hit served
// through quic-go's response writer (Config.DisableFastPath), for GET
// and HEAD, apart from the per-request Age, TTL and generated Date.
func TestH3FastPathMatchesWriter(t *testing.T) {
	ca := certstest.LabCA(t)
	genURL := poptest.StartGenOrigin(t)
	oddURL := oddOrigin(t)
	cases := []struct{ origin, path string }{
		{genURL, "/gen/1k"},
		{genURL, "/gen/100k?x=1"},
		{genURL, "/gen/20000?cc=public,max-age=60"},
		{genURL, "/gen/0"},
		{oddURL, "/odd"},
	}
	for _, tc := range cases {
		fast := poptest.StartPoP(t, poptest.Config(ca, tc.origin))
		cfg := poptest.Config(ca, tc.origin)
		cfg.DisableFastPath = true
		slow := poptest.StartPoP(t, cfg)
		for _, method := range []string{"GET", "HEAD"} {
			type answer struct {
				h    http.Header
				body []byte
			}
			var answers []answer
			for i, p := range []*pop.Server{fast, slow} {
				client := clients(t, ca)["h3"]
				url := "https://localhost:" + port(p.Addr()) + tc.path
				get(t, client, url) // miss, stored
				p.WaitCache()
				before := p.FastHits().HTTP3
				resp, body := do(t, client, method, url)
				if resp.StatusCode != 200 || resp.ProtoMajor != 3 || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
					t.Fatalf("%s %s: %d over HTTP/%d, Cache-Status %q; want a 200 hit over HTTP/3", method, tc.path, resp.StatusCode, resp.ProtoMajor, resp.Header.Get("Cache-Status"))
				}
				if served := p.FastHits().HTTP3 - before; (i == 0) != (served == 1) {
					t.Errorf("%s %s answer %d: fast path served %d", method, tc.path, i, served)
				}
				h := resp.Header.Clone()
				if age := h.Get("Age"); age == "" || len(h["Age"]) != 1 {
					t.Errorf("%s %s answer %d: Age = %q", method, tc.path, i, h["Age"])
				}
				h.Del("Age")
				h.Set("Cache-Status", strings.Split(h.Get("Cache-Status"), "; ttl=")[0])
				h.Set("Server-Timing", timingShape(t, h.Get("Server-Timing"))) // durations differ per request
				// Date: generated per request for /odd; otherwise the
				// origin's, and each PoP fetched the object itself, so the
				// origin's clock may have ticked between the two.
				if _, err := http.ParseTime(h.Get("Date")); err != nil || len(h["Date"]) != 1 {
					t.Errorf("%s %s answer %d: Date = %q", method, tc.path, i, h["Date"])
				}
				h.Del("Date")
				answers = append(answers, answer{h, body})
			}
			got, want := answers[0], answers[1]
			if !bytes.Equal(got.body, want.body) {
				t.Errorf("%s %s: body differs (%d vs %d bytes)", method, tc.path, len(got.body), len(want.body))
			}
			for k := range want.h {
				if !slices.Equal(got.h[k], want.h[k]) {
					t.Errorf("%s %s: %s = %q, the writer sent %q", method, tc.path, k, got.h[k], want.h[k])
				}
			}
			for k := range got.h {
				if _, ok := want.h[k]; !ok {
					t.Errorf("%s %s: extra field %s: %q", method, tc.path, k, got.h[k])
				}
			}
			if tc.path == "/odd" {
				if cs := want.h.Get("Cache-Status"); cs != poptest.Name+"; hit" {
					t.Errorf("/odd: Cache-Status = %q, want the PoP's alone (the cache does not store the upstream's)", cs)
				}
				if lm := want.h.Get("Last-Modified"); lm != "Mon, 02 Jan 2006 15:04:05 GMT" {
					t.Errorf("/odd: Last-Modified = %q, want the canonical form", lm)
				}
			}
		}
	}
}

// TestH3FastPathPassesOn: HTTP/3 requests whose fields change the answer
// (validators, ranges, credentials, cache directives), misses and hosts
// the PoP does not serve go the ordinary way and get its answers.
func TestH3FastPathPassesOn(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	client := clients(t, ca)["h3"]
	url := "https://localhost:" + port(p.Addr()) + "/gen/2k"
	before := p.FastHits().HTTP3
	resp, _ := get(t, client, url)
	if resp.StatusCode != 200 || p.FastHits().HTTP3 != before {
		t.Fatalf("miss = %d, fast hits %d; want 200 through the writer", resp.StatusCode, p.FastHits().HTTP3-before)
	}
	p.WaitCache()
	etag := resp.Header.Get("Etag")
	for _, tc := range []struct {
		hdr  []string
		want int
	}{
		{[]string{"If-None-Match", etag}, 304},
		{[]string{"Range", "bytes=0-9"}, 206},
		{[]string{"Cache-Control", "max-age=0"}, 200},
		{[]string{"Pragma", "no-cache"}, 200},
		{[]string{"Authorization", "Bearer x"}, 200},
		{[]string{"Host", "unknown.example"}, 421},
	} {
		before := p.FastHits().HTTP3
		resp, body := get(t, client, url, tc.hdr...)
		if resp.StatusCode != tc.want {
			t.Errorf("GET with %s: %q = %d %q, want %d", tc.hdr[0], tc.hdr[1], resp.StatusCode, body, tc.want)
		}
		if n := p.FastHits().HTTP3 - before; n != 0 {
			t.Errorf("GET with %s: %q: fast path served it", tc.hdr[0], tc.hdr[1])
		}
	}
	before = p.FastHits().HTTP3
	if resp, body := get(t, client, url, "User-Agent", "x", "Accept", "*/*"); resp.StatusCode != 200 || len(body) != 2048 || p.FastHits().HTTP3 != before+1 {
		t.Errorf("plain GET = %d with %d bytes, fast hits %d; want 200, 2048, 1", resp.StatusCode, len(body), p.FastHits().HTTP3-before)
	}
}

// do sends a request without a body and reads the whole answer.
func do(t *testing.T, c *http.Client, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, b.Bytes()
}

// BenchmarkH3Hit fetches stored objects over HTTP/3 on loopback from one
// client connection with parallel streams, with the PoP writing hits
// itself (fast) and through quic-go's response writer (writer). Client
// and server share the process: compare the two, not the absolute time.
func BenchmarkH3Hit(b *testing.B) {
	ca := certstest.LabCA(b)
	originURL := poptest.StartGenOrigin(b)
	for _, mode := range []string{"fast", "writer"} {
		cfg := poptest.Config(ca, originURL)
		cfg.DisableFastPath = mode == "writer"
		p := poptest.StartPoP(b, cfg)
		tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.RootPool()}}
		client := &http.Client{Transport: tr}
		for _, size := range []string{"1k", "100k"} {
			url := "https://localhost:" + port(p.Addr()) + "/gen/" + size
			b.Run(size+"/"+mode, func(b *testing.B) {
				fetch := func(buf []byte) (int64, error) {
					resp, err := client.Get(url)
					if err != nil {
						return 0, err
					}
					defer resp.Body.Close()
					n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					return n, err
				}
				n, err := fetch(make([]byte, 32<<10)) // miss, stored
				if err != nil {
					b.Fatal(err)
				}
				p.WaitCache()
				b.SetBytes(n)
				b.ReportAllocs()
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 32<<10)
					for pb.Next() {
						if _, err := fetch(buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
		tr.Close()
		p.Close() // before the next mode's PoP; StartPoP's cleanup checks Serve's error
	}
}
