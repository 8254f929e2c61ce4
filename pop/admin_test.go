package pop_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// stoppableOrigin is a plain HTTP origin on a fixed loopback address that
// a test can stop and start again on the same address.
type stoppableOrigin struct {
	t    *testing.T
	addr string
	srv  *http.Server
	done chan error
}

func startStoppableOrigin(t *testing.T) *stoppableOrigin {
	t.Helper()
	o := &stoppableOrigin{t: t, addr: "127.0.0.1:0"}
	o.start()
	t.Cleanup(o.stop)
	return o
}

func (o *stoppableOrigin) start() {
	o.t.Helper()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		o.t.Skipf("origin address %s taken again before the test could reuse it: %v", o.addr, err)
	}
	o.addr = ln.Addr().String()
	o.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	o.done = make(chan error, 1)
	go func() { o.done <- o.srv.Serve(ln) }()
}

func (o *stoppableOrigin) stop() {
	if o.srv == nil {
		return
	}
	o.srv.Close()
	if err := <-o.done; !errors.Is(err, http.ErrServerClosed) {
		o.t.Errorf("origin Serve = %v", err)
	}
	o.srv = nil
}

// adminGet returns the status, X-PoP-Degraded header and body of an admin path.
func adminGet(t *testing.T, admin, path string) (int, string, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-PoP-Degraded"), string(b)
}

// metricValue returns the value of an unlabelled series on /metrics.
func metricValue(t *testing.T, admin, name string) string {
	t.Helper()
	_, _, body := adminGet(t, admin, "/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v
		}
	}
	return "missing"
}

// TestReadyWithOriginDown: a PoP whose origin is down can still serve
// cached and stale content, so /readyz stays 200 and reports the origin
// trouble as degraded (header, body, pop_degraded); draining is still 503.
func TestReadyWithOriginDown(t *testing.T) {
	ca := certstest.LabCA(t)
	o := startStoppableOrigin(t)
	cfg := poptest.Config(ca, "http://"+o.addr)
	cfg.DrainDelay = time.Minute // ended by the test
	p := poptest.StartPoP(t, cfg)
	admin := p.AdminAddr().String()

	if code, deg, body := adminGet(t, admin, "/readyz"); code != 200 || deg != "" || body != "ready\n" {
		t.Errorf("/readyz with the origin up = %d, X-PoP-Degraded %q, %q; want 200, none, \"ready\\n\"", code, deg, body)
	}
	if got := metricValue(t, admin, "pop_degraded"); got != "0" {
		t.Errorf("pop_degraded with the origin up = %s, want 0", got)
	}

	o.stop()
	poll.Until(t, "the PoP to report degraded", p.Degraded)
	code, deg, body := adminGet(t, admin, "/readyz")
	if want := "ready; degraded: upstream origin has no healthy server"; code != 200 || deg != "1" || !strings.Contains(body, want) {
		t.Errorf("/readyz with the origin down = %d, X-PoP-Degraded %q, %q; want 200, 1, %q", code, deg, body, want)
	}
	if !p.Ready() {
		t.Errorf("Ready() with the origin down = false, want true: the PoP can serve cached content")
	}
	if got := metricValue(t, admin, "pop_degraded"); got != "1" {
		t.Errorf("pop_degraded with the origin down = %s, want 1", got)
	}

	o.start()
	poll.Until(t, "the PoP to recover from degraded", func() bool { return !p.Degraded() })
	if code, deg, _ := adminGet(t, admin, "/readyz"); code != 200 || deg != "" {
		t.Errorf("/readyz with the origin back = %d, X-PoP-Degraded %q; want 200, none", code, deg)
	}
	if got := metricValue(t, admin, "pop_degraded"); got != "0" {
		t.Errorf("pop_degraded with the origin back = %s, want 0", got)
	}

	// Draining wins over degraded: 503 for the whole drain delay.
	o.stop()
	poll.Until(t, "the PoP to report degraded again", p.Degraded)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	poll.Until(t, "/readyz 503 while draining", func() bool {
		code, _, body := adminGet(t, admin, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	if p.Ready() {
		t.Errorf("Ready() while draining = true, want false")
	}
	cancel() // end the drain delay
	<-done
}
