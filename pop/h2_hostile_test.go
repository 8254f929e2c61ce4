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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// These tests come from a review of the HTTP/2 server: each failed (or
// showed the harm) before its fix.

func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestH2FloodsMeetBackpressure: a client that sends and never reads
// (PINGs, or HEAD hits, in TLS records that never end on a frame
// boundary) is stopped by a blocked write, not buffered without bound.
func TestH2FloodsMeetBackpressure(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	fetchH1(t, p, ca, "/gen/1k")
	p.WaitCache()

	h := dialH2(t, p, ca)
	var ping bytes.Buffer
	fr := http2.NewFramer(&ping, nil)
	for range 900 {
		fr.WritePing(false, [8]byte{1, 2, 3})
	}
	all := ping.Bytes()
	before := heapInUse()
	chunk, sent := all[:len(all)-8], 0 // each record ends mid-frame
	for start := time.Now(); sent < 150<<20 && time.Since(start) < 20*time.Second; {
		h.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := h.c.Write(chunk); err != nil {
			break
		}
		sent += len(chunk)
		chunk = append(append([]byte(nil), all[len(all)-8:]...), all[:len(all)-8]...)
	}
	grew := (heapInUse() - before) >> 20
	t.Logf("PING flood: client wrote %d MiB without reading; heap grew %d MiB", sent>>20, grew)
	if sent >= 64<<20 || grew > 32 {
		t.Errorf("PING flood: the client wrote %d MiB without reading and the heap grew %d MiB; want a blocked write long before", sent>>20, grew)
	}
	h.c.Close()

	h = dialH2(t, p, ca)
	var out, hb bytes.Buffer
	fr = http2.NewFramer(&out, nil)
	enc := hpack.NewEncoder(&hb)
	var bounds []int
	const n = 200000
	for i := range n {
		bounds = append(bounds, out.Len())
		hb.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "HEAD"}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: h.host}, {Name: ":path", Value: "/gen/1k"}} {
			enc.WriteField(f)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	}
	all = out.Bytes()
	before = heapInUse()
	hits := p.FastHits().HTTP2
	for off, bi := 0, 0; off < len(all); {
		for bi < len(bounds) && bounds[bi] < off+8000 {
			bi++
		}
		end := len(all)
		if bi < len(bounds) {
			end = bounds[bi] + 1 // one byte into a frame
		}
		h.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := h.c.Write(all[off:end]); err != nil {
			t.Logf("HEAD flood: write stopped after %d KiB: %v", off>>10, err)
			break
		}
		off = end
	}
	// Let the server answer all it will: until its count stops moving.
	served := poll.Steady(t, "the HTTP/2 hits answered to the HEAD flood", 300*time.Millisecond, 0, func() int64 { return p.FastHits().HTTP2 }) - hits
	grew = (heapInUse() - before) >> 20
	t.Logf("HEAD flood: %d requests sent unread, %d answered, heap grew %d MiB", n, served, grew)
	if served >= n || grew > 32 {
		t.Errorf("HEAD flood: %d of %d answered to a client that reads nothing, heap grew %d MiB; want backpressure", served, n, grew)
	}
}

