package compose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// needRoot skips the test unless it runs as root, as labtest.RequireRoot
// does for the external tests: these internal ones cannot import labtest,
// which imports compose.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
}

// upNet brings a test network of topo up under a prefix made of tag and
// the process id, and takes it down when the test ends, checking that no
// namespace is left. cfg's Prefix is set here.
func upNet(t *testing.T, topo *Topology, tag string, cfg NetConfig) (*Net, string) {
	t.Helper()
	cfg.Prefix = fmt.Sprintf("%s%d-", tag, os.Getpid())
	n, err := Up(context.Background(), topo, cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkNoNamespaces(t, cfg.Prefix)
	})
	return n, cfg.Prefix
}

// checkNoNamespaces fails if any namespace or resolv.conf with prefix is
// left.
func checkNoNamespaces(t *testing.T, prefix string) {
	t.Helper()
	for _, dir := range []string{"/var/run/netns", "/etc/netns"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				t.Errorf("%s left behind", filepath.Join(dir, e.Name()))
			}
		}
	}
}

// On the kernel at hand, whichever it is: auto picks what the kernel
// can do, and forcing netem where it is missing fails, saying so, before
// creating anything.
func TestDelayBackendOnThisKernel(t *testing.T) {
	needRoot(t)
	netemErr, tcErr := NetemAvailable(), tcAvailable()
	t.Logf("NetemAvailable() = %v; HTB+u32: %v", netemErr, tcErr)
	auto, err := ChooseDelay(BackendAuto)
	if err != nil {
		t.Fatalf("ChooseDelay(auto) = %v", err)
	}
	forced, forcedErr := ChooseDelay(BackendNetem)
	if netemErr != nil {
		if auto.Backend != BackendUserspace || !strings.Contains(auto.Reason, "sch_netem is missing") {
			t.Errorf("ChooseDelay(auto) without sch_netem = %v, want userspace saying sch_netem is missing", auto)
		}
		if !errors.Is(forcedErr, ErrNoNetem) || !strings.Contains(forcedErr.Error(), "-delay userspace") || !strings.Contains(forcedErr.Error(), "docker compose") {
			t.Errorf("ChooseDelay(netem) without sch_netem = %v, %v; want ErrNoNetem suggesting -delay userspace or docker compose", forced, forcedErr)
		}
		prefix := fmt.Sprintf("ecf%d-", os.Getpid())
		n, err := Up(context.Background(), labTopology(t), NetConfig{Prefix: prefix, Delay: BackendNetem})
		if err == nil {
			n.Close()
			t.Fatalf("Up(netem) without sch_netem succeeded")
		}
		if !errors.Is(err, ErrNoNetem) {
			t.Errorf("Up(netem) = %v, want ErrNoNetem", err)
		}
		checkNoNamespaces(t, prefix)
		return
	}
	want := BackendNetem
	if tcErr != nil {
		want = BackendUserspace
	}
	if auto.Backend != want {
		t.Errorf("ChooseDelay(auto) with sch_netem = %v, want %s", auto, want)
	}
	if (forcedErr == nil) != (tcErr == nil) {
		t.Errorf("ChooseDelay(netem) = %v, %v; HTB+u32 %v", forced, forcedErr, tcErr)
	}
}

