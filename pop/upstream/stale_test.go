package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// idleOrigin is a loopback origin that closes the connections a client
// leaves idle for idle. By its keep-alive timeout (net/http's
// IdleTimeout), an HTTP/1.1 connection is closed, and an HTTP/2 one sent
// GOAWAY and closed a second later; by its idle timer, the TCP connection
// is closed under the server, as a load balancer drops an idle flow, and
// HTTP/2 sees no GOAWAY. The idle timer closes only a connection with no
// request in progress, and a request the server reads from a connection
// the timer closed is not handled. The origin counts the requests it
// handled by the id each carries (a query for GET, the body for POST),
// notes the connection of the last one, and answers one for
// /close-after-read, the first time, by reading it whole and closing its
// connection.
type idleOrigin struct {
	srv *httptest.Server

	mu    sync.Mutex // guards seen, conns, last
	seen  map[string]int
	conns map[net.Conn]*idleConn
	last  net.Conn
}

// idleConn is a connection under an idle timer.
type idleConn struct {
	timer  *time.Timer
	gen    int  // the timer that may close it
	active bool // a request is in progress
	closed bool // by the timer
}

// How an idleOrigin closes idle connections.
const (
	keepAliveTimeout = "keep-alive timeout"
	idleTimer        = "idle timer"
)

// connKey is the context key of the connection a request came on.
type connKey struct{}

func newIdleOrigin(t testing.TB, tlsOn bool, how string, idle time.Duration) *idleOrigin {
	t.Helper()
	o := &idleOrigin{seen: map[string]int{}, conns: map[net.Conn]*idleConn{}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	o.srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	switch how {
	case keepAliveTimeout:
		o.srv.Config.IdleTimeout = idle
	case idleTimer:
		o.srv.Config.ConnState = func(c net.Conn, st http.ConnState) { o.track(c, st, idle) }
	default:
		t.Fatalf("newIdleOrigin: how %q, want %q or %q", how, keepAliveTimeout, idleTimer)
	}
	if tlsOn {
		o.srv.EnableHTTP2 = true
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	t.Cleanup(func() {
		o.srv.Close()
		o.mu.Lock()
		for _, ic := range o.conns {
			ic.timer.Stop()
		}
		o.mu.Unlock()
	})
	return o
}

// track runs the idle timer of c.
func (o *idleOrigin) track(c net.Conn, st http.ConnState, idle time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ic := o.conns[c]
	if ic == nil {
		ic = &idleConn{}
		o.conns[c] = ic
	}
	if ic.timer != nil {
		ic.timer.Stop()
	}
	ic.gen++
	switch st {
	case http.StateNew, http.StateIdle:
		ic.active = false
		gen := ic.gen
		ic.timer = time.AfterFunc(idle, func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			if ic.gen == gen && !ic.active && !ic.closed {
				ic.closed = true
				closeTCP(c)
			}
		})
	case http.StateActive:
		ic.active = true
	}
}

// closeTCP closes c's TCP connection, under TLS if any: no close_notify,
// no GOAWAY.
func closeTCP(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	c.Close()
}

func (o *idleOrigin) serve(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return // the request did not arrive whole: not handled
		}
		id, _, _ = strings.Cut(string(b), "\n") // the rest is padding
	}
	if id == "" {
		return // a health check
	}
	c := r.Context().Value(connKey{}).(net.Conn)
	o.mu.Lock()
	if ic := o.conns[c]; ic != nil && ic.closed {
		o.mu.Unlock()
		return // read from a connection the idle timer closed: not handled
	}
	o.seen[id]++
	o.last = c
	o.mu.Unlock()
	if r.URL.Path == "/close-after-read" && o.handled(id) == 1 {
		closeTCP(c)
		return
	}
	fmt.Fprintf(w, "ok %s", id)
}

// handled is how many times the origin handled the request id.
func (o *idleOrigin) handled(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[id]
}

// closeLast closes the TCP connection of the last request handled.
func (o *idleOrigin) closeLast() {
	o.mu.Lock()
	defer o.mu.Unlock()
	closeTCP(o.last)
}

// trust returns a pool of the origins' certificates.
func trust(origins ...*idleOrigin) *x509.CertPool {
	p := x509.NewCertPool()
	for _, o := range origins {
		if c := o.srv.Certificate(); c != nil {
			p.AddCert(c)
		}
	}
	return p
}

// sendID sends a GET with id in its query, or a POST with id as a body
// that cannot be had again (no GetBody), as a client's upload to the PoP
// is; it returns the answer's body.
func sendID(g *Group, method, path, id string) (string, error) {
	return sendPadded(g, method, path, id, 0)
}

