package pop_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestCacheCoalescesColdSlowObject(t *testing.T) {
	ca := certstest.LabCA(t)
	release := make(chan struct{})
	var arrived atomic.Int64
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cold" {
			arrived.Add(1)
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("cold"))
	})
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	c := clients(t, ca)["h2"]
	const n = 200
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range n {
		wg.Go(func() {
			resp, err := c.Get("https://localhost:" + port(p.Addr()) + "/cold")
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "cold" {
				ok.Add(1)
			}
		})
	}
	poll.Until(t, "all requests to reach the PoP", func() bool {
		return strings.Contains(metric(t, p, `pop_cache_events_total{event="coalesced"}`), fmt.Sprintf(" %d", n-1))
	})
	close(release)
	wg.Wait()
	if got := len(ro.requests()); got != 1 {
		t.Errorf("%d concurrent requests for a cold object: origin saw %d requests, want 1", n, got)
	}
	if ok.Load() != n {
		t.Errorf("%d of %d clients got the object", ok.Load(), n)
	}
}

func TestCacheServesStaleWhenOriginStops(t *testing.T) {
	ca := certstest.LabCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, stale-if-error=300")
		w.Write([]byte("kept"))
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stopOrigin := sync.OnceValue(func() error {
		srv.Close()
		return <-served
	})
	t.Cleanup(func() { stopOrigin() })
	cfg := poptest.Config(ca, "http://"+ln.Addr().String())
	u := cfg.Upstreams["origin"]
	u.ConnectTimeout = time.Second
	cfg.Upstreams["origin"] = u
	p := poptest.StartPoP(t, cfg)
	c := clients(t, ca)["h1"]
	base := "https://localhost:" + port(p.Addr())
	if resp, body := get(t, c, base+"/cached"); resp.StatusCode != 200 || body == nil {
		t.Fatalf("prime: %d", resp.StatusCode)
	}
	p.WaitCache()
	if err := stopOrigin(); !errors.Is(err, http.ErrServerClosed) { // the origin is gone
		t.Fatalf("origin Serve = %v", err)
	}
	poll.Until(t, "the cached object to go stale", func() bool {
		resp, _ := get(t, c, base+"/cached")
		return strings.Contains(resp.Header.Get("Cache-Status"), "stale-if-error")
	})
	for range 5 {
		resp, body := get(t, c, base+"/cached")
		if resp.StatusCode != 200 || string(body) != "kept" {
			t.Errorf("cached object with origin down: %d %q, want the stale 200", resp.StatusCode, body)
		}
	}
	start := time.Now()
	resp, _ := get(t, c, base+"/never-cached")
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("uncached object with origin down = %d, want 502 or 504", resp.StatusCode)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("uncached object took %v with the origin down, want a prompt error", took)
	}
}

func TestCachePurgeEndpoint(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "catalog")
		w.Write([]byte("item"))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Cache.PurgeToken = "s3cret"
	p := poptest.StartPoP(t, cfg)
	c := clients(t, ca)["h2"]
	base := "https://localhost:" + port(p.Addr())
	get(t, c, base+"/item")
	p.WaitCache()
	get(t, c, base+"/item")
	if n := len(ro.requests()); n != 1 {
		t.Fatalf("origin requests = %d, want 1 (second was a hit)", n)
	}
	purge := func(token, query string) (int, string) {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+p.AdminAddr().String()+"/purge?"+query, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := purge("", "url="+base+"/item"); code != http.StatusUnauthorized {
		t.Errorf("purge without token = %d, want 401", code)
	}
	if code, _ := purge("wrong", "url="+base+"/item"); code != http.StatusUnauthorized {
		t.Errorf("purge with a wrong token = %d, want 401", code)
	}
	code, body := purge("s3cret", "url="+base+"/item")
	var out struct {
		Results []struct{ Purged int }
	}
	json.Unmarshal([]byte(body), &out)
	if code != 200 || len(out.Results) != 1 || out.Results[0].Purged != 1 {
		t.Errorf("purge = %d %s, want one response purged", code, body)
	}
	get(t, c, base+"/item")
	if n := len(ro.requests()); n != 2 {
		t.Errorf("after purge: origin requests = %d, want 2", n)
	}
}

