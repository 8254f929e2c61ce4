package compose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const ms = time.Millisecond

func labTopology(t *testing.T) *Topology {
	t.Helper()
	topo, err := Load(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatalf("Load(docker-compose.yml) = %v", err)
	}
	return topo
}

func rule(dst string, d time.Duration, band int) DelayRule {
	return DelayRule{Dst: netip.MustParsePrefix(dst), Delay: d, Band: band}
}

// The plans of the default topology, by hand from DESIGN.md's matrix:
// same region 10 ms, na-eu 80, na-ap 200, eu-ap 240, moved (client-moved)
// 10 from na and 90 from eu and ap (half each way), and geodns 5 ms one
// way from everyone. Rules: geodns's /32, then the regions' /24s in
// name order (ap, eu, moved, na).
func TestDelayPlan(t *testing.T) {
	topo := labTopology(t)
	for _, tt := range []struct {
		host  string
		bands []time.Duration
		rules []DelayRule
	}{
		{"pop-na", []time.Duration{5 * ms, 40 * ms, 100 * ms}, []DelayRule{
			rule("10.77.0.53/32", 5*ms, 1), rule("10.77.3.0/24", 100*ms, 3), rule("10.77.2.0/24", 40*ms, 2), rule("10.77.4.0/24", 5*ms, 1), rule("10.77.1.0/24", 5*ms, 1)}},
		{"origin", []time.Duration{5 * ms, 40 * ms, 100 * ms}, []DelayRule{
			rule("10.77.0.53/32", 5*ms, 1), rule("10.77.3.0/24", 100*ms, 3), rule("10.77.2.0/24", 40*ms, 2), rule("10.77.4.0/24", 5*ms, 1), rule("10.77.1.0/24", 5*ms, 1)}},
		{"pop-eu", []time.Duration{5 * ms, 40 * ms, 45 * ms, 120 * ms}, []DelayRule{
			rule("10.77.0.53/32", 5*ms, 1), rule("10.77.3.0/24", 120*ms, 4), rule("10.77.2.0/24", 5*ms, 1), rule("10.77.4.0/24", 45*ms, 3), rule("10.77.1.0/24", 40*ms, 2)}},
		{"client-ap", []time.Duration{5 * ms, 45 * ms, 100 * ms, 120 * ms}, []DelayRule{
			rule("10.77.0.53/32", 5*ms, 1), rule("10.77.3.0/24", 5*ms, 1), rule("10.77.2.0/24", 120*ms, 4), rule("10.77.4.0/24", 45*ms, 2), rule("10.77.1.0/24", 100*ms, 3)}},
		{"client-moved", []time.Duration{5 * ms, 45 * ms}, []DelayRule{
			rule("10.77.0.53/32", 5*ms, 1), rule("10.77.3.0/24", 45*ms, 2), rule("10.77.2.0/24", 45*ms, 2), rule("10.77.4.0/24", 5*ms, 1), rule("10.77.1.0/24", 5*ms, 1)}},
		{"geodns", []time.Duration{5 * ms}, []DelayRule{rule("10.77.0.0/16", 5*ms, 1)}},
		{"lab-init", []time.Duration{5 * ms}, []DelayRule{rule("10.77.0.53/32", 5*ms, 1)}},
	} {
		t.Run(tt.host, func(t *testing.T) {
			p, err := topo.DelayPlan(tt.host)
			if err != nil {
				t.Fatalf("DelayPlan(%q) = %v", tt.host, err)
			}
			if !reflect.DeepEqual(p.Bands, tt.bands) {
				t.Errorf("DelayPlan(%q).Bands = %v, want %v", tt.host, p.Bands, tt.bands)
			}
			if !reflect.DeepEqual(p.Rules, tt.rules) {
				t.Errorf("DelayPlan(%q).Rules =\n%v\nwant\n%v", tt.host, p.Rules, tt.rules)
			}
		})
	}
	if _, err := topo.DelayPlan("nosuch"); err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("DelayPlan(nosuch) = %v, want an error naming the host", err)
	}
}

