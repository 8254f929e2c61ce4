package pop_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgecdn/cdn/bench/drill"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestHostileHTTP1 sends malformed and smuggling-shaped requests: each
// must get a 4xx (or a closed connection), none may reach the origin, and
// the PoP must keep serving others without leaking goroutines.
func TestHostileHTTP1(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	addr := p.Addr().String()
	before := runtime.NumGoroutine()
	// The one hostile HTTP/1.1 corpus, which the lab's hostile drill sends
	// too; each case says what it may get besides a 4xx (Also).
	for _, hr := range drill.HostileHTTP1("localhost") {
		t.Run(hr.Name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, hr.Raw)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return // the PoP closed the connection: refused
			}
			resp.Body.Close()
			if (resp.StatusCode < 400 || resp.StatusCode > 499) && resp.StatusCode != hr.Also {
				t.Errorf("%q got %d, want a 4xx", hr.Name, resp.StatusCode)
			}
		})
	}
	// Nothing smuggled reaches the origin, and nothing for a foreign host.
	// (Well-formed heads of the lenient cases above may; a POST with a
	// broken chunked body has been streamed before the break is seen.)
	for _, r := range ro.requests() {
		if r.URL.Path == "/smuggled" || r.Host != "localhost" {
			t.Errorf("a smuggled request reached the origin: %s %s (Host %s)", r.Method, r.URL, r.Host)
		}
	}
	// Others are unaffected.
	if resp, _ := get(t, clients(t, ca)["h2"], "https://localhost:"+port(p.Addr())+"/after"); resp.StatusCode != 200 {
		t.Errorf("a normal request after the corpus = %d", resp.StatusCode)
	}
	poll.Until(t, "the corpus's goroutines to end", func() bool { return runtime.NumGoroutine() <= before+10 })
}

// TestSlowlorisIsCut holds a connection open sending a header byte at a
// time: the PoP must close it after its read-header timeout.
func TestSlowlorisIsCut(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	// The default read-header timeout is 10 s; a test PoP would be slow to
	// show it, so the check is that the server closes the connection at all
	// within a bound, while we trickle bytes.
	conn, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n")
	start := time.Now()
	closed := false
	for time.Since(start) < 20*time.Second {
		conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := io.WriteString(conn, "X-A: b\r\n"); err != nil {
			closed = true
			break
		}
		buf := make([]byte, 1)
		if _, err := conn.Read(buf); err != nil && !isTimeout(err) {
			closed = true
			break
		}
	}
	if !closed {
		t.Errorf("a slowloris connection is still open after %v", time.Since(start))
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(interface{ Timeout() bool })
	return ok && ne.Timeout()
}

// TestUnkeyedHeadersCannotPoison: the forwarding headers a client sends
// are replaced by the PoP, so an origin that reflects them cannot be made
// to cache an attacker's value for everyone.
func TestUnkeyedHeadersCannotPoison(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "host="+r.Header.Get("X-Forwarded-Host")+" proto="+r.Header.Get("X-Forwarded-Proto")+
			" for="+r.Header.Get("X-Forwarded-For")+" fwd="+r.Header.Get("Forwarded"))
	})
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	c := clients(t, ca)["h2"]
	url := "https://localhost:" + port(p.Addr()) + "/reflect"
	_, attacker := get(t, c, url, "X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http",
		"X-Forwarded-For", "6.6.6.6", "Forwarded", "host=evil.example;proto=http")
	p.WaitCache()
	_, victim := get(t, c, url)
	for _, body := range []string{string(attacker), string(victim)} {
		if strings.Contains(body, "evil") || strings.Contains(body, "6.6.6.6") || strings.Contains(body, "proto=http ") {
			t.Errorf("a client's forwarding headers reached the origin: %q", body)
		}
	}
	if string(victim) != string(attacker) {
		t.Errorf("victim got %q, attacker %q: want the same stored response", victim, attacker)
	}
}

