package compose

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The netem backend installs a host's DelayPlan on its interface's egress:
//
//	htb 1: root (unclassified traffic goes direct: not delayed)
//	├── class 1:1 ── netem 11: delay Bands[0]
//	├── class 1:2 ── netem 12: delay Bands[1]
//	└── ...
//	u32 filters, one per rule in match order: ip dst PREFIX → class 1:BAND
//
// HTB rather than prio because it is the classful qdisc kernels (and
// Docker hosts) most often have; its classes only sort here, they never
// shape (rate 10 Gbit/s).
const (
	netemLimit = 10000          // packets one band holds (one-way delay × rate)
	classRate  = 10_000_000_000 // bits/s; the classes sort, they do not shape
	classQuant = 60000          // bytes; within the kernel's 1000..200000
)

// leafFunc makes the qdisc of one band; tests swap netem for a plain FIFO
// to check the classification on kernels without netem.
type leafFunc func(attrs netlink.QdiscAttrs, delay time.Duration) netlink.Qdisc

func netemLeaf(attrs netlink.QdiscAttrs, delay time.Duration) netlink.Qdisc {
	return netlink.NewNetem(attrs, netlink.NetemQdiscAttrs{Latency: uint32(delay.Microseconds()), Limit: netemLimit})
}

func fifoLeaf(attrs netlink.QdiscAttrs, _ time.Duration) netlink.Qdisc {
	return &netlink.GenericQdisc{QdiscAttrs: attrs, QdiscType: "pfifo"}
}

// tcObjects are the netlink objects that install a DelayPlan on one link.
type tcObjects struct {
	root    *netlink.Htb
	classes []*netlink.HtbClass
	leaves  []netlink.Qdisc
	filters []*netlink.U32
}

// buildTC turns a plan into qdiscs, classes and filters for link.
func buildTC(p DelayPlan, link int, leaf leafFunc) tcObjects {
	root := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT})
	qlen := uint32(netemLimit)
	root.DirectQlen = &qlen
	o := tcObjects{root: root}
	for i, d := range p.Bands {
		band := uint16(i + 1)
		class := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: link, Parent: root.Handle, Handle: netlink.MakeHandle(1, band)},
			netlink.HtbClassAttrs{Rate: classRate, Quantum: classQuant})
		o.classes = append(o.classes, class)
		o.leaves = append(o.leaves, leaf(leafAttrs(link, band), d))
	}
	for i, r := range p.Rules {
		o.filters = append(o.filters, &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: link, Parent: root.Handle, Priority: uint16(i + 1), Protocol: unix.ETH_P_IP},
			ClassId:     netlink.MakeHandle(1, uint16(r.Band)),
			Sel:         &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{dstKey(r.Dst)}},
		})
	}
	return o
}

// leafAttrs places band's qdisc: handle 1N: under class 1:N (N = 0x10+band).
func leafAttrs(link int, band uint16) netlink.QdiscAttrs {
	return netlink.QdiscAttrs{LinkIndex: link, Parent: netlink.MakeHandle(1, band), Handle: netlink.MakeHandle(0x10+band, 0)}
}

// changeTC sets the delays of the bands buildTC installed on link to
// bands (tc qdisc change), in place: classes and filters stay, and
// packets already held keep their time. bands must be as many as the
// installed plan's (DelayPlan.WithExtra keeps them).
func changeTC(nl *netlink.Handle, link int, bands []time.Duration, leaf leafFunc) error {
	for i, d := range bands {
		q := leaf(leafAttrs(link, uint16(i+1)), d)
		if err := nl.QdiscChange(q); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
				err = fmt.Errorf("%w (no lab delays installed here?)", err)
			}
			return fmt.Errorf("change %s qdisc %s to %v: %w", q.Type(), netlink.HandleStr(q.Attrs().Handle), d, err)
		}
	}
	return nil
}

// dstKey matches an IPv4 destination prefix: offset 16 of the IP header,
// mask and value in host order (netlink converts them).
func dstKey(p netip.Prefix) netlink.TcU32Key {
	var mask uint32
	if p.Bits() > 0 {
		mask = ^uint32(0) << (32 - p.Bits())
	}
	a := p.Masked().Addr().As4()
	return netlink.TcU32Key{Mask: mask, Val: binary.BigEndian.Uint32(a[:]) & mask, Off: 16}
}

// applyTC installs o through nl, replacing a root qdisc a previous run
// left.
func applyTC(nl *netlink.Handle, link netlink.Link, o tcObjects) error {
	if qs, err := nl.QdiscList(link); err == nil {
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle != 0 {
				nl.QdiscDel(q) // a default root (handle 0) is replaced below
			}
		}
	}
	if err := nl.QdiscReplace(o.root); err != nil {
		return fmt.Errorf("add htb root qdisc: %w", err)
	}
	for _, c := range o.classes {
		if err := nl.ClassAdd(c); err != nil {
			return fmt.Errorf("add htb class %s: %w", netlink.HandleStr(c.Handle), err)
		}
	}
	for _, q := range o.leaves {
		if err := nl.QdiscAdd(q); err != nil {
			if q.Type() == "netem" && errors.Is(err, unix.ENOENT) { // the kernel knows no such qdisc
				err = fmt.Errorf("%w: %w", ErrNoNetem, err)
			}
			return fmt.Errorf("add %s qdisc under %s: %w", q.Type(), netlink.HandleStr(q.Attrs().Parent), err)
		}
	}
	for _, f := range o.filters {
		if err := nl.FilterAdd(f); err != nil {
			return fmt.Errorf("add u32 filter to class %s: %w", netlink.HandleStr(f.ClassId), err)
		}
	}
	return nil
}

