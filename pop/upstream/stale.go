package upstream

// A pooled connection may have been closed by the origin while it sat
// idle: its keep-alive timeout, a GOAWAY, a reset. A request that takes it
// just then fails, though the origin never saw it. Go's transports retry
// some of those themselves: HTTP/1.1 an idempotent request, or one that
// wrote nothing and whose body can be had again (GetBody); HTTP/2 a stream
// the origin refused or left out of its GOAWAY, if its body can be had
// again. The rest would be a 502. This file closes the gap:
//
//   - originConn, the group's connections, count the bytes they write and
//     note when the origin closed them; and before the first byte of a
//     request on a pooled connection they check, on Linux, that the
//     origin has not closed it already (TCP CLOSE_WAIT or reset) and
//     refuse to write if it has.
//   - replay makes a body that cannot be had again (a client's upload)
//     replayable while no more than replayLimit of it has been read, so
//     that the transports' own retries, and ours, can send it again.
//   - attempt sends a request that failed on a pooled connection the
//     origin closed once more, on a connection of its own (retryFresh),
//     if no byte of it was written there or, for an idempotent request,
//     no answer had begun (attemptTrace.stale).

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// replayLimit is how much of a request body replay keeps to send again.
// When nothing was written, HTTP/1.1 has read at most its 4 KiB write
// buffer of the body, HTTP/2 none of it; what HTTP/2 resends after a
// GOAWAY can be up to its flow-control window.
const replayLimit = 64 << 10

var (
	errOriginClosed  = errors.New("origin had closed the connection")
	errNotReplayable = errors.New("request body cannot be sent again")
	errBodyReplaced  = errors.New("request body read after it was replaced by a replay")
)

// originConn is a connection the group dialled.
type originConn struct {
	net.Conn
	written atomic.Int64 // bytes written
	check   atomic.Bool  // the next Write first checks that the origin has not closed
	closed  atomic.Bool  // the origin closed it: a read failed, or a check found it closed
}

func (c *originConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !isTimeout(err) && !errors.Is(err, net.ErrClosed) {
		c.closed.Store(true)
	}
	return n, err
}