// TestH2LargeHitsAreNotCopiedWhole: connections that ask for a 4 MiB hit
// and do not read hold a bounded buffer each, not a copy of the object.
func TestH2LargeHitsAreNotCopiedWhole(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	fetchH1(t, p, ca, "/gen/4m")
	p.WaitCache()
	before := heapInUse()
	hits := p.FastHits().HTTP2
	const n = 20
	for range n {
		h := dialH2(t, p, ca, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		h.request(1, "GET", "/gen/4m", true)
	}
	// Each connection's reader takes its hit (and counts it) before it
	// writes; then it writes until the unread connection stops it, and the
	// heap stops growing.
	poll.Until(t, "every connection's reader to take its hit", func() bool { return p.FastHits().HTTP2-hits == n })
	grew := (poll.Steady(t, "the heap in use", 300*time.Millisecond, 1<<20, heapInUse) - before) >> 20
	t.Logf("%d connections not reading a 4 MiB hit: heap grew %d MiB", n, grew)
	if grew > 40 {
		t.Errorf("%d connections not reading a 4 MiB hit grew the heap by %d MiB; want a bounded buffer each", n, grew)
	}
}

// TestH2ShutdownHonoursItsContext: a connection stuck writing to a client
// that does not read does not hold Shutdown past its context.
func TestH2ShutdownHonoursItsContext(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	cfg.Limits.IdleTimeout = 30 * time.Second
	cfg.DrainTimeout = time.Second
	p := poptest.StartPoP(t, cfg)
	fetchH1(t, p, ca, "/gen/4m")
	p.WaitCache()
	h := dialH2(t, p, ca, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	hits := p.FastHits().HTTP2
	for id := uint32(1); id <= 15; id += 2 {
		h.request(id, "GET", "/gen/4m", true)
	}
	// The reader takes hits (counting each before it writes it) until a
	// write to the client, which reads nothing, blocks it.
	poll.Until(t, "the reader to take a hit", func() bool { return p.FastHits().HTTP2 > hits })
	poll.Steady(t, "the hits the reader took", 300*time.Millisecond, 0, func() int64 { return p.FastHits().HTTP2 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Shutdown with a 1 s context returned %v after %v", err, took)
	}
}

// TestH2LateFramesOnResetStreams: trailers on a stream the server reset
// are ignored, not a connection error (RFC 9113 5.1), so other streams
// finish; trailers ending a body shorter than its Content-Length reset
// the stream instead of reaching the origin.
func TestH2LateFramesOnResetStreams(t *testing.T) {
	ca := certstest.LabCA(t)
	var whole atomic.Int32 // /upload bodies the origin read to their end
	release := make(chan struct{})
	releaseSlow := sync.OnceFunc(func() { close(release) })
	defer releaseSlow()
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" { // in flight while stream 3 is refused and reset
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		if _, err := io.ReadAll(r.Body); err == nil && r.URL.Path == "/upload" {
			whole.Add(1)
		}
		w.Write([]byte("recorded"))
	})
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	h := dialH2(t, p, ca)
	h.request(1, "GET", "/slow?cc=no-store", true)
	h.request(3, "POST", "/upload", false, "content-length", strconv.Itoa(100<<20))
	if f, _ := h.response(3); f[":status"] != "413" {
		t.Fatalf("POST of 100 MiB = %s, want 413", f[":status"])
	}
	trailers := func(id uint32) {
		h.hbuf.Reset()
		h.enc.WriteField(hpack.HeaderField{Name: "x-checksum", Value: "1"})
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	}
	trailers(3)
	if ga := h.sync(); ga != nil {
		t.Fatalf("trailers on a stream the server reset: GOAWAY %v", ga.ErrCode)
	}
	releaseSlow() // the server has read the trailers: stream 1 may end
	for done := false; !done; {
		switch f := h.next().(type) {
		case *http2.GoAwayFrame:
			t.Fatalf("trailers on a stream the server reset: GOAWAY %v", f.ErrCode)
		case *http2.DataFrame:
			done = f.StreamID == 1 && f.StreamEnded()
		}
	}
	h.request(5, "PUT", "/upload", false, "content-length", "10")
	h.fr.WriteData(5, false, []byte("zzz"))
	trailers(5)
	for {
		f := h.next()
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 5 {
			if rst.ErrCode != http2.ErrCodeProtocol {
				t.Errorf("3 of 10 bytes then trailers: RST_STREAM %v, want PROTOCOL_ERROR", rst.ErrCode)
			}
			break
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == 5 {
			t.Fatalf("3 of 10 bytes then trailers: answered %s, want RST_STREAM PROTOCOL_ERROR", mh.PseudoValue("status"))
		}
	}
	// The origin may have seen the PUT's head (the body streams), but
	// never a body that ended: the reset aborts the upstream request.
	h.request(7, "GET", "/after?cc=no-store", true)
	if f, _ := h.response(7); f[":status"] != "200" {
		t.Fatalf("a request after the reset = %s, want 200", f[":status"])
	}
	if n := whole.Load(); n != 0 {
		t.Errorf("the origin read %d /upload bodies to their end; the short PUT must not reach it whole", n)
	}
}

// TestH2ExpectContinue: a request with Expect: 100-continue gets 100 when
// the handler first reads its body, and the field is not forwarded.
func TestH2ExpectContinue(t *testing.T) {
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write([]byte("got " + strconv.Itoa(len(b)) + " expect=" + r.Header.Get("Expect")))
	})
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	h := dialH2(t, p, ca)
	h.request(1, "PUT", "/upload", false, "content-length", "3", "expect", "100-continue")
	for {
		f := h.next()
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			if s := mh.PseudoValue("status"); s != "100" {
				t.Fatalf("before the body: status %s, want 100", s)
			}
			break
		}
	}
	h.fr.WriteData(1, true, []byte("abc"))
	if f, b := h.response(1); f[":status"] != "200" || string(b) != "got 3 expect=" {
		t.Errorf("after 100 Continue: %s %q", f[":status"], b)
	}
}

