package compose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ContainerDelay is the delay a lab container installed on itself at start
// (lab delay, every service's entrypoint in docker-compose.yml).
type ContainerDelay struct {
	Choice DelayChoice
	Plan   DelayPlan // the matrix's; SetLinkDelay adds to it
	Iface  string
	// Logger receives the changes of SetLinkDelay. If nil, slog.Default().
	Logger *slog.Logger
	queue  *QueueDelay // the userspace line; nil with netem

	mu     sync.Mutex    // guards extra, status
	extra  time.Duration // of SetLinkDelay
	status string        // the file WriteStatus wrote, rewritten on changes
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
	d.mu.Lock()
	extra := d.extra
	d.mu.Unlock()
	text := fmt.Sprintf("lab delay: %s: backend %s (%s); %s\nplan: %s\n", d.Plan.Host, d.Choice.Backend, d.Choice.Reason, how, d.Plan)
	return withLinkLine(text, extra)
}

// WriteStatus writes Describe to StatusFile, and again on every
// SetLinkDelay.
func (d *ContainerDelay) WriteStatus() error {
	return d.writeStatus(StatusFile)
}

func (d *ContainerDelay) writeStatus(path string) error {
	d.mu.Lock()
	d.status = path
	d.mu.Unlock()
	return os.WriteFile(path, []byte(d.Describe()), 0o644)
}

// withLinkLine replaces the "link:" line of a status text with one for
// extra (none for 0).
func withLinkLine(text string, extra time.Duration) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "link: ") {
			b.WriteString(l)
		}
	}
	if extra > 0 {
		fmt.Fprintf(&b, "link: +%v one way on every delay of the plan (lab link; lab link HOST 0 restores the plan)\n", extra)
	}
	return b.String()
}

// SetLinkDelay adds extra to every delay of the container's plan (lab
// link; 0 restores it): the userspace line swaps its plan, netem's band
// qdiscs change in place. host must be the container's own. It logs the
// change and rewrites the status file.
func (d *ContainerDelay) SetLinkDelay(host string, extra time.Duration) error {
	if host != d.Plan.Host {
		return fmt.Errorf("link delay: this container is %s, not %q", d.Plan.Host, host)
	}
	if extra < 0 || extra > MaxLinkDelay {
		return fmt.Errorf("link delay of %s: %v, want 0 (the matrix) up to %v", host, extra, MaxLinkDelay)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	plan := d.Plan.WithExtra(extra)
	if d.queue != nil {
		if err := d.queue.SetPlan(plan); err != nil {
			return err
		}
	} else if err := changeIfaceTC(d.Iface, plan.Bands); err != nil {
		return fmt.Errorf("link delay of %s: %w", host, err)
	}
	was := d.extra
	d.extra = extra
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("link delay", "host", host, "extra", extra, "was", was, "backend", d.Choice.Backend)
	if d.status != "" {
		if b, err := os.ReadFile(d.status); err == nil {
			os.WriteFile(d.status, []byte(withLinkLine(string(b), extra)), 0o644)
		}
	}
	return nil
}

// changeIfaceTC changes the netem bands on the interface named iface.
func changeIfaceTC(iface string, bands []time.Duration) error {
	nl, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer nl.Close()
	link, err := nl.LinkByName(iface)
	if err != nil {
		return err
	}
	return changeTC(nl, link.Attrs().Index, bands, netemLeaf)
}

// SetContainerLinkDelay is lab link inside host self's container: it asks
// the container's lab delay process (the userspace line, on LinkSocket)
// or, where none answers (netem: lab delay became the service), changes
// the netem qdiscs itself and notes the change in StatusFile. It returns
// what it set, for people.
func SetContainerLinkDelay(ctx context.Context, topo *Topology, self string, extra time.Duration) (string, error) {
	return setContainerLinkDelay(ctx, topo, self, extra, LinkSocket, StatusFile, netemLeaf)
}

// setContainerLinkDelay is SetContainerLinkDelay with the socket, the
// status file and the bands' qdisc as seams.
func setContainerLinkDelay(ctx context.Context, topo *Topology, self string, extra time.Duration, socket, status string, leaf leafFunc) (string, error) {
	if _, ok := topo.Host(self); !ok {
		return "", fmt.Errorf("link delay: no service %q in the topology; services: %s", self, strings.Join(topo.HostNames(), ", "))
	}
	msg, err := SetLinkDelayAt(ctx, socket, self, extra)
	if !errors.Is(err, ErrNoLinkServer) {
		return msg, err
	}
	_, iface, nerr := changeDelays(topo, self, "", extra, leaf)
	if nerr != nil {
		return "", fmt.Errorf("link delay of %s: no userspace delay line answers on %s, and netem: %w", self, socket, nerr)
	}
	if b, err := os.ReadFile(status); err == nil {
		os.WriteFile(status, []byte(withLinkLine(string(b), extra)), 0o644)
	}
	return DescribeLinkDelay(self, extra) + " (netem on " + iface + ")", nil
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
