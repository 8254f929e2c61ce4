package pop_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/origin"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// testOrigin is a real origin server on loopback, over TLS with a lab-CA
// certificate, or over plain HTTP.
type testOrigin struct {
	srv *origin.Server
	url string
}

func startOrigin(t *testing.T, ca *certs.LabCA, root string) *testOrigin {
	t.Helper()
	srv, err := origin.New(origin.Config{Root: root})
	if err != nil {
		t.Fatalf("origin.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, cert) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("origin ServeTLS = %v", err)
		}
	})
	return &testOrigin{srv: srv, url: "https://" + ln.Addr().String()}
}

// recordingOrigin is an origin that records the headers of each request.
type recordingOrigin struct {
	url  string
	mu   sync.Mutex // guards reqs
	reqs []*http.Request
}

// startRecordingOrigin runs an origin over plain HTTP on 127.0.0.1:0 until
// the test ends: h answers (if nil, "recorded"), and every request but
// the PoPs' health checks is recorded. It fails the test if Serve ends
// other than by the close at cleanup.
func startRecordingOrigin(t *testing.T, h http.HandlerFunc) *recordingOrigin {
	t.Helper()
	ro := &recordingOrigin{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("origin listen: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			ro.mu.Lock()
			ro.reqs = append(ro.reqs, r.Clone(context.Background()))
			ro.mu.Unlock()
		}
		if h != nil {
			h(w, r)
			return
		}
		w.Write([]byte("recorded"))
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("origin Serve = %v", err)
		}
	})
	ro.url = "http://" + ln.Addr().String()
	return ro
}

func (ro *recordingOrigin) requests() []*http.Request {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	return append([]*http.Request(nil), ro.reqs...)
}

func port(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// clients returns an HTTP/1.1, an HTTP/2 and an HTTP/3 client trusting the lab CA.
func clients(t *testing.T, ca *certs.LabCA) map[string]*http.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.RootPool()}
	h1 := &http.Transport{TLSClientConfig: tc.Clone()}
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	h2 := &http.Transport{TLSClientConfig: tc.Clone(), ForceAttemptHTTP2: true}
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetHTTP2(true)
	h3 := &http3.Transport{TLSClientConfig: tc.Clone()}
	t.Cleanup(func() { h1.CloseIdleConnections(); h2.CloseIdleConnections(); h3.Close() })
	return map[string]*http.Client{"h1": {Transport: h1}, "h2": {Transport: h2}, "h3": {Transport: h3}}
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, body
}

func TestProtocolsServeIdenticalBytes(t *testing.T) {
	ca := certstest.LabCA(t)
	root := t.TempDir()
	page := bytes.Repeat([]byte("<p>edge</p>\n"), 5000)
	os.WriteFile(filepath.Join(root, "index.html"), page, 0o644)
	o := startOrigin(t, ca, root)
	p := poptest.StartPoP(t, poptest.Config(ca, o.url))
	base := "https://localhost:" + port(p.Addr())

	for _, path := range []string{"/index.html", "/gen/100k"} {
		var want []byte
		for _, proto := range []string{"h1", "h2", "h3"} {
			resp, body := get(t, clients(t, ca)[proto], base+path)
			if resp.StatusCode != 200 {
				t.Fatalf("%s GET %s = %d, want 200", proto, path, resp.StatusCode)
			}
			if got, wantMajor := resp.ProtoMajor, int(proto[1]-'0'); got != wantMajor {
				t.Errorf("%s GET %s: ProtoMajor = %d, want %d", proto, path, got, wantMajor)
			}
			altSvc := resp.Header.Get("Alt-Svc")
			if proto != "h3" && altSvc != `h3=":`+port(p.Addr())+`"; ma=86400` {
				t.Errorf("%s GET %s: Alt-Svc = %q, want h3 on port %s", proto, path, altSvc, port(p.Addr()))
			}
			if got := resp.Header.Get("X-Served-By"); got != poptest.Name {
				t.Errorf("%s: X-Served-By = %q, want %s", proto, got, poptest.Name)
			}
			if want == nil {
				want = body
				continue
			}
			if !bytes.Equal(body, want) {
				t.Errorf("%s GET %s: %d bytes differ from h1's %d bytes", proto, path, len(body), len(want))
			}
		}
		if path == "/index.html" && !bytes.Equal(want, page) {
			t.Errorf("GET /index.html through the PoP differs from the file")
		}
	}
}

