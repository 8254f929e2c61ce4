//go:build linux

package geodns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpControl is the UDP socket's net.ListenConfig.Control: it sets
// IP_PMTUDISC_PROBE (IPV6_PMTUDISC_PROBE). Replies go with DF set, as RFC
// 9715 recommends for IPv4 (IPv6 replies are never fragmented), and
// whatever path MTU ICMP messages claim is ignored, so a forged "too big"
// cannot make geodns fragment its answers; nothing it sends over UDP is
// larger than maxUDPSize (1232 bytes) and its headers, below the MTU of
// any link IPv6 runs on. It is also cheaper per send than the default:
// no path MTU lookup, and no IP ID to draw (a DF packet carries 0).
func udpControl(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "udp6" {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("udp socket: IP_MTU_DISCOVER: %w", serr)
	}
	return nil
}

// rawSocket is how the batch loops read and write the UDP socket on
// Linux: recvmmsg and sendmmsg called directly (RawSyscall, unseen by
// the scheduler), each loop on its own OS thread (runtime.LockOSThread),
// on a duplicate of the socket's descriptor put in blocking mode.
//
// A loop that may (holdP) keeps its P for good and waits in recvmmsg
// with it (MSG_WAITFORONE: it sleeps in the kernel until a datagram
// comes, then takes what is queued), as a C server's thread would.
// Through the runtime's system call state instead, each wait longer than
// 20 µs had sysmon take the P away, and sysmon, to do so, woke every
// 20 µs: under dnsperf some 1,000 wakeups a second on the loop's CPU,
// each preempting the loop, and every wait cost a second system call
// (the non-blocking read that found nothing). Holding its P, the loop is
// still preempted every 10 ms (a signal that ends the wait with EINTR),
// which is also how a stop-the-world reaches it. A wait that ends without
// a datagram (that preemption, the receive timeout) makes the next one go
// through Syscall, so an idle server gives its P back and the runtime
// goes quiet (held, an idle geodns spent ~1% of a core on the preemptions
// and sysmon). At least one P is left
// for everything else (TCP, the slow path, health checks): cmd/geodns
// runs with one P more than it has CPUs, and loops beyond what the Ps
// allow read what is queued with RawSyscall and block only through
// Syscall, letting the runtime give their P to others meanwhile.
//
// After a read that found several queries waiting (batchUDP.holds) a
// loop pauses for Config.UDPHold before its next read (pause; the
// thread's timer slack set to a tenth of the hold, so the pause ends on
// time), and reads what came meanwhile as one batch. Under dnsperf's load
// that is ~28 queries a read instead of ~5: a sixth of the recvmmsg and
// sendmmsg calls per query, ~5% less CPU per query, ~0.07 ms more mean
// latency at saturation (bench/RESULTS.md).
//
// The socket is the duplicate's alone: newRawSocket closes the
// net.UDPConn it came from, which takes the socket out of the Go
// runtime's epoll set. Left there, every datagram the socket received
// and every reply of its own that the kernel freed woke the epoll entry
// (ep_poll_callback, under a lock with interrupts off): about 2% of the
// server's CPU under dnsperf, in sock_wfree alone, for a registration
// nobody waits on. miekg/dns's replies to the queries handed to it go
// out through sendTo, in blocking mode: a UDP send blocks, if ever, only
// while the socket's send buffer is full. stop wakes the loops with
// shutdown(SHUT_RD); a receive timeout (rawReadTimeoutUsec) bounds the
// wait should that not wake one.
type rawSocket struct {
	fd      int
	ip4     bool // bound to an IPv4 address (else IPv6)
	stopped atomic.Bool

	mu     sync.RWMutex // guards closed; sendTo holds it for reading while it uses fd
	closed bool
}

// heldPs is how many Ps batch loops hold, process-wide.
var heldPs atomic.Int32