// TestH2SettingsComeFirst: a drain that starts before the client's
// preface still sends SETTINGS before GOAWAY (RFC 9113 3.4).
func TestH2SettingsComeFirst(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	cfg.DrainTimeout = 3 * time.Second
	p := poptest.StartPoP(t, cfg)
	c, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Once the connection's reader waits for the preface, the drain finds
	// the connection and sends its GOAWAY at once: the first bytes the
	// client can read are the drain's.
	poll.Until(t, "the HTTP/2 connection to wait for the preface", func() bool { return goroutinesIn("h2.(*Conn).serve(") > 0 })
	shutdown := make(chan error, 1)
	go func() { shutdown <- p.Shutdown(context.Background()) }()
	c.SetReadDeadline(time.Now().Add(poll.Timeout))
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		t.Fatalf("waiting for the drain to reach the connection: %v", err)
	}
	io.WriteString(c, http2.ClientPreface)
	f, err := http2.NewFramer(io.Discard, br).ReadFrame()
	if sf, ok := f.(*http2.SettingsFrame); err != nil || !ok || sf.IsAck() {
		t.Errorf("first frame from a draining server: %v, %v; want SETTINGS", f, err)
	}
	c.Close()
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

// TestH2RapidResetHandlers: resetting streams does not make room for more
// handlers until theirs return, so the origin never sees more requests at
// once than the stream limit.
func TestH2RapidResetHandlers(t *testing.T) {
	ca := certstest.LabCA(t)
	var arrived, inflight, peak atomic.Int64
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			return // the PoP's health checks
		}
		arrived.Add(1)
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	})
	cfg := poptest.Config(ca, ro.url)
	cfg.Limits.MaxConcurrentStreams = 10
	p := poptest.StartPoP(t, cfg)
	h := dialH2(t, p, ca)
	for id := uint32(1); id < 80; id += 2 {
		if h.try(id, "GET", "/slow?cc=no-store&n="+strconv.Itoa(int(id))) != nil || h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
	}
	// Every request that will reach the origin has once the server has
	// read all the frames, its handlers have returned, and no request
	// is still on its way.
	h.sync()
	poll.Until(t, "the reset streams' handlers to return", func() bool { return goroutinesIn("runHandler") == 0 })
	poll.Steady(t, "the requests reaching the origin", 300*time.Millisecond, 0, arrived.Load)
	if got := peak.Load(); got > 11 {
		t.Errorf("40 streams opened and reset with a limit of 10: %d origin requests at once", got)
	}
}

// TestH2StalledStreamsEnd: a hit the client gives no window for, and a
// request whose body never comes, end after the idle timeout, and so do
// their connections.
func TestH2StalledStreamsEnd(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	cfg.Limits.IdleTimeout = time.Second
	cfg.Limits.ReadHeaderTimeout = time.Second
	p := poptest.StartPoP(t, cfg)
	fetchH1(t, p, ca, "/gen/100k")
	p.WaitCache()
	a := dialH2(t, p, ca, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	a.request(1, "GET", "/gen/100k", true)
	b := dialH2(t, p, ca)
	b.request(1, "POST", "/upload?cc=no-store", false)
	for _, h := range []*h2Raw{a, b} {
		h.c.SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			_, err := h.fr.ReadFrame()
			if err == nil {
				continue
			}
			if !errors.Is(err, io.EOF) {
				t.Errorf("stalled stream's connection: %v, want it closed by the server", err)
			}
			break
		}
	}
	poll.Until(t, "stalled streams' goroutines to end", func() bool { return goroutinesIn("runHandler") == 0 && goroutinesIn("serveHit.func") == 0 })
}