// The netem backend's network with FIFOs in place of netem, which this
// test can check on any kernel with HTB and u32: the bridge carries the
// lab, every host's veth holds its plan, and each destination's packets
// are counted in the class of its delay.
func TestBridgeLabClassifies(t *testing.T) {
	needRoot(t)
	if err := tcAvailable(); err != nil {
		t.Skipf("the kernel cannot build HTB classes with u32 filters: %v", err)
	}
	topo := labTopology(t)
	n, prefix := upNet(t, topo, "ecb", NetConfig{leaf: fifoLeaf})
	if n.Delay().Backend != BackendNetem {
		t.Errorf("Delay() = %v, want netem", n.Delay())
	}
	if _, err := netns.GetFromName(prefix + "bridge"); err != nil {
		t.Errorf("bridge namespace: %v", err)
	}
	d, err := n.Delays("client-eu")
	if err != nil || !strings.Contains(d, "veth") || !strings.Contains(d, "5 filters") {
		t.Errorf("Delays(client-eu) = %q, %v; want a veth with 5 filters", d, err)
	}
	// client-eu's bands: 1:1 5 ms (geodns, eu), 1:2 40 ms (na), 1:3 45 ms
	// (moved), 1:4 120 ms (ap).
	for _, tt := range []struct {
		to    string
		class uint16
	}{
		{"pop-na", 2}, {"origin", 2}, {"client-moved", 3}, {"pop-ap", 4}, {"client-ap", 4}, {"pop-eu", 1}, {"geodns", 1},
	} {
		before := classPackets(t, n, "client-eu")
		const k = 20
		rtt, err := n.MeasureRTT(context.Background(), "client-eu", tt.to, k)
		if err != nil {
			t.Fatalf("client-eu -> %s over the bridge: %v", tt.to, err)
		}
		after := classPackets(t, n, "client-eu")
		for c := uint16(1); c <= 4; c++ {
			got := after[c] - before[c]
			if c == tt.class && got < k {
				t.Errorf("client-eu -> %s: class 1:%d counted %d packets, want at least %d", tt.to, c, got, k)
			}
			if c != tt.class && got != 0 { // only IPv4 is classified; ARP and IPv6 go direct
				t.Errorf("client-eu -> %s: class 1:%d counted %d packets, want none (they belong in 1:%d)", tt.to, c, got, tt.class)
			}
		}
		if rtt > 50*time.Millisecond {
			t.Errorf("client-eu -> %s: %v with FIFOs in place of netem, want no delay", tt.to, rtt)
		}
	}
	// Nothing leaves the lab: outside the subnet there is no route.
	if _, err := n.Dialer("client-eu")(context.Background(), "tcp", "192.0.2.1:80"); err == nil {
		t.Errorf("dialled an address outside the lab")
	}
}

// classPackets reads the packet counters of the HTB classes on host's lab0.
func classPackets(t *testing.T, n *Net, host string) map[uint16]uint32 {
	t.Helper()
	ns, err := netns.GetFromName(n.NS(host))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(tunName)
	if err != nil {
		t.Fatal(err)
	}
	classes, err := nl.ClassList(link, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16]uint32{}
	for _, c := range classes {
		a := c.Attrs()
		if a.Statistics != nil && a.Statistics.Basic != nil {
			out[uint16(a.Handle&0xffff)] = a.Statistics.Basic.Packets
		}
	}
	return out
}

// The container side (lab delay, netem backend) in a namespace standing in for a
// container: the service is found by its address, the plan goes on the
// interface that holds it. With FIFOs it must install here; with netem it
// installs where the kernel has netem and fails saying so where not.
func TestApplyDelaysInANamespace(t *testing.T) {
	needRoot(t)
	topo := labTopology(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)
	ns, err := netns.New() // unnamed, gone with the handle; the thread is in it
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	eth0, _ := netlink.LinkByName("eth0")
	if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: netlinkIPNet(netip.MustParseAddr("10.77.2.20"), 16)}); err != nil {
		t.Fatal(err)
	}
	plan, iface, err := applyDelays(topo, "", "", fifoLeaf)
	if err != nil || plan.Host != "pop-eu" || iface != "eth0" {
		t.Fatalf("applyDelays = %v, %q, %v; want pop-eu's plan on eth0", plan, iface, err)
	}
	fs, _ := netlink.FilterList(eth0, netlink.MakeHandle(1, 0))
	if len(fs) != len(plan.Rules) {
		t.Errorf("%d filters on eth0, want %d", len(fs), len(plan.Rules))
	}
	// Again, as a restarted container would: replaced, not doubled.
	if _, _, err := applyDelays(topo, "pop-eu", "eth0", fifoLeaf); err != nil {
		t.Fatalf("applyDelays again: %v", err)
	}
	if fs, _ := netlink.FilterList(eth0, netlink.MakeHandle(1, 0)); len(fs) != len(plan.Rules) {
		t.Errorf("after a second apply %d filters on eth0, want %d", len(fs), len(plan.Rules))
	}
	_, _, err = ApplyDelays(topo, "pop-eu", "")
	t.Logf("ApplyDelays with netem: %v", err)
	if NetemAvailable() != nil {
		if !errors.Is(err, ErrNoNetem) || !strings.Contains(err.Error(), "sch_netem is missing") {
			t.Errorf("ApplyDelays without sch_netem = %v, want an error saying sch_netem is missing", err)
		}
	} else if err != nil {
		t.Errorf("ApplyDelays = %v", err)
	}
	if _, _, err := ApplyDelays(topo, "nosuch", ""); err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("ApplyDelays(nosuch) = %v, want an error naming the service", err)
	}
}

