package compose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Net is the lab's network on one machine: a network namespace per host
// whose interface lab0 holds the host's address, delayed by one of two
// backends that follow the same DelayPlans:
//
//   - netem: lab0 is a veth whose peer sits on a bridge in one more
//     namespace (prefix+"bridge"), and lab0's egress holds the host's
//     plan as netem qdiscs behind u32 filters. The kernel does it all.
//   - userspace: lab0 is a TUN device, and a delay line in this process
//     forwards every packet to its destination after the sender's plan
//     delay. It needs no qdisc (sch_netem is missing on some kernels) and
//     no bridge.
type Net struct {
	topo   *Topology
	prefix string // namespace names are prefix+host
	hosts  map[netip.Addr]*nsHost
	delay  DelayChoice
	leaf   leafFunc // the netem backend's band qdisc

	linkMu sync.Mutex // guards changes of the band qdiscs (SetLinkDelay)

	cancel context.CancelFunc
	wg     sync.WaitGroup // owns the readers and the pair queues
}

type nsHost struct {
	host Host
	ns   string
	base DelayPlan // the matrix's
	// plan is base with the extra delay of SetLinkDelay; the userspace
	// delay line looks each packet up in it.
	plan atomic.Pointer[DelayPlan]
	tun  *os.File // userspace backend only
	// out holds one queue per destination, so that packets of one pair
	// keep their order while pairs with different delays interleave.
	out map[netip.Addr]chan packet
}

type packet struct {
	due  time.Time
	data []byte
}

// NetConfig configures Up.
type NetConfig struct {
	// Prefix names the namespaces (prefix+host, and prefix+"bridge" for
	// the netem backend). If empty, "edgecdn-".
	Prefix string
	// Resolver is written to /etc/netns/NS/resolv.conf of every host
	// (ip netns exec bind-mounts it). If empty, none is written.
	Resolver string
	// Delay is the delay backend. If empty or auto, ChooseDelay picks
	// netem when the kernel has it, else userspace.
	Delay Backend

	// leaf replaces netem in the netem backend's bands (tests check the
	// bridge and the classification on kernels without netem). If nil,
	// netem.
	leaf leafFunc
}

const (
	tunName    = "lab0"    // every host's lab interface, TUN or veth
	bridgeName = "lab-br0" // the netem backend's bridge
)

// Up creates the namespaces and the delays. Close removes everything.
func Up(ctx context.Context, topo *Topology, cfg NetConfig) (*Net, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: network namespaces need root")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "edgecdn-"
	}
	n := &Net{topo: topo, prefix: cfg.Prefix, hosts: map[netip.Addr]*nsHost{}}
	var err error
	if cfg.leaf != nil {
		n.delay = DelayChoice{BackendNetem, "test: FIFOs in place of netem"}
	} else if n.delay, err = ChooseDelay(cfg.Delay); err != nil {
		return nil, err
	}
	for _, h := range topo.Hosts {
		plan, err := topo.DelayPlan(h.Name)
		if err != nil {
			return nil, err
		}
		nh := &nsHost{host: h, ns: n.NS(h.Name), base: plan, out: map[netip.Addr]chan packet{}}
		nh.plan.Store(&plan)
		n.hosts[h.Addr] = nh
	}
	if n.delay.Backend == BackendNetem {
		n.leaf = cfg.leaf
		if n.leaf == nil {
			n.leaf = netemLeaf
		}
		err = n.upBridge(cfg.Resolver, n.leaf)
	} else {
		err = n.upTUN(ctx, cfg.Resolver)
	}
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Delay is the backend this Net uses and why.
func (n *Net) Delay() DelayChoice { return n.delay }

// upTUN gives every host a TUN device and starts the delay line.
func (n *Net) upTUN(ctx context.Context, resolver string) error {
	for _, h := range n.topo.Hosts {
		nh := n.hosts[h.Addr]
		err := n.addHost(h, resolver, func(nl *netlink.Handle) (netlink.Link, error) {
			tun, err := openTUN(tunName)
			if err != nil {
				return nil, err
			}
			nh.tun = tun
			return nl.LinkByName(tunName)
		})
		if err != nil {
			return fmt.Errorf("lab host %s: %w", h.Name, err)
		}
	}
	ctx, n.cancel = context.WithCancel(ctx)
	for _, src := range n.hosts {
		for _, dst := range n.hosts {
			if src == dst {
				continue
			}
			q := make(chan packet, 4096)
			src.out[dst.host.Addr] = q
			n.wg.Go(func() { deliver(ctx, q, dst.tun) })
		}
	}
	for _, src := range n.hosts {
		n.wg.Go(func() { n.read(src) })
	}
	return nil
}

