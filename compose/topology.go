package compose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

// Host is one service of the lab.
type Host struct {
	Name    string
	Addr    netip.Addr
	Region  string // the x-lab region holding Addr (na, eu, ap, moved); empty outside them (geodns)
	Command []string
}

// Topology is the lab as docker-compose.yml describes it.
type Topology struct {
	Subnet  netip.Prefix
	Hosts   []Host // sorted by name
	Regions map[string]netip.Prefix
	// RTT is the round-trip time per region pair ("na-eu") and "same".
	RTT map[string]time.Duration
	// Anycast hosts are reached with the same one-way delay from everywhere.
	Anycast map[string]AnycastHost
	// Published are the host addresses Docker publishes lab ports on,
	// as "127.77.1.20:443/udp", sorted.
	Published []string
}

// AnycastHost is a host every other reaches with a fixed one-way delay.
type AnycastHost struct {
	Addr   netip.Addr
	OneWay time.Duration
}

// labExt is the x-lab extension block.
type labExt struct {
	Regions map[string]string `yaml:"regions"`
	RTTms   map[string]int    `yaml:"rtt_ms"`
	Anycast map[string]struct {
		Address  string `yaml:"address"`
		OneWayMs int    `yaml:"one_way_ms"`
	} `yaml:"anycast"`
}

// Load reads and validates a compose file without a Docker engine, with
// the loader Compose itself uses.
func Load(ctx context.Context, path string) (*Topology, error) {
	project, err := loadProject(ctx, path)
	if err != nil {
		return nil, err
	}
	return fromProject(project)
}

// loadProject is Compose's own reading of the file.
func loadProject(ctx context.Context, path string) (*types.Project, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	abs, _ := filepath.Abs(path)
	project, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: data}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("edgecdn-lab", true)
		o.SkipConsistencyCheck = false
		o.Profiles = []string{"*"} // a host behind a profile (browser) is still a lab host
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return project, nil
}

