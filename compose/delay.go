package compose

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// DelayRule holds back the packets a host sends to Dst by Delay, through
// band Band of its plan.
type DelayRule struct {
	Dst   netip.Prefix
	Delay time.Duration // one way
	Band  int           // 1-based index into DelayPlan.Bands
}

// DelayPlan is one host's egress delays: what the host's own interface
// holds back per destination so that every pair's round trip is the
// x-lab matrix's, half on each side (an anycast host's one_way on each).
// Both delay backends follow it: the netem backend installs it as qdiscs
// and filters, the userspace delay line looks each packet up in it.
type DelayPlan struct {
	Host string
	// Bands are the distinct delays, ascending; band i+1 delays Bands[i].
	// Traffic no rule matches is not delayed.
	Bands []time.Duration
	// Rules are in match order: longer prefixes first.
	Rules []DelayRule
}

// DelayPlan builds the egress plan of the host named name:
//   - an anycast host delays everything in the lab subnet by its one_way;
//   - any other host delays each anycast host (/32) by that host's
//     one_way and, if it is in a region, each region's prefix by half the
//     RTT between its region and that one.
//
// Hosts outside every region (lab-init) reach region hosts undelayed, as
// RTTBetween says.
func (t *Topology) DelayPlan(name string) (DelayPlan, error) {
	h, ok := t.Host(name)
	if !ok {
		return DelayPlan{}, fmt.Errorf("delay plan: no host %q in the topology", name)
	}
	p := DelayPlan{Host: name}
	for _, any := range t.anycastSorted() {
		if any.Addr == h.Addr {
			p.Rules = []DelayRule{{Dst: t.Subnet, Delay: any.OneWay}}
			return p.numberBands(), nil
		}
	}
	for _, any := range t.anycastSorted() {
		p.Rules = append(p.Rules, DelayRule{Dst: netip.PrefixFrom(any.Addr, 32), Delay: any.OneWay})
	}
	if h.Region != "" {
		for _, r := range regionNames(t.Regions) {
			rtt, ok := t.regionRTT(h.Region, r)
			if !ok {
				return DelayPlan{}, fmt.Errorf("delay plan for %s: no RTT between regions %s and %s", name, h.Region, r)
			}
			p.Rules = append(p.Rules, DelayRule{Dst: t.Regions[r], Delay: rtt / 2})
		}
	}
	sort.SliceStable(p.Rules, func(i, j int) bool { return p.Rules[i].Dst.Bits() > p.Rules[j].Dst.Bits() })
	return p.numberBands(), nil
}