// lab link in a container whose delays are netem's (tbfLeaf in place of
// netem), in a namespace standing in for the container: no delay line
// answers on the socket, so it changes the bands lab delay installed on
// the interface holding the service's address, and notes the extra in
// the status file; 0 restores the plan and drops the note.
func TestContainerLinkDelayNetem(t *testing.T) {
	needRoot(t)
	if err := tcAvailable(); err != nil {
		t.Skipf("the kernel cannot build HTB classes with u32 filters: %v", err)
	}
	topo := labTopology(t)
	dir := t.TempDir()
	socket, status := filepath.Join(dir, "link.sock"), filepath.Join(dir, "lab-delay")
	const described = "lab delay: pop-eu: backend netem (test)\nplan: ...\n"
	if err := os.WriteFile(status, []byte(described), 0o644); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)
	ns, err := netns.New() // unnamed, gone with the handle; the thread is in it
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	eth0, _ := netlink.LinkByName("eth0")
	if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: netlinkIPNet(netip.MustParseAddr("10.77.2.20"), 16)}); err != nil {
		t.Fatal(err)
	}
	base, _, err := applyDelays(topo, "", "", tbfLeaf)
	if err != nil {
		t.Fatalf("applyDelays: %v", err)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()

	plan, iface, err := changeDelays(topo, "", "", 100*ms, tbfLeaf)
	if err != nil || plan.Host != "pop-eu" || iface != "eth0" {
		t.Fatalf("changeDelays(+100ms) = %v, %q, %v; want pop-eu's plan on eth0", plan, iface, err)
	}
	if got, want := tbfDelays(t, nl, eth0), base.WithExtra(100*ms).Bands; !reflect.DeepEqual(got, want) {
		t.Errorf("after changeDelays(+100ms) the bands delay %v, want %v", got, want)
	}
	for _, tt := range []struct {
		extra time.Duration
		note  string // in the status file; "" for none
	}{
		{50 * ms, "link: +50ms"},
		{0, ""},
	} {
		msg, err := setContainerLinkDelay(context.Background(), topo, "pop-eu", tt.extra, socket, status, tbfLeaf)
		if err != nil || !strings.Contains(msg, "netem on eth0") {
			t.Fatalf("setContainerLinkDelay(pop-eu, %v) = %q, %v; want it done with netem on eth0", tt.extra, msg, err)
		}
		if got, want := tbfDelays(t, nl, eth0), base.WithExtra(tt.extra).Bands; !reflect.DeepEqual(got, want) {
			t.Errorf("after setContainerLinkDelay(pop-eu, %v) the bands delay %v, want %v", tt.extra, got, want)
		}
		b, _ := os.ReadFile(status)
		if !strings.HasPrefix(string(b), described) || strings.Contains(string(b), "link:") != (tt.note != "") || !strings.Contains(string(b), tt.note) {
			t.Errorf("status after +%v:\n%s\nwant the description and %q", tt.extra, b, tt.note)
		}
	}
	if _, err := setContainerLinkDelay(context.Background(), topo, "pop-na", ms, socket, status, tbfLeaf); err == nil ||
		!strings.Contains(err.Error(), "on no interface here") || !strings.Contains(err.Error(), socket) {
		t.Errorf("setContainerLinkDelay(pop-na) in pop-eu's container = %v, want an error naming the socket and the missing address", err)
	}
	if _, _, err := changeDelays(topo, "pop-eu", "lo", ms, tbfLeaf); err == nil || !strings.Contains(err.Error(), "no lab delays installed here") {
		t.Errorf("changeDelays on lo = %v, want an error saying no lab delays are installed there", err)
	}
}

