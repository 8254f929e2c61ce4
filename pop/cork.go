package pop

import (
	"net"
	"sync"
)

// corkConn sits under the TLS connection and, while corked, gathers the
// records of one response so that they leave in one write. Being the
// front's own layer under TLS, which every close goes through, it also
// takes the connection's last round-trip sample (tcpRTT) as it closes.
type corkConn struct {
	net.Conn
	rtt    tcpRTT
	mu     sync.Mutex // guards corked, buf: a TLS alert may be written by Close from another goroutine
	corked bool
	buf    *[]byte
}

// Close takes the last round-trip sample, while the socket can still be
// asked, then closes it.
func (c *corkConn) Close() error {
	c.rtt.closing()
	return c.Conn.Close()
}

var corkBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= 256<<10 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.buf = corkBuffers.Get().(*[]byte)
	c.mu.Unlock()
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.corked = false
	if cap(*c.buf) <= 512<<10 {
		corkBuffers.Put(c.buf)
	}
	c.buf = nil
	return err
}

func (c *corkConn) flushLocked() error {
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// CloseWrite ends the sending side of the connection underneath, so that
// the HTTP/2 server can half-close before draining a closing connection.
func (c *corkConn) CloseWrite() error {
	if hc, ok := c.Conn.(halfCloser); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

// Cork and Uncork are cork and uncork for the HTTP/2 server, which gathers
// large batches of frames the same way.
func (c *corkConn) Cork()         { c.cork() }
func (c *corkConn) Uncork() error { return c.uncork() }