// TestHTTP2RapidResetAndHeaderFlood opens streams and resets them at once
// by the thousand (CVE-2023-44487), then floods a stream with CONTINUATION
// frames: the PoP must stay up for others and let go of the goroutines.
func TestHTTP2RapidResetAndHeaderFlood(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	before := runtime.NumGoroutine()
	attack := func(t *testing.T, f func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer)) {
		conn, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, http2.ClientPreface)
		fr := http2.NewFramer(conn, conn)
		fr.WriteSettings()
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		f(fr, enc, &buf)
		// Drain what the server says until it hangs up or goes quiet.
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}
	headers := func(enc *hpack.Encoder, buf *bytes.Buffer) []byte {
		buf.Reset()
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/gen/1k"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		return append([]byte(nil), buf.Bytes()...)
	}
	t.Run("rapid reset", func(t *testing.T) {
		attack(t, func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			for i := uint32(1); i < 4000; i += 2 {
				if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: headers(enc, buf), EndStream: true, EndHeaders: true}) != nil {
					return
				}
				if fr.WriteRSTStream(i, http2.ErrCodeCancel) != nil {
					return
				}
			}
		})
	})
	t.Run("continuation flood", func(t *testing.T) {
		attack(t, func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headers(enc, buf), EndHeaders: false}) != nil {
				return
			}
			junk := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 3000)
			for range 200 {
				if fr.WriteContinuation(1, false, junk) != nil {
					return
				}
			}
		})
	})
	if resp, _ := get(t, clients(t, ca)["h2"], "https://localhost:"+port(p.Addr())+"/gen/1k"); resp.StatusCode != 200 {
		t.Errorf("a normal request after the attacks = %d", resp.StatusCode)
	}
	poll.Until(t, "the attack's goroutines to end", func() bool { return runtime.NumGoroutine() <= before+10 })
}

// Override fields are stripped before the cache and the origin see the
// request (a site may keep them), and denied paths never leave the edge.
func TestStripOverridesAndDenyPaths(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	overrides := []string{"X-Original-URL", "/admin", "X-Rewrite-URL", "/admin", "X-HTTP-Method-Override", "DELETE",
		"X-Forwarded-Port", "1234", "X-Forwarded-Scheme", "http", "X-Forwarded-Server", "evil", "X-Host", "evil.example"}
	for _, tt := range []struct {
		name       string
		keep       bool // the site strips no fields and denies no paths
		wantStrip  bool
		wantDenied bool
	}{
		{"defaults", false, true, true},
		{"site keeps them", true, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := poptest.Config(ca, ro.url)
			if tt.keep {
				cfg.Sites[0].StripRequestHeaders, cfg.Sites[0].DenyPaths = []string{}, []string{}
			}
			p := poptest.StartPoP(t, cfg)
			c := clients(t, ca)["h2"]
			base := "https://localhost:" + port(p.Addr())
			path := "/strip-" + strings.ReplaceAll(tt.name, " ", "-")
			if resp, _ := get(t, c, base+path, overrides...); resp.StatusCode != 200 {
				t.Fatalf("GET %s = %d", path, resp.StatusCode)
			}
			for _, r := range ro.requests() {
				if r.URL.Path != path {
					continue
				}
				for i := 0; i < len(overrides); i += 2 {
					if got := r.Header.Get(overrides[i]); (got != "") == tt.wantStrip {
						t.Errorf("origin saw %s = %q; stripped: %v", overrides[i], got, tt.wantStrip)
					}
				}
			}
			for _, denied := range []string{"/_origin/stats", "/_origin", "/static/../_origin/stats", "/%5Forigin/stats"} {
				resp, _ := get(t, c, base+denied)
				if (resp.StatusCode == 404) != tt.wantDenied {
					t.Errorf("GET %s = %d; denied: %v", denied, resp.StatusCode, tt.wantDenied)
				}
			}
			if tt.wantDenied {
				for _, r := range ro.requests() {
					if strings.Contains(r.URL.Path, "_origin") {
						t.Errorf("a denied path reached the origin: %s", r.URL)
					}
				}
			}
		})
	}
}

