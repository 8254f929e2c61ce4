package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestErrorsNameNoServer fails requests in every way RoundTrip reports and
// checks that no message names a server, its address or the group's
// make-up, as a PoP may show it to a client, while errors.As still finds
// the *Error with the server for logs and errors.Is the cause.
func TestErrorsNameNoServer(t *testing.T) {
	poll.CheckGoroutines(t)
	plain := newOrigin(t, false, nil) // answers a ClientHello with garbage
	silent := silentListener(t)
	dead := deadAddr(t, "http")
	for _, tc := range []struct {
		name   string
		server string
		cfg    Config
		path   string
		is     error // the cause errors.Is must find
		want   string
	}{
		{"connection refused", dead, Config{}, "/x", syscall.ECONNREFUSED, "origin server failed connecting: connection refused"},
		{"not a TLS server", "https://" + plain.addr(), Config{}, "/x", nil, "origin server failed in the TLS handshake: not a TLS server"},
		{"tls handshake timeout", "https://" + silent, Config{TLSTimeout: 50 * time.Millisecond}, "/x", ErrTimeout, "origin server: tls handshake timeout (50ms): upstream timeout"},
		{"response header timeout", plain.srv.URL, Config{ResponseHeaderTimeout: 50 * time.Millisecond}, "/block", ErrTimeout, "origin server: response header timeout (50ms): upstream timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Servers, cfg.HealthPath, cfg.Retries, cfg.FailThreshold, cfg.MaxEjectionPercent = []string{tc.server}, "-", -1, 1, 100
			g := newGroup(t, cfg)
			// The first request fails and ejects the server; the second goes to
			// it in panic. Neither message may tell.
			for i := range 2 {
				_, _, err := get(t, g, "GET", tc.path)
				var ue *Error
				switch {
				case err == nil:
					t.Fatalf("RoundTrip(GET %s) #%d = nil error, want one", tc.path, i)
				case err.Error() != tc.want:
					t.Errorf("RoundTrip(GET %s) #%d = %q, want %q", tc.path, i, err, tc.want)
				case !errors.As(err, &ue) || ue.Server != tc.server || ue.Err == nil:
					t.Errorf("RoundTrip(GET %s) #%d: *Error with server %v, want %s", tc.path, i, ue, tc.server)
				case tc.is != nil && !errors.Is(err, tc.is):
					t.Errorf("RoundTrip(GET %s) #%d = %v, want errors.Is %v", tc.path, i, err, tc.is)
				}
				noTopology(t, err.Error(), tc.server)
			}
		})
	}
	t.Run("broken body", func(t *testing.T) {
		for _, p := range protocols {
			o := newOrigin(t, p.tls, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "start")
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			})
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: o.pool(), HealthPath: "-"})
			req, _ := http.NewRequest("GET", "http://site.test/broken", nil)
			resp, err := g.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: RoundTrip(GET /broken) = %v, want the headers", p.name, err)
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			var ue *Error
			if !errors.As(err, &ue) || ue.Server != o.srv.URL || !strings.HasPrefix(err.Error(), "origin server failed reading the body") {
				t.Errorf("%s: reading a body the origin broke off = %v, want an *Error for %s, reading the body", p.name, err, o.srv.URL)
			}
			if err != nil {
				noTopology(t, err.Error(), o.srv.URL)
			}
		}
	})
	t.Run("bulkhead and closed", func(t *testing.T) {
		o := newOrigin(t, false, nil)
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-", MaxConcurrent: 1})
		done := make(chan error, 1)
		go func() {
			_, _, err := get(t, g, "GET", "/block")
			done <- err
		}()
		<-o.entered
		_, _, err := get(t, g, "GET", "/x")
		if !errors.Is(err, ErrOverloaded) {
			t.Errorf("RoundTrip(GET /x) beyond MaxConcurrent = %v, want ErrOverloaded", err)
		}
		noTopology(t, err.Error(), o.srv.URL)
		o.unblock()
		<-done
		g.Close()
		_, _, err = get(t, g, "GET", "/x")
		if !errors.Is(err, ErrClosed) {
			t.Errorf("RoundTrip(GET /x) after Close = %v, want ErrClosed", err)
		}
		noTopology(t, err.Error(), o.srv.URL)
	})
	t.Run("client gone", func(t *testing.T) {
		o := newOrigin(t, false, nil)
		g := newGroup(t, Config{Servers: []string{o.srv.URL}, HealthPath: "-"})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-o.entered
			cancel()
		}()
		_, _, err := send(t, g, ctx, "GET", "/block")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RoundTrip(GET /block) cancelled = %v, want context.Canceled", err)
		}
		noTopology(t, err.Error(), o.srv.URL)
	})
}

// noTopology fails the test if msg names server (its URL, host or port),
// a loopback address or the breaker's doings.
func noTopology(t *testing.T, msg, server string) {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	_, port, _ := strings.Cut(host, ":")
	for _, bad := range []string{server, host, ":" + port, "127.0.0.1", "ejected", "breaker"} {
		if strings.Contains(msg, bad) {
			t.Errorf("error %q names %q, want nothing of the group's servers", msg, bad)
		}
	}
}

// TestCause checks the words of causes found without a network, and that
// an error it does not know adds nothing to a message: its text may name
// an address.
func TestCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{context.Canceled, "request cancelled"},
		{syscall.ECONNRESET, "connection reset"},
		{fmt.Errorf("read tcp 10.1.2.3:443: %w", syscall.EPIPE), "connection closed"},
		{errors.New("http2: something new from 10.1.2.3:443"), ""},
	} {
		if got := cause(tc.err); got != tc.want {
			t.Errorf("cause(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
