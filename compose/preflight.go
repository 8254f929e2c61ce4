package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// ProjectName is the Compose project of the lab (.env sets it for
// docker compose and docker-compose alike).
const ProjectName = "edgecdn-lab"

// ErrOldDocker says the engine predates what the lab's compose file uses
// (service_completed_successfully, cap_add with NFQUEUE, profiles).
var ErrOldDocker = errors.New("docker engine too old")

// DockerVersion returns the engine's version, or an error that says what
// is missing: the docker command, a running engine, or a new enough one
// (20.10).
func DockerVersion(ctx context.Context) (string, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return "", errors.New("docker: the docker command is not installed (Docker Engine 20.10 or newer, with docker compose or docker-compose 1.29)")
	}
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker: no engine answers (is the daemon running, may this user use it?): %s", strings.TrimSpace(string(out)))
	}
	v := strings.TrimSpace(string(out))
	major, minor := versionParts(v)
	if major < 20 || (major == 20 && minor < 10) {
		return v, fmt.Errorf("%w: %s, want 20.10 or newer", ErrOldDocker, v)
	}
	return v, nil
}

func versionParts(v string) (int, int) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	major, _ := strconv.Atoi(parts[0])
	minor := 0
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(strings.TrimLeft(parts[1], "0") + "0")
		minor /= 10
	}
	return major, minor
}

// ComposeCommand is the Compose the machine has: the docker compose plugin
// if present, else docker-compose 1.29 or newer. The returned argv prefix
// runs it.
func ComposeCommand(ctx context.Context) ([]string, string, error) {
	if out, err := exec.CommandContext(ctx, "docker", "compose", "version", "--short").Output(); err == nil {
		return []string{"docker", "compose"}, "docker compose " + strings.TrimSpace(string(out)), nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		out, err := exec.CommandContext(ctx, "docker-compose", "version", "--short").Output()
		v := strings.TrimSpace(string(out))
		if err == nil {
			if major, minor := versionParts(v); major == 1 && minor < 29 {
				return nil, "", fmt.Errorf("docker-compose %s is too old: the lab needs 1.29 (depends_on conditions) or the docker compose plugin", v)
			}
			return []string{"docker-compose"}, "docker-compose " + v, nil
		}
	}
	return nil, "", errors.New("compose: neither the docker compose plugin nor docker-compose is installed")
}

// Preflight checks what docker compose up needs and that nothing on the
// machine is in the lab's way: the engine and Compose, the lab subnet
// against other Docker networks and the host's routes, and the host
// addresses the PoPs and geodns are published on. It returns what it
// found, one line each, and every problem at once.
func Preflight(ctx context.Context, topo *Topology, published []string) (string, error) {
	var report []string
	var errs []error
	v, err := DockerVersion(ctx)
	if err != nil {
		errs = append(errs, err)
	} else {
		report = append(report, "docker engine "+v)
	}
	if _, which, err := ComposeCommand(ctx); err != nil {
		errs = append(errs, err)
	} else {
		report = append(report, which)
	}
	if err == nil {
		if err := subnetFree(ctx, topo.Subnet); err != nil {
			errs = append(errs, err)
		} else {
			report = append(report, "lab subnet "+topo.Subnet.String()+" free")
		}
	}
	if !labRunning(ctx) {
		for _, p := range published {
			if err := portFree(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return strings.Join(report, "\n") + "\n", errors.Join(errs...)
}

const moveHint = "to move the lab, replace 10.77. everywhere: sed -i 's/10\\.77\\./10.78./g' docker-compose.yml compose/lab/geodns.yaml"

// subnetFree reports another Docker network or a host route overlapping
// sub (the lab's own network is fine).
func subnetFree(ctx context.Context, sub netip.Prefix) error {
	out, err := exec.CommandContext(ctx, "docker", "network", "ls", "-q").Output()
	if err != nil {
		return fmt.Errorf("docker network ls: %w", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) > 0 {
		out, err = exec.CommandContext(ctx, "docker", append([]string{"network", "inspect"}, ids...)...).Output()
		if err != nil {
			return fmt.Errorf("docker network inspect: %w", err)
		}
		var nets []struct {
			Name string
			IPAM struct{ Config []struct{ Subnet string } }
		}
		if err := json.Unmarshal(out, &nets); err != nil {
			return fmt.Errorf("docker network inspect: %w", err)
		}
		for _, n := range nets {
			if n.Name == ProjectName+"_lab" {
				continue
			}
			for _, c := range n.IPAM.Config {
				if p, err := netip.ParsePrefix(c.Subnet); err == nil && p.Overlaps(sub) {
					return fmt.Errorf("lab subnet %s overlaps Docker network %q (%s): remove it (docker network rm %s) or %s", sub, n.Name, p, n.Name, moveHint)
				}
			}
		}
	}
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		if strings.HasPrefix(ifc.Name, "br-") || strings.HasPrefix(ifc.Name, "veth") {
			continue // Docker's own
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Masked().Overlaps(sub) {
				return fmt.Errorf("lab subnet %s overlaps %s on the host's interface %s: %s", sub, p, ifc.Name, moveHint)
			}
		}
	}
	return nil
}

// labRunning reports whether the lab's containers exist (their published
// addresses are then taken by the lab itself).
func labRunning(ctx context.Context) bool {
	out, _ := exec.CommandContext(ctx, "docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+ProjectName).Output()
	return len(strings.TrimSpace(string(out))) > 0
}

// portFree checks a published "HOST:PORT/PROTO" can be bound.
func portFree(p string) error {
	addr, proto, _ := strings.Cut(p, "/")
	if proto == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("published %s: %v (another program holds it; stop it or change ports: in docker-compose.yml)", p, err)
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("published %s: %v (another program holds it; stop it or change ports: in docker-compose.yml)", p, err)
	}
	return l.Close()
}