// sendPadded is sendID with pad bytes after a POST's id.
func sendPadded(g *Group, method, path, id string, pad int) (string, error) {
	url, payload := "http://site.test"+path+"?id="+id, ""
	var body io.Reader
	if method == http.MethodPost {
		url, payload = "http://site.test"+path, id+"\n"+strings.Repeat("p", pad)
		body = io.NopCloser(strings.NewReader(payload))
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = int64(len(payload))
	return roundTripBody(g, req)
}

// roundTripBody sends req through g and returns the answer's body.
func roundTripBody(g *Group, req *http.Request) (string, error) {
	resp, err := g.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

// TestPooledConnClosedByOrigin sends GETs and POSTs, one at a time, to an
// origin that closes connections idle for 200ms, each after a pause swept
// from 150 to 250ms: before the close, about when it happens, and after
// it. Whatever the pause, every GET must be answered, and every POST (whose
// body cannot be had again) handled at most once; and a pooled connection
// the origin closed is no failure of the server.
//
// A POST must be answered too, except one that crossed the origin's close
// on the wire: the origin closed the connection with the POST unread, but
// without a GOAWAY the PoP cannot tell that from a POST the origin read
// and acted on, and must not send it again. Such a POST fails unhandled.
// An HTTP/2 origin that sends GOAWAY says which requests it left alone:
// then every POST must be answered.
func TestPooledConnClosedByOrigin(t *testing.T) {
	const idle = 200 * time.Millisecond
	rounds := 2
	if testing.Short() {
		rounds = 1
	}
	for _, tc := range []struct {
		proto      string
		tls        bool
		how        string
		allPOSTsOK bool
	}{
		{"h1", false, keepAliveTimeout, false},
		{"h1", false, idleTimer, false},
		{"h2", true, keepAliveTimeout, true}, // GOAWAY, then the close
		{"h2", true, idleTimer, false},       // no GOAWAY
	} {
		t.Run(tc.proto+"/"+tc.how, func(t *testing.T) {
			t.Parallel() // each waits out its pauses
			o := newIdleOrigin(t, tc.tls, tc.how, idle)
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: trust(o), HealthPath: "-"})
			if err := g.Start(context.Background()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			pause := time.NewTimer(time.Hour)
			defer pause.Stop()
			var sent, crossed int
			for round := range rounds {
				for ms := 150; ms <= 250; ms += 10 {
					for _, method := range []string{http.MethodGet, http.MethodPost} {
						// The pause is what the test is about, not a wait for an event.
						pause.Reset(time.Duration(ms) * time.Millisecond)
						<-pause.C
						id := fmt.Sprintf("%s-%d-%d", method, round, ms)
						sent++
						body, err := sendID(g, method, "/x", id)
						n := o.handled(id)
						switch {
						case method == http.MethodPost && n > 1:
							t.Errorf("POST after %dms idle: the origin handled it %d times, want once", ms, n)
						case err == nil && body == "ok "+id:
						case method == http.MethodPost && n == 0 && !tc.allPOSTsOK:
							crossed++
							t.Logf("POST after %dms idle crossed the origin's close: %v", ms, err)
						default:
							t.Errorf("%s after %dms idle: %q, %v (origin handled it %d times); want ok %s", method, ms, body, err, n, id)
						}
					}
				}
			}
			st := g.Stats()
			t.Logf("%d requests, %d POSTs crossed the close; retries on a new connection %d", sent, crossed, st.FreshRetries)
			if f := st.Servers[0].Failures; f != int64(crossed) {
				t.Errorf("server failures %d, want %d: a pooled connection the origin closed is no failure of the server", f, crossed)
			}
		})
	}
}

// TestRequestRightAfterOriginClosedConn has the origin close the pooled
// connection the moment it has answered a request, as its keep-alive
// timeout would (without GOAWAY), and sends the next request at once:
// the transport may not have noticed the close yet, and hand the
// connection out again. The request must be answered, and handled once:
// a GET, a POST whose body cannot be had again, and such a POST larger
// than replayLimit (little enough of it is read before the first write).
func TestRequestRightAfterOriginClosedConn(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			poll.CheckGoroutines(t)
			o := newIdleOrigin(t, p.tls, keepAliveTimeout, time.Minute)
			g := newGroup(t, Config{Servers: []string{o.srv.URL}, RootCAs: trust(o), HealthPath: "-"})
			if err := g.Start(context.Background()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			const n = 42
			failed := 0
			for i := range n {
				if _, err := sendID(g, http.MethodGet, "/x", fmt.Sprintf("before-%d", i)); err != nil {
					t.Fatalf("GET #%d on a live connection: %v", i, err)
				}
				o.closeLast()
				method, pad := http.MethodGet, 0
				switch i % 3 {
				case 1:
					method = http.MethodPost
				case 2:
					method, pad = http.MethodPost, 2*replayLimit
				}
				id := fmt.Sprintf("after-%d", i)
				body, err := sendPadded(g, method, "/x", id, pad)
				if h := o.handled(id); err != nil || body != "ok "+id || h != 1 {
					failed++
					t.Errorf("%s #%d (%d bytes of padding) right after the origin closed the connection: %q, %v, handled %d times; want ok %s, once",
						method, i, pad, body, err, h, id)
				}
			}
			st := g.Stats()
			t.Logf("%d of %d failed; retries on a new connection %d", failed, n, st.FreshRetries)
			if f := st.Servers[0].Failures; f != 0 {
				t.Errorf("server failures %d, want 0", f)
			}
		})
	}
}