func TestCacheBehaviourThroughPoP(t *testing.T) {
	ca := certstest.LabCA(t)
	var version atomic.Int64
	version.Store(1)
	var revalidations atomic.Int64
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/swr":
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
			fmt.Fprintf(w, "v%d", version.Load())
		case "/etag":
			w.Header().Set("Cache-Control", "max-age=1")
			w.Header().Set("ETag", `"e"`)
			w.Header().Set("X-Version", fmt.Sprint(version.Load()))
			if r.Header.Get("If-None-Match") == `"e"` {
				revalidations.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Write([]byte("0123456789"))
		case "/account":
			w.Header().Set("Cache-Control", "max-age=600")
			fmt.Fprintf(w, "account of %q", r.Header.Get("Authorization"))
		default:
			w.Header().Set("Cache-Control", "max-age=600")
			fmt.Fprintf(w, "query %s", r.URL.RawQuery)
		}
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Sites = append(cfg.Sites,
		pop.Site{Hosts: []string{"sorted.lab"}, Upstream: "origin", CacheQuery: "sort"},
		pop.Site{Hosts: []string{"noquery.lab"}, Upstream: "origin", CacheQuery: "ignore"})
	p := poptest.StartPoP(t, cfg)
	c := clients(t, ca)["h2"]
	base := "https://localhost:" + port(p.Addr())
	originHits := func(path string) int {
		n := 0
		for _, r := range ro.requests() {
			if r.URL.Path == path {
				n++
			}
		}
		return n
	}

	t.Run("stale-while-revalidate serves stale at once and refreshes once", func(t *testing.T) {
		get(t, c, base+"/swr")
		p.WaitCache()
		version.Store(2)
		poll.Until(t, "the object to go stale", func() bool {
			resp, _ := get(t, c, base+"/swr")
			return strings.Contains(resp.Header.Get("Cache-Status"), "stale-while-revalidate")
		})
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				resp, body := get(t, c, base+"/swr")
				if resp.StatusCode != 200 || (string(body) != "v1" && string(body) != "v2") {
					t.Errorf("during refresh: %d %q", resp.StatusCode, body)
				}
			})
		}
		wg.Wait()
		poll.Until(t, "the refreshed object", func() bool { _, b := get(t, c, base+"/swr"); return string(b) == "v2" })
		if n := originHits("/swr"); n != 2 {
			t.Errorf("origin requests for /swr = %d, want 2 (the fill and exactly one refresh)", n)
		}
	})
	t.Run("304 revalidation updates stored headers", func(t *testing.T) {
		get(t, c, base+"/etag")
		p.WaitCache()
		version.Store(7)
		poll.Until(t, "a revalidation", func() bool { get(t, c, base+"/etag"); return revalidations.Load() > 0 })
		p.WaitCache()
		resp, body := get(t, c, base+"/etag")
		if string(body) != "0123456789" || resp.Header.Get("X-Version") != "7" {
			t.Errorf("after 304: %q X-Version %q, want the stored body with X-Version 7", body, resp.Header.Get("X-Version"))
		}
	})
	t.Run("HEAD and ranges from the stored GET", func(t *testing.T) {
		get(t, c, base+"/stored?x=1")
		p.WaitCache()
		before := originHits("/stored")
		req, _ := http.NewRequest("HEAD", base+"/stored?x=1", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "9" {
			t.Errorf("HEAD = %d, Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
		}
		resp, body := get(t, c, base+"/stored?x=1", "Range", "bytes=0-1,6-8")
		if resp.StatusCode != 206 || !strings.Contains(string(body), "qu") || !strings.Contains(string(body), "x=1") {
			t.Errorf("multi-range = %d %q", resp.StatusCode, body)
		}
		if n := originHits("/stored") - before; n != 0 {
			t.Errorf("HEAD and range went to the origin %d times, want 0", n)
		}
	})
	t.Run("Authorization never gets another user's response", func(t *testing.T) {
		_, alice := get(t, c, base+"/account", "Authorization", "Bearer alice")
		p.WaitCache()
		_, bob := get(t, c, base+"/account", "Authorization", "Bearer bob")
		_, anon := get(t, c, base+"/account")
		if string(alice) != `account of "Bearer alice"` || string(bob) != `account of "Bearer bob"` || strings.Contains(string(anon), "alice") {
			t.Errorf("alice %q, bob %q, anonymous %q: a response crossed users", alice, bob, anon)
		}
	})
	t.Run("per-site query keys", func(t *testing.T) {
		host := "https://127.0.0.1:" + port(p.Addr())
		get(t, c, host+"/q?a=1&b=2", "Host", "sorted.lab")
		p.WaitCache()
		if _, body := get(t, c, host+"/q?b=2&a=1", "Host", "sorted.lab"); string(body) != "query a=1&b=2" {
			t.Errorf("sorted site: %q, want the stored a=1&b=2", body)
		}
		get(t, c, host+"/q?one", "Host", "noquery.lab")
		p.WaitCache()
		if _, body := get(t, c, host+"/q?two", "Host", "noquery.lab"); string(body) != "query one" {
			t.Errorf("query-ignoring site: %q, want the stored 'query one'", body)
		}
		if _, body := get(t, c, base+"/q?two"); string(body) != "query two" {
			t.Errorf("default site: %q, want its own response", body)
		}
	})
}