func (t *Topology) anycastSorted() []AnycastHost {
	var out []AnycastHost
	for _, a := range t.Anycast {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

func (t *Topology) regionRTT(a, b string) (time.Duration, bool) {
	if a == b {
		d, ok := t.RTT["same"]
		return d, ok
	}
	if a > b {
		a, b = b, a
	}
	d, ok := t.RTT[a+"-"+b]
	return d, ok
}

// numberBands fills Bands with the distinct delays and points each rule
// at its band.
func (p DelayPlan) numberBands() DelayPlan {
	seen := map[time.Duration]bool{}
	for _, r := range p.Rules {
		if !seen[r.Delay] {
			seen[r.Delay] = true
			p.Bands = append(p.Bands, r.Delay)
		}
	}
	sort.Slice(p.Bands, func(i, j int) bool { return p.Bands[i] < p.Bands[j] })
	for i := range p.Rules {
		for b, d := range p.Bands {
			if d == p.Rules[i].Delay {
				p.Rules[i].Band = b + 1
			}
		}
	}
	return p
}

// WithExtra is the plan with extra added to every band and rule: what
// lab link sets while a lab runs (a slower link out of the host). Bands
// and rules keep their numbers and order, so a backend changes the
// delays in place; traffic no rule matches stays undelayed.
func (p DelayPlan) WithExtra(extra time.Duration) DelayPlan {
	q := DelayPlan{Host: p.Host, Bands: slices.Clone(p.Bands), Rules: slices.Clone(p.Rules)}
	for i := range q.Bands {
		q.Bands[i] += extra
	}
	for i := range q.Rules {
		q.Rules[i].Delay += extra
	}
	return q
}

// DelayTo is the one-way delay the plan gives packets to dst (the first
// matching rule's; zero when none matches).
func (p DelayPlan) DelayTo(dst netip.Addr) time.Duration {
	for _, r := range p.Rules {
		if r.Dst.Contains(dst) {
			return r.Delay
		}
	}
	return 0
}

// String lists the rules on one line: "10.77.0.53/32 5ms, 10.77.1.0/24 5ms".
func (p DelayPlan) String() string {
	var parts []string
	for _, r := range p.Rules {
		parts = append(parts, fmt.Sprintf("%s %v", r.Dst, r.Delay))
	}
	return strings.Join(parts, ", ")
}

// Backend is how the lab delays packets.
type Backend string

const (
	// BackendAuto picks netem when the kernel has it, else userspace.
	BackendAuto Backend = "auto"
	// BackendNetem: each host's interface is a veth on a bridge, with
	// netem qdiscs and u32 filters installed from its DelayPlan.
	BackendNetem Backend = "netem"
	// BackendUserspace: each host has a TUN device and this process
	// forwards every packet after its delay.
	BackendUserspace Backend = "userspace"
)

// ErrNoNetem says the kernel cannot do what the netem backend needs.
var ErrNoNetem = errors.New("sch_netem is missing from this kernel")

// ParseBackend reads a -delay flag value; empty means auto.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case "":
		return BackendAuto, nil
	case BackendAuto, BackendNetem, BackendUserspace:
		return b, nil
	}
	return "", fmt.Errorf("delay backend %q: want auto, netem or userspace", s)
}

// DelayChoice is the backend a lab uses and why.
type DelayChoice struct {
	Backend Backend
	Reason  string
}

func (c DelayChoice) String() string { return fmt.Sprintf("%s; %s", c.Backend, c.Reason) }

// ChooseDelay resolves want against this kernel: auto (or empty) is netem
// when NetemAvailable and the HTB and u32 the plan is built from work,
// else userspace; netem on a kernel without them is an error that says so.
// Probing needs root (it creates a throwaway namespace).
func ChooseDelay(want Backend) (DelayChoice, error) {
	return chooseDelay(want, NetemAvailable, tcAvailable)
}

// chooseDelay is ChooseDelay with the kernel probes as seams.
func chooseDelay(want Backend, netem, tc func() error) (DelayChoice, error) {
	const hint = "use the built-in userspace delay line (lab up -delay userspace), or docker compose on a machine whose kernel has netem"
	switch want {
	case BackendUserspace:
		return DelayChoice{BackendUserspace, "chosen explicitly"}, nil
	case BackendNetem:
		if err := netem(); err != nil {
			return DelayChoice{}, fmt.Errorf("delay backend netem: %w (adding a netem qdisc: %v); %s", ErrNoNetem, err, hint)
		}
		if err := tc(); err != nil {
			return DelayChoice{}, fmt.Errorf("delay backend netem: the kernel has sch_netem but not the sch_htb and cls_u32 the per-destination delays need (%v); %s", err, hint)
		}
		return DelayChoice{BackendNetem, "chosen explicitly; the kernel has sch_netem"}, nil
	case BackendAuto, "":
		if err := netem(); err != nil {
			return DelayChoice{BackendUserspace, fmt.Sprintf("auto: %v (adding a netem qdisc: %v)", ErrNoNetem, err)}, nil
		}
		if err := tc(); err != nil {
			return DelayChoice{BackendUserspace, fmt.Sprintf("auto: the kernel has sch_netem but not sch_htb and cls_u32 (%v)", err)}, nil
		}
		return DelayChoice{BackendNetem, "auto: the kernel has sch_netem"}, nil
	}
	return DelayChoice{}, fmt.Errorf("delay backend %q: want auto, netem or userspace", want)
}