// The one test that needs sch_netem itself: the plans applied with netem
// give the matrix's round trips, first between a fresh pair of
// namespaces, then across the whole lab.
func TestNetemDelaysMeasured(t *testing.T) {
	needRoot(t)
	if _, err := ChooseDelay(BackendNetem); err != nil {
		t.Skipf("netem backend not possible on this kernel: %v", err)
	}
	topo := labTopology(t)
	pair := *topo
	pair.Hosts = []Host{mustHost(t, topo, "client-eu"), mustHost(t, topo, "pop-na")}
	for _, tt := range []struct {
		name  string
		topo  *Topology
		pairs [][2]string
	}{
		{"pair", &pair, [][2]string{{"client-eu", "pop-na"}}},
		{"lab", topo, [][2]string{{"client-na", "pop-na"}, {"client-eu", "pop-na"}, {"client-ap", "origin"}, {"pop-eu", "pop-ap"}, {"client-ap", "geodns"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, _ := upNet(t, tt.topo, "ecm", NetConfig{Delay: BackendNetem})
			for _, p := range tt.pairs {
				want := topo.RTTBetween(mustHost(t, topo, p[0]), mustHost(t, topo, p[1]))
				got, err := n.MeasureRTT(context.Background(), p[0], p[1], 5)
				if err != nil {
					t.Fatalf("%s -> %s: %v", p[0], p[1], err)
				}
				t.Logf("%s -> %s: measured %v, matrix %v", p[0], p[1], got.Round(10*time.Microsecond), want)
				if tol := 2*time.Millisecond + want/20; got < want || got > want+tol {
					t.Errorf("RTT %s -> %s = %v, want %v (+%v)", p[0], p[1], got, want, tol)
				}
			}
			if tt.name != "lab" {
				return
			}
			// lab link: the netem qdiscs changed in place, +100 ms and back.
			for _, extra := range []time.Duration{100 * ms, 0} {
				if err := n.SetLinkDelay("pop-eu", extra); err != nil {
					t.Fatalf("SetLinkDelay(pop-eu, %v) = %v", extra, err)
				}
				want := topo.RTTBetween(mustHost(t, topo, "client-eu"), mustHost(t, topo, "pop-eu")) + extra
				got, err := n.MeasureRTT(context.Background(), "client-eu", "pop-eu", 5)
				if err != nil {
					t.Fatalf("client-eu -> pop-eu with pop-eu +%v: %v", extra, err)
				}
				t.Logf("client-eu -> pop-eu with pop-eu +%v: measured %v, want %v", extra, got.Round(10*time.Microsecond), want)
				if tol := 2*time.Millisecond + want/20; got < want || got > want+tol {
					t.Errorf("RTT client-eu -> pop-eu with pop-eu +%v = %v, want %v (+%v)", extra, got, want, tol)
				}
			}
		})
	}
}

// A failure halfway through Up (here: a qdisc the kernel does not know)
// names the host and leaves no namespace behind, the bridge's included.
func TestUpCleansUpAfterAFailure(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("ecx%d-", os.Getpid())
	bogus := func(attrs netlink.QdiscAttrs, _ time.Duration) netlink.Qdisc {
		return &netlink.GenericQdisc{QdiscAttrs: attrs, QdiscType: "no-such-qdisc"}
	}
	n, err := Up(context.Background(), labTopology(t), NetConfig{Prefix: prefix, leaf: bogus})
	if err == nil {
		n.Close()
		t.Fatal("Up with an unknown qdisc succeeded")
	}
	if !strings.Contains(err.Error(), "lab host ") || !strings.Contains(err.Error(), "no-such-qdisc") {
		t.Errorf("Up = %v, want an error naming the host and the qdisc", err)
	}
	checkNoNamespaces(t, prefix)
}

// tbfLeaf stands in for netem, which this kernel may lack, in the tests
// of lab link's netem path: a tbf that does not shape (1 GiB/s) and
// carries its band's delay in its limit, beyond 1 MiB, in microseconds
// (tbfDelays reads it back). tc qdisc change works on it as on netem.
func tbfLeaf(attrs netlink.QdiscAttrs, delay time.Duration) netlink.Qdisc {
	return &netlink.Tbf{QdiscAttrs: attrs, Rate: 1 << 30, Buffer: 1 << 20, Limit: 1<<20 + uint32(delay.Microseconds())}
}

// tbfDelays reads the delays of the tbfLeaf bands on link, in band order.
func tbfDelays(t *testing.T, nl *netlink.Handle, link netlink.Link) []time.Duration {
	t.Helper()
	qs, err := nl.QdiscList(link)
	if err != nil {
		t.Fatal(err)
	}
	byBand := map[int]time.Duration{}
	for _, q := range qs {
		if tbf, ok := q.(*netlink.Tbf); ok {
			byBand[int(tbf.Parent&0xffff)] = time.Duration(tbf.Limit-1<<20) * time.Microsecond
		}
	}
	out := make([]time.Duration, len(byBand))
	for band, d := range byBand {
		if band < 1 || band > len(out) {
			t.Fatalf("a band qdisc under 1:%d, want bands 1..%d", band, len(out))
		}
		out[band-1] = d
	}
	return out
}

// hostDelays reads the tbfLeaf bands on host's lab0.
func hostDelays(t *testing.T, n *Net, host string) []time.Duration {
	t.Helper()
	ns, err := netns.GetFromName(n.NS(host))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(tunName)
	if err != nil {
		t.Fatal(err)
	}
	return tbfDelays(t, nl, link)
}

// lab link on the netem backend's network (with tbfLeaf in place of
// netem): SetLinkDelay changes every band qdisc of the host, and only
// the host's, to its plan's delay plus the extra, in place; 0 restores
// the plan. Bad input is refused, naming it.
func TestBridgeLabLinkDelay(t *testing.T) {
	needRoot(t)
	if err := tcAvailable(); err != nil {
		t.Skipf("the kernel cannot build HTB classes with u32 filters: %v", err)
	}
	topo := labTopology(t)
	n, prefix := upNet(t, topo, "ecl", NetConfig{leaf: tbfLeaf})
	euPlan, _ := topo.DelayPlan("pop-eu")
	naPlan, _ := topo.DelayPlan("client-na")
	for _, tt := range []struct {
		extra time.Duration
		want  []time.Duration // pop-eu's bands
	}{
		{0, euPlan.Bands},
		{100 * ms, euPlan.WithExtra(100 * ms).Bands},
		{150 * ms, euPlan.WithExtra(150 * ms).Bands},
		{0, euPlan.Bands},
	} {
		if err := n.SetLinkDelay("pop-eu", tt.extra); err != nil {
			t.Fatalf("SetLinkDelay(pop-eu, %v) = %v", tt.extra, err)
		}
		if got := hostDelays(t, n, "pop-eu"); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("after SetLinkDelay(pop-eu, %v) pop-eu's bands delay %v, want %v", tt.extra, got, tt.want)
		}
		if got := hostDelays(t, n, "client-na"); !reflect.DeepEqual(got, naPlan.Bands) {
			t.Errorf("after SetLinkDelay(pop-eu, %v) client-na's bands delay %v, want its plan's %v", tt.extra, got, naPlan.Bands)
		}
	}
	// Still a lab: the changed qdiscs pass traffic.
	if _, err := n.MeasureRTT(context.Background(), "client-eu", "pop-eu", 3); err != nil {
		t.Errorf("client-eu -> pop-eu after the changes: %v", err)
	}
	for _, tt := range []struct {
		host  string
		extra time.Duration
		want  string
	}{
		{"pop-eu", -ms, "want 0"},
		{"pop-eu", MaxLinkDelay + ms, "up to 10s"},
		{"nosuch", ms, `no host "nosuch"`},
	} {
		if err := n.SetLinkDelay(tt.host, tt.extra); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SetLinkDelay(%s, %v) = %v, want an error containing %q", tt.host, tt.extra, err, tt.want)
		}
	}
	if err := Attach(topo, prefix).SetLinkDelay("pop-eu", ms); err == nil || !strings.Contains(err.Error(), "lab up") {
		t.Errorf("SetLinkDelay on an attached Net = %v, want it refused, pointing at lab up", err)
	}
}

// TestNamespacesSurviveIPNetnsAdd: once the lab binds a namespace,
// /run/netns is a shared mount point, so an `ip netns add` run beside
// the lab (another package's test, a user) does not mount the directory
// over itself, and the lab's namespace can still be deleted.
func TestNamespacesSurviveIPNetnsAdd(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("ecs%d-", os.Getpid())
	t.Cleanup(func() { checkNoNamespaces(t, prefix) })
	ns, err := newNamedNS(prefix + "lab")
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	shared := false
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == netnsDir {
			for _, opt := range f[6:] {
				if opt == "-" {
					break
				}
				shared = shared || strings.HasPrefix(opt, "shared:")
			}
		}
	}
	if !shared {
		t.Errorf("%s is not a shared mount point after the lab bound a namespace there", netnsDir)
	}
	if out, err := exec.Command("ip", "netns", "add", prefix+"other").CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", prefix+"other").Run() })
	if err := netns.DeleteNamed(prefix + "lab"); err != nil {
		t.Errorf("delete the lab's namespace after an ip netns add beside it: %v", err)
	}
}
