package compose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ContainerDelay is the delay a lab container installed on itself at start
// (lab delay, every service's entrypoint in docker-compose.yml).
type ContainerDelay struct {
	Choice DelayChoice
	Plan   DelayPlan
	Iface  string
	queue  *QueueDelay // the userspace line; nil with netem
}

// StatusFile is where a container's delay is described for people
// (docker compose exec SERVICE cat /run/lab-delay).
const StatusFile = "/run/lab-delay"

// ApplyContainerDelay installs host self's plan inside the calling
// process's network namespace (a container): with netem when want is netem,
// or auto and the kernel has it; otherwise with the NFQUEUE delay line of
// StartQueueDelay, which then runs until Close. A container without
// CAP_NET_ADMIN gets an error that says so under either backend.
func ApplyContainerDelay(ctx context.Context, topo *Topology, self string, want Backend) (*ContainerDelay, error) {
	d := &ContainerDelay{}
	var netemErr error
	if want == BackendAuto || want == BackendNetem || want == "" {
		plan, iface, err := ApplyDelays(topo, self, "")
		if err == nil {
			d.Plan, d.Iface = plan, iface
			d.Choice = DelayChoice{BackendNetem, "the kernel has sch_netem"}
			if want == BackendNetem {
				d.Choice.Reason = "chosen explicitly; " + d.Choice.Reason
			}
			return d, nil
		}
		if errors.Is(err, unix.EPERM) || want == BackendNetem {
			return nil, err
		}
		netemErr = err
		if iface != "" {
			clearRootQdisc(iface)
		}
	}
	h, ok := topo.Host(self)
	if !ok {
		return nil, fmt.Errorf("delay: no service %q in the topology; services: %s", self, strings.Join(topo.HostNames(), ", "))
	}
	plan, err := topo.DelayPlan(self)
	if err != nil {
		return nil, err
	}
	if !hasAddr(h.Addr) {
		// Not the service's own network namespace: never touch this
		// machine's netfilter.
		return nil, fmt.Errorf("delay: %s's address %s is on no interface here; lab delay runs inside that service's container", self, h.Addr)
	}
	q, err := StartQueueDelay(ctx, plan, topo.Subnet)
	if err != nil {
		if netemErr != nil {
			return nil, fmt.Errorf("no delay backend works here: netem: %v; userspace: %w", netemErr, err)
		}
		return nil, err
	}
	d.Plan, d.Iface, d.queue = plan, "egress to "+topo.Subnet.String()+" from "+h.Addr.String(), q
	d.Choice = DelayChoice{BackendUserspace, "chosen explicitly"}
	if netemErr != nil {
		d.Choice.Reason = fmt.Sprintf("auto: netem failed (%v)", netemErr)
	}
	return d, nil
}

// Describe is the text of StatusFile and of the container's first log line.
func (d *ContainerDelay) Describe() string {
	how := "netem qdiscs per destination on " + d.Iface
	if d.queue != nil {
		how = fmt.Sprintf("userspace delay line: iptables mangle OUTPUT -j NFQUEUE %d, %s", QueueNum, d.Iface)
	}
	return fmt.Sprintf("lab delay: %s: backend %s (%s); %s\nplan: %s\n", d.Plan.Host, d.Choice.Backend, d.Choice.Reason, how, d.Plan)
}

// WriteStatus writes Describe to StatusFile.
func (d *ContainerDelay) WriteStatus() error {
	return os.WriteFile(StatusFile, []byte(d.Describe()), 0o644)
}

// Close stops the userspace line (netem stays with the interface).
func (d *ContainerDelay) Close() error {
	if d.queue == nil {
		return nil
	}
	return d.queue.Close()
}

// hasAddr reports whether a is assigned to an interface of this network
// namespace.
func hasAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// clearRootQdisc removes what a failed netem install left on iface.
func clearRootQdisc(iface string) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return
	}
	qs, err := netlink.QdiscList(link)
	if err != nil {
		return
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle != 0 {
			netlink.QdiscDel(q)
		}
	}
}
