package pop

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgecdn/cdn/cache"
)

// h2conn is one HTTP/2 connection served by the front itself (RFC 9113).
// One goroutine reads frames; a plain GET or HEAD that the cache answers
// as it is (see lookupH2) is answered from that goroutine with a
// precomputed header block, and the responses to one batch of requests
// leave in one TLS write. Every other stream runs the PoP's handler in a
// goroutine of its own through h2writer, as net/http's server would.
//
// Header blocks are encoded without the dynamic table (literal fields
// never indexed, after one table size update to zero), so a stored
// response's block is valid on every connection. Frames are parsed, and
// header blocks decoded and checked, by golang.org/x/net/http2's Framer.
type h2conn struct {
	f       *front
	fc      *fastConn
	tc      *tls.Conn
	br      *bufio.Reader
	fr      *http2.Framer
	sniSite *site
	state   *tls.ConnectionState
	remote  string
	ip      string // remote without the port, when the rate limit is on
	ctx     context.Context
	cancel  context.CancelFunc
	lim     Limits
	key     []byte // the reader's cache key buffer
	hbuf    []byte // the reader's header block buffer

	mu           sync.Mutex // guards everything below
	cond         sync.Cond  // on mu: send windows grew, a stream ended, the connection died
	wbuf         []byte     // frames not yet written
	werr         error      // the connection can no longer be written
	sendConn     int64      // connection send window
	peerInit     int64      // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame int        // peer's SETTINGS_MAX_FRAME_SIZE
	zeroed       bool       // the table size update to zero has been sent
	recvConn     int64      // what the client may still send on the connection
	streams      map[uint32]*h2stream
	refused      int        // streams refused since a handler last finished unreset
	resetIDs     [64]uint32 // streams recently reset by us, whose late frames are ignored
	resetNext    int
	maxID        uint32 // highest stream the client opened
	goaway       bool   // no new streams: GOAWAY sent or received
	handlers     sync.WaitGroup
}

// h2stream is a stream the reader did not finish at once: a handler runs
// for it, or a hit waits for send window.
type h2stream struct {
	id           uint32
	send         int64 // send window
	recv         int64 // what the client may still send on the stream
	reset        bool  // RST_STREAM sent or received: send nothing more
	peerReset    bool  // RST_STREAM received
	done         bool  // END_STREAM sent
	remoteClosed bool  // END_STREAM received
	finalSent    bool  // the final header block went out
	declared     int64 // request Content-Length, or -1
	received     int64 // request body bytes
	body         *h2body
	cancel       context.CancelFunc
}

const (
	h2Preface          = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2RecvStreamWindow = 1 << 20 // request body buffered per stream, at most
	h2RecvConnWindow   = 4 << 20 // and per connection
	h2MaxFrame         = 16384   // the protocol's default; we advertise no other
	h2FlushAt          = 64 << 10
	h2MaxWindow        = 1<<31 - 1
)

var (
	errH2StreamReset = errors.New("http2: stream reset")
	errH2ConnClosed  = errors.New("http2: connection closed")
	errH2Stalled     = errors.New("http2: the client's flow-control window stayed closed for the idle timeout")
)

// serveH2 serves an HTTP/2 connection until it ends. It returns when the
// connection and every stream on it are done.
func (f *front) serveH2(fc *fastConn, sni string) {
	tc := fc.tc
	st := tc.ConnectionState()
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), http.LocalAddrContextKey, tc.LocalAddr()))
	c := &h2conn{f: f, fc: fc, tc: tc, br: bufio.NewReaderSize(tc, 16<<10), state: &st,
		remote: tc.RemoteAddr().String(), ctx: ctx, cancel: cancel, lim: f.s.cfg.Limits,
		sendConn: 65535, peerInit: 65535, peerMaxFrame: h2MaxFrame, recvConn: h2RecvConnWindow,
		streams: map[uint32]*h2stream{}}
	c.cond.L = &c.mu
	if sni != "" {
		c.sniSite = f.s.router.lookup(sni)
	}
	c.fr = http2.NewFramer(io.Discard, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = uint32(c.lim.MaxHeaderBytes)
	c.fr.SetMaxReadFrameSize(h2MaxFrame)
	c.fr.SetReuseFrames()
	// Our SETTINGS are the first frame, queued before a drain can add
	// its GOAWAY (RFC 9113 3.4).
	c.wbuf = appendFrameHeader(c.wbuf, 18, http2.FrameSettings, 0, 0)
	c.wbuf = appendSetting(c.wbuf, http2.SettingMaxConcurrentStreams, c.maxStreams())
	c.wbuf = appendSetting(c.wbuf, http2.SettingInitialWindowSize, h2RecvStreamWindow)
	c.wbuf = appendSetting(c.wbuf, http2.SettingMaxHeaderListSize, uint32(c.lim.MaxHeaderBytes))
	c.wbuf = appendWindowUpdate(c.wbuf, 0, h2RecvConnWindow-65535)
	if f.s.limiter != nil {
		c.ip = clientIP(c.remote)
	}
	fc.h2.Store(c)
	defer c.teardown()
	c.serve()
}