// upBridge puts a bridge in its own namespace and gives every host a veth
// on it, with the host's plan on the veth's egress.
func (n *Net) upBridge(resolver string, leaf leafFunc) error {
	if _, ok := n.topo.Host("bridge"); ok {
		return fmt.Errorf("a host named bridge would share the bridge's namespace %s", n.bridgeNS())
	}
	hub, err := newNamedNS(n.bridgeNS())
	if err != nil {
		return fmt.Errorf("lab bridge namespace: %w", err)
	}
	defer hub.Close()
	hubNL, err := netlink.NewHandleAt(hub)
	if err != nil {
		return err
	}
	defer hubNL.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := hubNL.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	if err := hubNL.LinkSetUp(br); err != nil {
		return err
	}
	for i, h := range n.topo.Hosts {
		nh := n.hosts[h.Addr]
		err := n.addHost(h, resolver, func(nl *netlink.Handle) (netlink.Link, error) {
			peer := fmt.Sprintf("h%d", i)
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: tunName, TxQLen: 1000}, PeerName: peer, PeerNamespace: netlink.NsFd(int(hub))}
			if err := nl.LinkAdd(veth); err != nil {
				return nil, fmt.Errorf("add veth: %w", err)
			}
			p, err := hubNL.LinkByName(peer)
			if err == nil {
				err = hubNL.LinkSetMaster(p, br)
			}
			if err == nil {
				err = hubNL.LinkSetUp(p)
			}
			if err != nil {
				return nil, fmt.Errorf("attach %s to the bridge: %w", peer, err)
			}
			link, err := nl.LinkByName(tunName)
			if err != nil {
				return nil, err
			}
			return link, applyTC(nl, link, buildTC(nh.base, link.Attrs().Index, leaf))
		})
		if err != nil {
			return fmt.Errorf("lab host %s: %w", h.Name, err)
		}
	}
	return nil
}

func (n *Net) bridgeNS() string { return n.prefix + "bridge" }

// NS is the namespace name of a host.
func (n *Net) NS(host string) string { return n.prefix + host }

// netnsDir is where named namespaces are bound (iproute2's and netns's).
const netnsDir = "/run/netns"

var shareNetnsDirOnce = sync.OnceValue(func() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("%s: make it a shared mount point: %w", netnsDir, err)
	}
	return nil
})

// shareNetnsDir makes netnsDir a shared mount point before the first
// namespace is bound there, as `ip netns add` does. Left a plain
// directory, an `ip netns add` run later (by a test of another package,
// by hand) while the lab's namespaces are bound in it mounts the
// directory over itself and hides their mounts: deleting them then
// fails with "not mounted" and "device or resource busy", and they stay
// until that mount goes. TestDrills left its 13 namespaces so.
func shareNetnsDir() error { return shareNetnsDirOnce() }

// newNamedNS creates a named namespace without moving the caller into it.
func newNamedNS(name string) (netns.NsHandle, error) {
	if err := shareNetnsDir(); err != nil {
		return 0, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	defer netns.Set(orig)
	netns.DeleteNamed(name) // a leftover of a crashed run
	return netns.NewNamed(name)
}

// addHost creates h's namespace with its loopback up, calls attach (with
// the thread inside the namespace) to make the lab link, and gives that
// link the host's address.
func (n *Net) addHost(h Host, resolver string, attach func(nl *netlink.Handle) (netlink.Link, error)) error {
	if err := shareNetnsDir(); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	defer netns.Set(orig)
	netns.DeleteNamed(n.NS(h.Name)) // a leftover of a crashed run
	ns, err := netns.NewNamed(n.NS(h.Name))
	if err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		return err
	}
	link, err := attach(nl)
	if err == nil {
		addr := &netlink.Addr{IPNet: netlinkIPNet(h.Addr, n.topo.Subnet.Bits())}
		err = nl.AddrAdd(link, addr)
	}
	if err == nil {
		err = nl.LinkSetUp(link)
	}
	if err != nil {
		return fmt.Errorf("configure %s: %w", tunName, err)
	}
	if resolver != "" && resolver != h.Addr.String() { // the resolver itself keeps the machine's
		dir := filepath.Join("/etc/netns", n.NS(h.Name))
		if err := os.MkdirAll(dir, 0o755); err == nil {
			os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+resolver+"\noptions timeout:2 attempts:2\n"), 0o644)
		}
	}
	return nil
}

func netlinkIPNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

// openTUN creates a TUN device (IFF_TUN|IFF_NO_PI) in the calling thread's
// network namespace.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.TUNSETIFF), uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, errno)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// read takes packets from a host's TUN device and queues each for its
// destination with the delay of the source's plan.
func (n *Net) read(src *nsHost) {
	buf := make([]byte, 65536)
	for {
		k, err := src.tun.Read(buf)
		if err != nil {
			return // closed
		}
		if k < 20 || buf[0]>>4 != 4 {
			continue // IPv4 only in the lab
		}
		dstAddr := netip.AddrFrom4([4]byte(buf[16:20]))
		q, ok := src.out[dstAddr]
		if !ok {
			continue // not a lab host: dropped, never leaves the lab
		}
		p := packet{due: time.Now().Add(src.plan.Load().DelayTo(dstAddr)), data: append([]byte(nil), buf[:k]...)}
		select {
		case q <- p:
		default: // queue full: drop, as a congested link would
		}
	}
}

// deliver writes a pair's packets to the destination when they are due.
func deliver(ctx context.Context, q chan packet, dst *os.File) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-q:
			if d := time.Until(p.due); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
			dst.Write(p.data)
		}
	}
}

// MaxLinkDelay bounds the extra delay of SetLinkDelay (and lab link): far
// beyond any real link, and within what the delay lines hold.
const MaxLinkDelay = 10 * time.Second

// SetLinkDelay adds extra to every one-way delay of host's plan, while
// the lab runs: everything host sends to a lab host its plan delays is
// held extra longer (DelayPlan.WithExtra), so every round trip to host
// grows by extra. Zero restores the matrix; each call replaces the last.
// Packets sent from the moment it returns get the new delay: the
// userspace line swaps host's plan, the netem backend changes its band
// qdiscs in place (tc qdisc change). A Net of Attach has no lines of its
// own and refuses.
func (n *Net) SetLinkDelay(host string, extra time.Duration) error {
	if extra < 0 || extra > MaxLinkDelay {
		return fmt.Errorf("link delay of %s: %v, want 0 (the matrix) up to %v", host, extra, MaxLinkDelay)
	}
	h, ok := n.topo.Host(host)
	if !ok {
		return fmt.Errorf("link delay: no host %q; hosts: %s", host, strings.Join(n.topo.HostNames(), ", "))
	}
	nh, ok := n.hosts[h.Addr]
	if !ok {
		return fmt.Errorf("link delay of %s: this lab process does not run the lab's delays (the one that ran lab up does)", host)
	}
	plan := nh.base.WithExtra(extra)
	if n.delay.Backend != BackendNetem {
		nh.plan.Store(&plan)
		return nil
	}
	n.linkMu.Lock()
	defer n.linkMu.Unlock()
	ns, err := netns.GetFromName(nh.ns)
	if err != nil {
		return fmt.Errorf("link delay of %s: %w", host, err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	link, err := nl.LinkByName(tunName)
	if err == nil {
		err = changeTC(nl, link.Attrs().Index, plan.Bands, n.leaf)
	}
	if err != nil {
		return fmt.Errorf("link delay of %s: %w", host, err)
	}
	nh.plan.Store(&plan)
	return nil
}

// Exec returns a command that runs inside host's namespace (with its
// resolv.conf, through ip netns exec).
func (n *Net) Exec(ctx context.Context, host string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS(host), name}, args...)...)
}