// ApplyDelays installs the plan of host self on the interface iface of
// the calling process's network namespace, with netem. It is what a lab
// container runs at start (needs CAP_NET_ADMIN). If self is empty, the
// host is the one whose lab address is on an interface here; if iface is
// empty, the interface is the one that holds the host's address.
func ApplyDelays(topo *Topology, self, iface string) (DelayPlan, string, error) {
	return applyDelays(topo, self, iface, netemLeaf)
}

// applyDelays is ApplyDelays with the bands' qdisc as a seam.
func applyDelays(topo *Topology, self, iface string, leaf leafFunc) (DelayPlan, string, error) {
	nl, err := netlink.NewHandle()
	if err != nil {
		return DelayPlan{}, "", err
	}
	defer nl.Close()
	plan, link, err := hostLink(nl, topo, self, iface)
	if err != nil {
		return DelayPlan{}, "", fmt.Errorf("apply delays: %w", err)
	}
	if err := applyTC(nl, link, buildTC(plan, link.Attrs().Index, leaf)); err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (a container needs cap_add: [NET_ADMIN])", err)
		}
		return DelayPlan{}, link.Attrs().Name, fmt.Errorf("apply delays of %s on %s: %w", plan.Host, link.Attrs().Name, err)
	}
	return plan, link.Attrs().Name, nil
}

// changeDelays is lab link in a container whose delays are netem's: it
// sets the bands ApplyDelays installed for host self on iface to the plan
// with extra added to every delay (DelayPlan.WithExtra; 0 restores the
// plan). self and iface are found as ApplyDelays finds them; leaf makes
// the bands' qdisc (netemLeaf; tests use another).
func changeDelays(topo *Topology, self, iface string, extra time.Duration, leaf leafFunc) (DelayPlan, string, error) {
	nl, err := netlink.NewHandle()
	if err != nil {
		return DelayPlan{}, "", err
	}
	defer nl.Close()
	base, link, err := hostLink(nl, topo, self, iface)
	if err != nil {
		return DelayPlan{}, "", fmt.Errorf("change delays: %w", err)
	}
	plan := base.WithExtra(extra)
	if err := changeTC(nl, link.Attrs().Index, plan.Bands, leaf); err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (a container needs cap_add: [NET_ADMIN])", err)
		}
		return DelayPlan{}, link.Attrs().Name, fmt.Errorf("change delays of %s on %s: %w", plan.Host, link.Attrs().Name, err)
	}
	return plan, link.Attrs().Name, nil
}

// hostLink finds, in nl's namespace, the host self (if empty, the one
// whose lab address is on an interface here), its plan, and its lab
// interface: iface, or if empty the one holding its address.
func hostLink(nl *netlink.Handle, topo *Topology, self, iface string) (DelayPlan, netlink.Link, error) {
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return DelayPlan{}, nil, fmt.Errorf("list addresses: %w", err)
	}
	linkOf := map[netip.Addr]int{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			linkOf[ip] = a.LinkIndex
		}
	}
	if self == "" {
		for _, h := range topo.Hosts {
			if _, ok := linkOf[h.Addr]; ok {
				self = h.Name
			}
		}
		if self == "" {
			return DelayPlan{}, nil, errors.New("no lab address on any interface here; name the service with -self")
		}
	}
	h, ok := topo.Host(self)
	if !ok {
		return DelayPlan{}, nil, fmt.Errorf("no service %q in the topology", self)
	}
	plan, err := topo.DelayPlan(self)
	if err != nil {
		return DelayPlan{}, nil, err
	}
	var link netlink.Link
	if iface != "" {
		link, err = nl.LinkByName(iface)
	} else if idx, ok := linkOf[h.Addr]; ok {
		link, err = nl.LinkByIndex(idx)
	} else {
		err = fmt.Errorf("%s's address %s is on no interface here", self, h.Addr)
	}
	if err != nil {
		return DelayPlan{}, nil, err
	}
	return plan, link, nil
}

// inThrowawayNS runs f with a netlink handle in a new unnamed namespace,
// gone when f returns, and that namespace's loopback.
func inThrowawayNS(f func(nl *netlink.Handle, lo netlink.Link) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	defer netns.Set(orig)
	ns, err := netns.New() // unnamed: gone when the handle closes
	if err != nil {
		return err
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return err
	}
	return f(nl, lo)
}

// NetemAvailable reports whether the kernel offers the netem qdisc, by
// trying to add one in a throwaway namespace (as tc would).
func NetemAvailable() error {
	return inThrowawayNS(func(nl *netlink.Handle, lo netlink.Link) error {
		q := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
			netlink.NetemQdiscAttrs{Latency: 1000})
		return nl.QdiscAdd(q)
	})
}

// tcAvailable reports whether the rest of the netem backend's structure
// (HTB classes, u32 filters) can be built, with FIFOs in place of netem.
func tcAvailable() error {
	return inThrowawayNS(func(nl *netlink.Handle, lo netlink.Link) error {
		p := DelayPlan{Bands: []time.Duration{time.Millisecond}, Rules: []DelayRule{{Dst: netip.MustParsePrefix("127.0.0.0/8"), Delay: time.Millisecond, Band: 1}}}
		return applyTC(nl, lo, buildTC(p, lo.Attrs().Index, fifoLeaf))
	})
}