// holdP reports whether a loop may keep its P (see rawSocket), counting
// it in heldPs if so; the loop gives it back with releaseP.
func holdP() bool {
	for {
		n := heldPs.Load()
		if int(n)+1 >= runtime.GOMAXPROCS(0) {
			return false
		}
		if heldPs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func releaseP() { heldPs.Add(-1) }

// rawReadTimeoutUsec is SO_RCVTIMEO of the duplicate: how long at most a loop
// sleeps in recvmmsg without looking at stopped.
const rawReadTimeoutUsec = 100_000

// newRawSocket duplicates conn's descriptor and, once it has, closes
// conn (see rawSocket).
func newRawSocket(conn *net.UDPConn) (*rawSocket, error) {
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("udp socket: local address %v", conn.LocalAddr())
	}
	sc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := sc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup udp socket: %w", derr)
	}
	tv := unix.Timeval{Usec: rawReadTimeoutUsec}
	if err := errors.Join(unix.SetNonblock(fd, false), unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	conn.Close()
	return &rawSocket{fd: fd, ip4: la.IP.To4() != nil}, nil
}

// wake tells the loops to end and wakes them.
func (r *rawSocket) wake() {
	r.stopped.Store(true)
	unix.Shutdown(r.fd, unix.SHUT_RD) // ENOTCONN on a UDP socket, but it wakes the readers
}

// close closes the socket once the loops have ended; a later sendTo
// fails with net.ErrClosed.
func (r *rawSocket) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		unix.Close(r.fd)
	}
}

// sendTo writes one datagram b to addr, a *net.UDPAddr: miekg/dns's
// replies (handoffConn.WriteTo) to the addresses rawUDPAddr made.
func (r *rawSocket) sendTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: fmt.Errorf("%T is not a UDP address", addr)}
	}
	ap := ua.AddrPort()
	var sa unix.Sockaddr
	switch a := ap.Addr().Unmap(); {
	case r.ip4 && a.Is4():
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	case !r.ip4 && a.Is6():
		zone, _ := strconv.Atoi(ua.Zone) // rawUDPAddr's: the scope's number
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16(), ZoneId: uint32(zone)}
	default:
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: errors.New("not an address of the socket's family")}
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return 0, net.ErrClosed
	}
	if err := unix.Sendto(r.fd, b, 0, sa); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: err}
	}
	return len(b), nil
}

// rawBatch is one loop's buffers: the headers point into them, so they
// are allocated once, on the heap, and never move.
type rawBatch struct {
	in     [batchSize]unix.Mmsghdr
	inIov  [batchSize]unix.Iovec
	names  [batchSize]unix.RawSockaddrInet6 // big enough for either family
	out    [batchSize]unix.Mmsghdr
	outIov [batchSize]unix.Iovec
	// What the first pass over a batch found: each datagram's source,
	// whether it is a plain query, its memo key, hash and entry.
	srcs    [batchSize]netip.AddrPort
	plains  [batchSize]plain
	isPlain [batchSize]bool
	keys    [batchSize][]byte
	hashes  [batchSize]uint64
	entries [batchSize]*entry
	touched uint64        // keeps getAll's loads (see there)
	until   unix.Timespec // when pause ends
	keyBuf  []byte        // batchSize keys of maxKeyLen bytes
	inBuf   []byte        // batchSize slots of rawSlot bytes
	outBuf  []byte        // batchSize slots of maxUDPSize bytes
}

// rawSlot is the room of one datagram read: maxQuery, and a few cache
// lines more so that the slots' first lines do not all share a cache set.
const rawSlot = maxQuery + 193

func newRawBatch() *rawBatch {
	rb := &rawBatch{inBuf: make([]byte, batchSize*rawSlot), outBuf: make([]byte, batchSize*maxUDPSize), keyBuf: make([]byte, batchSize*maxKeyLen)}
	for i := range rb.in {
		rb.inIov[i].Base = &rb.inBuf[i*rawSlot]
		rb.inIov[i].SetLen(maxQuery)
		h := &rb.in[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&rb.names[i]))
		h.Iov = &rb.inIov[i]
		h.SetIovlen(1)
		rb.out[i].Hdr.Iov = &rb.outIov[i]
		rb.out[i].Hdr.SetIovlen(1)
	}
	return rb
}

