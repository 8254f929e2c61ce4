package compose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// lab link in a container on a kernel without netem, measured: two
// namespaces on a veth stand in for the containers of pop-eu and pop-na;
// pop-eu runs the userspace NFQUEUE delay line of lab delay and answers
// lab link on its socket. pop-eu -> pop-na is pop-eu's 40 ms one way (pop-na
// delays nothing here); lab link +100 ms makes it 140, and 0 gives back
// 40. Each change is logged and noted in the status file.
func TestQueueDelayLinkDelay(t *testing.T) {
	needRoot(t)
	topo := labTopology(t)
	prefix := fmt.Sprintf("ecq%d-", os.Getpid())
	t.Cleanup(func() { checkNoNamespaces(t, prefix) }) // last: after the deletions below
	for _, host := range []string{"pop-eu", "pop-na"} {
		ns, err := newNamedNS(prefix + host)
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
		t.Cleanup(func() { netns.DeleteNamed(prefix + host) })
	}
	link := func(host, name string, addr string, peer *netlink.Veth) {
		ns, err := netns.GetFromName(prefix + host)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		nl, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		if peer != nil {
			if err := nl.LinkAdd(peer); err != nil {
				t.Fatalf("%s: add veth: %v", host, err)
			}
		}
		for _, l := range []string{"lo", name} {
			ll, err := nl.LinkByName(l)
			if err == nil {
				err = nl.LinkSetUp(ll)
			}
			if err == nil && l == name {
				err = nl.AddrAdd(ll, &netlink.Addr{IPNet: netlinkIPNet(netip.MustParseAddr(addr), 16)})
			}
			if err != nil {
				t.Fatalf("%s: %s: %v", host, l, err)
			}
		}
	}
	na, err := netns.GetFromName(prefix + "pop-na")
	if err != nil {
		t.Fatal(err)
	}
	defer na.Close()
	link("pop-eu", "eth0", "10.77.2.20", &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1", PeerNamespace: netlink.NsFd(int(na))})
	link("pop-na", "eth1", "10.77.1.20", nil)
	n := Attach(topo, prefix)

	var d *ContainerDelay
	err = n.inNS("pop-eu", func() (err error) {
		d, err = ApplyContainerDelay(context.Background(), topo, "pop-eu", BackendUserspace)
		return err
	})
	if err != nil && strings.Contains(err.Error(), "nfqueue") {
		t.Skipf("no NFQUEUE here: %v", err)
	}
	if err != nil {
		t.Fatalf("ApplyContainerDelay(pop-eu, userspace): %v", err)
	}
	t.Cleanup(func() {
		// The iptables rule is in pop-eu's namespace: removed from there.
		if err := n.inNS("pop-eu", d.Close); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	var logs bytes.Buffer
	d.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	dir := t.TempDir()
	status, socket := filepath.Join(dir, "lab-delay"), filepath.Join(dir, "link.sock")
	if err := d.writeStatus(status); err != nil {
		t.Fatal(err)
	}
	ls, err := StartLinkServer(socket, d)
	if err != nil {
		t.Fatalf("StartLinkServer: %v", err)
	}

	base := topo.RTTBetween(mustHost(t, topo, "pop-eu"), mustHost(t, topo, "pop-na")) / 2 // pop-na delays nothing here
	for _, extra := range []time.Duration{0, 100 * ms, 0} {
		msg, err := setContainerLinkDelay(context.Background(), topo, "pop-eu", extra, socket, status, fifoLeaf)
		if err != nil || !strings.Contains(msg, "pop-eu: ") {
			t.Fatalf("setContainerLinkDelay(pop-eu, %v) = %q, %v", extra, msg, err)
		}
		want := base + extra
		got, err := n.MeasureRTT(context.Background(), "pop-eu", "pop-na", 5)
		if err != nil {
			t.Fatalf("pop-eu -> pop-na: %v", err)
		}
		t.Logf("pop-eu +%v: pop-eu -> pop-na measured %v, want %v (%s)", extra, got.Round(10*time.Microsecond), want, msg)
		if tol := 2*time.Millisecond + want/20; got < want || got > want+tol {
			t.Errorf("pop-eu +%v: RTT pop-eu -> pop-na = %v, want %v (+%v)", extra, got, want, tol)
		}
		if line := fmt.Sprintf("host=pop-eu extra=%v", extra); !strings.Contains(logs.String(), line) {
			t.Errorf("log after +%v:\n%s\nwant a line with %q", extra, logs.String(), line)
		}
		b, _ := os.ReadFile(status)
		if has := strings.Contains(string(b), "link: +100ms"); has != (extra > 0) || !strings.HasPrefix(string(b), "lab delay: pop-eu") {
			t.Errorf("status after +%v:\n%s", extra, b)
		}
	}
	if _, err := SetLinkDelayAt(context.Background(), socket, "pop-na", ms); err == nil || !strings.Contains(err.Error(), "this container is pop-eu") {
		t.Errorf("lab link pop-na at pop-eu's socket = %v, want it refused, naming pop-eu", err)
	}
	if err := d.queue.SetPlan(DelayPlan{Host: "pop-eu", Bands: []time.Duration{ms}}); err == nil {
		t.Errorf("SetPlan with 1 band on a line of %d = nil, want an error", len(d.Plan.Bands))
	}
	if err := ls.Close(); err != nil {
		t.Errorf("LinkServer.Close: %v", err)
	}
	if _, err := SetLinkDelayAt(context.Background(), socket, "pop-eu", ms); !errors.Is(err, ErrNoLinkServer) {
		t.Errorf("lab link after Close = %v, want ErrNoLinkServer", err)
	}
}
