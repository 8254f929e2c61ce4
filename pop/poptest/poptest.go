// Package poptest runs real PoPs (pop.Server) on loopback for tests, in
// the manner of net/http/httptest: a test builds a configuration with
// Config, changes what it is about, and starts it with StartPoP, which
// binds 127.0.0.1:0, serves until the test ends and reports what went
// wrong in the test's name. StartGenOrigin gives it an origin to stand in
// front of; certstest gives it a lab CA.
//
// Tests of pop itself (package pop_test) and of the programs and tools
// around it use poptest; the internal tests of the packages a PoP is made
// of (cache, upstream, certs, origin) cannot, as poptest imports them.
// Its subpackage poll, which imports nothing, is for those.
package poptest

import (
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/origin"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest/poll"
	"github.com/edgecdn/cdn/pop/upstream"
)

// Name is the name of the PoPs Config makes: what they send in
// X-Served-By and name themselves with in Cache-Status.
const Name = "pop-test"

// Config returns the configuration of a PoP for a test: pop.DefaultConfig
// named Name, listening on 127.0.0.1:0 for TLS and QUIC and for its admin
// endpoints, with a certificate from ca, and one site, "www", for
// localhost, 127.0.0.1 and www.cdn.lab, proxied to the upstream "origin":
// originURL, health-checked every 200ms so that tests of health need not
// wait long.
func Config(ca *certs.LabCA, originURL string) pop.Config {
	cfg := pop.DefaultConfig()
	cfg.Name = Name
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin = "127.0.0.1:0"
	cfg.TLS.CADir = filepath.Dir(ca.RootPath())
	cfg.Sites = []pop.Site{{Name: "www", Hosts: []string{"localhost", "127.0.0.1", "www.cdn.lab"}, Upstream: "origin"}}
	cfg.Upstreams = map[string]pop.UpstreamConfig{"origin": {Config: upstream.Config{Servers: []string{originURL}, HealthInterval: 200 * time.Millisecond}}}
	return cfg
}

// StartPoP starts a PoP with cfg (pop.New, Listen, then Serve on a
// goroutine it owns) and returns it once its upstream pools are warm. It
// fails the test if any step fails, if Serve returns first, or if the
// pools are not warm within poll.Timeout. When the test ends it closes the
// PoP, waits for Serve to return and fails the test if Serve returned an
// error; a test may Shutdown or Close the PoP itself before.
func StartPoP(t testing.TB, cfg pop.Config) *pop.Server {
	t.Helper()
	srv, err := pop.New(cfg)
	if err != nil {
		t.Fatalf("pop.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		srv.Close()
		t.Fatalf("pop Listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("pop Serve = %v", err)
		}
	})
	timer := time.NewTimer(poll.Timeout)
	defer timer.Stop()
	select {
	case <-srv.Warmed():
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("pop Serve = %v before the upstream pools were warm", err)
	case <-timer.C:
		t.Fatalf("pop upstream pools not warm after %v", poll.Timeout)
	}
	return srv
}

// StartGenOrigin runs an origin.Server with a zero origin.Config (no
// files: generated objects such as /gen/1k and /gen/4m, and /healthz) over
// plain HTTP on 127.0.0.1:0 until the test ends, and returns its URL. It
// fails the test if the origin cannot start, or if Serve ends other than
// by the close at cleanup.
func StartGenOrigin(t testing.TB) string {
	t.Helper()
	srv, err := origin.New(origin.Config{})
	if err != nil {
		t.Fatalf("origin.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("origin listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("origin Serve = %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}
