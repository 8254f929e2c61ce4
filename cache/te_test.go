package cache

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// rawOrigin answers every request with the same bytes, written by hand,
// and closes the connection: for responses net/http's server would never
// send.
type rawOrigin struct {
	ln   net.Listener
	hits atomic.Int64
	wg   sync.WaitGroup // owns the accept loop and the connections
}

func newRawOrigin(t *testing.T, resp string) *rawOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln}
	o.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			o.wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
					return
				}
				o.hits.Add(1)
				io.WriteString(conn, resp)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); o.wg.Wait() })
	return o
}

// urlErrorTransport fails as an http.Client does: the error names the
// request's URL, and with it the origin's address.
type urlErrorTransport struct{ http.RoundTripper }

func (u urlErrorTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := u.RoundTripper.RoundTrip(r)
	if err != nil {
		return nil, &url.Error{Op: r.Method, URL: r.URL.String(), Err: err}
	}
	return resp, nil
}

// codingTransport is a transport that hands the cache a response still
// framed with a transfer coding it did not decode.
type codingTransport struct {
	http.RoundTripper
	te []string
}

func (c codingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.TransferEncoding = c.te
	}
	return resp, err
}

// TestUnsupportedTransferCoding: an origin response framed with a transfer
// coding the proxy cannot decode (anything but chunked) is answered 502,
// with a body and a Cache-Status detail that say so and name no address,
// is logged, and is never stored: the next request goes to the origin
// again.
func TestUnsupportedTransferCoding(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n"
	const chunked = "5\r\nhello\r\n0\r\n\r\n"
	tests := []struct {
		name string
		resp string
		wrap func(http.RoundTripper) http.RoundTripper
	}{
		{"gzip, chunked", head + "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked, nil},
		{"x-custom", head + "Transfer-Encoding: x-custom\r\n\r\nhello", nil},
		{"gzip and chunked in two lines", head + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked, nil},
		{"chunked twice", head + "Transfer-Encoding: chunked, chunked\r\n\r\n" + chunked, nil},
		{"error naming the URL", head + "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked,
			func(rt http.RoundTripper) http.RoundTripper { return urlErrorTransport{rt} }},
		{"undecoded coding in the response", head + "Transfer-Encoding: chunked\r\n\r\n" + chunked,
			func(rt http.RoundTripper) http.RoundTripper { return codingTransport{rt, []string{"gzip", "chunked"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origin := newRawOrigin(t, tt.resp)
			logs := &poll.Buffer{}
			rg := newRigWith(t, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))}, func(w http.ResponseWriter, r *http.Request) {
				t.Error("the rig's own origin was asked")
			})
			var rt http.RoundTripper = originTransport{"http://" + origin.ln.Addr().String()}
			if tt.wrap != nil {
				rt = tt.wrap(rt)
			}
			rg.cache.cfg.Transport = rt
			addr := origin.ln.Addr().String()
			_, port, _ := net.SplitHostPort(addr)
			for i := range 2 {
				resp, body := rg.get("/te")
				cs := resp.Header.Get("Cache-Status")
				if resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("GET %d = %d %q, want 502", i, resp.StatusCode, body)
				}
				if !strings.Contains(body, "transfer coding") || !strings.Contains(body, "chunked") {
					t.Errorf("GET %d: body %q, want it to name the unsupported transfer coding", i, body)
				}
				if !strings.Contains(cs, "detail=unsupported-transfer-coding") {
					t.Errorf("GET %d: Cache-Status %q, want detail=unsupported-transfer-coding", i, cs)
				}
				if strings.Contains(body, port) || strings.Contains(cs, port) {
					t.Errorf("GET %d: body %q, Cache-Status %q name the origin's address %s", i, body, cs, addr)
				}
			}
			if h := origin.hits.Load(); h != 2 {
				t.Errorf("origin requests = %d, want 2 (nothing stored)", h)
			}
			if l := logs.String(); !strings.Contains(l, "transfer coding") {
				t.Errorf("log = %q, want the unsupported transfer coding logged", l)
			}
		})
	}
}

// TestChunkedFromRawOrigin: the control for TestUnsupportedTransferCoding,
// chunked (in any case) is decoded and stored.
func TestChunkedFromRawOrigin(t *testing.T) {
	for _, te := range []string{"chunked", "Chunked"} {
		t.Run(te, func(t *testing.T) {
			origin := newRawOrigin(t, "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\nTransfer-Encoding: "+te+"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {})
			rg.cache.cfg.Transport = originTransport{"http://" + origin.ln.Addr().String()}
			for i := range 2 {
				if resp, body := rg.get("/te"); resp.StatusCode != 200 || body != "hello" {
					t.Fatalf("GET %d = %d %q, want 200 hello", i, resp.StatusCode, body)
				}
			}
			if h := origin.hits.Load(); h != 1 {
				t.Errorf("origin requests = %d, want 1 (stored)", h)
			}
		})
	}
}
