package cache

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// blockedWriter is a client that reads nothing: every Write blocks until
// released.
type blockedWriter struct {
	h       http.Header
	release chan struct{}
	wrote   chan struct{} // closed at the first Write
	once    sync.Once
}

func newBlockedWriter() *blockedWriter {
	return &blockedWriter{h: http.Header{}, release: make(chan struct{}), wrote: make(chan struct{})}
}
func (w *blockedWriter) Header() http.Header { return w.h }
func (w *blockedWriter) WriteHeader(int)     {}
func (w *blockedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.wrote) })
	<-w.release
	return 0, io.ErrClosedPipe
}

// A client that stops reading does not stall the fill: the response is
// stored at the origin's pace (and then served to others) while that
// client's write is still blocked.
func TestStalledClientDoesNotStallFill(t *testing.T) {
	body := strings.Repeat("x", 256<<10)
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	})
	bw := newBlockedWriter()
	defer close(bw.release)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { recover() }() // an aborted response panics with http.ErrAbortHandler
		req := httptest.NewRequest("GET", rg.front.URL+"/stalled", nil)
		rg.cache.ServeHTTP(bw, req)
	}()
	<-bw.wrote
	poll.Until(t, "the response to be stored while its first client's write is blocked (else the fill waits for that client)", func() bool {
		return rg.cache.Stats().Stored > 0
	})
	if _, got := rg.get("/stalled"); got != body || rg.hits.Load() != 1 {
		t.Errorf("another client: %d bytes, %d origin hits; want the stored %d bytes from one fetch", len(got), rg.hits.Load(), len(body))
	}
}

// A client that hangs up before the answer comes, with nobody else
// waiting, cancels the origin request: a reset flood must not keep origin
// slots busy.
func TestClientGoneCancelsFetch(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(20 * time.Second):
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", rg.front.URL+"/slow", nil)
	go func() {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	poll.Until(t, "the request to reach the origin", func() bool { return rg.hits.Load() > 0 })
	cancel()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the origin request went on after its only client left")
	}
	if n := rg.cache.Stats().Cancelled; n != 1 {
		t.Errorf("Stats().Cancelled = %d, want 1", n)
	}
}

// Responses being stored as they arrive hold at most a quarter of the
// cache budget; beyond it a storable response is passed through, paced by
// its client, not buffered.
func TestFillBudget(t *testing.T) {
	body := strings.Repeat("y", 600<<10)
	hold := make(chan struct{})
	// Fill budget 1 MiB: one 600 KiB fill, not two.
	rg := newRigWith(t, Config{MaxBytes: 4 << 20, MaxObjectBytes: 1 << 20}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body[:1024])
		w.(http.Flusher).Flush()
		<-hold
		io.WriteString(w, body[1024:])
	})
	defer close(hold)
	first := make(chan struct{})
	go func() {
		resp, err := http.Get(rg.front.URL + "/a")
		if err == nil {
			close(first)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-first
	resp, err := http.Get(rg.front.URL + "/b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fill-budget") {
		t.Errorf("second 600 KiB fill with a 1 MiB fill budget: Cache-Status %q, want detail=fill-budget", cs)
	}
}

// A client that stops reading a relayed (pass-through) body loses it after
// WriteStallTimeout, and with it the origin stream it held.
func TestStalledClientLosesRelayedBody(t *testing.T) {
	body := strings.Repeat("z", 32<<20) // over MaxObjectBytes: passed through
	released := make(chan struct{}, 1)
	rg := newRigWith(t, Config{WriteStallTimeout: 200 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body) // fails once the cache gives up on its client
		<-r.Context().Done()
		released <- struct{}{}
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(rg.front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: "+strings.TrimPrefix(rg.front.URL, "http://")+"\r\n\r\n")
	// ... and never read.
	select {
	case <-released:
	case <-time.After(15 * time.Second):
		t.Fatal("the origin stream of a client that reads nothing was still held after 15 s (stall timeout 200 ms)")
	}
}
