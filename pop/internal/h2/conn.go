package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Conn is one HTTP/2 connection (RFC 9113). One goroutine reads frames; a
// plain GET or HEAD is offered to the connection's Hits hook from that
// goroutine (see serveHit), and the responses to one batch of requests
// leave in one TLS write. Every other stream runs the Server's Handler in
// a goroutine of its own through responseWriter, as net/http's server
// would.
type Conn struct {
	srv    *Server
	hits   Hits // nil: none
	cork   Corker
	tc     *tls.Conn
	br     *bufio.Reader
	fr     *http2.Framer
	state  *tls.ConnectionState
	remote string
	ctx    context.Context
	cancel context.CancelFunc
	hbuf   []byte // the reader's header block buffer

	mu           sync.Mutex // guards everything below
	cond         sync.Cond  // on mu: send windows grew, a stream ended, the connection died
	wbuf         []byte     // frames not yet written
	werr         error      // the connection can no longer be written
	sendConn     outflow    // connection send window
	peerInit     int64      // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame int        // peer's SETTINGS_MAX_FRAME_SIZE
	zeroed       bool       // the table size update to zero has been sent
	recvConn     inflow     // what the client may still send on the connection
	streams      map[uint32]*stream
	refused      int        // streams refused since a handler last finished unreset
	resetIDs     [64]uint32 // streams recently reset by us, whose late frames are ignored
	resetNext    int
	maxID        uint32 // highest stream the client opened
	goaway       bool   // no new streams: GOAWAY sent or received
	handlers     sync.WaitGroup
}

// stream is a stream the reader did not finish at once: a handler runs
// for it, or a hit waits for send window.
type stream struct {
	id           uint32
	send         outflow // send window
	recv         inflow  // what the client may still send on the stream
	reset        bool    // RST_STREAM sent or received: send nothing more
	peerReset    bool    // RST_STREAM received
	done         bool    // END_STREAM sent
	remoteClosed bool    // END_STREAM received
	finalSent    bool    // the final header block went out
	declared     int64   // request Content-Length, or -1
	received     int64   // request body bytes
	body         *body
	cancel       context.CancelFunc
}

const (
	preface          = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	recvStreamWindow = 1 << 20 // request body buffered per stream, at most
	recvConnWindow   = 4 << 20 // and per connection
	maxFrame         = 16384   // the protocol's default; we advertise no other
	flushAt          = 64 << 10
	maxWindow        = 1<<31 - 1
)

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

var (
	errStreamReset = errors.New("http2: stream reset")
	errConnClosed  = errors.New("http2: connection closed")
	errStalled     = errors.New("http2: the client's flow-control window stayed closed for the idle timeout")
)

