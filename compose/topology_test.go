package compose

import (
	"context"
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
	} {
		if got := topo.RTTBetween(get(tt.a), get(tt.b)); got != tt.rtt {
			t.Errorf("RTT %s-%s = %v, want %v", tt.a, tt.b, got, tt.rtt)
		}
	}
	if !strings.Contains(topo.String(), "pop-eu") {
		t.Errorf("String() lacks hosts:\n%s", topo)
	}
	// The lab's GeoDNS config the compose file mounts must be valid.
	if _, err := geodns.LoadConfig("lab/geodns.yaml"); err != nil {
		t.Errorf("compose/lab/geodns.yaml: %v", err)
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
		{"bad region", "na: 10.77.1.0/24", "na: 192.168.1.0/24", "x-lab.regions.na"},
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