func (c *h2conn) serve() {
	c.tc.SetReadDeadline(time.Now().Add(c.lim.ReadHeaderTimeout))
	var pre [len(h2Preface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != h2Preface {
		return
	}
	if c.f.draining.Load() {
		c.drain()
	}
	first := true
	for {
		if c.br.Buffered() == 0 {
			// The deadline is set under mu: a stream ending during a drain
			// (streamDone) sets a past one after it, never before.
			c.mu.Lock()
			err := c.flushLocked()
			idle := len(c.streams) == 0
			finished := c.goaway && idle
			if err == nil && !finished && !first {
				if idle {
					c.tc.SetReadDeadline(time.Now().Add(c.lim.IdleTimeout))
				} else {
					c.tc.SetReadDeadline(time.Time{})
				}
			}
			c.mu.Unlock()
			if err != nil || finished {
				return
			}
			c.fc.idle.Store(idle)
			if idle && c.f.draining.Load() {
				c.drain()
				return
			}
		}
		frame, err := c.fr.ReadFrame()
		if err != nil {
			if !c.readError(err) {
				return
			}
			continue
		}
		c.fc.idle.Store(false)
		if first {
			if sf, ok := frame.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.connError(http2.ErrCodeProtocol)
				return
			}
			first = false
		}
		if !c.process(frame) {
			return
		}
		// A client that sends and never reads meets a blocked write here,
		// whatever its records' boundaries: the buffer stays bounded.
		c.mu.Lock()
		if len(c.wbuf) >= h2FlushAt {
			err = c.flushLocked()
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// readError handles an error from ReadFrame; it reports whether the
// connection goes on.
func (c *h2conn) readError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.mu.Lock()
		if se.StreamID > c.maxID && se.StreamID%2 == 1 {
			c.maxID = se.StreamID // a malformed request still opens (and closes) its stream
		}
		if st := c.streams[se.StreamID]; st != nil {
			c.resetLocked(st, se.Code)
		} else {
			c.wbuf = appendRST(c.wbuf, se.StreamID, se.Code)
			c.noteReset(se.StreamID)
		}
		c.mu.Unlock()
		return true
	case errors.As(err, &ce):
		c.connError(http2.ErrCode(ce))
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.connError(http2.ErrCodeFrameSize)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.connError(http2.ErrCodeNo) // idle, or a client too slow with its first bytes
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
	default:
		c.connError(http2.ErrCodeProtocol)
	}
	return false
}

// connError ends the connection with GOAWAY.
func (c *h2conn) connError(code http2.ErrCode) {
	c.mu.Lock()
	c.connErrorLocked(code)
	c.mu.Unlock()
}

func (c *h2conn) connErrorLocked(code http2.ErrCode) {
	c.goaway = true
	c.wbuf = appendGoAway(c.wbuf, c.maxID, code)
	c.flushLocked()
}

// drain sends GOAWAY: streams already opened finish, new ones are
// ignored (clients retry them elsewhere), and the connection closes when
// the last stream ends.
func (c *h2conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.goaway {
		c.goaway = true
		c.wbuf = appendGoAway(c.wbuf, c.maxID, http2.ErrCodeNo)
		c.flushLocked()
	}
	if len(c.streams) == 0 && c.werr == nil {
		c.tc.SetReadDeadline(aLongTimeAgo) // wake the reader
	}
}

// teardown ends every stream and waits for their handlers.
func (c *h2conn) teardown() {
	c.cancel()
	c.mu.Lock()
	if c.werr == nil {
		c.flushLocked()
		c.werr = errH2ConnClosed
	}
	for _, st := range c.streams {
		st.reset = true
		st.cancel()
		if st.body != nil {
			st.body.finish(errH2ConnClosed)
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if tcp, ok := c.fc.cc.Conn.(halfCloser); ok {
		// Closing with the client's bytes unread (a request or PING sent
		// as we went away) would send a reset, and a reset can destroy
		// our last frames, GOAWAY among them, before the client reads
		// them: end our side, then read and drop for up to a second.
		c.tc.SetWriteDeadline(aLongTimeAgo) // no handler writes after this
		tcp.CloseWrite()
		tcp.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, tcp)
	}
	c.tc.NetConn().Close() // handlers blocked in a write fail now
	c.handlers.Wait()
	c.fc.h2.Store(nil)
}

func (c *h2conn) maxStreams() uint32 {
	if n := c.lim.MaxConcurrentStreams; n > 0 {
		return uint32(n)
	}
	return 250
}

// process handles one frame; it reports whether the connection goes on.
func (c *h2conn) process(frame http2.Frame) bool {
	switch fr := frame.(type) {
	case *http2.MetaHeadersFrame:
		return c.headers(fr)
	case *http2.DataFrame:
		return c.data(fr)
	case *http2.SettingsFrame:
		if fr.IsAck() {
			return true
		}
		if err := fr.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.connError(http2.ErrCode(ce))
			} else {
				c.connError(http2.ErrCodeProtocol)
			}
			return false
		}
		c.mu.Lock()
		overflow := false
		fr.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - c.peerInit
				c.peerInit = int64(s.Val)
				for _, st := range c.streams {
					if st.send += delta; st.send > h2MaxWindow {
						overflow = true // RFC 9113 6.9.2
					}
				}
			case http2.SettingMaxFrameSize:
				c.peerMaxFrame = int(s.Val)
			}
			return nil
		})
		if overflow {
			c.connErrorLocked(http2.ErrCodeFlowControl)
			c.mu.Unlock()
			return false
		}
		c.wbuf = appendFrameHeader(c.wbuf, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
		c.cond.Broadcast()
		c.mu.Unlock()
	case *http2.PingFrame:
		if !fr.IsAck() {
			c.mu.Lock()
			c.wbuf = appendFrameHeader(c.wbuf, 8, http2.FramePing, http2.FlagPingAck, 0)
			c.wbuf = append(c.wbuf, fr.Data[:]...)
			c.mu.Unlock()
		}
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		inc := int64(fr.Increment)
		if fr.StreamID == 0 {
			if c.sendConn+inc > h2MaxWindow {
				c.connErrorLocked(http2.ErrCodeFlowControl)
				return false
			}
			c.sendConn += inc
		} else if st := c.streams[fr.StreamID]; st != nil {
			if st.send+inc > h2MaxWindow {
				c.resetLocked(st, http2.ErrCodeFlowControl)
			} else {
				st.send += inc
			}
		} else if fr.StreamID > c.maxID {
			c.connErrorLocked(http2.ErrCodeProtocol) // an idle stream
			return false
		}
		c.cond.Broadcast()
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if fr.StreamID > c.maxID {
			c.mu.Unlock()
			c.connError(http2.ErrCodeProtocol)
			return false
		}
		if st := c.streams[fr.StreamID]; st != nil {
			st.reset, st.peerReset = true, true
			st.cancel()
			if st.body != nil {
				st.body.finish(errH2StreamReset)
			}
			c.cond.Broadcast()
		}
		c.mu.Unlock()
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goaway = true // the client opens no more streams; finish the rest
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		c.connError(http2.ErrCodeProtocol) // clients do not push
		return false
	case *http2.PriorityFrame:
		if fr.StreamDep == fr.StreamID {
			c.mu.Lock()
			if st := c.streams[fr.StreamID]; st != nil {
				c.resetLocked(st, http2.ErrCodeProtocol)
			} else {
				c.wbuf = appendRST(c.wbuf, fr.StreamID, http2.ErrCodeProtocol)
				c.noteReset(fr.StreamID)
			}
			c.mu.Unlock()
		}
	default: // PRIORITY_UPDATE, unknown extension frames
	}
	return true
}

