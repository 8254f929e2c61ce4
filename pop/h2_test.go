package pop_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// h2Raw is a raw HTTP/2-over-TLS client connection: frames written and
// read one by one, for exact control of windows, stream states and
// errors.
type h2Raw struct {
	t    *testing.T
	c    *tls.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	host string // :authority
}

// dialH2 connects, sends the preface and SETTINGS with settings, and
// reads up to the server's SETTINGS.
func dialH2(t *testing.T, p *pop.Server, ca *certs.LabCA, settings ...http2.Setting) *h2Raw {
	t.Helper()
	c, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("ALPN %q, want h2", c.ConnectionState().NegotiatedProtocol)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	h := &h2Raw{t: t, c: c, host: "localhost:" + port(p.Addr())}
	h.fr = http2.NewFramer(c, bufio.NewReader(c))
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	f := h.next()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("first frame from the server: %v, want SETTINGS", f)
	}
	h.fr.WriteSettingsAck()
	return h
}

// request sends HEADERS for stream id; fields are name, value pairs
// after the pseudo-header fields.
func (h *h2Raw) request(id uint32, method, path string, end bool, fields ...string) {
	h.t.Helper()
	h.hbuf.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: h.host}, {Name: ":path", Value: path}} {
		h.enc.WriteField(f)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// try sends a GET-like request ending its stream, and reports a write
// error instead of failing.
func (h *h2Raw) try(id uint32, method, path string) error {
	h.hbuf.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: h.host}, {Name: ":path", Value: path}} {
		h.enc.WriteField(f)
	}
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
}

// next reads the next frame other than SETTINGS ACK, PING ACK and
// connection WINDOW_UPDATE.
func (h *h2Raw) next() http2.Frame {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				continue
			}
		}
		return f
	}
}

// sync sends a PING and reads frames up to its ACK, dropping the others:
// once it returns, the server has read every frame sent before the PING.
// If the server sends GOAWAY first, sync returns it instead.
func (h *h2Raw) sync() *http2.GoAwayFrame {
	h.t.Helper()
	data := [8]byte{'s', 'y', 'n', 'c'}
	if err := h.fr.WritePing(false, data); err != nil {
		h.t.Fatal(err)
	}
	for {
		switch f := h.next().(type) {
		case *http2.PingFrame:
			if f.IsAck() && f.Data == data {
				return nil
			}
		case *http2.GoAwayFrame:
			return f
		}
	}
}

// response reads stream id's response: its header fields and the DATA
// bytes up to END_STREAM.
func (h *h2Raw) response(id uint32) (map[string]string, []byte) {
	h.t.Helper()
	fields := map[string]string{}
	var body []byte
	for {
		switch f := h.next().(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				h.t.Fatalf("HEADERS on stream %d, want %d", f.StreamID, id)
			}
			for _, hf := range f.Fields {
				fields[hf.Name] = hf.Value
			}
			if f.StreamEnded() {
				return fields, body
			}
		case *http2.DataFrame:
			body = append(body, f.Data()...)
			if f.StreamEnded() {
				return fields, body
			}
		case *http2.WindowUpdateFrame: // the server read some of our body
		default:
			h.t.Fatalf("stream %d: unexpected %v", id, f)
		}
	}
}

