package h2

import (
	"time"

	"golang.org/x/net/http2"

	"github.com/edgecdn/cdn/pop/internal/fieldenc"
)

// writeHeaders sends a header block from a handler's goroutine.
func (c *Conn) writeHeaders(st *stream, block []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if st.reset {
		return errStreamReset
	}
	c.appendHeaders(st.id, block, end)
	if end {
		st.done = true
	}
	return c.flushLocked()
}

// writeData sends body bytes from a handler's goroutine, waiting for send
// window as needed.
func (c *Conn) writeData(st *stream, p []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.werr != nil {
			return c.werr
		}
		if st.reset {
			return errStreamReset
		}
		if len(p) == 0 {
			if end {
				c.appendData(st.id, nil, true)
				st.done = true
			}
			return c.flushLocked()
		}
		n := int64(len(p))
		n = min(n, int64(c.sendConn), int64(st.send))
		if n <= 0 {
			if err := c.flushLocked(); err != nil {
				return err
			}
			// A client that never opens its window would hold the
			// stream and its goroutine forever: after an idle timeout
			// without a window change, the stream is cancelled.
			if waitAtMost(&c.cond, c.srv.IdleTimeout) && !st.reset && c.werr == nil && min(c.sendConn, st.send) <= 0 {
				c.resetLocked(st, http2.ErrCodeCancel)
				c.flushLocked()
				return errStalled
			}
			continue
		}
		last := end && n == int64(len(p))
		c.sendConn.take(n)
		st.send.take(n)
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
func (c *Conn) appendHeaders(id uint32, block []byte, end bool) {
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
func (c *Conn) appendData(id uint32, p []byte, end bool) {
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
// whenever it reaches flushAt, so that a large body is never copied
// whole.
func (c *Conn) appendDataFlushing(id uint32, p []byte, end bool) error {
	for {
		n := min(len(p), flushAt)
		c.appendData(id, p[:n], end && n == len(p))
		p = p[n:]
		if len(c.wbuf) >= flushAt {
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
func (c *Conn) statusBlock(code int) []byte {
	return fieldenc.AppendHPACKStatus(nil, code)
}

// flushLocked writes the pending frames: one TLS write, and for large
// batches one syscall through the cork under the TLS connection.
func (c *Conn) flushLocked() error {
	if c.werr != nil || len(c.wbuf) == 0 {
		return c.werr
	}
	c.tc.SetWriteDeadline(time.Now().Add(c.srv.IdleTimeout))
	var err error
	if c.cork != nil && len(c.wbuf) > 16<<10 {
		c.cork.Cork()
		_, err = c.tc.Write(c.wbuf)
		if ferr := c.cork.Uncork(); err == nil {
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
