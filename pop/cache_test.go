package pop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop"
)

func TestCacheCoalescesColdSlowObject(t *testing.T) {
	caDir := t.TempDir()
	ca, _ := certs.OpenLabCA(caDir)
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
	p := startPoP(t, caDir, ro.url, nil)
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
	waitFor(t, "all requests to reach the PoP", func() bool {
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
	caDir := t.TempDir()
	ca, _ := certs.OpenLabCA(caDir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, stale-if-error=300")
		w.Write([]byte("kept"))
	})}
	go srv.Serve(ln)
	p := startPoP(t, caDir, "http://"+ln.Addr().String(), func(c *pop.Config) {
		u := c.Upstreams["origin"]
		u.ConnectTimeout = time.Second
		c.Upstreams["origin"] = u
	})
	c := clients(t, ca)["h1"]
	base := "https://localhost:" + port(p.Addr())
	if resp, body := get(t, c, base+"/cached"); resp.StatusCode != 200 || body == nil {
		t.Fatalf("prime: %d", resp.StatusCode)
	}
	p.WaitCache()
	srv.Close() // the origin is gone
	waitFor(t, "the cached object to go stale", func() bool {
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
	caDir := t.TempDir()
	ca, _ := certs.OpenLabCA(caDir)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "catalog")
		w.Write([]byte("item"))
	})
	p := startPoP(t, caDir, ro.url, func(c *pop.Config) { c.Cache.PurgeToken = "s3cret" })
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