// One address cannot hold more than its share of connections, TCP or
// QUIC; a closed connection gives its slot back. A TLS connection that
// never sends a request (HTTP/1.1) or stops after the HTTP/2 preface is
// closed after the read-header timeout, not kept for the idle timeout.
func TestConnectionLimitsAndFirstRequestDeadline(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.MaxConnsPerAddr = 5
	cfg.Limits.MaxQUICConnsPerAddr = 3
	cfg.Limits.ReadHeaderTimeout = 300 * time.Millisecond
	cfg.Limits.IdleTimeout = time.Hour
	p := poptest.StartPoP(t, cfg)
	addr := p.Addr().String()
	dial := func(proto string) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{proto}})
	}
	// closed reports whether the server ends the connection (read error
	// before our own 10 s deadline).
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	t.Run("first request deadline", func(t *testing.T) {
		c, err := dial("http/1.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !closed(c) {
			t.Errorf("an HTTP/1.1 connection that sent nothing was kept past the read-header timeout")
		}
		c2, err := dial("h2")
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		io.WriteString(c2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, c2) // the server's SETTINGS, then the close
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("an HTTP/2 connection that sent only the preface was kept")
		}
	})
	t.Run("tcp per address", func(t *testing.T) {
		var held []*tls.Conn
		for i := range 5 {
			// The earlier subtests' connections count against the limit
			// until the server has seen them close.
			var c *tls.Conn
			poll.Within(t, 5*time.Second, fmt.Sprintf("connection %d of 5 accepted", i+1), func() bool {
				var err error
				c, err = dial("h2")
				return err == nil
			})
			held = append(held, c)
			io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") // keep it from the first-request deadline
		}
		if c, err := dial("h2"); err == nil {
			if !closed(c) {
				t.Errorf("a 6th connection from one address was served, want it closed (max 5)")
			}
			c.Close()
		}
		for _, c := range held {
			c.Close()
		}
		poll.Until(t, "a slot to come back", func() bool {
			c, err := dial("http/1.1")
			if err != nil {
				return false
			}
			defer c.Close()
			io.WriteString(c, "GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			return err == nil && resp.StatusCode == 200
		})
	})
	t.Run("quic per address", func(t *testing.T) {
		tc := &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"h3"}}
		var held []*quic.Conn
		defer func() {
			for _, c := range held {
				c.CloseWithError(0, "")
			}
		}()
		for i := range 3 {
			c, err := quic.DialAddr(context.Background(), addr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
			if err != nil {
				t.Fatalf("QUIC connection %d of 3: %v", i+1, err)
			}
			held = append(held, c)
		}
		c, err := quic.DialAddr(context.Background(), addr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
		if err != nil {
			return // refused during the handshake: fine
		}
		select {
		case <-c.Context().Done():
			// Before the handshake is confirmed, an application close
			// travels as the transport error APPLICATION_ERROR (RFC 9000
			// 10.2.3); after it, as H3_EXCESSIVE_LOAD itself.
			var ae *quic.ApplicationError
			var te *quic.TransportError
			err := context.Cause(c.Context())
			if !(errors.As(err, &ae) && ae.ErrorCode == 0x107) && !(errors.As(err, &te) && te.ErrorCode == quic.ApplicationErrorErrorCode && te.Remote) {
				t.Errorf("4th QUIC connection closed with %v (%T), want the server's H3_EXCESSIVE_LOAD", err, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("a 4th QUIC connection from one address stayed open, want it closed (max 3)")
			c.CloseWithError(0, "")
		}
	})
}

// One client address holds at most its share of origin requests in
// flight, however many it starts; another address is not held up.
func TestUpstreamFairShare(t *testing.T) {
	ca := certstest.LabCA(t)
	release := make(chan struct{})
	var reached atomic.Int64
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			reached.Add(1)
			<-release
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("ok"))
	})
	defer close(release)
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.MaxUpstreamPerAddr = 4
	p := poptest.StartPoP(t, cfg)
	base := "https://localhost:" + port(p.Addr())
	c := clients(t, ca)["h2"]
	codes := make(chan int, 10)
	for i := range 10 {
		go func() {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/slow?i=%d", base, i), nil)
			resp, err := c.Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	refused := 0
	for range 6 { // six answer at once: the four others wait at the origin
		if code := <-codes; code == http.StatusServiceUnavailable {
			refused++
		}
	}
	if refused != 6 || reached.Load() > 4 {
		t.Errorf("10 slow misses from one address with a share of 4: %d refused with 503, %d reached the origin; want 6 and 4", refused, reached.Load())
	}
	// Another address (127.0.0.2) still reaches the origin.
	other := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost"},
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}
	defer other.CloseIdleConnections()
	resp, err := (&http.Client{Transport: other, Timeout: 10 * time.Second}).Get(base + "/fast")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("another address during the flood: %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}
}