func TestWarmPoolHandshakesBeforeFirstRequest(t *testing.T) {
	ca := certstest.LabCA(t)
	o := startOrigin(t, ca, t.TempDir())
	p := poptest.StartPoP(t, poptest.Config(ca, o.url))
	before := o.srv.Stats().TLSHandshakes
	if before < 1 {
		t.Fatalf("origin TLS handshakes after PoP start = %d, want at least 1 before any client request", before)
	}
	c := clients(t, ca)["h2"]
	for range 5 {
		if resp, _ := get(t, c, "https://localhost:"+port(p.Addr())+"/gen/1k"); resp.StatusCode != 200 {
			t.Fatalf("GET = %d", resp.StatusCode)
		}
	}
	if after := o.srv.Stats().TLSHandshakes; after != before {
		t.Errorf("origin TLS handshakes: %d after client requests, %d before; want no new handshake", after, before)
	}
}

func TestUnknownHostRefusedWithoutOriginContact(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	c := clients(t, ca)
	base := "https://127.0.0.1:" + port(p.Addr())
	for _, host := range []string{"evil.example", "localhost.evil.example", "www.cdn.lab.evil", "127.0.0.2"} {
		for _, proto := range []string{"h1", "h2", "h3"} {
			resp, body := get(t, c[proto], base+"/x", "Host", host)
			if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(body), host) {
				t.Errorf("%s Host %q: %d %q, want 421 naming the host", proto, host, resp.StatusCode, body)
			}
		}
	}
	// An absolute-form request line must not make the PoP fetch that URL.
	conn, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
	reply, _ := io.ReadAll(conn)
	conn.Close()
	if !bytes.HasPrefix(reply, []byte("HTTP/1.1 421")) {
		t.Errorf("absolute-form request: %q, want 421", firstLine(reply))
	}
	// CONNECT, even to a served host, must not open a tunnel.
	conn, err = tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "CONNECT www.cdn.lab:443 HTTP/1.1\r\nHost: www.cdn.lab:443\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, _ := conn.Read(buf)
	conn.Close()
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 405")) {
		t.Errorf("CONNECT: %q, want 405", firstLine(buf[:n]))
	}
	if n := len(ro.requests()); n != 0 {
		t.Errorf("origin saw %d requests for unknown hosts or CONNECT, want 0", n)
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\r\n")
	return s
}

func TestOriginFailures(t *testing.T) {
	ca := certstest.LabCA(t)
	c := clients(t, ca)["h2"]

	t.Run("origin down gives 502", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := "http://" + ln.Addr().String()
		ln.Close()
		p := poptest.StartPoP(t, poptest.Config(ca, dead))
		resp, body := get(t, c, "https://localhost:"+port(p.Addr())+"/x")
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("GET with origin down = %d %q, want 502", resp.StatusCode, body)
		}
	})
	t.Run("origin hanging gives 504 within the timeout", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hang" {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		})
		const timeout = 300 * time.Millisecond
		cfg := poptest.Config(ca, ro.url)
		u := cfg.Upstreams["origin"]
		u.ResponseHeaderTimeout = timeout
		cfg.Upstreams["origin"] = u
		p := poptest.StartPoP(t, cfg)
		start := time.Now()
		resp, body := get(t, c, "https://localhost:"+port(p.Addr())+"/hang")
		took := time.Since(start)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("GET /hang = %d %q, want 504", resp.StatusCode, body)
		}
		if took < timeout || took > timeout+5*time.Second {
			t.Errorf("504 after %v, want soon after the %v timeout", took, timeout)
		}
	})
}

func TestProxyHygiene(t *testing.T) {
	for _, cached := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", cached), func(t *testing.T) { proxyHygiene(t, cached) })
	}
}

func proxyHygiene(t *testing.T, cached bool) {
	ca := certstest.LabCA(t)
	originDate := "Tue, 01 Jan 2030 00:00:00 GMT"
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", originDate)
		w.Header().Set("Connection", "X-Origin-Hop")
		w.Header().Set("X-Origin-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Write([]byte("ok"))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Cache.Disabled = !cached
	p := poptest.StartPoP(t, cfg)
	resp, _ := get(t, clients(t, ca)["h1"], "https://localhost:"+port(p.Addr())+"/h",
		"Connection", "X-Client-Hop", "X-Client-Hop", "1", "X-Forwarded-For", "6.6.6.6", "Via", "1.1 client-proxy", "Te", "trailers")
	reqs := ro.requests()
	if len(reqs) != 1 {
		t.Fatalf("origin saw %d requests, want 1", len(reqs))
	}
	got := reqs[0].Header
	if got.Get("X-Client-Hop") != "" {
		t.Errorf("header named in Connection reached the origin")
	}
	if xff := got.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the client address only (127.0.0.1)", xff)
	}
	if xfp := got.Get("X-Forwarded-Proto"); xfp != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want https", xfp)
	}
	if via := strings.Join(got.Values("Via"), ", "); via != "1.1 client-proxy, 1.1 "+poptest.Name {
		t.Errorf("request Via = %q, want the client's then ours", via)
	}
	if reqs[0].Host != "localhost:"+port(p.Addr()) {
		t.Errorf("origin Host = %q, want the client's Host", reqs[0].Host)
	}
	if resp.Header.Get("Date") != originDate {
		t.Errorf("Date = %q, want the origin's %q", resp.Header.Get("Date"), originDate)
	}
	if resp.Header.Get("X-Origin-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response headers reached the client: %v", resp.Header)
	}
	if via := resp.Header.Get("Via"); !strings.Contains(via, poptest.Name) {
		t.Errorf("response Via = %q, want it to name the PoP", via)
	}
}