// loop is batchUDP.loop on the raw socket.
func (r *rawSocket) loop(b *batchUDP) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	held := holdP()
	if held {
		defer releaseP()
	}
	if b.hold > 0 {
		defer setTimerSlack(max(b.hold/10, time.Microsecond))()
	}
	rb := newRawBatch()
	decline := func(pkt []byte, i int, src netip.AddrPort) {
		b.handoff.deliver(pkt, rawUDPAddr(&rb.names[i], src))
	}
	idle := false // the last wait ended without a datagram
	for !r.stopped.Load() {
		for i := range rb.in {
			rb.in[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		}
		n, errno := r.read(rb, held && !idle)
		if errno != 0 {
			switch errno {
			case unix.EAGAIN, unix.EINTR: // the receive timeout, a signal
				idle = true
				continue
			}
			if r.stopped.Load() {
				return nil
			}
			return fmt.Errorf("udp: recvmmsg: %w", errno)
		}
		if r.stopped.Load() {
			return nil // woken by wake's shutdown: what was read is none or its empty datagram
		}
		idle = false
		k := rb.serve(b.s, n, b.s.now(), decline)
		b.s.metrics.batches.Observe(float64(n)) // before the replies, as every count
		r.write(rb.out[:k])
		if b.holds(n) {
			rb.pause(b.hold, held)
		}
	}
	return nil
}

// pause sleeps for hold (Config.UDPHold): with the P if the loop
// holds it, as it waits in recvmmsg, else telling the scheduler. It sleeps
// until a deadline on the monotonic clock, so a signal does not shorten
// or lengthen it: the runtime's preemption signals come every 10 ms or so
// to a loop that holds its P, and ending the pause at each would make it
// unpredictable. The price, for a loop that holds its P: goroutines
// queued on that P, and a stop-the-world (with it every goroutine of the
// process), wait for the rest of its pause (at most the hold: 50µs by
// default, 1ms at most).
// The deadline is rb's, on the heap, where the kernel's writes find it
// (a goroutine's stack may move).
func (rb *rawBatch) pause(hold time.Duration, held bool) {
	if _, _, errno := unix.RawSyscall(unix.SYS_CLOCK_GETTIME, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(&rb.until)), 0); errno != 0 {
		return
	}
	rb.until = unix.NsecToTimespec(rb.until.Nano() + hold.Nanoseconds())
	for {
		var errno syscall.Errno
		if held {
			_, _, errno = unix.RawSyscall(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, uintptr(unsafe.Pointer(&rb.until)))
		} else {
			_, _, errno = unix.Syscall(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, uintptr(unsafe.Pointer(&rb.until)))
		}
		if errno != unix.EINTR {
			return
		}
	}
}

// setTimerSlack sets the calling thread's timer slack, how much later
// than asked the kernel may end its sleeps (50µs unless set, as long as
// a whole default hold), and returns what restores it.
func setTimerSlack(d time.Duration) (restore func()) {
	old, _, errno := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_GET_TIMERSLACK, 0, 0)
	if errno != 0 {
		return func() {}
	}
	unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0)
	return func() { unix.Prctl(unix.PR_SET_TIMERSLACK, old, 0, 0, 0) }
}