// TestRequestTheOriginReadAndDropped has the origin read a request whole
// and close its pooled connection without answering. The origin may have
// acted on a POST, so it must not be sent again, on a new connection or to
// another server: RoundTrip fails (the PoP answers 502). A GET is sent
// again, as Go's HTTP/1.1 transport does itself: over HTTP/2, on a new
// connection.
func TestRequestTheOriginReadAndDropped(t *testing.T) {
	for _, p := range protocols {
		for _, tc := range []struct {
			method  string
			ok      bool
			handled int
		}{
			{http.MethodPost, false, 1},
			{http.MethodGet, true, 2},
		} {
			t.Run(p.name+"/"+tc.method, func(t *testing.T) {
				poll.CheckGoroutines(t)
				o := newIdleOrigin(t, p.tls, keepAliveTimeout, time.Minute)
				other := newIdleOrigin(t, p.tls, keepAliveTimeout, time.Minute)
				g := newGroup(t, Config{Servers: []string{o.srv.URL, other.srv.URL}, RootCAs: trust(o, other), HealthPath: "-"})
				if err := g.Start(context.Background()); err != nil {
					t.Fatalf("Start: %v", err)
				}
				// Round robin: the first request goes to o, on a pooled connection.
				body, err := sendID(g, tc.method, "/close-after-read", "dropped")
				if ok := err == nil && body == "ok dropped"; ok != tc.ok {
					t.Errorf("%s the origin read and dropped = %q, %v; want answered %v", tc.method, body, err, tc.ok)
				}
				if n, m := o.handled("dropped"), other.handled("dropped"); n != tc.handled || m != 0 {
					t.Errorf("origin handled the %s %d times, the other server %d; want %d, 0", tc.method, n, m, tc.handled)
				}
				st := g.Stats()
				t.Logf("retries on a new connection %d, to another server %d", st.FreshRetries, st.Retries)
				if tc.method == http.MethodPost && (st.FreshRetries != 0 || st.Retries != 0) {
					t.Errorf("POST: retries on a new connection %d, to another server %d; want 0, 0", st.FreshRetries, st.Retries)
				}
			})
		}
	}
}

// countingBody is a request body that counts its Close calls.
type countingBody struct {
	io.Reader
	closes int
}

func (b *countingBody) Close() error { b.closes++; return nil }

// TestReplay reads a body that cannot be had again through a replay:
// partly, then again from the start, as a transport's retry does.
func TestReplay(t *testing.T) {
	body := strings.Repeat("0123456789", 1000)
	read := func(t *testing.T, r io.Reader, n int64) string {
		t.Helper()
		b, err := io.ReadAll(io.LimitReader(r, n))
		if err != nil {
			t.Fatalf("reading %d bytes: %v", n, err)
		}
		return string(b)
	}
	t.Run("again from the start, then settled", func(t *testing.T) {
		src := &countingBody{Reader: strings.NewReader(body)}
		out, _ := http.NewRequest("POST", "http://site.test/", src)
		rp := replayable(out)
		if got := read(t, out.Body, 4000); got != body[:4000] {
			t.Fatalf("first reader: %d bytes, want the first 4000", len(got))
		}
		out.Body.Close()
		again, err := out.GetBody()
		if err != nil {
			t.Fatalf("GetBody after 4000 bytes: %v", err)
		}
		if n, err := out.Body.Read(make([]byte, 10)); n != 0 || err == nil {
			t.Errorf("first reader after GetBody: %d, %v; want no more", n, err)
		}
		rp.settle()
		if _, err := out.GetBody(); err == nil {
			t.Errorf("GetBody after settle = nil error, want one")
		}
		if got := read(t, again, int64(len(body)+1)); got != body {
			t.Errorf("second reader: %d bytes, want the whole body of %d", len(got), len(body))
		}
		if src.closes != 0 {
			t.Errorf("body closed %d times before its last reader, want 0", src.closes)
		}
		again.Close()
		again.Close()
		if src.closes != 1 {
			t.Errorf("body closed %d times after its last reader, want once", src.closes)
		}
	})
	t.Run("past the limit", func(t *testing.T) {
		big := strings.Repeat("x", replayLimit+1)
		src := &countingBody{Reader: strings.NewReader(big)}
		out, _ := http.NewRequest("POST", "http://site.test/", src)
		rp := replayable(out)
		read(t, out.Body, replayLimit+1)
		if _, err := out.GetBody(); err == nil {
			t.Errorf("GetBody after %d bytes read = nil error, want one", replayLimit+1)
		}
		out.Body.Close()
		rp.settle()
		if src.closes != 1 {
			t.Errorf("body closed %d times, want once", src.closes)
		}
	})
	t.Run("replayable already", func(t *testing.T) {
		out, _ := http.NewRequest("POST", "http://site.test/", strings.NewReader(body)) // sets GetBody
		if rp := replayable(out); rp != nil {
			t.Errorf("replayable(a request with GetBody) = %v, want nil", rp)
		}
	})
}
