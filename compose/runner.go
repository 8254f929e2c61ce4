package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/certs"
)

// DefaultStateDir is where a native lab keeps its state (the lab CA
// volume, the built programs and the services' logs) unless
// RunnerConfig.StateDir says otherwise.
const DefaultStateDir = "/var/lib/edgecdn-lab"

// caVolume is the directory of a native lab's state directory that stands
// for the lab-ca volume, mounted at /lab in the containers.
const caVolume = "volume-lab-ca"

// CARoot returns the lab CA's root certificate in the state directory of
// a native lab: the lab-ca volume keeps the CA in its ca directory, as
// the services' /lab/ca in the containers. Clients of the lab's PoPs and
// origin trust it.
func CARoot(stateDir string) string {
	return filepath.Join(stateDir, caVolume, "ca", certs.RootCertFile)
}

// LabSecret returns the path of one of the secrets lab-init writes into
// the lab-ca volume (ticket.key, purge.token, fleet.password) in the state
// directory of a native lab; the services read it at /lab/NAME.
func LabSecret(stateDir, name string) string {
	return filepath.Join(stateDir, caVolume, name)
}

// RunnerConfig configures the native runner.
type RunnerConfig struct {
	// Root is the repository root: docker-compose.yml, the programs'
	// sources and the files the compose file mounts. Required.
	Root string
	// StateDir holds the lab CA volume (see CARoot), the built programs
	// and logs. If empty, DefaultStateDir.
	StateDir string
	// Prefix names the namespaces. If empty, "edgecdn-".
	Prefix string
	// Delay is the delay backend. If empty or auto, netem when the kernel
	// has sch_netem, else the userspace delay line (ChooseDelay).
	Delay Backend
	// Logger receives progress. If nil, slog.Default().
	Logger *slog.Logger
}

// Runner runs the lab natively: the network of Up plus one process per
// service, started inside its namespace with the service's command line
// from docker-compose.yml (container paths mapped to the checkout). The
// services' entrypoint, Docker's delay wrapper (lab delay), is not
// run: the Net installs the same plans itself.
type Runner struct {
	cfg  RunnerConfig
	Topo *Topology
	Net  *Net
	// Delay is the delay backend the lab uses and why.
	Delay DelayChoice
	log   *slog.Logger

	mu    sync.Mutex // guards procs
	procs map[string]*exec.Cmd
	bin   string
}

// containerPaths maps the paths the image and the compose file use to the
// native equivalents.
func (r *Runner) containerPaths() map[string]string {
	return map[string]string{
		"/lab":                     filepath.Join(r.cfg.StateDir, caVolume),
		"/srv/www":                 filepath.Join(r.cfg.Root, "origin", "testdata", "www"),
		"/etc/edgecdn/geodns.yaml": filepath.Join(r.cfg.Root, "compose", "lab", "geodns.yaml"),
		"/etc/edgecdn/origin.yaml": filepath.Join(r.cfg.Root, "compose", "lab", "origin.yaml"),
	}
}

