package pop_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
)

// h1Conn is a raw HTTP/1.1-over-TLS connection for exact control of what
// is sent and read.
type h1Conn struct {
	c  *tls.Conn
	br *bufio.Reader
}

func dialH1(t *testing.T, p *pop.Server, ca *certs.LabCA) *h1Conn {
	t.Helper()
	c, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &h1Conn{c: c, br: bufio.NewReader(c)}
}

func (h *h1Conn) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(h.c, raw); err != nil {
		t.Fatal(err)
	}
}

func (h *h1Conn) read(t *testing.T, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(h.br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestFastPathMatchesNetHTTP: a hit served by the HTTP/1.1 fast loop or
// by an HTTP/2 connection's reader has the same status, fields and bytes
// as the same hit served through net/http and the cache handler (over
// HTTP/1.1 and HTTP/2 with the fast path off), apart from the per-request
// Age and TTL.
func TestFastPathMatchesNetHTTP(t *testing.T) {
	ca := certstest.LabCA(t)
	originURL := poptest.StartGenOrigin(t)
	fast := poptest.StartPoP(t, poptest.Config(ca, originURL))
	cfg := poptest.Config(ca, originURL)
	cfg.DisableFastPath = true
	slow := poptest.StartPoP(t, cfg)
	cs := clients(t, ca)
	for _, path := range []string{"/gen/1k", "/gen/100k?x=1", "/gen/3000?cc=public,max-age=60&vary="} {
		type answer struct {
			h    http.Header
			body []byte
		}
		var answers []answer
		for i, p := range []*pop.Server{fast, fast, slow, slow, fast} {
			proto := "h1"
			if i >= 3 {
				proto = "h2"
			}
			client := cs[proto]
			url := "https://localhost:" + port(p.Addr()) + path
			get(t, client, url) // miss, stored
			p.WaitCache()
			// A miss moves its connection to net/http for good: hits
			// reach the fast loop on a new one (new clients, so that no
			// connection is reused).
			client = clients(t, ca)[proto]
			fastHits := func() int64 { n := p.FastHits(); return n.HTTP1 + n.HTTP2 }
			before := fastHits()
			resp, body := get(t, client, url)
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
				t.Fatalf("%s second request: %d %q, want a 200 hit", path, resp.StatusCode, resp.Header.Get("Cache-Status"))
			}
			if served := fastHits() - before; (i < 2 || i == 4) != (served == 1) {
				t.Errorf("%s answer %d: fast path served %d", path, i, served)
			}
			h := resp.Header.Clone()
			h.Del("Age")
			h.Del("Date") // each answer's PoP fetched the object itself: the origin's clock may have ticked between

			h.Set("Cache-Status", strings.Split(h.Get("Cache-Status"), "; ttl=")[0])
			h.Set("Server-Timing", timingShape(t, h.Get("Server-Timing"))) // durations differ per request
			if i < 3 {
				h.Set("Alt-Svc", "same") // a different port per PoP
			}
			answers = append(answers, answer{h, body})
		}
		want := answers[2] // net/http over HTTP/1.1
		for i, a := range answers {
			if !bytes.Equal(a.body, want.body) {
				t.Errorf("%s answer %d: body differs (%d vs %d bytes)", path, i, len(a.body), len(want.body))
			}
			if i >= 3 {
				a.h.Set("Alt-Svc", "same")
				a.h.Set("Content-Length", want.h.Get("Content-Length")) // HTTP/2 frames need none
			}
			for k := range want.h {
				if !slices.Equal(a.h[k], want.h[k]) {
					t.Errorf("%s answer %d: %s = %q, net/http sent %q", path, i, k, a.h[k], want.h[k])
				}
			}
			for k := range a.h {
				if _, ok := want.h[k]; !ok {
					t.Errorf("%s answer %d: extra field %s: %q", path, i, k, a.h[k])
				}
			}
		}
	}
}

// TestFastPathPassesOn: on one connection, requests the fast loop must not
// answer (a conditional one, a POST with a body, a pipelined mix) are
// answered by net/http with the bytes the loop had read, and the
// connection keeps working; HEAD and Connection: close are honoured.
func TestFastPathPassesOn(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	c := dialH1(t, p, ca)
	c.send(t, "GET /gen/2k HTTP/1.1\r\nHost: localhost\r\n\r\n")
	resp, body := c.read(t, "GET")
	if resp.StatusCode != 200 || len(body) != 2048 {
		t.Fatalf("miss = %d with %d bytes", resp.StatusCode, len(body))
	}
	p.WaitCache()
	c = dialH1(t, p, ca) // the miss moved the first connection to net/http for good
	hits := p.FastHits().HTTP1
	c.send(t, "HEAD /gen/2k HTTP/1.1\r\nHost: localhost\r\n\r\nGET /gen/2k HTTP/1.1\r\nHost: LOCALHOST\r\n\r\n")
	resp, body = c.read(t, "HEAD")
	if resp.StatusCode != 200 || resp.ContentLength != 2048 || len(body) != 0 {
		t.Errorf("HEAD = %d, length %d, %d body bytes; want 200, 2048, none", resp.StatusCode, resp.ContentLength, len(body))
	}
	if resp, body = c.read(t, "GET"); resp.StatusCode != 200 || len(body) != 2048 {
		t.Errorf("pipelined GET = %d with %d bytes", resp.StatusCode, len(body))
	}
	if got := p.FastHits().HTTP1 - hits; got != 2 {
		t.Errorf("fast path served %d of the HEAD and GET, want 2", got)
	}
	// Pipelined: a hit, a conditional request, a POST with a body, a hit.
	etag := resp.Header.Get("Etag")
	c.send(t, "GET /gen/2k HTTP/1.1\r\nHost: localhost\r\n\r\n"+
		"GET /gen/2k HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: "+etag+"\r\n\r\n"+
		"POST /gen/2k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /gen/2k HTTP/1.1\r\nHost: localhost\r\n\r\n")
	for i, want := range []int{200, 304, 405, 200} {
		resp, body := c.read(t, "GET")
		if resp.StatusCode != want {
			t.Errorf("pipelined response %d = %d %q, want %d", i, resp.StatusCode, body, want)
		}
	}
	c.send(t, "GET /gen/2k HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("Connection: close request = %d, close %v", resp.StatusCode, resp.Close)
	}

	c = dialH1(t, p, ca)
	hits = p.FastHits().HTTP1
	c.send(t, "GET /gen/2k HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	resp, _ = c.read(t, "GET")
	if resp.StatusCode != 200 || !resp.Close || p.FastHits().HTTP1 != hits+1 {
		t.Errorf("fast Connection: close = %d, close %v, fast hits %d", resp.StatusCode, resp.Close, p.FastHits().HTTP1-hits)
	}
	if n, err := c.br.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection still open after Connection: close (read %d bytes)", n)
	}
}

// TestFastPathUnknownHost: the fast loop routes like net/http: a Host the
// PoP does not serve, or one whose site differs from the TLS server
// name's, is refused with 421 even when the object is cached for it, and
// fetched from nowhere.
func TestFastPathUnknownHost(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Write([]byte("for " + r.Host))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Sites = append(cfg.Sites, pop.Site{Hosts: []string{"other.lab"}, Upstream: "origin"})
	p := poptest.StartPoP(t, cfg)
	dial := func(sni string) *h1Conn {
		c, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: sni, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return &h1Conn{c: c, br: bufio.NewReader(c)}
	}
	for range 2 { // stored, then a hit in the fast loop
		c := dial("other.lab")
		c.send(t, "GET /x HTTP/1.1\r\nHost: other.lab\r\n\r\n")
		if resp, body := c.read(t, "GET"); resp.StatusCode != 200 || string(body) != "for other.lab" {
			t.Fatalf("other.lab = %d %q", resp.StatusCode, body)
		}
		p.WaitCache()
	}
	if p.FastHits().HTTP1 != 1 {
		t.Fatalf("fast hits %d, want 1", p.FastHits().HTTP1)
	}
	n := len(ro.requests())
	for _, host := range []string{"evil.example", "other.lab"} {
		c := dial("localhost")
		c.send(t, "GET /x HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("Host %s over SNI localhost = %d, want 421", host, resp.StatusCode)
		}
	}
	for _, r := range ro.requests()[n:] {
		t.Errorf("origin got %s %s", r.Host, r.URL)
	}
}

// TestFastPathDrain: Shutdown closes idle fast-loop connections at once
// instead of waiting for their idle timeout.
func TestFastPathDrain(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	cfg.DrainTimeout = time.Minute
	p := poptest.StartPoP(t, cfg)
	for range 2 {
		c := dialH1(t, p, ca)
		c.send(t, "GET /gen/1k HTTP/1.1\r\nHost: localhost\r\n\r\n")
		c.read(t, "GET")
		p.WaitCache()
	}
	c := dialH1(t, p, ca)
	c.send(t, "GET /gen/1k HTTP/1.1\r\nHost: localhost\r\n\r\n")
	c.read(t, "GET")
	if p.FastHits().HTTP1 != 2 {
		t.Fatalf("fast hits %d, want 2", p.FastHits().HTTP1)
	}
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown still waiting for an idle HTTP/1.1 connection after 20s")
	}
	if _, err := c.br.ReadByte(); err == nil {
		t.Error("idle connection still open after Shutdown")
	}
}
