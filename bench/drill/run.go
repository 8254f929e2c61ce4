package drill

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/compose"
)

// Config configures Run.
type Config struct {
	// Root is the repository's root, which the lab is built from
	// (docker-compose.yml, the programs' sources). If empty, the working
	// directory.
	Root string
	// StateDir holds the lab's state: its CA, binaries and service logs.
	// If empty, a temporary directory that Run removes when it is done.
	StateDir string
	// Prefix starts the names of the lab's namespaces and links, so that
	// labs can run side by side. If empty, "edd" and the process id.
	Prefix string
	// Drills are the names of the drills to run, in order (see Names). If
	// empty, all of them.
	Drills []string
	// Load is how long clients keep requesting while the origin is down
	// (origin-down). If zero, 6s.
	Load time.Duration
}

// Run brings up a private lab (its own namespaces and state) and runs the
// drills in it, one after another. After each drill it adds an
// informational row: each PoP's goroutines and memory. An unknown drill
// name is an error before anything starts; a drill that cannot run ends
// the run with the checks so far.
func Run(ctx context.Context, cfg Config) ([]Check, error) {
	if cfg.Load == 0 {
		cfg.Load = 6 * time.Second
	}
	drills, err := Select(cfg.Drills, cfg.Load)
	if err != nil {
		return nil, err
	}
	if cfg.Root == "" {
		if cfg.Root, err = os.Getwd(); err != nil {
			return nil, err
		}
	}
	if cfg.StateDir == "" {
		if cfg.StateDir, err = os.MkdirTemp("", "edgecdn-drill-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(cfg.StateDir)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("edd%d-", os.Getpid())
	}
	r, err := compose.StartLab(ctx, compose.RunnerConfig{Root: cfg.Root, StateDir: cfg.StateDir, Prefix: cfg.Prefix})
	if err != nil {
		return nil, err
	}
	defer r.Stop()
	roots, err := certs.LoadPool(compose.CARoot(cfg.StateDir))
	if err != nil {
		return nil, err
	}
	labCfg, err := bench.LabConfigFrom(r.Topo, r.Net, roots, 1)
	if err != nil {
		return nil, err
	}
	lab := Lab{LabConfig: labCfg, Control: r, PoPs: map[string]string{},
		Exec: func(ctx context.Context, host string, args ...string) ([]byte, error) {
			return r.Net.Exec(ctx, host, args[0], args[1:]...).CombinedOutput()
		}}
	if h, ok := r.Topo.Host("origin"); ok {
		lab.Origin = h.Addr.String()
	}
	lab.SetLink, lab.Topo = r.SetLinkDelay, r.Topo
	if lab.PurgeToken, err = readPurgeToken(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("the lab's purge token: %w", err)
	}
	for _, h := range r.Topo.Hosts {
		if _, err := lab.client(h.Name); err != nil && strings.HasPrefix(h.Name, "client-") {
			lab.Others = append(lab.Others, bench.LabClient{Name: h.Name, Dial: r.Net.Dialer(h.Name),
				ListenPacket: func() (net.PacketConn, error) { return r.Net.ListenPacket(h.Name, h.Addr.String()+":0") }})
		}
	}
	for _, name := range popNames() {
		if h, ok := r.Topo.Host(name); ok {
			lab.PoPs[name] = h.Addr.String()
		}
	}
	var checks []Check
	for _, d := range drills {
		cs, err := d.Run(ctx, lab)
		if err != nil {
			return checks, fmt.Errorf("%s: %w", d.Name, err)
		}
		checks = append(checks, cs...)
		// What each drill left the PoPs with (informational).
		if res, err := resources(ctx, lab, "client-na"); err == nil {
			checks = append(checks, Check{Drill: d.Name, Expectation: "PoPs at the end of the drill", Measured: res, Pass: true, Info: true})
		}
	}
	return checks, nil
}

// popNames are the lab's PoPs, in the order reports list them.
func popNames() []string { return []string{"pop-na", "pop-eu", "pop-ap"} }

// resources reports each PoP's goroutines and resident memory, read from
// its admin /metrics (from the client's namespace) and /proc.
func resources(ctx context.Context, lab Lab, clientName string) (string, error) {
	client, err := clientByName(lab.LabConfig, clientName)
	if err != nil {
		return "", err
	}
	hc := adminClient(client)
	var parts []string
	for _, name := range popNames() {
		addr, ok := lab.PoPs[name]
		if !ok {
			continue
		}
		pid := lab.PID(name)
		if pid == 0 {
			parts = append(parts, name+" not running")
			continue
		}
		parts = append(parts, name+" "+samplePoP(ctx, hc, addr, pid).String())
	}
	return strings.Join(parts, "; "), nil
}