// headers handles a request's header block, or a request's trailers.
func (c *h2conn) headers(mh *http2.MetaHeadersFrame) bool {
	id := mh.StreamID
	c.mu.Lock()
	if id%2 == 0 {
		c.mu.Unlock()
		c.connError(http2.ErrCodeProtocol)
		return false
	}
	if id <= c.maxID {
		st := c.streams[id]
		switch {
		case st != nil && st.reset && !st.peerReset, st == nil && c.wasReset(id):
			c.mu.Unlock()
			return true // a stream we reset: late frames are ignored (RFC 9113 5.1)
		case st == nil || st.reset || st.remoteClosed || !mh.StreamEnded():
			// Trailers must end the stream; HEADERS on a closed stream
			// is STREAM_CLOSED, a connection error here (RFC 9113 5.1).
			c.mu.Unlock()
			c.connError(http2.ErrCodeStreamClosed)
			return false
		}
		st.remoteClosed = true // trailers: the body is complete
		if st.declared >= 0 && st.received != st.declared {
			c.resetLocked(st, http2.ErrCodeProtocol) // shorter than its Content-Length
		} else {
			c.bodyEnd(st)
		}
		c.mu.Unlock()
		return true
	}
	c.maxID = id
	if mh.HasPriority() && mh.Priority.StreamDep == id {
		c.wbuf = appendRST(c.wbuf, id, http2.ErrCodeProtocol) // depends on itself (RFC 9113 5.3.1)
		c.noteReset(id)
		c.mu.Unlock()
		return true
	}
	if c.goaway {
		c.mu.Unlock()
		return true // after GOAWAY: ignored; the client retries elsewhere
	}
	if mh.Truncated {
		block := c.statusBlock(http.StatusRequestHeaderFieldsTooLarge)
		c.appendHeaders(id, block, true)
		if !mh.StreamEnded() {
			c.wbuf = appendRST(c.wbuf, id, http2.ErrCodeNo)
			c.noteReset(id)
		}
		c.mu.Unlock()
		return true
	}
	c.mu.Unlock()
	if mh.StreamEnded() && c.f.fast && c.serveHit(mh) {
		return true
	}
	return c.startHandler(mh)
}

