package origin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestHealthz(t *testing.T) {
	poll.CheckGoroutines(t)
	s := newServer(t, Config{})
	base := serve(t, s)
	resp, body := do(t, client(t, nil), "GET", base+"/healthz")
	if resp.StatusCode != 200 || body != "ok\n" || resp.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("Get(/healthz) = %d %q %v, want 200 \"ok\\n\" text/plain no-store", resp.StatusCode, body, resp.Header)
	}
	if st := s.Stats(); st.Requests != 0 || len(st.ByPath) != 0 {
		t.Errorf("Stats() after /healthz = %+v, want nothing counted", st)
	}
}

func TestStats(t *testing.T) {
	poll.CheckGoroutines(t)
	s := newServer(t, Config{Root: site(t)})
	base := serve(t, s)
	c := client(t, nil)
	if st := s.Stats(); st.Requests != 0 || st.ByPath == nil || len(st.ByPath) != 0 {
		t.Errorf("Stats() of a new server = %+v, want zero counts and an empty map", st)
	}
	for _, p := range []string{"/index.html", "/index.html", "/gen/1k", "/gen/1k?cc=no-store", "/gen/bad", "/missing", "/healthz", "/_origin/stats"} {
		do(t, c, "GET", base+p)
	}
	do(t, c, "HEAD", base+"/index.html")
	do(t, c, "POST", base+"/gen/1k")
	want := Stats{
		Requests:      8,
		ByPath:        map[string]int64{"/index.html": 3, "/gen/1k": 3, "/gen/bad": 1, "/missing": 1},
		TLSHandshakes: 0,
	}
	resp, body := do(t, c, "GET", base+"/_origin/stats")
	var got Stats
	if err := json.Unmarshal([]byte(body), &got); err != nil || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Get(/_origin/stats) = %q (%v) %v, want JSON, no-store", body, err, resp.Header)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get(/_origin/stats) = %+v, want %+v", got, want)
	}
	for _, k := range []string{`"requests"`, `"by_path"`, `"tls_handshakes"`} {
		if !strings.Contains(body, k) {
			t.Errorf("Get(/_origin/stats) = %s, want key %s", body, k)
		}
	}
	if st := s.Stats(); !reflect.DeepEqual(st, want) {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	for p, n := range map[string]int64{"/index.html": 3, "/gen/1k": 3, "/never": 0, "/healthz": 0} {
		if got := s.Requests(p); got != n {
			t.Errorf("Requests(%q) = %d, want %d", p, got, n)
		}
	}
	// A snapshot is a copy.
	st := s.Stats()
	st.ByPath["/index.html"] = 100
	if s.Requests("/index.html") != 3 {
		t.Errorf("changing a Stats snapshot changed the server's counts")
	}
}

func TestStatsPathLimit(t *testing.T) {
	var c counters
	for i := range MaxStatsPaths {
		c.count(fmt.Sprintf("/p/%d", i))
	}
	c.count("/p/0")
	c.count("/one/more")
	c.count("/and/another")
	if len(c.byPath) != MaxStatsPaths+1 || c.byPath[OtherPaths] != 2 || c.byPath["/p/0"] != 2 || c.requests.Load() != MaxStatsPaths+3 {
		t.Errorf("after %d paths: %d tracked, %d other, /p/0 = %d, %d requests; want %d, 2, 2, %d",
			MaxStatsPaths+2, len(c.byPath), c.byPath[OtherPaths], c.byPath["/p/0"], c.requests.Load(), MaxStatsPaths+1, MaxStatsPaths+3)
	}
}

func TestTLS(t *testing.T) {
	poll.CheckGoroutines(t)
	s := newServer(t, Config{Root: site(t)})
	base, pool := serveTLS(t, s)
	tests := []struct {
		name      string
		nextProto []string
		proto     string
	}{
		{"h2", nil, "HTTP/2.0"},
		{"http/1.1 only", []string{"http/1.1"}, "HTTP/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: tt.nextProto}, ForceAttemptHTTP2: tt.nextProto == nil}
			c := client(t, tr)
			for _, p := range []string{"/index.html", "/gen/100k", "/gen/1k"} {
				resp, body := do(t, c, "GET", base+p)
				if resp.StatusCode != 200 || resp.Proto != tt.proto || body == "" {
					t.Errorf("Get(%q) = %d %s, want 200 over %s", p, resp.StatusCode, resp.Proto, tt.proto)
				}
				if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
					t.Errorf("Get(%q) TLS = %+v, want TLS 1.2 or later", p, resp.TLS)
				}
			}
			tr.CloseIdleConnections()
		})
	}
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}
		if resp, err := client(t, tr).Get(base + "/index.html"); err == nil {
			resp.Body.Close()
			t.Errorf("Get(/index.html) over TLS 1.1 = %s, want a handshake error", resp.Status)
		}
	})
	// One connection, so one handshake, per client that finished one.
	if st := s.Stats(); st.TLSHandshakes != 2 || st.Requests != 6 {
		t.Errorf("Stats() = %+v, want 2 TLS handshakes and 6 requests", st)
	}
}