func (c *originConn) Write(p []byte) (int, error) {
	if c.check.Swap(false) && peerClosed(c.Conn) {
		c.closed.Store(true)
		c.Conn.Close() // so that the transport's reader sees it too
		return 0, errOriginClosed
	}
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// CloseWrite half-closes the connection, as an upgraded exchange (101
// Switching Protocols) may.
func (c *originConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// asOriginConn returns the originConn under c, or nil.
func asOriginConn(c net.Conn) *originConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	oc, _ := c.(*originConn)
	return oc
}

// pooledConn is the pooled connection an attempt got, and how much had
// been written on it by then.
type pooledConn struct {
	c       *originConn
	written int64
}

// gotConn moves the attempt to phaseSent and notes the connection if it
// is a pooled one, arming its check; a new note replaces any earlier one
// (the transport's own retry).
func (t *attemptTrace) gotConn(info httptrace.GotConnInfo) {
	t.reach(phaseSent)
	oc := asOriginConn(info.Conn)
	if oc == nil || !info.Reused {
		t.pooled.Store(nil)
		return
	}
	t.pooled.Store(&pooledConn{c: oc, written: oc.written.Load()})
	oc.check.Store(true)
}

// stale reports whether the attempt failed on a pooled connection that
// the origin closed (a read hit EOF or a reset, or a check found it
// closed), and so may be sent again on a new connection: if no byte was
// written on it since the attempt got it, the origin cannot have seen the
// request; an idempotent request may also go again if no answer had
// begun, as Go's HTTP/1.1 transport resends one itself. It is false after
// the transport's own retry on a new connection.
func (t *attemptTrace) stale(idempotent bool) bool {
	p := t.pooled.Load()
	if p == nil || !p.c.closed.Load() {
		return false
	}
	return p.c.written.Load() == p.written || idempotent && t.phase() < phaseBody
}

// retryFresh sends out again on a connection of its own, after it failed
// on a pooled connection the origin had closed (attemptTrace.stale). It
// returns the new attempt's trace, or nil if out's body cannot be sent
// again.
func (g *Group) retryFresh(ctx context.Context, out *http.Request, s *server) (*http.Response, *attemptTrace, error) {
	again := *out
	if out.Body != nil && out.Body != http.NoBody {
		if out.GetBody == nil {
			return nil, nil, errNotReplayable
		}
		b, err := out.GetBody()
		if err != nil {
			return nil, nil, err
		}
		again.Body = b
	}
	tr := &attemptTrace{}
	g.freshRetries.Add(1)
	s.requests.Add(1)
	resp, err := s.fresh.RoundTrip(again.WithContext(httptrace.WithClientTrace(ctx, tr.hooks())))
	return resp, tr, err
}

// replay keeps what is read of a request body that cannot be had again,
// up to replayLimit, so that it can be read again from the start: each
// reader it hands out replaces the one before, which can read no more.
// Once settled it hands out no more and keeps nothing, and the body
// closes when the last reader does. The body is read outside the lock,
// so that a Close or settle never waits for a client's slow upload.
type replay struct {
	src io.ReadCloser

	mu      sync.Mutex // guards all below
	kept    []byte     // the body's first bytes, all that was read while keeping
	read    int64      // bytes read from src
	srcErr  error      // the error src returned, io.EOF at its end
	gen     int        // the reader that may read
	busy    bool       // a reader is in src.Read
	over    bool       // read past replayLimit: not replayable
	settled bool       // no more readers
	closed  bool       // the reader of gen is closed
	done    bool       // src is closed, or being closed
}

// replayable makes out's body replayable, if it has one that GetBody cannot
// give again, and returns its replay (or nil): the caller settles it when
// it hands out no more readers.
func replayable(out *http.Request) *replay {
	if out.Body == nil || out.Body == http.NoBody || out.GetBody != nil {
		return nil
	}
	r := &replay{src: out.Body}
	out.Body = &replayReader{r: r}
	out.GetBody = r.again
	return r
}

// again returns a reader of the whole body, replacing the one before.
func (r *replay) again() (io.ReadCloser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.over || r.settled || r.busy || (r.srcErr != nil && r.srcErr != io.EOF) {
		return nil, errNotReplayable
	}
	r.gen++
	r.closed = false
	return &replayReader{r: r, gen: r.gen}, nil
}

// settle ends the replays: the current reader reads on, and the body
// closes with it.
func (r *replay) settle() {
	r.mu.Lock()
	r.settled = true
	closeSrc := r.closeLocked(!r.busy) // else the read in progress closes it
	r.mu.Unlock()
	closeSrc()
}

// closeLocked returns the func that closes src if now is set and the
// current reader is closed after settle, or else one that does nothing.
func (r *replay) closeLocked(now bool) func() {
	if !now || !r.settled || !r.closed || r.done {
		return func() {}
	}
	r.done, r.kept = true, nil
	return func() { r.src.Close() }
}

type replayReader struct {
	r   *replay
	gen int
	off int64 // bytes of the body this reader has read
}

func (rr *replayReader) Read(p []byte) (int, error) {
	r := rr.r
	r.mu.Lock()
	if rr.gen != r.gen || r.closed || r.busy {
		r.mu.Unlock()
		return 0, errBodyReplaced
	}
	if rr.off < int64(len(r.kept)) {
		n := copy(p, r.kept[rr.off:])
		rr.off += int64(n)
		r.mu.Unlock()
		return n, nil
	}
	if r.settled {
		r.kept = nil // passed: nothing will read it again
	}
	if err := r.srcErr; err != nil {
		r.mu.Unlock()
		return 0, err
	}
	r.busy = true
	r.mu.Unlock()

	n, err := r.src.Read(p)

	r.mu.Lock()
	r.busy = false
	r.read += int64(n)
	rr.off += int64(n)
	switch {
	case r.settled || r.over:
	case r.read > replayLimit:
		r.over, r.kept = true, nil
	default:
		r.kept = append(r.kept, p[:n]...)
	}
	r.srcErr = err
	closeSrc := r.closeLocked(true) // closed while this read was in progress
	r.mu.Unlock()
	closeSrc()
	return n, err
}

func (rr *replayReader) Close() error {
	r := rr.r
	r.mu.Lock()
	if rr.gen != r.gen || r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	closeSrc := r.closeLocked(true) // a read in progress may be waiting on it
	r.mu.Unlock()
	closeSrc()
	return nil
}