// data handles a DATA frame: request body bytes, counted against both
// receive windows.
func (c *h2conn) data(df *http2.DataFrame) bool {
	id := df.StreamID
	n := int64(df.Length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if id > c.maxID || id%2 == 0 {
		c.connErrorLocked(http2.ErrCodeProtocol)
		return false
	}
	if n > c.recvConn {
		c.connErrorLocked(http2.ErrCodeFlowControl)
		return false
	}
	c.recvConn -= n
	st := c.streams[id]
	if st == nil || st.reset || st.remoteClosed || st.body == nil {
		// Not open for the client: the bytes are dropped, the connection
		// window given back at once, and the stream answered STREAM_CLOSED
		// unless it was reset already (RFC 9113 5.1).
		c.returnConn(n)
		switch {
		case st == nil && !c.wasReset(id), st != nil && st.peerReset:
			c.wbuf = appendRST(c.wbuf, id, http2.ErrCodeStreamClosed)
		case st == nil: // one we reset: ignored
		case !st.reset:
			c.resetLocked(st, http2.ErrCodeStreamClosed)
		}
		return true
	}
	if n > st.recv {
		c.returnConn(n)
		c.resetLocked(st, http2.ErrCodeFlowControl)
		return true
	}
	st.recv -= n
	p := df.Data()
	if pad := n - int64(len(p)); pad > 0 { // padding is flow controlled but never read
		c.returnConn(pad)
		st.recv += pad
		if !df.StreamEnded() {
			c.wbuf = appendWindowUpdate(c.wbuf, id, uint32(pad))
		}
	}
	st.received += int64(len(p))
	if st.declared >= 0 && st.received > st.declared {
		c.returnConn(int64(len(p)))
		c.resetLocked(st, http2.ErrCodeProtocol) // more body than Content-Length said
		return true
	}
	if len(p) > 0 && !st.body.write(p) {
		c.returnConn(int64(len(p))) // the handler closed the body
	}
	if df.StreamEnded() {
		st.remoteClosed = true
		if st.declared >= 0 && st.received != st.declared {
			c.resetLocked(st, http2.ErrCodeProtocol)
			return true
		}
		c.bodyEnd(st)
	}
	return true
}

func (c *h2conn) bodyEnd(st *h2stream) {
	if st.body != nil {
		st.body.finish(io.EOF)
	}
}

// returnConn gives n bytes of connection receive window back.
func (c *h2conn) returnConn(n int64) {
	if n <= 0 {
		return
	}
	c.recvConn += n
	c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(n))
}