// h3Dial opens an early (0-RTT capable) QUIC connection to the PoP.
func h3Dial(t *testing.T, addr string, tc *tls.Config) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddrEarly(ctx, addr, http3.ConfigureTLSConfig(tc), &quic.Config{})
	if err != nil {
		t.Fatalf("quic dial: %v", err)
	}
	return conn
}

func metric(t *testing.T, p *pop.Server, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func TestZeroRTT(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	addr := "localhost:" + port(p.Addr())
	cache := tls.NewLRUClientSessionCache(8)
	tc := &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", ClientSessionCache: cache}

	// First connection: full handshake, gets a session ticket.
	tr := &http3.Transport{TLSClientConfig: tc}
	resp, _ := get(t, &http.Client{Transport: tr}, "https://"+addr+"/first")
	if resp.StatusCode != 200 {
		t.Fatalf("first GET = %d", resp.StatusCode)
	}
	tr.Close()

	// A request sent in 0-RTT can race the handshake's completion on
	// loopback, so try a few fresh connections; each must resume with 0-RTT.
	var sawEarlyGET, saw425 bool
	for attempt := 0; attempt < 5 && !(sawEarlyGET && saw425); attempt++ {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			conn := h3Dial(t, addr, tc)
			cc := (&http3.Transport{}).NewClientConn(conn)
			str, err := cc.OpenRequestStream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// The POST has no body: unsafe is unsafe whatever it carries, and
			// a body the server never reads would race its 425.
			req, _ := http.NewRequest(method, "https://"+addr+"/early", nil)
			if err := str.SendRequestHeader(req); err != nil {
				t.Fatal(err)
			}
			str.Close()
			resp, err := str.ReadResponse()
			if err != nil {
				t.Fatalf("%s in 0-RTT: %v", method, err)
			}
			io.Copy(io.Discard, resp.Body)
			if !conn.ConnectionState().Used0RTT {
				t.Fatalf("attempt %d: connection did not use 0-RTT", attempt)
			}
			switch {
			case method == http.MethodPost && resp.StatusCode == http.StatusTooEarly:
				saw425 = true
			case method == http.MethodPost && resp.StatusCode != http.StatusOK:
				t.Errorf("POST in 0-RTT = %d, want 425 (or 200 if the handshake won the race)", resp.StatusCode)
			case method == http.MethodGet && resp.StatusCode != http.StatusOK:
				t.Errorf("GET in 0-RTT = %d, want 200", resp.StatusCode)
			}
			conn.CloseWithError(0, "")
		}
		for _, r := range ro.requests() {
			if r.URL.Path == "/early" && r.Method == http.MethodGet && r.Header.Get("Early-Data") == "1" {
				sawEarlyGET = true
			}
		}
	}
	if !sawEarlyGET {
		t.Errorf("no GET reached the origin with Early-Data: 1")
	}
	if !saw425 {
		t.Errorf("no POST in 0-RTT got 425 Too Early")
	}
	for _, r := range ro.requests() {
		if r.Method == http.MethodPost && r.Header.Get("Early-Data") == "1" {
			t.Errorf("a POST from early data reached the origin")
		}
	}
	if m := metric(t, p, `pop_early_data_requests_total{result="accepted"}`); m == "" || strings.HasSuffix(m, " 0") {
		t.Errorf("metrics: %q, want accepted early-data requests counted", m)
	}
}