// NewConn prepares a connection whose TLS handshake is complete and whose
// protocol is h2; Serve serves it. hits may be nil.
func (s *Server) NewConn(tc *tls.Conn, hits Hits) *Conn {
	st := tc.ConnectionState()
	base := context.WithValue(context.Background(), http.LocalAddrContextKey, tc.LocalAddr())
	if s.ConnContext != nil {
		base = s.ConnContext(base, tc)
	}
	ctx, cancel := context.WithCancel(base)
	c := &Conn{srv: s, hits: hits, tc: tc, br: bufio.NewReaderSize(tc, 16<<10), state: &st,
		remote: tc.RemoteAddr().String(), ctx: ctx, cancel: cancel,
		sendConn: 65535, peerInit: 65535, peerMaxFrame: maxFrame, recvConn: inflow{avail: recvConnWindow},
		streams: map[uint32]*stream{}}
	c.cork, _ = tc.NetConn().(Corker)
	c.cond.L = &c.mu
	c.fr = http2.NewFramer(io.Discard, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = uint32(s.MaxHeaderBytes)
	c.fr.SetMaxReadFrameSize(maxFrame)
	// Our SETTINGS are the first frame, queued before a drain can add
	// its GOAWAY (RFC 9113 3.4).
	c.wbuf = appendFrameHeader(c.wbuf, 18, http2.FrameSettings, 0, 0)
	c.wbuf = appendSetting(c.wbuf, http2.SettingMaxConcurrentStreams, c.maxStreams())
	c.wbuf = appendSetting(c.wbuf, http2.SettingInitialWindowSize, recvStreamWindow)
	c.wbuf = appendSetting(c.wbuf, http2.SettingMaxHeaderListSize, uint32(s.MaxHeaderBytes))
	c.wbuf = appendWindowUpdate(c.wbuf, 0, recvConnWindow-65535)
	return c
}

// Serve serves the connection until it ends: it returns when the
// connection and every stream on it are done.
func (c *Conn) Serve() {
	defer c.teardown()
	c.serve()
}

func (c *Conn) serve() {
	c.tc.SetReadDeadline(time.Now().Add(c.srv.ReadHeaderTimeout))
	var pre [len(preface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != preface {
		return
	}
	if c.srv.draining() {
		c.Drain()
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
					c.tc.SetReadDeadline(time.Now().Add(c.srv.IdleTimeout))
				} else {
					c.tc.SetReadDeadline(time.Time{})
				}
			}
			c.mu.Unlock()
			if err != nil || finished {
				return
			}
			if idle && c.srv.draining() {
				c.Drain()
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
		if len(c.wbuf) >= flushAt {
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
func (c *Conn) readError(err error) bool {
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
func (c *Conn) connError(code http2.ErrCode) {
	c.mu.Lock()
	c.connErrorLocked(code)
	c.mu.Unlock()
}

func (c *Conn) connErrorLocked(code http2.ErrCode) {
	c.goaway = true
	c.wbuf = appendGoAway(c.wbuf, c.maxID, code)
	c.flushLocked()
}

// Drain sends GOAWAY: streams already opened finish, new ones are
// ignored (clients retry them elsewhere), and the connection closes when
// the last stream ends.
func (c *Conn) Drain() {
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
func (c *Conn) teardown() {
	c.cancel()
	c.mu.Lock()
	if c.werr == nil {
		c.flushLocked()
		c.werr = errConnClosed
	}
	for _, st := range c.streams {
		st.reset = true
		st.cancel()
		if st.body != nil {
			st.body.finish(errConnClosed)
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if tcp, ok := c.tc.NetConn().(halfCloser); ok {
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
}

func (c *Conn) maxStreams() uint32 {
	if n := c.srv.MaxConcurrentStreams; n > 0 {
		return uint32(n)
	}
	return 250
}

// process handles one frame; it reports whether the connection goes on.
func (c *Conn) process(frame http2.Frame) bool {
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
					if !st.send.add(delta) {
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
			if !c.sendConn.add(inc) {
				c.connErrorLocked(http2.ErrCodeFlowControl)
				return false
			}
		} else if st := c.streams[fr.StreamID]; st != nil {
			if !st.send.add(inc) {
				c.resetLocked(st, http2.ErrCodeFlowControl)
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
				st.body.finish(errStreamReset)
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
func (c *Conn) headers(mh *http2.MetaHeadersFrame) bool {
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
	if mh.StreamEnded() && c.hits != nil && c.serveHit(mh) {
		return true
	}
	return c.startHandler(mh)
}

// data handles a DATA frame: request body bytes, counted against both
// receive windows.
func (c *Conn) data(df *http2.DataFrame) bool {
	id := df.StreamID
	n := int64(df.Length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if id > c.maxID || id%2 == 0 {
		c.connErrorLocked(http2.ErrCodeProtocol)
		return false
	}
	if !c.recvConn.take(n) {
		c.connErrorLocked(http2.ErrCodeFlowControl)
		return false
	}
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
	if !st.recv.take(n) {
		c.returnConn(n)
		c.resetLocked(st, http2.ErrCodeFlowControl)
		return true
	}
	p := df.Data()
	if pad := n - int64(len(p)); pad > 0 { // padding is flow controlled but never read
		c.returnConn(pad)
		if inc := st.recv.give(pad); inc > 0 && !df.StreamEnded() {
			c.wbuf = appendWindowUpdate(c.wbuf, id, inc)
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

func (c *Conn) bodyEnd(st *stream) {
	if st.body != nil {
		st.body.finish(io.EOF)
	}
}

// returnConn gives n bytes of connection receive window back (batched:
// see inflow).
func (c *Conn) returnConn(n int64) {
	if n <= 0 {
		return
	}
	if inc := c.recvConn.give(n); inc > 0 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, inc)
	}
}

// bodyRead gives back the window of n request body bytes a handler read.
func (c *Conn) bodyRead(st *stream, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return
	}
	queued := len(c.wbuf)
	c.returnConn(int64(n))
	if !st.remoteClosed && !st.reset {
		if inc := st.recv.give(int64(n)); inc > 0 {
			c.wbuf = appendWindowUpdate(c.wbuf, st.id, inc)
		}
	}
	if len(c.wbuf) > queued {
		c.flushLocked() // the client may be waiting for these updates to send more
	}
}

// noteReset remembers a stream we reset without keeping its state.
func (c *Conn) noteReset(id uint32) {
	c.resetIDs[c.resetNext] = id
	c.resetNext = (c.resetNext + 1) % len(c.resetIDs)
}

func (c *Conn) wasReset(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

// resetLocked sends RST_STREAM and ends the stream's handler.
func (c *Conn) resetLocked(st *stream, code http2.ErrCode) {
	if !st.reset && !(st.done && st.remoteClosed) {
		c.wbuf = appendRST(c.wbuf, st.id, code)
	}
	st.reset = true
	st.cancel()
	if st.body != nil {
		st.body.finish(errStreamReset)
	}
	c.cond.Broadcast()
}

// reset sends RST_STREAM from a handler's goroutine.
func (c *Conn) reset(st *stream, code http2.ErrCode) {
	c.mu.Lock()
	c.resetLocked(st, code)
	c.flushLocked()
	c.mu.Unlock()
}

// newStream registers a stream that outlives the reader's handling of its
// HEADERS; ok is false when the client has too many open.
func (c *Conn) newStream(id uint32, ended bool) (*stream, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.newStreamLocked(id, ended)
}

func (c *Conn) newStreamLocked(id uint32, ended bool) (*stream, bool) {
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
	st := &stream{id: id, send: outflow(c.peerInit), recv: inflow{avail: recvStreamWindow},
		remoteClosed: ended, declared: -1, cancel: func() {}}
	c.streams[id] = st
	c.handlers.Add(1)
	return st, true
}

// streamDone forgets a stream whose handler returned.
func (c *Conn) streamDone(st *stream) {
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
		c.tc.SetReadDeadline(time.Now().Add(c.srv.IdleTimeout)) // idle from now
	}
	c.mu.Unlock()
	c.handlers.Done()
}
