package geodns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchUDP reads the UDP socket in batches (recvmmsg) and writes the fast
// path's answers in batches (sendmmsg), on Linux directly (rawSocket,
// rawudp_linux.go), elsewhere through x/net's ipv4 or ipv6 PacketConn;
// batchLoops of them, all on the one socket. A
// query the fast path declines is handed, as read, to miekg/dns's UDP
// server, which reads it from handoff as it would from the socket (strict
// parsing included) and answers through ServeDNS on the socket.
//
// Only a socket bound to one address is read so: on a wildcard address
// the reply must leave from the address the query came to, which
// miekg/dns sees to with IP_PKTINFO per packet, and a dual-stack socket's
// IPv4 clients cannot be written to in x/net's batches.
type batchUDP struct {
	s       *Server
	conn    *net.UDPConn
	rw      batchConn
	handoff *handoffConn
	hold    time.Duration  // Config.UDPHold, resolved: 0 for none
	loops   sync.WaitGroup // owns the loops

	mu      sync.Mutex // guards stopped
	stopped bool
}

// batchConn is ipv4.PacketConn or ipv6.PacketConn (their Message is the
// same type).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

const (
	// batchSize is how many datagrams one system call reads.
	batchSize = 32
	// writeChunk is how many replies one system call of batchUDP.write
	// writes. Sending one over loopback takes a few microseconds, and
	// the Go runtime hands the P of a thread that stays in a system call
	// for more than 20 µs to another thread: on one CPU, those handoffs
	// cost more than the extra calls of smaller batches.
	writeChunk = 8
	// maxBatchLoops bounds the loops whatever GOMAXPROCS says.
	maxBatchLoops = 16
	// maxQuery is the largest datagram read whole, as miekg/dns reads
	// with UDPSize 65535.
	maxQuery = 65535
	// holdMin is how many queries one read must find for the loop to
	// pause before the next (Config.UDPHold): fewer, and it is keeping
	// up with them as they come.
	holdMin = 4
	// defaultUDPHold and maxUDPHold are Config.UDPHold's default and
	// bound. 50µs gathered ~28 queries a batch instead of ~5 under the
	// dns-bench load (~150,000 queries a second from dnsperf), for
	// ~5% less CPU a query (bench/RESULTS.md).
	defaultUDPHold = 50 * time.Microsecond
	maxUDPHold     = time.Millisecond
)

// newBatchUDP returns the batch reader of pc, or nil when miekg/dns is to
// read it: when off, or pc is not a UDP socket bound to one address.
func newBatchUDP(s *Server, pc net.PacketConn, off bool, hold time.Duration) *batchUDP {
	conn, ok := pc.(*net.UDPConn)
	if off || !ok {
		return nil
	}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil
	}
	ip, ok := netip.AddrFromSlice(la.IP)
	if !ok || ip.IsUnspecified() || ip.Is4In6() {
		return nil
	}
	b := &batchUDP{s: s, conn: conn, handoff: newHandoffConn(conn)}
	switch {
	case hold == 0:
		b.hold = defaultUDPHold
	case hold > 0:
		b.hold = hold
	}
	if ip.Is4() {
		b.rw = ipv4.NewPacketConn(conn)
	} else {
		b.rw = ipv6.NewPacketConn(conn)
	}
	return b
}

// start runs the loops; a loop that fails sends its error to errc.
func (b *batchUDP) start(errc chan<- error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	raw, err := newRawSocket(b.conn)
	if err == nil {
		b.handoff.raw.Store(raw)
	}
	for range batchLoops() {
		loop := b.loop
		if err == nil {
			loop = func() error { return raw.loop(b) }
		}
		b.loops.Go(func() {
			if err := loop(); err != nil {
				errc <- err
			}
		})
	}
}

// batchLoops is how many loops read the socket: one per P but one (left
// for TCP, the slow path, health checks), at least one.
func batchLoops() int { return min(max(runtime.GOMAXPROCS(0)-1, 1), maxBatchLoops) }

// stop ends the loops and waits for them. The socket stays open for
// miekg/dns's replies to what was handed over, until close.
func (b *batchUDP) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	if raw := b.handoff.raw.Load(); raw != nil {
		raw.wake()
		b.loops.Wait()
		return
	}
	b.conn.SetReadDeadline(time.Unix(1, 0)) // unblocks ReadBatch
	b.loops.Wait()
}

