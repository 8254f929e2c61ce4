package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Docker drives the lab of docker-compose.yml through the machine's
// Compose (the docker compose plugin or docker-compose) and the docker
// command: up, health, calibration from inside the containers, exec and
// down. The Compose project is ProjectName.
type Docker struct {
	Root    string // the repository root, where docker-compose.yml is
	Topo    *Topology
	compose []string
	// Compose is the Compose the machine has, with its version.
	Compose string
}

// NewDocker loads the topology and finds Compose.
func NewDocker(ctx context.Context, root string) (*Docker, error) {
	topo, err := Load(ctx, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		return nil, err
	}
	argv, which, err := ComposeCommand(ctx)
	if err != nil {
		return nil, err
	}
	return &Docker{Root: root, Topo: topo, compose: argv, Compose: which}, nil
}

// Run runs a Compose command in the project (docker compose -p
// edgecdn-lab ARGS) and returns its combined output.
func (d *Docker) Run(ctx context.Context, args ...string) ([]byte, error) {
	argv := append(append(append([]string(nil), d.compose...), "-p", ProjectName, "-f", filepath.Join(d.Root, "docker-compose.yml")), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = d.Root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, tail(out, 30))
	}
	return out, nil
}

// Container is the ID of service's container ("" if it has none).
func (d *Docker) Container(ctx context.Context, service string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq",
		"--filter", "label=com.docker.compose.project="+ProjectName,
		"--filter", "label=com.docker.compose.service="+service).Output()
	if err != nil {
		return "", fmt.Errorf("docker ps: %w", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return "", fmt.Errorf("service %s has no container", service)
	}
	return ids[0], nil
}

// Exec runs a command inside service's container (docker exec) and
// returns its standard output; a failure carries its standard error.
func (d *Docker) Exec(ctx context.Context, service string, args ...string) ([]byte, error) {
	id, err := d.Container(ctx, service)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "docker", append([]string{"exec", id}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %s: %w: %s", service, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Health is the health of each running service that has a health check
// ("healthy", "starting", "unhealthy"), and "running" or "exited (N)"
// for those without.
func (d *Docker) Health(ctx context.Context) (map[string]string, error) {
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+ProjectName).Output()
	if err != nil {
		return nil, fmt.Errorf("docker ps: %w", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return map[string]string{}, nil
	}
	out, err = exec.CommandContext(ctx, "docker", append([]string{"inspect"}, ids...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("docker inspect: %w", err)
	}
	var cs []struct {
		Config struct{ Labels map[string]string }
		State  struct {
			Status   string
			ExitCode int
			Health   *struct{ Status string }
		}
	}
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, err
	}
	h := map[string]string{}
	for _, c := range cs {
		svc := c.Config.Labels["com.docker.compose.service"]
		switch {
		case c.State.Status == "exited":
			h[svc] = fmt.Sprintf("exited (%d)", c.State.ExitCode)
		case c.State.Health != nil:
			h[svc] = c.State.Health.Status
		default:
			h[svc] = c.State.Status
		}
	}
	return h, nil
}

// WaitHealthy waits until every running service with a health check is
// healthy and lab-init has exited 0; an unhealthy or failed service ends
// the wait with an error that names it.
func (d *Docker) WaitHealthy(ctx context.Context) error {
	for {
		h, err := d.Health(ctx)
		if err != nil {
			return err
		}
		var waiting, bad []string
		for svc, st := range h {
			switch {
			case st == "healthy" || st == "running" || st == "exited (0)":
			case st == "starting":
				waiting = append(waiting, svc)
			default:
				bad = append(bad, svc+": "+st)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("lab services failed: %s (docker compose logs SERVICE tells why)", strings.Join(bad, ", "))
		}
		if len(h) > 0 && len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be healthy: %w", strings.Join(waiting, ", "), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

var pingMin = regexp.MustCompile(`= ([0-9.]+)/`)

// PingRTT is the least of count ICMP echo round trips from service a to
// address b, measured inside a's container (ping -i 0.2).
func (d *Docker) PingRTT(ctx context.Context, a string, b string, count int) (time.Duration, error) {
	out, err := d.Exec(ctx, a, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", b)
	if err != nil {
		return 0, err
	}
	m := pingMin.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s from %s: no round trip in %q", b, a, out)
	}
	ms, _ := strconv.ParseFloat(string(m[1]), 64)
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// Calibrate measures every pair of running lab services with ping from
// inside the containers and checks it against the matrix (2 ms + 5%).
func (d *Docker) Calibrate(ctx context.Context) (string, error) {
	h, err := d.Health(ctx)
	if err != nil {
		return "", err
	}
	var hosts []Host
	for _, host := range d.Topo.Hosts {
		if st, ok := h[host.Name]; ok && !strings.HasPrefix(st, "exited") {
			hosts = append(hosts, host)
		}
	}
	if len(hosts) < 2 {
		return "", errors.New("calibrate: fewer than two lab services are running (docker compose up -d first)")
	}
	return calibrate(d.Topo, hosts, 8, func(a, b Host) (time.Duration, error) {
		return d.PingRTT(ctx, a.Name, b.Addr.String(), 5)
	})
}

// Leftovers lists the project's containers, networks and volumes that
// still exist (after down -v: none).
func (d *Docker) Leftovers(ctx context.Context) ([]string, error) {
	var left []string
	label := "label=com.docker.compose.project=" + ProjectName
	for _, kind := range [][]string{{"ps", "-a"}, {"network", "ls"}, {"volume", "ls"}} {
		args := append(append([]string(nil), kind...), "-q", "--filter", label)
		out, err := exec.CommandContext(ctx, "docker", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("docker %s: %w", strings.Join(kind, " "), err)
		}
		for _, id := range strings.Fields(string(out)) {
			left = append(left, kind[0]+" "+id)
		}
	}
	return left, nil
}