// bodyRead gives back the window of n request body bytes a handler read.
func (c *h2conn) bodyRead(st *h2stream, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return
	}
	c.returnConn(int64(n))
	if !st.remoteClosed && !st.reset {
		st.recv += int64(n)
		c.wbuf = appendWindowUpdate(c.wbuf, st.id, uint32(n))
	}
	c.flushLocked() // the reader may be blocked waiting for these bytes
}

// noteReset remembers a stream we reset without keeping its state.
func (c *h2conn) noteReset(id uint32) {
	c.resetIDs[c.resetNext] = id
	c.resetNext = (c.resetNext + 1) % len(c.resetIDs)
}

func (c *h2conn) wasReset(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

// resetLocked sends RST_STREAM and ends the stream's handler.
func (c *h2conn) resetLocked(st *h2stream, code http2.ErrCode) {
	if !st.reset && !(st.done && st.remoteClosed) {
		c.wbuf = appendRST(c.wbuf, st.id, code)
	}
	st.reset = true
	st.cancel()
	if st.body != nil {
		st.body.finish(errH2StreamReset)
	}
	c.cond.Broadcast()
}

// reset sends RST_STREAM from a handler's goroutine.
func (c *h2conn) reset(st *h2stream, code http2.ErrCode) {
	c.mu.Lock()
	c.resetLocked(st, code)
	c.flushLocked()
	c.mu.Unlock()
}

// newStream registers a stream that outlives the reader's handling of its
// HEADERS; ok is false when the client has too many open.
func (c *h2conn) newStream(id uint32, ended bool) (*h2stream, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.newStreamLocked(id, ended)
}

func (c *h2conn) newStreamLocked(id uint32, ended bool) (*h2stream, bool) {
	max := int(c.maxStreams())
	if len(c.streams) >= max {
		// Open streams and reset ones whose handlers still run count
		// alike, as net/http counts its handlers: resetting a stream
		// does not make room for another until its handler returns.
		// Refusals piling up without a handler finishing are the
		// rapid-reset pattern.
		if c.refused++; c.refused > 4*max {
			c.connErrorLocked(http2.ErrCodeEnhanceYourCalm)
			return nil, false
		}
		c.wbuf = appendRST(c.wbuf, id, http2.ErrCodeRefusedStream)
		c.noteReset(id)
		return nil, true
	}
	st := &h2stream{id: id, send: c.peerInit, recv: h2RecvStreamWindow,
		remoteClosed: ended, declared: -1, cancel: func() {}}
	c.streams[id] = st
	c.handlers.Add(1)
	return st, true
}

// streamDone forgets a stream whose handler returned.
func (c *h2conn) streamDone(st *h2stream) {
	c.mu.Lock()
	if !st.reset {
		c.refused = 0
	} else if !st.peerReset {
		c.noteReset(st.id)
	}
	delete(c.streams, st.id)
	st.cancel()
	unread := 0
	if st.body != nil {
		unread = st.body.close()
	}
	if c.werr == nil {
		c.returnConn(int64(unread))
		c.flushLocked()
	}
	// Once teardown has begun (werr set), the deadlines are its own: it
	// reads and drops the client's last bytes for a while, and a past
	// deadline set here would cut that short and turn the close into a
	// reset that can destroy the GOAWAY before the client reads it.
	switch {
	case c.werr != nil:
	case c.goaway && len(c.streams) == 0:
		c.tc.SetReadDeadline(aLongTimeAgo) // let the reader finish the connection
	case len(c.streams) == 0:
		c.tc.SetReadDeadline(time.Now().Add(c.lim.IdleTimeout)) // idle from now
	}
	c.mu.Unlock()
	c.handlers.Done()
}

// serveHit answers a plain request the cache holds as it is, from the
// reader's goroutine. It reports false when the request is not one.
func (c *h2conn) serveHit(mh *http2.MetaHeadersFrame) bool {
	s := c.f.s
	var hit cache.FastHit
	var head, ok bool
	c.key, hit, head, ok = c.lookupH2(mh, c.key)
	if !ok {
		return false
	}
	if s.maxInflight > 0 {
		if s.inflight.Add(1) > s.maxInflight {
			s.inflight.Add(-1)
			return false // the handler answers 503
		}
		defer s.inflight.Add(-1)
	}
	if !s.admitFast(c.ip) {
		return false // the handler answers 429
	}
	wire := hit.Wire2.Load()
	if wire == nil {
		w := c.f.h2HitBlock(hit.Header, len(hit.Body))
		hit.Wire2.CompareAndSwap(nil, &w)
		wire = hit.Wire2.Load()
	}
	b := append(c.hbuf[:0], 0x88) // :status 200
	b = append(b, *wire...)
	var num [20]byte
	b = appendHpackField(b, "age", strconv.AppendInt(num[:0], ageSeconds(hit.Age), 10))
	b = append(b, 0)
	b = appendHpackString(b, "cache-status")
	cs := len(s.cfg.Name) + len("; hit; ttl=") + len(strconv.AppendInt(num[:0], ageSeconds(hit.TTL), 10))
	prior := ""
	if p := hit.Header["Cache-Status"]; len(p) > 0 && p[0] != "" {
		prior = p[0]
		cs += len(prior) + 2
	}
	b = appendHpackInt(b, 0, 7, uint64(cs))
	if prior != "" {
		b = append(b, prior...)
		b = append(b, ", "...)
	}
	b = append(b, s.cfg.Name...)
	b = append(b, "; hit; ttl="...)
	b = strconv.AppendInt(b, ageSeconds(hit.TTL), 10)
	if _, ok := hit.Header["Date"]; !ok {
		var d [len(http.TimeFormat)]byte
		b = appendHpackField(b, "date", time.Now().UTC().AppendFormat(d[:0], http.TimeFormat))
	}
	c.hbuf = b

	id := mh.StreamID
	body := hit.Body
	c.mu.Lock()
	defer c.mu.Unlock()
	counted := func() { c.f.h2ok200.Inc(); c.f.hits.Add(1) } // before the write: a client may look as soon as it has the answer
	if head || len(body) == 0 {
		counted()
		c.appendHeaders(id, b, true)
		return true
	}
	if int64(len(body)) <= min(c.sendConn, c.peerInit) {
		counted()
		c.appendHeaders(id, b, false)
		c.sendConn -= int64(len(body))
		c.appendDataFlushing(id, body, true)
		return true
	}
	// Not enough send window: a goroutine waits for it.
	st, ok := c.newStreamLocked(id, true)
	if st == nil {
		return ok
	}
	counted()
	block := append([]byte(nil), b...)
	go func() {
		defer c.streamDone(st)
		if c.writeHeaders(st, block, false) == nil {
			c.writeData(st, body, true)
		}
	}()
	return true
}

// lookupH2 finds the stored response for a request the reader may answer
// itself: GET or HEAD of an https origin-form target, with none of the
// fields that change the answer (the same refusals as the HTTP/1.1 fast
// loop's parse), for a configured site that the connection's SNI allows.
func (c *h2conn) lookupH2(mh *http2.MetaHeadersFrame, key []byte) ([]byte, cache.FastHit, bool, bool) {
	var head, method bool
	var path, scheme, authority, host string
	hosts := 0
	for _, hf := range mh.Fields {
		switch hf.Name {
		case ":method":
			method = true
			switch hf.Value {
			case "GET":
			case "HEAD":
				head = true
			default:
				return key, cache.FastHit{}, false, false
			}
		case ":scheme":
			if hf.Value != "https" {
				return key, cache.FastHit{}, false, false
			}
			scheme = hf.Value
		case ":path":
			path = hf.Value
		case ":authority":
			authority = hf.Value
		case ":protocol":
			return key, cache.FastHit{}, false, false
		case "host":
			host = hf.Value
			hosts++
		case "range", "authorization", "cache-control", "pragma", "content-length", "transfer-encoding",
			"expect", "upgrade", "te", "connection", "keep-alive", "proxy-connection", "trailer", "http2-settings":
			return key, cache.FastHit{}, false, false
		default:
			if len(hf.Name) > 3 && hf.Name[:3] == "if-" {
				return key, cache.FastHit{}, false, false
			}
		}
	}
	if !method || scheme == "" {
		return key, cache.FastHit{}, false, false // malformed: the handler path refuses it
	}
	if authority == "" {
		if hosts != 1 {
			return key, cache.FastHit{}, false, false
		}
		authority = host
	} else if hosts > 1 || hosts == 1 && !strings.EqualFold(host, authority) {
		return key, cache.FastHit{}, false, false // malformed: the handler path refuses it
	}
	if !validTarget(unsafe.Slice(unsafe.StringData(path), len(path))) ||
		!validHost(unsafe.Slice(unsafe.StringData(authority), len(authority))) {
		return key, cache.FastHit{}, false, false
	}
	st := c.f.s.router.lookup(authority)
	if st == nil || c.sniSite != nil && c.sniSite != st {
		return key, cache.FastHit{}, false, false
	}
	key = cache.AppendKey(key[:0], true, authority, path, st.query)
	hit, ok := c.f.s.cache.LookupFast(key)
	return key, hit, head, ok
}

// h2HitBlock is a stored response's HTTP/2 header block without :status
// and the per-request fields: the fields net/http's HTTP/2 server sends
// for a hit (see wireHeader), lowercased, connection-specific ones and
// invalid ones dropped, as literals never indexed. The first block on a
// connection is preceded by the table size update to zero (see
// appendHeaders).
func (f *front) h2HitBlock(stored http.Header, size int) []byte {
	b := appendFields(nil, f.hitFields(stored))
	return appendHpackField(b, "content-length", strconv.AppendInt(nil, int64(size), 10))
}

// writeHeaders sends a header block from a handler's goroutine.
func (c *h2conn) writeHeaders(st *h2stream, block []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if st.reset {
		return errH2StreamReset
	}
	c.appendHeaders(st.id, block, end)
	if end {
		st.done = true
	}
	return c.flushLocked()
}

// writeData sends body bytes from a handler's goroutine, waiting for send
// window as needed.
func (c *h2conn) writeData(st *h2stream, p []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.werr != nil {
			return c.werr
		}
		if st.reset {
			return errH2StreamReset
		}
		if len(p) == 0 {
			if end {
				c.appendData(st.id, nil, true)
				st.done = true
			}
			return c.flushLocked()
		}
		n := int64(len(p))
		n = min(n, c.sendConn, st.send)
		if n <= 0 {
			if err := c.flushLocked(); err != nil {
				return err
			}
			// A client that never opens its window would hold the
			// stream and its goroutine forever: after an idle timeout
			// without a window change, the stream is cancelled.
			if waitAtMost(&c.cond, c.lim.IdleTimeout) && !st.reset && c.werr == nil && min(c.sendConn, st.send) <= 0 {
				c.resetLocked(st, http2.ErrCodeCancel)
				c.flushLocked()
				return errH2Stalled
			}
			continue
		}
		last := end && n == int64(len(p))
		c.sendConn -= n
		st.send -= n
		if err := c.appendDataFlushing(st.id, p[:n], last); err != nil {
			return err
		}
		p = p[n:]
		if last {
			st.done = true
			return c.flushLocked()
		}
	}
}