func fromProject(p *types.Project) (*Topology, error) {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	t := &Topology{Regions: map[string]netip.Prefix{}, RTT: map[string]time.Duration{}, Anycast: map[string]AnycastHost{}}
	net, ok := p.Networks["lab"]
	if !ok || len(net.Ipam.Config) == 0 {
		return nil, errors.New("networks.lab.ipam.config: missing, want the lab subnet 10.77.0.0/16")
	}
	sub, err := netip.ParsePrefix(net.Ipam.Config[0].Subnet)
	if err != nil {
		return nil, fmt.Errorf("networks.lab.ipam.config[0].subnet: %w", err)
	}
	t.Subnet = sub
	var ext labExt
	raw, ok := p.Extensions["x-lab"]
	if !ok {
		return nil, errors.New("x-lab: missing, want the regions and the RTT matrix")
	}
	b, _ := yaml.Marshal(raw)
	if err := yaml.Unmarshal(b, &ext); err != nil {
		return nil, fmt.Errorf("x-lab: %w", err)
	}
	for name, s := range ext.Regions {
		if name == "same" || strings.Contains(name, "-") {
			add("x-lab.regions.%s: want a name without \"-\" other than same (rtt_ms keys are REGION-REGION and same)", name)
			continue
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil || !sub.Contains(pfx.Addr()) {
			add("x-lab.regions.%s: %q, want a prefix inside %s", name, s, sub)
			continue
		}
		t.Regions[name] = pfx
	}
	names := regionNames(t.Regions)
	for i, a := range names {
		for _, b := range names[i+1:] {
			if t.Regions[a].Overlaps(t.Regions[b]) {
				add("x-lab.regions: %s (%s) overlaps %s (%s), want disjoint prefixes (a host is in one region)", a, t.Regions[a], b, t.Regions[b])
			}
		}
	}
	for k, ms := range ext.RTTms {
		if ms <= 0 {
			add("x-lab.rtt_ms.%s: %d, want a positive number of milliseconds", k, ms)
		}
		if a, b, ok := strings.Cut(k, "-"); k != "same" && (!ok || a == b || !slices.Contains(names, a) || !slices.Contains(names, b)) {
			add("x-lab.rtt_ms.%s: want same or a pair of two regions of x-lab.regions (%s) joined by \"-\"", k, strings.Join(names, ", "))
			continue
		}
		if _, dup := t.RTT[pairKey(k)]; dup {
			add("x-lab.rtt_ms.%s: the pair %s is given twice, want it once", k, pairKey(k))
		}
		t.RTT[pairKey(k)] = time.Duration(ms) * time.Millisecond
	}
	if _, ok := t.RTT["same"]; !ok {
		add("x-lab.rtt_ms.same: missing")
	}
	for i, a := range names {
		for _, b := range names[i+1:] {
			if _, ok := t.RTT[a+"-"+b]; !ok {
				add("x-lab.rtt_ms: the pair %s-%s (or %s-%s) is missing", a, b, b, a)
			}
		}
	}
	for name, a := range ext.Anycast {
		addr, err := netip.ParseAddr(a.Address)
		if err != nil || !sub.Contains(addr) || a.OneWayMs <= 0 {
			add("x-lab.anycast.%s: address %q one_way_ms %d, want an address in %s and a positive delay", name, a.Address, a.OneWayMs, sub)
			continue
		}
		t.Anycast[name] = AnycastHost{Addr: addr, OneWay: time.Duration(a.OneWayMs) * time.Millisecond}
	}
	seen := map[netip.Addr]string{}
	for name, svc := range p.Services {
		n, ok := svc.Networks["lab"]
		if !ok || n == nil || n.Ipv4Address == "" {
			add("services.%s.networks.lab.ipv4_address: missing, want a static address", name)
			continue
		}
		addr, err := netip.ParseAddr(n.Ipv4Address)
		if err != nil || !sub.Contains(addr) {
			add("services.%s.networks.lab.ipv4_address: %q is not inside the lab subnet %s", name, n.Ipv4Address, sub)
			continue
		}
		if other, dup := seen[addr]; dup {
			add("services.%s.networks.lab.ipv4_address: %s is also %s's", name, addr, other)
		}
		seen[addr] = name
		h := Host{Name: name, Addr: addr, Command: svc.Command}
		for r, pfx := range t.Regions {
			if pfx.Contains(addr) {
				h.Region = r
			}
		}
		t.Hosts = append(t.Hosts, h)
		for _, port := range svc.Ports {
			t.Published = append(t.Published, fmt.Sprintf("%s:%s/%s", port.HostIP, port.Published, port.Protocol))
		}
	}
	sort.Strings(t.Published)
	sort.Slice(t.Hosts, func(i, j int) bool { return t.Hosts[i].Name < t.Hosts[j].Name })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// pairKey orders a region pair "b-a" as "a-b", so either spelling works.
func pairKey(k string) string {
	a, b, ok := strings.Cut(k, "-")
	if !ok || a <= b {
		return k
	}
	return b + "-" + a
}

func regionNames(m map[string]netip.Prefix) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Host returns the host named name.
func (t *Topology) Host(name string) (Host, bool) {
	for _, h := range t.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// RTTBetween is the round trip the lab emulates between two hosts: an
// anycast host is one_way x 2 from anyone; the same region is "same";
// regions use their pair; hosts outside any region are on loopback (0).
func (t *Topology) RTTBetween(a, b Host) time.Duration {
	for _, any := range t.Anycast {
		if a.Addr == any.Addr || b.Addr == any.Addr {
			return 2 * any.OneWay
		}
	}
	if a.Region == "" || b.Region == "" {
		return 0
	}
	if a.Region == b.Region {
		return t.RTT["same"]
	}
	x, y := a.Region, b.Region
	if x > y {
		x, y = y, x
	}
	return t.RTT[x+"-"+y]
}

// String lists the hosts.
func (t *Topology) String() string {
	var b strings.Builder
	for _, h := range t.Hosts {
		fmt.Fprintf(&b, "%-12s %-13s %-5s %s\n", h.Name, h.Addr, h.Region, strings.Join(h.Command, " "))
	}
	return b.String()
}

// HostNames lists the hosts' names, sorted.
func (t *Topology) HostNames() []string {
	var names []string
	for _, h := range t.Hosts {
		names = append(names, h.Name)
	}
	return names
}

// Flag returns the value of the flag -name (or --name) in the host's
// command, written "-name value" or "-name=value", and whether it is
// there: the PoPs' -admin is their metrics and health listener.
func (h Host) Flag(name string) (string, bool) {
	for i, a := range h.Command {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if len(a) == len(h.Command[i]) {
			continue // not a flag
		}
		if a == name && i+1 < len(h.Command) {
			return h.Command[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}