// TestH2FlowControl: the server never sends more than the client's
// windows allow, waits for WINDOW_UPDATE, and honours a smaller frame
// size, for a hit answered by the connection's reader and for a response
// from the handler path.
func TestH2FlowControl(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	want := fetchH1(t, p, ca, "/gen/100k")
	p.WaitCache()
	for _, path := range []string{"/gen/100k", "/gen/100k?cc=no-store"} {
		h := dialH2(t, p, ca, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
		before := p.FastHits().HTTP2
		h.request(1, "GET", path, true)
		var body []byte
		var fields map[string]string
		for len(body) < 1000 {
			switch f := h.next().(type) {
			case *http2.MetaHeadersFrame:
				fields = map[string]string{}
				for _, hf := range f.Fields {
					fields[hf.Name] = hf.Value
				}
			case *http2.DataFrame:
				if len(f.Data()) > 16384 {
					t.Errorf("%s: DATA of %d bytes, over the 16384 frame size", path, len(f.Data()))
				}
				body = append(body, f.Data()...)
			default:
				t.Fatalf("%s: unexpected %v", path, f)
			}
		}
		if fields[":status"] != "200" || len(body) != 1000 {
			t.Fatalf("%s: status %q, %d bytes in the first window of 1000", path, fields[":status"], len(body))
		}
		// Nothing more may come until the window grows: a PING's ACK
		// must be the next frame.
		h.fr.WritePing(false, [8]byte{1})
		if f, ok := h.next().(*http2.PingFrame); !ok || !f.IsAck() {
			t.Fatalf("%s: after a full window the server sent %v, want the PING ACK", path, f)
		}
		h.fr.WriteWindowUpdate(1, 200<<10)
		h.fr.WriteWindowUpdate(0, 200<<10)
		_, rest := h.response(1)
		body = append(body, rest...)
		if !bytes.Equal(body, want) {
			t.Errorf("%s: %d bytes, not the origin's %d", path, len(body), len(want))
		}
		if hit := p.FastHits().HTTP2 - before; (path == "/gen/100k") != (hit == 1) {
			t.Errorf("%s: the reader served %d hits", path, hit)
		}
	}
}

// fetchH1 gets a path over HTTP/1.1 and returns the body.
func fetchH1(t *testing.T, p *pop.Server, ca *certs.LabCA, path string) []byte {
	t.Helper()
	resp, body := get(t, clients(t, ca)["h1"], "https://localhost:"+port(p.Addr())+path)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d", path, resp.StatusCode)
	}
	return body
}

// TestH2StreamErrors: malformed requests and frames on streams that are
// not open get the stream or connection errors RFC 9113 names, and the
// connection serves on after stream errors.
func TestH2StreamErrors(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	fetchH1(t, p, ca, "/gen/1k")
	p.WaitCache()
	h := dialH2(t, p, ca)
	expectRST := func(what string, id uint32, code http2.ErrCode) {
		t.Helper()
		f := h.next()
		if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != id || rst.ErrCode != code {
			t.Errorf("%s: got %v, want RST_STREAM %v on stream %d", what, f, code, id)
		}
	}
	// A hit, then DATA on its closed stream.
	h.request(1, "GET", "/gen/1k", true)
	if f, body := h.response(1); f[":status"] != "200" || len(body) != 1024 {
		t.Fatalf("hit = %q with %d bytes", f[":status"], len(body))
	}
	h.fr.WriteData(1, true, []byte("late"))
	expectRST("DATA on a closed stream", 1, http2.ErrCodeStreamClosed)
	// Malformed requests: no :method; a connection-specific field; a
	// Content-Length the body does not match.
	h.hbuf.Reset()
	h.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
	h.enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/gen/1k"})
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	expectRST("no :method", 3, http2.ErrCodeProtocol)
	h.request(5, "GET", "/gen/1k", true, "connection", "keep-alive")
	expectRST("connection field", 5, http2.ErrCodeProtocol)
	h.request(7, "POST", "/gen/1k", false, "content-length", "10")
	h.fr.WriteData(7, true, []byte("short"))
	expectRST("short body", 7, http2.ErrCodeProtocol)
	// Reset by the client, then DATA: STREAM_CLOSED.
	h.request(9, "POST", "/gen/1k?delay=2s&cc=no-store", false)
	h.fr.WriteRSTStream(9, http2.ErrCodeCancel)
	h.fr.WriteData(9, false, []byte("x"))
	expectRST("DATA after RST_STREAM", 9, http2.ErrCodeStreamClosed)
	// Still serving.
	h.request(11, "HEAD", "/gen/1k", true)
	if f, body := h.response(11); f[":status"] != "200" || f["content-length"] != "1024" || len(body) != 0 {
		t.Errorf("HEAD after errors = %q, length %q, %d body bytes", f[":status"], f["content-length"], len(body))
	}
	// An even stream id is a connection error.
	h.request(12, "GET", "/gen/1k", true)
	f := h.next()
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.ErrCode != http2.ErrCodeProtocol || ga.LastStreamID != 11 {
		t.Errorf("even stream id: got %v, want GOAWAY PROTOCOL_ERROR last 11", f)
	}
}

