package upstream_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/upstream"
)

// TestClientSeesNoTopology serves misses through a cache whose transport
// is a group, as a PoP does, and checks that the error bodies the cache
// writes from the group's errors name no server and say nothing of
// breakers: with every server refusing connections, before and after they
// are ejected, and with an origin that breaks off a body the cache reads
// whole before answering.
func TestClientSeesNoTopology(t *testing.T) {
	var servers, hosts []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, ln.Addr().String())
		servers = append(servers, "http://"+ln.Addr().String())
		ln.Close() // refuses from now on
	}
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A storable answer other than 200: the cache reads it whole first.
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "start")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer broken.Close()
	for _, tc := range []struct {
		name    string
		servers []string
		hosts   []string
	}{
		{"servers refusing", servers, hosts},
		{"body broken off", []string{broken.URL}, []string{broken.Listener.Addr().String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := upstream.New(upstream.Config{Servers: tc.servers, HealthPath: "-", FailThreshold: 1, MaxEjectionPercent: 100,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			c, err := cache.New(cache.Config{Transport: g, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 4 {
				rec := httptest.NewRecorder()
				c.ServeHTTP(rec, httptest.NewRequest("GET", fmt.Sprintf("http://site.test/miss/%d", i), nil))
				body := rec.Body.String()
				if rec.Code != http.StatusBadGateway {
					t.Errorf("miss #%d = %d %q, want 502", i, rec.Code, body)
				}
				for _, bad := range append(tc.hosts, "127.0.0.1", "ejected", "breaker") {
					if strings.Contains(body, bad) {
						t.Errorf("miss #%d: body %q names %q, want nothing of the origin servers", i, body, bad)
					}
				}
				t.Logf("miss #%d: %d %q", i, rec.Code, strings.TrimSpace(body))
			}
		})
	}
}