func TestResumptionAcrossPoPs(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	keyFile := filepath.Join(t.TempDir(), "ticket.key")
	os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600)
	shared := func() pop.Config {
		cfg := poptest.Config(ca, ro.url)
		cfg.TLS.TicketKeyFile = keyFile
		return cfg
	}
	popEU := poptest.StartPoP(t, shared())
	popNA := poptest.StartPoP(t, shared())
	loner := poptest.StartPoP(t, poptest.Config(ca, ro.url))

	for _, transport := range []string{"tcp", "quic"} {
		for _, tc := range []struct {
			name   string
			second *pop.Server
			want   bool
		}{{"shared keys", popNA, true}, {"own keys", loner, false}} {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				cfg := &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(8)}
				first := resumedVia(t, transport, popEU, cfg)
				if first {
					t.Fatalf("first handshake resumed, want a full one")
				}
				if got := resumedVia(t, transport, tc.second, cfg); got != tc.want {
					t.Errorf("resumed on the second PoP = %v, want %v", got, tc.want)
				}
			})
		}
	}
}

// resumedVia makes one request to p over TCP (HTTP/2) or QUIC (HTTP/3) on a
// new connection and reports whether the TLS session resumed.
func resumedVia(t *testing.T, transport string, p *pop.Server, tc *tls.Config) bool {
	t.Helper()
	url := "https://localhost:" + port(p.Addr()) + "/r"
	var rt http.RoundTripper
	if transport == "tcp" {
		tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		rt = tr
	} else {
		// A plain (not early) dial: the client must not try 0-RTT here,
		// only resumption.
		tr := &http3.Transport{TLSClientConfig: tc, Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tlsCfg, cfg)
		}}
		defer tr.Close()
		rt = tr
	}
	resp, _ := get(t, &http.Client{Transport: rt}, url)
	if resp.TLS == nil {
		t.Fatalf("%s: no TLS state", transport)
	}
	return resp.TLS.DidResume
}

func TestAdminReadinessAndDrain(t *testing.T) {
	ca := certstest.LabCA(t)
	release := make(chan struct{})
	var inFlight atomic.Int32
	started := make(chan struct{}, 1)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			inFlight.Add(1)
			started <- struct{}{}
			<-release
		}
		w.Write([]byte("done"))
	})
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	admin := "http://" + p.AdminAddr().String()
	status := func(path string) int {
		resp, err := http.Get(admin + path)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/livez"); got != 200 {
		t.Errorf("/livez = %d, want 200", got)
	}
	if got := status("/readyz"); got != 200 {
		t.Errorf("/readyz = %d, want 200 once warm", got)
	}
	body := func(path string) string {
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := body("/ca.pem"); got != string(ca.RootPEM()) {
		t.Errorf("/ca.pem = %q, want the lab CA's root", got)
	}
	if got, want := strings.TrimSpace(body("/spki")), certs.SPKIPin(p.Leaf().Leaf); got != want {
		t.Errorf("/spki = %q, want %q", got, want)
	}
	c := clients(t, ca)["h2"]
	type result struct {
		code int
		body string
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://localhost:" + port(p.Addr()) + "/slow")
		if err != nil {
			resc <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resc <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-started
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- p.Shutdown(context.Background()) }()
	// Draining: readyz goes false while the request is still in flight.
	poll.Until(t, "/readyz to answer 503 during drain", func() bool { return status("/readyz") == http.StatusServiceUnavailable })
	close(release)
	r := <-resc
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Errorf("in-flight request during drain: %d %q %v, want 200 done", r.code, r.body, r.err)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

func TestHardeningLimits(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.MaxHeaderBytes = 4096
	cfg.Limits.MaxBodyBytes = 1000
	cfg.Limits.RateLimit = 1
	cfg.Limits.RateBurst = 3
	cfg.Sites = append(cfg.Sites, pop.Site{Hosts: []string{"limited.lab"}, Upstream: "origin"})
	p := poptest.StartPoP(t, cfg)
	base := "https://localhost:" + port(p.Addr())
	cs := clients(t, ca)
	for _, proto := range []string{"h1", "h2"} {
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 20000))
		resp, err := cs[proto].Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%s oversize header = %d, want 431", proto, resp.StatusCode)
			}
		} // HTTP/2 may reset the stream instead: also a refusal
	}
	resp, err := cs["h2"].Post(base+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, 5000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("5000-byte body over a 1000-byte limit = %d, want 413", resp.StatusCode)
	}
	var limited int
	for range 10 {
		resp, _ := get(t, cs["h1"], base+"/", "Host", "limited.lab")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Errorf("10 quick requests at 1/s with burst 3: none got 429")
	}
}

