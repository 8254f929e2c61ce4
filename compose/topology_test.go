package compose

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/geodns"
)

func TestLabTopology(t *testing.T) {
	topo, err := Load(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatalf("Load(docker-compose.yml) = %v", err)
	}
	want := map[string]string{ // DESIGN.md's addresses: the checks use them
		"geodns": "10.77.0.53", "origin": "10.77.1.10",
		"pop-na": "10.77.1.20", "pop-eu": "10.77.2.20", "pop-ap": "10.77.3.20",
		"client-na": "10.77.1.100", "client-eu": "10.77.2.100", "client-ap": "10.77.3.100",
		"client-moved": "10.77.4.100",
	}
	for name, addr := range want {
		h, ok := topo.Host(name)
		if !ok || h.Addr.String() != addr {
			t.Errorf("host %s = %v (found %v), want %s", name, h.Addr, ok, addr)
		}
	}
	get := func(n string) Host { h, _ := topo.Host(n); return h }
	for _, tt := range []struct {
		a, b string
		rtt  time.Duration
	}{
		{"client-na", "pop-na", 10 * time.Millisecond},
		{"client-eu", "pop-na", 80 * time.Millisecond},
		{"client-ap", "origin", 200 * time.Millisecond},
		{"pop-eu", "pop-ap", 240 * time.Millisecond},
		{"client-ap", "geodns", 10 * time.Millisecond},
		// The misplaced client: na's neighbour on the network.
		{"client-moved", "pop-na", 10 * time.Millisecond},
		{"origin", "client-moved", 10 * time.Millisecond},
		{"client-moved", "client-na", 10 * time.Millisecond},
		{"client-moved", "pop-eu", 90 * time.Millisecond},
		{"pop-ap", "client-moved", 90 * time.Millisecond},
		{"client-moved", "client-eu", 90 * time.Millisecond},
		{"client-moved", "geodns", 10 * time.Millisecond},
	} {
		if got := topo.RTTBetween(get(tt.a), get(tt.b)); got != tt.rtt {
			t.Errorf("RTT %s-%s = %v, want %v", tt.a, tt.b, got, tt.rtt)
		}
	}
	if r := get("client-moved").Region; r != "moved" {
		t.Errorf("client-moved's region = %q, want moved (x-lab.regions)", r)
	}
	if !strings.Contains(topo.String(), "pop-eu") {
		t.Errorf("String() lacks hosts:\n%s", topo)
	}
	// The lab's GeoDNS config the compose file mounts must be valid, and
	// its locator must place client-moved in eu, where the network does not.
	cfg, err := geodns.LoadConfig("lab/geodns.yaml")
	if err != nil {
		t.Fatalf("compose/lab/geodns.yaml: %v", err)
	}
	located := ""
	for _, n := range cfg.Locator.Networks {
		if p, err := netip.ParsePrefix(n.Prefix); err == nil && p.Contains(get("client-moved").Addr) && p.Bits() == 24 {
			located = n.Region
		}
	}
	if located != "eu" {
		t.Errorf("compose/lab/geodns.yaml locates client-moved (%s) in %q, want eu", get("client-moved").Addr, located)
	}
}

// In Docker every service installs its own delays before its command:
// its entrypoint is lab delay for itself (reading the copy of this file
// the image carries, its default -topology), with the capability netem
// and the NFQUEUE delay line need.
func TestComposeServicesApplyTheirDelays(t *testing.T) {
	project, err := loadProject(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	const inImage = "/etc/edgecdn/docker-compose.yml"
	topo := labTopology(t)
	for name, svc := range project.Services {
		plan, err := topo.DelayPlan(name)
		if err != nil {
			t.Errorf("service %s: %v", name, err)
			continue
		}
		if len(plan.Rules) == 0 {
			continue // nothing to delay
		}
		want := []string{"lab", "delay", "-self", name, "--"}
		if !slices.Equal(svc.Entrypoint, want) {
			t.Errorf("services.%s.entrypoint = %q, want %q", name, svc.Entrypoint, want)
		}
		if !slices.Contains(svc.CapAdd, "NET_ADMIN") {
			t.Errorf("services.%s.cap_add = %q, want NET_ADMIN (lab delay changes qdiscs or iptables)", name, svc.CapAdd)
		}
		if len(svc.Command) == 0 {
			t.Errorf("services.%s.command is empty: lab delay would exit instead of running the service", name)
		}
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"./compose/cmd/lab", "COPY docker-compose.yml " + inImage} {
		if !strings.Contains(string(df), line) {
			t.Errorf("compose/Dockerfile lacks %q: the entrypoints need the lab program and the topology in the image", line)
		}
	}
}

func TestTopologyErrorsNameTheField(t *testing.T) {
	base, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, from, to, want string
	}{
		{"address outside the subnet", "ipv4_address: 10.77.2.100}", "ipv4_address: 10.78.2.100}", "services.client-eu.networks.lab.ipv4_address"},
		{"duplicate address", "ipv4_address: 10.77.3.100}", "ipv4_address: 10.77.2.100}", "is also"},
		{"missing RTT pair", "    na-ap: 200\n", "", "ap-na (or na-ap) is missing"},
		{"missing RTT pair of moved", "    moved-eu: 90\n", "", "the pair eu-moved (or moved-eu) is missing"},
		{"RTT pair of an unknown region", "    moved-ap: 90\n", "    moved-oc: 90\n", "x-lab.rtt_ms.moved-oc: want same or a pair of two regions of x-lab.regions (ap, eu, moved, na)"},
		{"RTT pair given twice", "    moved-na: 10\n", "    moved-na: 10\n    na-moved: 12\n", "the pair moved-na is given twice"},
		{"bad region", "na: 10.77.1.0/24", "na: 192.168.1.0/24", "x-lab.regions.na"},
		{"overlapping regions", "moved: 10.77.4.0/24", "moved: 10.77.0.0/21", "overlaps"},
		{"region name with a dash", "    moved: 10.77.4.0/24", "    far-moved: 10.77.4.0/24", "x-lab.regions.far-moved"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.Replace(string(base), tt.from, tt.to, 1)
			if bad == string(base) {
				t.Fatalf("edit %q not applied", tt.from)
			}
			dir := t.TempDir()
			p := filepath.Join(dir, "docker-compose.yml")
			os.WriteFile(p, []byte(bad), 0o644)
			os.MkdirAll(filepath.Join(dir, "compose", "lab"), 0o755)
			if _, err := Load(context.Background(), p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func FuzzTopology(f *testing.F) {
	base, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base)
	f.Add([]byte("services: {}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "docker-compose.yml")
		os.WriteFile(p, data, 0o644)
		topo, err := Load(context.Background(), p)
		if err != nil {
			return
		}
		for _, h := range topo.Hosts {
			if !topo.Subnet.Contains(h.Addr) {
				t.Fatalf("host %s at %s outside %s", h.Name, h.Addr, topo.Subnet)
			}
		}
	})
}

func TestHostFlag(t *testing.T) {
	h := Host{Command: []string{"pop", "-name", "pop-eu", "--admin", "10.77.2.20:9901", "-drain-delay=3s", "admin", "-last"}}
	for _, tt := range []struct {
		name, want string
		ok         bool
	}{
		{"admin", "10.77.2.20:9901", true},
		{"name", "pop-eu", true},
		{"drain-delay", "3s", true},
		{"last", "", false}, // no value after it
		{"pop", "", false},  // the program, not a flag
		{"missing", "", false},
	} {
		if got, ok := h.Flag(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("Flag(%q) = %q, %v, want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