func TestRequestLog(t *testing.T) {
	poll.CheckGoroutines(t)
	log, lines := newLogger()
	s := newServer(t, Config{Root: site(t), Logger: log, LogRequests: true})
	base := serve(t, s)
	c := client(t, nil)
	type line struct {
		Level, Msg, Method, Path, Proto, Remote, Query string
		Status                                         int
		Bytes                                          int64
		Duration                                       int64
	}
	tests := []struct {
		method, path string
		want         line
	}{
		{"GET", "/gen/1k", line{Level: "INFO", Status: 200, Bytes: 1024}},
		{"GET", "/gen/1k?cc=no-store", line{Level: "INFO", Status: 200, Bytes: 1024, Query: "cc=no-store"}},
		{"HEAD", "/index.html", line{Level: "INFO", Status: 200, Bytes: 0}},
		{"GET", "/missing", line{Level: "INFO", Status: 404}},
		{"GET", "/docs", line{Level: "INFO", Status: 301}},
		{"POST", "/gen/1k", line{Level: "INFO", Status: 405}},
		{"GET", "/healthz", line{Level: "DEBUG", Status: 200, Bytes: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, _ := do(t, c, tt.method, base+tt.path)
			var got line
			if err := json.Unmarshal([]byte(lines.next(t)), &got); err != nil {
				t.Fatal(err)
			}
			path, _, _ := strings.Cut(tt.path, "?")
			if got.Msg != "request" || got.Method != tt.method || got.Path != path || got.Proto != "HTTP/1.1" || got.Remote == "" || got.Duration <= 0 {
				t.Errorf("%s(%q) logged %+v, want request, %s, %s, HTTP/1.1, a remote and a duration", tt.method, tt.path, got, tt.method, path)
			}
			if got.Level != tt.want.Level || got.Status != tt.want.Status || got.Status != resp.StatusCode || got.Query != tt.want.Query ||
				(tt.want.Status != 404 && tt.want.Status != 301 && tt.want.Status != 405 && got.Bytes != tt.want.Bytes) {
				t.Errorf("%s(%q) logged %+v, want level %s status %d bytes %d query %q", tt.method, tt.path, got, tt.want.Level, tt.want.Status, tt.want.Bytes, tt.want.Query)
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		quiet := newServer(t, Config{Logger: log})
		quiet.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/gen/1k", nil))
		select {
		case l := <-lines.lines:
			t.Errorf("with LogRequests false, ServeHTTP logged %s", l)
		default:
		}
	})
}

func TestRecorder(t *testing.T) {
	t.Run("Flush", func(t *testing.T) {
		under := httptest.NewRecorder()
		rec := &recorder{ResponseWriter: under}
		var w http.ResponseWriter = rec
		if _, ok := w.(http.Flusher); !ok {
			t.Fatal("recorder is not an http.Flusher")
		}
		if err := http.NewResponseController(w).Flush(); err != nil || !under.Flushed || rec.status != 200 {
			t.Errorf("Flush through the recorder: %v, flushed %v, status %d; want flushed with 200", err, under.Flushed, rec.status)
		}
	})
	t.Run("1xx is not the status", func(t *testing.T) {
		rec := &recorder{ResponseWriter: &sink{h: http.Header{}}}
		rec.WriteHeader(http.StatusEarlyHints)
		rec.WriteHeader(http.StatusNotFound)
		if rec.status != 404 {
			t.Errorf("status after 103 and 404 = %d, want 404", rec.status)
		}
	})
	t.Run("ReadFrom", func(t *testing.T) {
		under := httptest.NewRecorder()
		rec := &recorder{ResponseWriter: under}
		rec.WriteHeader(http.StatusPartialContent)
		n, err := io.Copy(rec, strings.NewReader("hello"))
		if n != 5 || err != nil || rec.bytes != 5 || rec.status != 206 || under.Body.String() != "hello" {
			t.Errorf("io.Copy through the recorder = %d, %v; counted %d bytes, status %d; want 5 bytes, 206", n, err, rec.bytes, rec.status)
		}
	})
}

func TestShutdown(t *testing.T) {
	poll.CheckGoroutines(t)
	s := newServer(t, Config{Root: site(t)})
	base := serve(t, s)
	c := client(t, nil)
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get(base + "/gen/10?delay=200ms")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	poll.Until(t, "the delayed request to arrive", func() bool { return s.Requests("/gen/10") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil once the request is done", err)
	}
	if r := <-done; r.err != nil || r.code != 200 || len(r.body) != 10 {
		t.Errorf("Get(/gen/10?delay=200ms) during Shutdown = %d %q %v, want it answered", r.code, r.body, r.err)
	}
	if _, err := c.Get(base + "/healthz"); err == nil {
		t.Errorf("Get(/healthz) after Shutdown succeeded, want a refused connection")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != http.ErrServerClosed {
		t.Errorf("Serve after Shutdown = %v, want http.ErrServerClosed", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Errorf("Serve after Shutdown left its listener open")
	}
}

func TestShutdownDeadline(t *testing.T) {
	poll.CheckGoroutines(t)
	s := newServer(t, Config{})
	base := serve(t, s)
	c := client(t, nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get(base + "/gen/10?delay=10m")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	poll.Until(t, "the delayed request to arrive", func() bool { return s.Requests("/gen/10") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a request in flight = %v, want context.DeadlineExceeded", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
	if err := <-errc; err == nil {
		t.Errorf("Get(/gen/10?delay=10m) across Close succeeded, want an error")
	}
}

func TestCloseTwice(t *testing.T) {
	s := newServer(t, Config{Root: site(t)})
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("Close #%d = %v, want nil", i+1, err)
		}
	}
}

func TestNewKeepsItsOwnRules(t *testing.T) {
	rules := []Rule{{Path: "/", CacheControl: "a"}}
	s := newServer(t, Config{Rules: rules})
	rules[0].CacheControl = "changed"
	if cc, _ := s.cfg.cacheControl("/x"); cc != "a" {
		t.Errorf("cacheControl(/x) after the caller changed its slice = %q, want %q", cc, "a")
	}
}