// TestServerLeavesNoGoroutines: a PoP that served over each protocol (and
// had a plain HTTP listener) leaves no goroutine behind once it has shut
// down and the test's clients and origin are closed.
func TestServerLeavesNoGoroutines(t *testing.T) {
	poll.CheckGoroutines(t)
	ca := certstest.LabCA(t)
	o := startOrigin(t, ca, t.TempDir())
	cfg := poptest.Config(ca, o.url)
	cfg.HTTP = "127.0.0.1:0"
	p := poptest.StartPoP(t, cfg)
	cs := clients(t, ca)
	for _, proto := range []string{"h1", "h2", "h3"} {
		if resp, _ := get(t, cs[proto], "https://localhost:"+port(p.Addr())+"/gen/1k"); resp.StatusCode != 200 {
			t.Fatalf("%s GET = %d", proto, resp.StatusCode)
		}
		cs[proto].CloseIdleConnections()
	}
	cs["h3"].Transport.(*http3.Transport).Close()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

func TestBulkheadAnswers503WithRetryAfter(t *testing.T) {
	for _, cached := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", cached), func(t *testing.T) { bulkhead(t, cached) })
	}
}

func bulkhead(t *testing.T, cached bool) {
	ca := certstest.LabCA(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("ok"))
	})
	t.Cleanup(func() { close(release) })
	cfg := poptest.Config(ca, ro.url)
	u := cfg.Upstreams["origin"]
	u.MaxConcurrent = 1
	cfg.Upstreams["origin"] = u
	cfg.Cache.Disabled = !cached
	p := poptest.StartPoP(t, cfg)
	c := clients(t, ca)["h2"]
	base := "https://localhost:" + port(p.Addr())
	go func() {
		if resp, err := c.Get(base + "/block"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	resp, body := get(t, c, base+"/other")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("with the bulkhead full: %d Retry-After %q %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// TestMaxInflightSheds: with the PoP's in-flight limit reached, one more
// request gets 503 with Retry-After at once (it does not queue), and once
// the held requests finish the PoP serves again.
func TestMaxInflightSheds(t *testing.T) {
	ca := certstest.LabCA(t)
	release := make(chan struct{})
	var held sync.WaitGroup
	held.Add(4)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/hold/") {
			held.Done()
			<-release
		}
		w.Write([]byte("ok"))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.MaxInflight = 4
	p := poptest.StartPoP(t, cfg)
	base := "https://localhost:" + port(p.Addr())
	c := clients(t, ca)["h2"]
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			resp, err := c.Get(fmt.Sprintf("%s/hold/%d", base, i))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("held request %d = %d", i, resp.StatusCode)
				}
			}
			errs <- err
		}()
	}
	held.Wait() // four requests are at the origin, holding the PoP's four slots
	resp, body := get(t, c, base+"/more")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fifth request with 4 in flight = %d (Retry-After %q) %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	close(release)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if resp, _ := get(t, c, base+"/after"); resp.StatusCode != http.StatusOK {
		t.Errorf("after the held requests finished = %d, want 200", resp.StatusCode)
	}
	for _, r := range ro.requests() {
		if r.URL.Path == "/more" {
			t.Errorf("the shed request reached the origin")
		}
	}
}

// TestRateLimitOnFastPaths: with a per-address rate limit the fast paths
// stay on (hits over h1, h2 and h3 are served by them while tokens last)
// and charge the same bucket, so once it is empty every protocol's hits
// get 429, as the ordinary path's requests do.
func TestRateLimitOnFastPaths(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Write([]byte("cached"))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.RateLimit = 0.01 // no token comes back during the test
	cfg.Limits.RateBurst = 4
	p := poptest.StartPoP(t, cfg)
	url := "https://localhost:" + port(p.Addr()) + "/obj"
	cs := clients(t, ca)
	// Four tokens: the miss that stores the object (over h2, where a miss
	// does not move the connection off the fast path as it does for
	// HTTP/1.1), then one hit per protocol.
	for _, proto := range []string{"h2", "h1", "h2", "h3"} {
		if resp, body := get(t, cs[proto], url); resp.StatusCode != 200 || string(body) != "cached" {
			t.Fatalf("%s with tokens left: %d %q, want 200 \"cached\"", proto, resp.StatusCode, body)
		}
	}
	if n := p.FastHits(); n != (pop.FastHits{HTTP1: 1, HTTP2: 1, HTTP3: 1}) {
		t.Errorf("fast-path hits %+v, want one per protocol: the fast paths are off under a rate limit", n)
	}
	for _, proto := range []string{"h1", "h2", "h3", "h1", "h2", "h3"} {
		resp, _ := get(t, cs[proto], url)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s hit with the bucket empty: %d (Retry-After %q), want 429 with Retry-After", proto, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if n := len(ro.requests()); n != 1 {
		t.Errorf("origin saw %d requests, want 1", n)
	}
}