// Every pair's two one-way delays add up to the matrix's RTT, so both
// backends (which follow the plans) emulate the matrix.
func TestDelayPlansAddUpToTheMatrix(t *testing.T) {
	topo := labTopology(t)
	plans := map[string]DelayPlan{}
	for _, h := range topo.Hosts {
		p, err := topo.DelayPlan(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		plans[h.Name] = p
	}
	for _, a := range topo.Hosts {
		for _, b := range topo.Hosts {
			if a.Name == b.Name {
				continue
			}
			there, back := plans[a.Name].DelayTo(b.Addr), plans[b.Name].DelayTo(a.Addr)
			if want := topo.RTTBetween(a, b); there+back != want || there != back {
				t.Errorf("%s -> %s delayed %v, back %v; want %v each way (RTT %v)", a.Name, b.Name, there, back, want/2, want)
			}
		}
	}
	// Nothing outside the lab is delayed (nor reachable, but not here).
	if d := plans["pop-na"].DelayTo(netip.MustParseAddr("192.0.2.1")); d != 0 {
		t.Errorf("pop-na's delay to 192.0.2.1 = %v, want 0", d)
	}
}

// lab link's plan: every band and rule extra longer, in the same order
// and bands, so that a backend changes the delays in place; the base plan
// is left as it was, and 0 gives it back.
func TestDelayPlanWithExtra(t *testing.T) {
	base, err := labTopology(t).DelayPlan("pop-eu")
	if err != nil {
		t.Fatal(err)
	}
	before := base.String()
	p := base.WithExtra(100 * ms)
	if want := []time.Duration{105 * ms, 140 * ms, 145 * ms, 220 * ms}; !reflect.DeepEqual(p.Bands, want) {
		t.Errorf("WithExtra(100ms).Bands = %v, want %v", p.Bands, want)
	}
	for i, r := range p.Rules {
		b := base.Rules[i]
		if r.Dst != b.Dst || r.Band != b.Band || r.Delay != b.Delay+100*ms {
			t.Errorf("WithExtra(100ms).Rules[%d] = %v, want %v 100 ms longer", i, r, b)
		}
	}
	if got := p.DelayTo(netip.MustParseAddr("10.77.2.100")); got != 105*ms {
		t.Errorf("WithExtra(100ms).DelayTo(client-eu) = %v, want 105ms", got)
	}
	if base.String() != before {
		t.Errorf("WithExtra changed the base plan: %s, was %s", base, before)
	}
	if z := base.WithExtra(0); !reflect.DeepEqual(z, base) {
		t.Errorf("WithExtra(0) = %v, want the plan itself %v", z, base)
	}
}

// The netlink objects for pop-eu: every filter must match the right
// destination and lead, through its class, to a netem of the right delay.
func TestBuildTC(t *testing.T) {
	topo := labTopology(t)
	p, err := topo.DelayPlan("pop-eu")
	if err != nil {
		t.Fatal(err)
	}
	const link = 7
	o := buildTC(p, link, netemLeaf)
	if o.root.Handle != netlink.MakeHandle(1, 0) || o.root.Parent != netlink.HANDLE_ROOT || o.root.LinkIndex != link || o.root.Defcls != 0 {
		t.Errorf("root = %+v, want htb 1: at the root of link %d with unclassified traffic direct", o.root.QdiscAttrs, link)
	}
	if o.root.DirectQlen == nil || *o.root.DirectQlen < 1000 {
		t.Errorf("root DirectQlen = %v, want a queue of at least 1000 for undelayed traffic", o.root.DirectQlen)
	}
	if len(o.classes) != 4 || len(o.leaves) != 4 {
		t.Fatalf("%d classes and %d leaves, want 4 of each (5, 40, 45, 120 ms)", len(o.classes), len(o.leaves))
	}
	leafOf := map[uint32]*netlink.Netem{}
	for i, q := range o.leaves {
		ne, ok := q.(*netlink.Netem)
		if !ok {
			t.Fatalf("leaf %d is %s, want netem", i, q.Type())
		}
		if ne.Parent != o.classes[i].Handle || ne.LinkIndex != link || ne.Limit < 1000 {
			t.Errorf("leaf %d = %+v (limit %d), want under class %s on link %d", i, ne.QdiscAttrs, ne.Limit, netlink.HandleStr(o.classes[i].Handle), link)
		}
		if o.classes[i].Parent != o.root.Handle || o.classes[i].Rate < 1e8 {
			t.Errorf("class %d = %+v rate %d B/s, want under 1: and not shaping", i, o.classes[i].ClassAttrs, o.classes[i].Rate)
		}
		leafOf[o.classes[i].Handle] = ne
	}
	for i, tt := range []struct {
		dst       string
		val, mask uint32
		delay     time.Duration
	}{ // in match order: the anycast /32 before the region /24s
		{"10.77.0.53/32", 0x0a4d0035, 0xffffffff, 5 * ms},
		{"10.77.3.0/24", 0x0a4d0300, 0xffffff00, 120 * ms},
		{"10.77.2.0/24", 0x0a4d0200, 0xffffff00, 5 * ms},
		{"10.77.4.0/24", 0x0a4d0400, 0xffffff00, 45 * ms},
		{"10.77.1.0/24", 0x0a4d0100, 0xffffff00, 40 * ms},
	} {
		if i >= len(o.filters) {
			t.Fatalf("%d filters, want 5", len(o.filters))
		}
		f := o.filters[i]
		want := netlink.TcU32Key{Mask: tt.mask, Val: tt.val, Off: 16}
		if f.Sel == nil || len(f.Sel.Keys) != 1 || f.Sel.Keys[0] != want || f.Sel.Flags&netlink.TC_U32_TERMINAL == 0 {
			t.Errorf("filter %d (%s) selector = %+v, want one terminal key %+v", i, tt.dst, f.Sel, want)
			continue
		}
		if f.Protocol != unix.ETH_P_IP || f.Parent != o.root.Handle || f.LinkIndex != link || int(f.Priority) != i+1 {
			t.Errorf("filter %d (%s) attrs = %+v, want IPv4 on 1: with priority %d", i, tt.dst, f.FilterAttrs, i+1)
		}
		leaf, ok := leafOf[f.ClassId]
		if !ok {
			t.Errorf("filter %d (%s) sends to class %s, which has no netem", i, tt.dst, netlink.HandleStr(f.ClassId))
			continue
		}
		if got := time.Duration(float64(leaf.Latency)/netlink.TickInUsec()) * time.Microsecond; (got - tt.delay).Abs() > 10*time.Microsecond {
			t.Errorf("filter %d (%s) leads to a netem of %v, want %v", i, tt.dst, got, tt.delay)
		}
	}
}

func TestChooseDelay(t *testing.T) {
	ok := func() error { return nil }
	missing := func() error { return errors.New("no such file or directory") }
	for _, tt := range []struct {
		name        string
		want        Backend
		netem, tc   func() error
		got         Backend
		errHas      []string // non-empty: an error with these words
		reasonHas   string
		errIsNoNtem bool
	}{
		{"auto with netem", BackendAuto, ok, ok, BackendNetem, nil, "the kernel has sch_netem", false},
		{"empty is auto", "", ok, ok, BackendNetem, nil, "auto", false},
		{"auto without netem", BackendAuto, missing, ok, BackendUserspace, nil, "sch_netem is missing", false},
		{"auto without htb", BackendAuto, ok, missing, BackendUserspace, nil, "sch_htb", false},
		{"userspace forced", BackendUserspace, ok, ok, BackendUserspace, nil, "explicitly", false},
		{"netem forced", BackendNetem, ok, ok, BackendNetem, nil, "explicitly", false},
		{"netem forced without netem", BackendNetem, missing, ok, "", []string{"sch_netem is missing", "-delay userspace", "docker compose"}, "", true},
		{"netem forced without htb", BackendNetem, ok, missing, "", []string{"sch_htb", "-delay userspace"}, "", false},
		{"bogus", "fast", ok, ok, "", []string{`"fast"`, "auto, netem or userspace"}, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := chooseDelay(tt.want, tt.netem, tt.tc)
			if len(tt.errHas) > 0 {
				if err == nil {
					t.Fatalf("chooseDelay(%q) = %v, want an error", tt.want, c)
				}
				for _, w := range tt.errHas {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("chooseDelay(%q) error %q lacks %q", tt.want, err, w)
					}
				}
				if errors.Is(err, ErrNoNetem) != tt.errIsNoNtem {
					t.Errorf("errors.Is(%v, ErrNoNetem) = %v, want %v", err, !tt.errIsNoNtem, tt.errIsNoNtem)
				}
				return
			}
			if err != nil || c.Backend != tt.got || !strings.Contains(c.Reason, tt.reasonHas) {
				t.Errorf("chooseDelay(%q) = %v, %v; want %s with a reason containing %q", tt.want, c, err, tt.got, tt.reasonHas)
			}
		})
	}
}

func TestParseBackend(t *testing.T) {
	for in, want := range map[string]Backend{"": BackendAuto, "auto": BackendAuto, "netem": BackendNetem, "userspace": BackendUserspace} {
		if got, err := ParseBackend(in); got != want || err != nil {
			t.Errorf("ParseBackend(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"tc", "Netem", "docker"} {
		if _, err := ParseBackend(in); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("ParseBackend(%q) = %v, want an error naming it", in, err)
		}
	}
}