// StartLab loads the topology, chooses the delay backend, builds the
// programs, brings the network up and starts every service in dependency
// order, waiting for each health check. Stop undoes it all.
func StartLab(ctx context.Context, cfg RunnerConfig) (*Runner, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	r := &Runner{cfg: cfg, log: cfg.Logger, procs: map[string]*exec.Cmd{}}
	if r.log == nil {
		r.log = slog.Default()
	}
	topo, err := Load(ctx, filepath.Join(cfg.Root, "docker-compose.yml"))
	if err != nil {
		return nil, err
	}
	r.Topo = topo
	// Before the build: a backend this kernel cannot do fails at once.
	if r.Delay, err = ChooseDelay(cfg.Delay); err != nil {
		return nil, err
	}
	r.log.Info("delay backend", "backend", r.Delay.Backend, "reason", r.Delay.Reason)
	bin := filepath.Join(cfg.StateDir, "bin")
	r.bin = bin
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, caVolume), 0o755); err != nil {
		return nil, err
	}
	r.log.Info("building the lab's programs", "into", bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./pop/cmd/pop", "./origin/cmd/origin", "./geodns/cmd/geodns", "./bench/cmd/bench", "./compose/cmd/lab")
	build.Dir = cfg.Root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	geo, _ := topo.Host("geodns")
	r.Net, err = Up(ctx, topo, NetConfig{Prefix: cfg.Prefix, Resolver: geo.Addr.String(), Delay: r.Delay.Backend})
	if err != nil {
		return nil, err
	}
	for _, h := range startOrder(topo) {
		if len(h.Command) == 0 {
			continue
		}
		if err := r.start(ctx, h, bin); err != nil {
			r.Stop()
			return nil, fmt.Errorf("start %s: %w", h.Name, err)
		}
	}
	// GeoDNS found some PoPs down while they were starting; wait until it
	// sees them all healthy, so clients are sent to their own region.
	if err := r.WaitGeoDNS(ctx); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// startOrder is the order of docker-compose.yml's depends_on: lab-init,
// geodns, the origin, the PoPs, then every other host (the clients,
// whose command natively is their namespace alone), by name.
func startOrder(topo *Topology) []Host {
	rank := func(h Host) int {
		switch {
		case h.Name == "lab-init":
			return 0
		case h.Name == "geodns":
			return 1
		case h.Name == "origin", h.Name == "nats":
			return 2
		case strings.HasPrefix(h.Name, "pop-"):
			return 3
		}
		return 4
	}
	hosts := slices.Clone(topo.Hosts) // sorted by name
	slices.SortStableFunc(hosts, func(a, b Host) int { return rank(a) - rank(b) })
	return hosts
}

// SetLinkDelay adds extra one-way delay to everything the host name
// sends while the lab runs, so every round trip to it grows by extra; 0
// restores the matrix (Net.SetLinkDelay). It logs the change. lab link
// reaches it through a LinkServer of lab up.
func (r *Runner) SetLinkDelay(name string, extra time.Duration) error {
	if err := r.Net.SetLinkDelay(name, extra); err != nil {
		return err
	}
	r.log.Info("link delay", "host", name, "extra", extra, "backend", r.Delay.Backend)
	return nil
}

// WaitGeoDNS polls geodns's /status until every PoP is healthy.
func (r *Runner) WaitGeoDNS(ctx context.Context) error {
	geo, ok := r.Topo.Host("geodns")
	if !ok {
		return nil
	}
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: r.Net.Dialer(geo.Name), DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			PoPs []struct {
				Name    string `json:"name"`
				Healthy bool   `json:"healthy"`
			} `json:"pops"`
		}
		resp, err := c.Get("http://" + geo.Addr.String() + ":9953/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		healthy := err == nil && len(st.PoPs) > 0
		for _, p := range st.PoPs {
			healthy = healthy && p.Healthy
		}
		if healthy {
			r.log.Info("geodns sees every PoP healthy")
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("geodns does not see every PoP healthy after 60s (last: %+v, %v)", st.PoPs, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Runner) mapArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for from, to := range r.containerPaths() {
			if a == from || strings.HasPrefix(a, from+"/") {
				a = to + strings.TrimPrefix(a, from)
			}
			a = strings.ReplaceAll(a, " "+from+"/", " "+to+"/")
		}
		out[i] = a
	}
	return out
}

func (r *Runner) start(ctx context.Context, h Host, bin string) error {
	args := r.mapArgs(h.Command)
	switch args[0] {
	case "sleep":
		return nil // clients: the namespace is the host
	case "lab":
		if len(args) > 1 && args[1] == "view" {
			return nil // the view service (lab view): lab up serves the view on the host itself
		}
	case "sh":
		cmd := r.Net.Exec(ctx, h.Name, args[0], args[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	logf, err := os.Create(filepath.Join(r.cfg.StateDir, h.Name+".log"))
	if err != nil {
		return err
	}
	cmd := r.Net.Exec(context.WithoutCancel(ctx), h.Name, filepath.Join(bin, args[0]), args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	r.mu.Lock()
	r.procs[h.Name] = cmd
	r.mu.Unlock()
	go func() { cmd.Wait(); logf.Close() }()
	return r.waitHealthy(ctx, h)
}

// waitHealthy polls the service's readiness URL (the URL its compose
// health check fetches) from inside its namespace.
func (r *Runner) waitHealthy(ctx context.Context, h Host) error {
	url := healthURL(h.Name, h.Addr.String())
	if url == "" {
		return nil
	}
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: r.Net.Dialer(h.Name), DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.log.Info("healthy", "service", h.Name, "url", url)
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after 60s (last: %v); see %s", url, err, filepath.Join(r.cfg.StateDir, h.Name+".log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// healthURL is what each service's compose health check fetches.
func healthURL(name, addr string) string {
	switch {
	case name == "geodns":
		return "http://" + addr + ":9953/healthz"
	case name == "origin":
		return "http://" + addr + "/healthz"
	case name == "nats":
		return "http://" + addr + ":8222/healthz"
	case strings.HasPrefix(name, "pop-"):
		return "http://" + addr + ":9901/readyz"
	}
	return ""
}

// Stop ends every service (SIGTERM, then SIGKILL after 10s) and removes
// the network.
func (r *Runner) Stop() error {
	r.mu.Lock()
	procs := r.procs
	r.procs = map[string]*exec.Cmd{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, cmd := range procs {
		wg.Go(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Process.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		})
	}
	wg.Wait()
	if r.Net == nil {
		return nil
	}
	return r.Net.Close()
}

// Calibrate measures every host pair's RTT and compares it with the
// matrix: more than 2 ms + 5% off is an error carrying the whole table.
func (r *Runner) Calibrate(ctx context.Context) (string, error) {
	return calibrate(r.Topo, r.Topo.Hosts, 1, func(a, b Host) (time.Duration, error) {
		return r.Net.MeasureRTT(ctx, a.Name, b.Name, 3)
	})
}

// calibrate measures every pair of hosts and tabulates it beside the
// matrix; a pair below the matrix or more than 2 ms + 5% above it is an
// error. At most parallel pairs are measured at once.
func calibrate(topo *Topology, hosts []Host, parallel int, measure func(a, b Host) (time.Duration, error)) (string, error) {
	type pair struct {
		a, b Host
		got  time.Duration
		err  error
	}
	var pairs []*pair
	for i, a := range hosts {
		for _, c := range hosts[i+1:] {
			pairs = append(pairs, &pair{a: a, b: c})
		}
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallel)
	for _, p := range pairs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			p.got, p.err = measure(p.a, p.b)
		})
	}
	wg.Wait()
	// A pair measured above its tolerance is measured again, alone, up to
	// twice, keeping the least: the userspace delay lines share the
	// machine's CPUs, and a burst of other work there delays every ping
	// of a pass. A real miscalibration (or a missing delay, which is never
	// forgiven) stays off.
	for _, p := range pairs {
		want := topo.RTTBetween(p.a, p.b)
		for try := 0; try < 2 && p.err == nil && p.got > want+2*time.Millisecond+want/20; try++ {
			if got, err := measure(p.a, p.b); err == nil && got < p.got {
				p.got = got
			}
		}
	}
	var b strings.Builder
	var bad []string
	fmt.Fprintf(&b, "%-12s %-12s %9s %9s\n", "from", "to", "matrix", "measured")
	for _, p := range pairs {
		if p.err != nil {
			return b.String(), fmt.Errorf("%s-%s: %w", p.a.Name, p.b.Name, p.err)
		}
		want := topo.RTTBetween(p.a, p.b)
		mark := ""
		if tol := 2*time.Millisecond + want/20; p.got < want || p.got > want+tol {
			mark = "  OFF"
			bad = append(bad, p.a.Name+"-"+p.b.Name)
		}
		fmt.Fprintf(&b, "%-12s %-12s %9v %9v%s\n", p.a.Name, p.b.Name, want, p.got.Round(10*time.Microsecond), mark)
	}
	if len(bad) > 0 {
		return b.String(), errors.New("calibration: " + strings.Join(bad, ", ") + " more than 2 ms + 5% off the matrix")
	}
	return b.String(), nil
}

// StopService stops one service (SIGTERM, SIGKILL after 10s), as a drill
// that takes a host down does.
func (r *Runner) StopService(name string) error {
	r.mu.Lock()
	cmd := r.procs[name]
	delete(r.procs, name)
	r.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("service %s is not running", name)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	return nil
}

// StartService starts a stopped service again and waits for its health.
func (r *Runner) StartService(ctx context.Context, name string) error {
	return r.StartServiceArgs(ctx, name)
}

// StartServiceArgs is StartService with extra arguments appended to the
// service's command line (later flags win), as a drill that runs a PoP
// with other limits does.
func (r *Runner) StartServiceArgs(ctx context.Context, name string, extra ...string) error {
	h, ok := r.Topo.Host(name)
	if !ok {
		return fmt.Errorf("no service %s", name)
	}
	h.Command = append(append([]string(nil), h.Command...), extra...)
	r.mu.Lock()
	_, running := r.procs[name]
	r.mu.Unlock()
	if running {
		return fmt.Errorf("service %s is running", name)
	}
	return r.start(ctx, h, r.bin)
}

// PID is the process id of a running service, or 0.
func (r *Runner) PID(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cmd := r.procs[name]; cmd != nil && cmd.Process != nil {
		return cmd.Process.Pid
	}
	return 0
}

// ServiceLog is the path of a service's log file.
func (r *Runner) ServiceLog(name string) string {
	return filepath.Join(r.cfg.StateDir, name+".log")
}