// close closes the socket, after stop.
func (b *batchUDP) close() {
	if raw := b.handoff.raw.Load(); raw != nil {
		raw.close()
		return
	}
	b.conn.Close()
}

// holds reports whether a loop that just read n datagrams pauses for
// b.hold before its next read: when it found several waiting (at least
// holdMin: queries come faster than it answers them one by one) but not
// a whole batch (more may be waiting already).
func (b *batchUDP) holds(n int) bool { return b.hold > 0 && n >= holdMin && n < batchSize }

func (b *batchUDP) isStopped() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopped
}

func (b *batchUDP) loop() error {
	in := make([]ipv4.Message, batchSize)
	out := make([]ipv4.Message, batchSize)
	outBufs := make([][]byte, batchSize)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxQuery)}
		outBufs[i] = make([]byte, maxUDPSize)
		out[i].Buffers = [][]byte{nil}
	}
	key := make([]byte, maxKeyLen)
	for {
		n, err := b.rw.ReadBatch(in, 0)
		if err != nil {
			if b.isStopped() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("udp: %w", err)
		}
		now := b.s.now()
		k := 0
		for i := range in[:n] {
			m := &in[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			pkt := m.Buffers[0][:m.N]
			size, act := b.s.serveFast(pkt, ua.AddrPort(), now, key, outBufs[k])
			switch act {
			case answered:
				out[k].Buffers[0] = outBufs[k][:size]
				out[k].Addr = ua
				k++
			case declined:
				b.handoff.deliver(pkt, ua)
			}
		}
		b.s.metrics.batches.Observe(float64(n)) // before the replies, as every count
		b.write(out[:k])
		for i := range out[:k] {
			out[i].Addr = nil
		}
	}
}

// write sends ms, writeChunk at a time, skipping one that cannot be sent.
func (b *batchUDP) write(ms []ipv4.Message) {
	for len(ms) > 0 {
		n, err := b.rw.WriteBatch(ms[:min(len(ms), writeChunk)], 0)
		if err != nil && n <= 0 {
			n = 1
		}
		ms = ms[n:]
	}
}

// handoffConn is the net.PacketConn that miekg/dns's UDP server reads from
// when the batch loops own the socket: it reads the queries they hand
// over and writes its replies to the socket (through raw once the loops
// use it: conn is closed then).
type handoffConn struct {
	conn *net.UDPConn
	// raw is the socket of the loops, set by batchUDP.start if they read
	// it directly (Linux); nil: they read and write through rw.
	raw    atomic.Pointer[rawSocket]
	in     chan handed
	done   chan struct{}
	closed sync.Once

	mu       sync.Mutex // guards deadline, changed
	deadline time.Time
	changed  chan struct{} // closed when the deadline changes
}

type handed struct {
	msg  []byte
	addr *net.UDPAddr
}

func newHandoffConn(conn *net.UDPConn) *handoffConn {
	return &handoffConn{conn: conn, in: make(chan handed, 256), done: make(chan struct{}), changed: make(chan struct{})}
}

// deliver hands a copy of msg over, waiting while miekg/dns is behind
// (then the socket's buffer fills, as it would without the batch loops).
func (c *handoffConn) deliver(msg []byte, addr *net.UDPAddr) {
	select {
	case c.in <- handed{append([]byte(nil), msg...), addr}:
	case <-c.done:
	}
}

func (c *handoffConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		deadline, changed := c.deadline, c.changed
		c.mu.Unlock()
		var timer *time.Timer
		var expired <-chan time.Time
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		var (
			n    int
			addr net.Addr
			err  error
		)
		again := false
		select {
		case h := <-c.in:
			n, addr = copy(b, h.msg), h.addr
		case <-expired:
			err = os.ErrDeadlineExceeded
		case <-changed:
			again = true
		case <-c.done:
			err = net.ErrClosed
		}
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, addr, err
		}
	}
}

func (c *handoffConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if r := c.raw.Load(); r != nil {
		return r.sendTo(b, addr)
	}
	return c.conn.WriteTo(b, addr)
}

// Close stops reads; the socket is the Server's to close.
func (c *handoffConn) Close() error {
	c.closed.Do(func() { close(c.done) })
	return nil
}

func (c *handoffConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

func (c *handoffConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *handoffConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func (c *handoffConn) SetWriteDeadline(time.Time) error { return nil }