// Close stops the delay line and removes the namespaces (the bridge's
// too) and resolv.confs.
func (n *Net) Close() error {
	if n.cancel != nil {
		n.cancel()
	}
	for _, h := range n.hosts {
		if h.tun != nil {
			h.tun.Close()
		}
	}
	n.wg.Wait()
	var errs []error
	for _, h := range n.topo.Hosts {
		if err := netns.DeleteNamed(n.NS(h.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		os.RemoveAll(filepath.Join("/etc/netns", n.NS(h.Name)))
	}
	// The hosts' veths went with their namespaces; their peers with them.
	if err := netns.DeleteNamed(n.bridgeNS()); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// inNS runs f with the calling goroutine's thread in host's namespace;
// sockets f creates stay in that namespace and may be used from anywhere.
func (n *Net) inNS(host string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.NS(host))
	if err != nil {
		return fmt.Errorf("namespace of %s: %w", host, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer netns.Set(orig)
	return f()
}

// ListenPacket opens a UDP socket inside host's namespace.
func (n *Net) ListenPacket(host, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.inNS(host, func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	})
	return pc, err
}

// MeasureRTT measures the round trip from host a to host b with UDP
// echoes through the delay line: the least of count probes.
func (n *Net) MeasureRTT(ctx context.Context, a, b string, count int) (time.Duration, error) {
	hb, ok := n.topo.Host(b)
	if !ok {
		return 0, fmt.Errorf("no host %s", b)
	}
	echo, err := n.ListenPacket(b, net.JoinHostPort(hb.Addr.String(), "0"))
	if err != nil {
		return 0, err
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			k, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:k], from)
		}
	}()
	ha, _ := n.topo.Host(a)
	c, err := n.ListenPacket(a, net.JoinHostPort(ha.Addr.String(), "0"))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	best := time.Duration(-1)
	buf := make([]byte, 64)
	for i := range count {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		start := time.Now()
		msg := []byte(fmt.Sprintf("probe %d", i))
		if _, err := c.WriteTo(msg, echo.LocalAddr()); err != nil {
			return 0, err
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, _, err := c.ReadFrom(buf)
		if err != nil || string(buf[:k]) != string(msg) {
			continue
		}
		if rtt := time.Since(start); best < 0 || rtt < best {
			best = rtt
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("no echo from %s to %s", a, b)
	}
	return best, nil
}

// Listen opens a TCP listener inside host's namespace.
func (n *Net) Listen(host, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.inNS(host, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	return ln, err
}

// Dialer returns a DialContext that dials from inside host's namespace.
func (n *Net) Dialer(host string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.inNS(host, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// Attach returns a Net for namespaces another process brought up (for lab
// exec, status and rtt); it forwards nothing itself and Close is not for it.
func Attach(topo *Topology, prefix string) *Net {
	if prefix == "" {
		prefix = "edgecdn-"
	}
	return &Net{topo: topo, prefix: prefix, hosts: map[netip.Addr]*nsHost{}}
}

// Exists reports whether host's namespace exists.
func (n *Net) Exists(host string) bool {
	h, err := netns.GetFromName(n.NS(host))
	if err != nil {
		return false
	}
	h.Close()
	return true
}

// Delays describes what delays host's lab interface, read from the kernel
// (for lab status): a TUN device is the userspace delay line; a veth
// carries netem qdiscs and filters.
func (n *Net) Delays(host string) (string, error) {
	ns, err := netns.GetFromName(n.NS(host))
	if err != nil {
		return "", err
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", err
	}
	defer nl.Close()
	link, err := nl.LinkByName(tunName)
	if err != nil {
		return "", err
	}
	if link.Type() == "tuntap" {
		return "tun, userspace delay line", nil
	}
	qs, err := nl.QdiscList(link)
	if err != nil {
		return "", err
	}
	var delays []string
	for _, q := range qs {
		if ne, ok := q.(*netlink.Netem); ok {
			delays = append(delays, (time.Duration(float64(ne.Latency)/netlink.TickInUsec()) * time.Microsecond).Round(100*time.Microsecond).String())
		}
	}
	fs, _ := nl.FilterList(link, netlink.MakeHandle(1, 0))
	return fmt.Sprintf("%s, %d netem qdiscs (%s), %d filters", link.Type(), len(delays), strings.Join(delays, " "), len(fs)), nil
}