// TestH2RequestBody: a request body larger than the stream and
// connection receive windows reaches the origin whole, the window coming
// back as the handler reads it; trailers end it.
func TestH2RequestBody(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write([]byte(strconv.Itoa(len(b)) + " " + strconv.Itoa(int(bytes.Count(b, []byte("z"))))))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.MaxBodyBytes = 16 << 20
	p := poptest.StartPoP(t, cfg)
	body := bytes.Repeat([]byte("z"), 5<<20)
	req, _ := http.NewRequest("POST", "https://localhost:"+port(p.Addr())+"/upload", bytes.NewReader(body))
	resp, err := clients(t, ca)["h2"].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(got) != "5242880 5242880" {
		t.Errorf("POST of 5 MiB over h2 = HTTP/%d %d %q", resp.ProtoMajor, resp.StatusCode, got)
	}

	// Raw: body, then trailers end the stream.
	h := dialH2(t, p, ca)
	h.request(1, "PUT", "/upload", false)
	h.fr.WriteData(1, false, []byte("zzz"))
	h.hbuf.Reset()
	h.enc.WriteField(hpack.HeaderField{Name: "x-checksum", Value: "3"})
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	if f, b := h.response(1); f[":status"] != "200" || string(b) != "3 3" {
		t.Errorf("PUT with trailers = %q %q", f[":status"], b)
	}
}

// TestH2Drain: Shutdown sends GOAWAY naming the last stream it took; that
// stream's response still arrives in full, then the connection closes.
func TestH2Drain(t *testing.T) {
	ca := certstest.LabCA(t)
	arrived, release := make(chan struct{}), make(chan struct{})
	arrive := sync.OnceFunc(func() { close(arrived) })
	releaseDrain := sync.OnceFunc(func() { close(release) })
	defer releaseDrain()
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/drain" {
			arrive()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write(bytes.Repeat([]byte("d"), 5000))
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.DrainTimeout = time.Minute
	p := poptest.StartPoP(t, cfg)
	h := dialH2(t, p, ca)
	h.request(1, "GET", "/drain", true)
	select {
	case <-arrived: // the server took stream 1: it is with the origin
	case <-time.After(poll.Timeout):
		t.Fatalf("the request did not reach the origin within %v", poll.Timeout)
	}
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	f := h.next()
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("on Shutdown: got %v, want GOAWAY NO_ERROR last 1", f)
	}
	releaseDrain()
	if fields, body := h.response(1); fields[":status"] != "200" || len(body) != 5000 {
		t.Errorf("in-flight request after GOAWAY = %q with %d bytes", fields[":status"], len(body))
	}
	for {
		if _, err := h.fr.ReadFrame(); err != nil {
			if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Errorf("after the last stream: %v, want the connection closed", err)
			}
			break
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown still waiting 20s after the last stream ended")
	}
}

// TestH2StreamLimits: streams past MAX_CONCURRENT_STREAMS are refused
// (REFUSED_STREAM, so clients retry them), and a rapid-reset pattern (open
// and cancel, over and over) neither stops the connection's own requests
// nor leaves handler goroutines behind.
func TestH2StreamLimits(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	cfg.Limits.MaxConcurrentStreams = 4
	p := poptest.StartPoP(t, cfg)
	h := dialH2(t, p, ca)
	for id := uint32(1); id <= 9; id += 2 {
		h.request(id, "GET", "/gen/10?delay=500ms&cc=no-store&n="+strconv.Itoa(int(id)), true)
	}
	f := h.next()
	if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 9 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("fifth concurrent stream with a limit of 4: got %v, want RST_STREAM REFUSED_STREAM on 9", f)
	}
	done := 0
	for done < 4 {
		switch f := h.next().(type) {
		case *http2.DataFrame:
			if f.StreamEnded() {
				done++
			}
		case *http2.MetaHeadersFrame:
			if f.PseudoValue("status") != "200" {
				t.Fatalf("stream %d: status %s", f.StreamID, f.PseudoValue("status"))
			}
		}
	}

	// Rapid reset: 400 slow requests, each cancelled at once.
	h = dialH2(t, p, ca)
	id := uint32(1)
	for range 400 {
		if h.try(id, "GET", "/gen/10?delay=2s&cc=no-store&n="+strconv.Itoa(int(id))) != nil ||
			h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // the server gave up on this connection: its GOAWAY says why
		}
		id += 2
	}
	h.try(id, "GET", "/gen/10?cc=no-store")
	for {
		f := h.next()
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v during rapid reset", ga.ErrCode)
			}
			break
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == id {
			if s := mh.PseudoValue("status"); s != "200" {
				t.Errorf("request after 400 resets: status %s", s)
			}
			break
		}
	}
	h.c.Close()
	poll.Until(t, "the HTTP/2 handler goroutines to end", func() bool { return goroutinesIn("runHandler") == 0 })
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