// appendHeaders appends a header block as HEADERS and CONTINUATION
// frames, preceded on the connection's first block by the table size
// update to zero.
func (c *h2conn) appendHeaders(id uint32, block []byte, end bool) {
	var pre []byte
	if !c.zeroed {
		c.zeroed = true
		pre = []byte{0x20}
	}
	first := true
	for {
		n := min(len(pre)+len(block), c.peerMaxFrame)
		typ, flags := http2.FrameContinuation, http2.Flags(0)
		if first {
			typ = http2.FrameHeaders
			if end {
				flags |= http2.FlagHeadersEndStream
			}
		}
		if n == len(pre)+len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		c.wbuf = appendFrameHeader(c.wbuf, n, typ, flags, id)
		c.wbuf = append(c.wbuf, pre...)
		c.wbuf = append(c.wbuf, block[:n-len(pre)]...)
		block = block[n-len(pre):]
		pre = nil
		first = false
		if flags&http2.FlagHeadersEndHeaders != 0 {
			return
		}
	}
}

// appendData appends p as DATA frames no larger than the peer allows.
func (c *h2conn) appendData(id uint32, p []byte, end bool) {
	for {
		n := min(len(p), c.peerMaxFrame)
		var flags http2.Flags
		if end && n == len(p) {
			flags = http2.FlagDataEndStream
		}
		c.wbuf = appendFrameHeader(c.wbuf, n, http2.FrameData, flags, id)
		c.wbuf = append(c.wbuf, p[:n]...)
		p = p[n:]
		if len(p) == 0 {
			return
		}
	}
}

