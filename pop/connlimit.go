package pop

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// connLimiter caps open client connections in total and per client
// address, so that one client cannot hold the PoP's memory and goroutines
// with idle connections. One limiter counts TCP (TLS and plain HTTP), one
// QUIC.
type connLimiter struct {
	max, perAddr int    // <= 0: no limit
	peers        *peers // addresses exempt from perAddr

	mu     sync.Mutex // guards total, byAddr
	total  int
	byAddr map[string]int
}

func newConnLimiter(max, perAddr int, peers *peers) *connLimiter {
	if max <= 0 && perAddr <= 0 {
		return nil
	}
	return &connLimiter{max: max, perAddr: perAddr, peers: peers, byAddr: map[string]int{}}
}

// acquire takes a slot for a connection from addr, or reports false.
func (l *connLimiter) acquire(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return false
	}
	if l.perAddr > 0 && l.byAddr[addr] >= l.perAddr && !l.peers.has(addr) {
		return false
	}
	l.total++
	l.byAddr[addr]++
	return true
}

func (l *connLimiter) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byAddr[addr] - 1; n > 0 {
		l.byAddr[addr] = n
	} else {
		delete(l.byAddr, addr)
	}
}

// admit wraps c so that closing it releases its slot, or closes c and
// returns nil when the limit is reached.
func (l *connLimiter) admit(c net.Conn) net.Conn {
	if l == nil {
		return c
	}
	addr := clientIP(c.RemoteAddr().String())
	if !l.acquire(addr) {
		c.Close()
		return nil
	}
	return &limitedConn{Conn: c, release: sync.OnceFunc(func() { l.release(addr) })}
}

type limitedConn struct {
	net.Conn
	release func()
}

// halfCloser is a connection that can end its sending side alone (TCP),
// which the HTTP/2 server does before draining a closing connection.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// CloseWrite ends the sending side when the wrapped connection can.
func (c *limitedConn) CloseWrite() error {
	if hc, ok := c.Conn.(halfCloser); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// limitListener applies a connLimiter to a plain listener; refused
// connections are closed at once and counted.
type limitListener struct {
	net.Listener
	l       *connLimiter
	refused func()
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ln.l.admit(c); lc != nil {
			return lc, nil
		}
		ln.refused()
	}
}

// quicLimitListener applies a connLimiter to QUIC connections: one over
// the limit is closed with H3_EXCESSIVE_LOAD right after the handshake
// starts; a slot is released when its connection ends.
type quicLimitListener struct {
	http3.QUICListener
	l       *connLimiter
	refused func()
}

func (ln *quicLimitListener) Accept(ctx context.Context) (*quic.Conn, error) {
	for {
		c, err := ln.QUICListener.Accept(ctx)
		if err != nil {
			return nil, err
		}
		addr := clientIP(c.RemoteAddr().String())
		if !ln.l.acquire(addr) {
			c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many connections from this address")
			ln.refused()
			continue
		}
		go func() {
			<-c.Context().Done()
			ln.l.release(addr)
		}()
		return c, nil
	}
}

// peers is Limits.Peers: addresses exempt from the limits per client
// address. A nil *peers has none.
type peers struct {
	prefixes []netip.Prefix
}

// parsePeers reads IPs and CIDR prefixes.
func parsePeers(list []string) (*peers, error) {
	if len(list) == 0 {
		return nil, nil
	}
	p := &peers{}
	for i, v := range list {
		if pfx, err := netip.ParsePrefix(v); err == nil {
			p.prefixes = append(p.prefixes, pfx.Masked())
			continue
		}
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %q, want an IP address or a CIDR prefix such as 10.77.2.20 or 10.77.0.0/16", i, v)
		}
		p.prefixes = append(p.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
	}
	return p, nil
}

// has reports whether ip (as clientIP gives it) is a peer's.
func (p *peers) has(ip string) bool {
	if p == nil {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}