// serve answers the n datagrams read into rb at now, setting up rb.out
// for the answers, and returns how many there are. Queries the fast path
// declines go to decline, with their index and source.
//
// It makes two passes. The first parses, and looks up every plain
// query's entry at once (memo.getAll: a busy memo is larger than the
// CPU's caches, and the kernel's work between batches evicts it, so its
// lookups miss them). The second answers (and builds and stores what was
// missing).
func (rb *rawBatch) serve(s *Server, n int, now time.Time, decline func(pkt []byte, i int, src netip.AddrPort)) int {
	for i := range n {
		src, ok := rawSource(&rb.names[i], rb.in[i].Hdr.Namelen)
		rb.srcs[i], rb.isPlain[i], rb.keys[i] = src, false, nil
		if !ok {
			continue
		}
		pkt := rb.inBuf[i*rawSlot : i*rawSlot+int(rb.in[i].Len)]
		p, ok := parsePlain(pkt, src.Addr(), rb.keyBuf[i*maxKeyLen:(i+1)*maxKeyLen])
		if ok {
			rb.plains[i], rb.isPlain[i], rb.keys[i] = p, true, p.key
		}
	}
	rb.touched += s.memo.getAll(rb.keys[:n], rb.hashes[:n], rb.entries[:n], s.gen.Load(), now)
	k := 0
	for i := range n {
		src := rb.srcs[i]
		if !src.IsValid() {
			continue
		}
		pkt := rb.inBuf[i*rawSlot : i*rawSlot+int(rb.in[i].Len)]
		size, act := 0, declined
		out := rb.outBuf[k*maxUDPSize : (k+1)*maxUDPSize]
		if rb.isPlain[i] {
			size, act = s.answerFast(pkt, src, now, rb.plains[i], rb.entries[i], out)
		}
		switch act {
		case answered:
			rb.outIov[k].Base = &out[0]
			rb.outIov[k].SetLen(size)
			rb.out[k].Hdr.Name = rb.in[i].Hdr.Name
			rb.out[k].Hdr.Namelen = rb.in[i].Hdr.Namelen
			k++
		case declined:
			decline(pkt, i, src)
		}
	}
	return k
}

// read reads a batch into rb. A loop that holds its P (held) waits for
// one in recvmmsg with it. Otherwise what is queued is read without
// telling the scheduler, and only when nothing is does the thread block
// in recvmmsg through Syscall, letting the runtime give its P to others
// meanwhile.
func (r *rawSocket) read(rb *rawBatch, held bool) (int, unix.Errno) {
	if held {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&rb.in[0])), batchSize, unix.MSG_WAITFORONE, 0, 0)
		return int(n), errno
	}
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&rb.in[0])), batchSize, unix.MSG_WAITFORONE|unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.EAGAIN {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&rb.in[0])), batchSize, unix.MSG_WAITFORONE, 0, 0)
	}
	return int(n), errno
}

// write sends ms, a batch's answers, in one system call, skipping one
// that cannot be sent (unlike batchUDP.write, it need not send them in
// chunks of writeChunk: the runtime does not see RawSyscall). As read
// does, it blocks, telling the scheduler, only when the socket's send
// buffer is full.
func (r *rawSocket) write(ms []unix.Mmsghdr) {
	for len(ms) > 0 {
		p, c := uintptr(unsafe.Pointer(&ms[0])), uintptr(len(ms))
		n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(r.fd), p, c, unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EAGAIN {
			n, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(r.fd), p, c, 0, 0, 0)
		}
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n == 0 {
			n = 1
		}
		ms = ms[n:]
	}
}

// rawSource reads the address a datagram came from.
func rawSource(sa *unix.RawSockaddrInet6, l uint32) (netip.AddrPort, bool) {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port)) // network order
	port := uint16(p[0])<<8 | uint16(p[1])
	switch {
	case sa.Family == unix.AF_INET6 && l >= unix.SizeofSockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	case sa.Family == unix.AF_INET && l >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	}
	return netip.AddrPort{}, false
}

// rawUDPAddr is src as miekg/dns is to see it, with its IPv6 zone.
func rawUDPAddr(sa *unix.RawSockaddrInet6, src netip.AddrPort) *net.UDPAddr {
	ua := net.UDPAddrFromAddrPort(src)
	if sa.Family == unix.AF_INET6 && sa.Scope_id != 0 {
		ua.Zone = strconv.Itoa(int(sa.Scope_id))
	}
	return ua
}