// appendDataFlushing appends p as DATA frames, writing out the buffer
// whenever it reaches h2FlushAt, so that a large body is never copied
// whole.
func (c *h2conn) appendDataFlushing(id uint32, p []byte, end bool) error {
	for {
		n := min(len(p), h2FlushAt)
		c.appendData(id, p[:n], end && n == len(p))
		p = p[n:]
		if len(c.wbuf) >= h2FlushAt {
			if err := c.flushLocked(); err != nil {
				return err
			}
		}
		if len(p) == 0 {
			return nil
		}
	}
}

// statusBlock is a header block of a status alone.
func (c *h2conn) statusBlock(code int) []byte {
	return appendHpackStatus(nil, code)
}

// flushLocked writes the pending frames: one TLS write, and for large
// batches one syscall through the cork under the TLS connection.
func (c *h2conn) flushLocked() error {
	if c.werr != nil || len(c.wbuf) == 0 {
		return c.werr
	}
	c.tc.SetWriteDeadline(time.Now().Add(c.lim.IdleTimeout))
	var err error
	if cc := c.fc.cc; cc != nil && len(c.wbuf) > 16<<10 {
		cc.cork()
		_, err = c.tc.Write(c.wbuf)
		if ferr := cc.uncork(); err == nil {
			err = ferr
		}
	} else {
		_, err = c.tc.Write(c.wbuf)
	}
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	if err != nil {
		c.werr = err
		c.cond.Broadcast()
	}
	return err
}

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendSetting(b []byte, id http2.SettingID, v uint32) []byte {
	return appendUint32(append(b, byte(id>>8), byte(id)), v)
}

func appendWindowUpdate(b []byte, id uint32, inc uint32) []byte {
	return appendUint32(appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id), inc)
}

func appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	return appendUint32(appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id), uint32(code))
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode) []byte {
	return appendUint32(appendUint32(appendFrameHeader(b, 8, http2.FrameGoAway, 0, 0), last), uint32(code))
}

// appendHpackInt appends an HPACK integer with an n-bit prefix (RFC 7541
// 5.1); first holds the bits above the prefix. QPACK (RFC 9204 4.1.1)
// encodes integers and, without Huffman coding, strings the same way.
func appendHpackInt(b []byte, first byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	for v -= max; v >= 128; v >>= 7 {
		b = append(b, byte(v)|0x80)
	}
	return append(b, byte(v))
}

// appendHpackString appends a string literal without Huffman coding.
func appendHpackString[S string | []byte](b []byte, s S) []byte {
	return append(appendHpackInt(b, 0, 7, uint64(len(s))), s...)
}

// appendHpackField appends a literal field never added to the table, with
// a literal name (RFC 7541 6.2.2).
func appendHpackField[S string | []byte](b []byte, name string, value S) []byte {
	return appendHpackString(appendHpackString(append(b, 0), name), value)
}

// appendHpackStatus appends :status, indexed for 200, otherwise a literal
// with the static table's name.
func appendHpackStatus(b []byte, code int) []byte {
	if code == http.StatusOK {
		return append(b, 0x88)
	}
	var num [4]byte
	return appendHpackString(appendHpackInt(b, 0, 4, 8), strconv.AppendInt(num[:0], int64(code), 10))
}
