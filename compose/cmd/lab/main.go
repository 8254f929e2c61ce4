// Command lab runs the multi-PoP lab of docker-compose.yml natively, in
// network namespaces delayed by netem (veths on a bridge) when the kernel
// has sch_netem, else by a userspace delay line (TUN devices). Run as root
// from the repository root. In Docker, every container runs lab delay
// first to install its own delays (netem, or an NFQUEUE delay line).
//
//	lab up [-d] [-delay auto|netem|userspace] [-view ADDR]
//	                      build, start, wait for health, calibrate, print a summary; serve the
//	                      live view on ADDR (default 127.0.0.1:8099)
//	lab down              stop a lab started with -d and remove its namespaces
//	lab status            which hosts are up and what delays them
//	lab exec HOST -- CMD  run CMD inside HOST's namespace, with the lab resolver
//	lab rtt [-docker]     measure the RTT matrix (-docker: with ping inside the Docker lab's containers)
//	lab link [-docker] HOST DELAY
//	                      while the lab runs, add DELAY (150ms) one way to everything HOST sends;
//	                      0 restores the matrix (-docker: in the Docker lab's container of HOST)
//	lab view [-listen ADDR] [-native] [-topology FILE] [-cacert FILE]
//	                      serve the live view of a running lab (the Docker lab's view service;
//	                      -native: a native lab's, through its namespaces)
//	lab images            make the Docker base images locally (no registry needed)
//	lab preflight         check Docker, Compose and the lab subnet before docker compose up
//	lab delay -self SVC [-delay auto|netem|userspace] [-- CMD ARGS]
//	                      (in a container) install SVC's delays, then run CMD
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/compose"
)

// stateDir is where lab up keeps the lab's state and the other commands
// find it.
const stateDir = compose.DefaultStateDir

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(2)
	}
}

const usage = "usage: lab up [-d] [-delay auto|netem|userspace] [-view ADDR] | down | view [-listen ADDR] [-native] | status | exec HOST -- CMD [ARGS] | rtt [-docker] | link [-docker] HOST DELAY | images | preflight | nats -store DIR -password-file FILE [-listen ADDR] [-monitor ADDR] | delay -self SERVICE [-delay auto|netem|userspace] [-- CMD [ARGS]]"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
		detach := fs.Bool("d", false, "detach: run in the background (stop with lab down)")
		delay := fs.String("delay", "auto", "delay `backend`: netem (veths on a bridge, netem qdiscs per destination), userspace (TUN devices and a delay line in this process), or auto (netem when the kernel has sch_netem)")
		viewAddr := fs.String("view", defaultViewAddr, "serve the live view on this host `address` (empty: no view)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *viewAddr != "" {
			if _, _, err := net.SplitHostPort(*viewAddr); err != nil {
				return fmt.Errorf("-view %q: want host:port, such as %s, or empty for no view", *viewAddr, defaultViewAddr)
			}
		}
		backend, err := compose.ParseBackend(*delay)
		if err != nil {
			return fmt.Errorf("-delay: %w", err)
		}
		// A backend this kernel cannot do fails here, before any build.
		if _, err := compose.ChooseDelay(backend); err != nil {
			return err
		}
		if *detach {
			return detachUp(root, backend, *viewAddr, stdout)
		}
		return up(ctx, root, backend, *viewAddr, stdout, stderr)
	case "view":
		return serveView(ctx, root, args[1:], stdout, stderr)
	case "delay", "netem-apply": // netem-apply: the entrypoint's name before round 2
		return containerDelay(ctx, args[1:], stderr)
	case "images":
		return images(ctx, root, args[1:], stdout, stderr)
	case "nats":
		return natsServe(ctx, args[1:], stdout)
	case "link":
		return link(ctx, root, args[1:], stdout)
	case "preflight":
		return preflight(ctx, root, stdout)
	case "down":
		return down(root, stdout)
	case "status":
		return status(ctx, root, stdout)
	case "exec":
		rest := args[1:]
		if len(rest) < 3 || rest[1] != "--" {
			return errors.New("exec: want HOST -- CMD [ARGS]")
		}
		topo, err := compose.Load(ctx, filepath.Join(root, "docker-compose.yml"))
		if err != nil {
			return err
		}
		if _, ok := topo.Host(rest[0]); !ok {
			return fmt.Errorf("exec: no host %q; hosts: %s", rest[0], hostNames(topo))
		}
		ipPath, err := exec.LookPath("ip")
		if err != nil {
			return err
		}
		return syscall.Exec(ipPath, append([]string{"ip", "netns", "exec", "edgecdn-" + rest[0]}, rest[2:]...), os.Environ())
	case "rtt":
		if len(args) > 1 && args[1] == "-docker" {
			d, err := compose.NewDocker(ctx, root)
			if err != nil {
				return err
			}
			table, err := d.Calibrate(ctx)
			fmt.Fprint(stdout, table)
			return err
		}
		topo, err := compose.Load(ctx, filepath.Join(root, "docker-compose.yml"))
		if err != nil {
			return err
		}
		n := compose.Attach(topo, "")
		for i, a := range topo.Hosts {
			for _, b := range topo.Hosts[i+1:] {
				got, err := n.MeasureRTT(ctx, a.Name, b.Name, 3)
				if err != nil {
					return fmt.Errorf("%s-%s: %w (is the lab up?)", a.Name, b.Name, err)
				}
				fmt.Fprintf(stdout, "%-12s %-12s matrix %-6v measured %v\n", a.Name, b.Name, topo.RTTBetween(a, b), got.Round(10*time.Microsecond))
			}
		}
		return nil
	}
	return fmt.Errorf("unknown command %q; %s", args[0], usage)
}

func hostNames(t *compose.Topology) string { return strings.Join(t.HostNames(), ", ") }

func up(ctx context.Context, root string, backend compose.Backend, viewAddr string, stdout, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	r, err := compose.StartLab(ctx, compose.RunnerConfig{Root: root, StateDir: stateDir, Logger: logger, Delay: backend})
	if err != nil {
		return err
	}
	defer r.Stop()
	ls, err := compose.StartLinkServer(compose.NativeLinkSocket(stateDir), r)
	if err != nil {
		return err
	}
	defer ls.Close()
	table, err := r.Calibrate(ctx)
	if err != nil {
		fmt.Fprint(stdout, table)
		return err
	}
	if viewAddr != "" {
		roots, err := certs.LoadPool(compose.CARoot(stateDir))
		if err != nil {
			return fmt.Errorf("live view: %w", err)
		}
		stopView, err := startView(ctx, r.Topo, r.Net.Dialer, roots, viewAddr, logger)
		if err != nil {
			return err
		}
		defer stopView()
		fmt.Fprintf(stdout, "live view: http://%s/\n", viewAddr)
	}
	os.WriteFile(filepath.Join(stateDir, "delay"), []byte(r.Delay.String()+"\n"), 0o644)
	defer os.Remove(filepath.Join(stateDir, "delay"))
	os.WriteFile(filepath.Join(stateDir, "lab.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	defer os.Remove(filepath.Join(stateDir, "lab.pid"))
	summary(stdout, r, table)
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping the lab")
	return nil
}

func summary(w io.Writer, r *compose.Runner, table string) {
	how := map[compose.Backend]string{
		compose.BackendNetem:     "netem qdiscs per destination on veths joined by a bridge",
		compose.BackendUserspace: "userspace delay line between TUN devices",
	}[r.Delay.Backend]
	fmt.Fprintf(w, "lab up: delay backend: %s (%s); %s\n", r.Delay.Backend, how, r.Delay.Reason)
	fmt.Fprint(w, r.Topo)
	fmt.Fprintln(w, "\nRTT calibration:")
	fmt.Fprint(w, table)
	caRoot := compose.CARoot(stateDir)
	fmt.Fprintf(w, "\nCA root: %s\n", caRoot)
	var pins []string
	for _, name := range []string{"pop-na", "pop-eu", "pop-ap"} {
		log, _ := os.ReadFile(filepath.Join(stateDir, name+".log"))
		for _, f := range strings.Fields(string(log)) {
			if pin, ok := strings.CutPrefix(f, "spki="); ok {
				pins = append(pins, pin)
			}
		}
	}
	if len(pins) > 0 {
		fmt.Fprintf(w, "SPKI pins for browsers: --ignore-certificate-errors-spki-list=%s\n", strings.Join(pins, ","))
	}
	fmt.Fprintln(w, "Try:")
	fmt.Fprintf(w, "  go run ./compose/cmd/lab exec client-eu -- curl --cacert %s https://www.cdn.lab/index.html -v\n", caRoot)
	fmt.Fprintf(w, "  go run ./compose/cmd/lab exec client-ap -- go run ./bench/cmd/bench ttfb -proto h3 -mode 0rtt -n 10 -cacert %s https://www.cdn.lab/gen/1k\n", caRoot)
	fmt.Fprintln(w, "  go run ./compose/cmd/lab link pop-eu 150ms      # every RTT to pop-eu +150 ms; lab link pop-eu 0 restores it")
	fmt.Fprintf(w, "  logs and the PoPs' ready lines (SPKI pins): %s/*.log\n", stateDir)
}

// link changes a host's delay while the lab runs: natively through the
// lab up process, in Docker inside the host's container.
func link(ctx context.Context, root string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lab link", flag.ContinueOnError)
	docker := fs.Bool("docker", false, "the Docker lab: run lab link -container inside HOST's container (docker exec)")
	inContainer := fs.Bool("container", false, "inside HOST's container (what -docker runs): tell its lab delay process, or change its netem qdiscs")
	topoFile := fs.String("topology", "", "the lab topology `file`; if empty, docker-compose.yml here, or with -container the image's copy")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: lab link [-docker] HOST DELAY\n\nAdds DELAY (a duration: 150ms) of one-way delay to everything HOST sends, so every\nround trip to HOST grows by DELAY, while the lab runs; 0 restores the matrix.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("link: want HOST DELAY, like lab link pop-eu 150ms (lab link pop-eu 0 restores the matrix)")
	}
	host, delay := fs.Arg(0), fs.Arg(1)
	extra, err := compose.ParseLinkDelay(delay)
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	file := *topoFile
	if file == "" {
		file = filepath.Join(root, "docker-compose.yml")
		if *inContainer {
			file = "/etc/edgecdn/docker-compose.yml"
		}
	}
	topo, err := compose.Load(ctx, file)
	if err != nil {
		return err
	}
	if _, ok := topo.Host(host); !ok {
		return fmt.Errorf("link: no host %q; hosts: %s", host, hostNames(topo))
	}
	var msg string
	switch {
	case *inContainer:
		msg, err = compose.SetContainerLinkDelay(ctx, topo, host, extra)
	case *docker:
		d, derr := compose.NewDocker(ctx, root)
		if derr != nil {
			return derr
		}
		var out []byte
		out, err = d.Exec(ctx, host, "lab", "link", "-container", host, extra.String())
		msg = strings.TrimSpace(string(out))
	default:
		socket := compose.NativeLinkSocket(stateDir)
		msg, err = compose.SetLinkDelayAt(ctx, socket, host, extra)
		if errors.Is(err, compose.ErrNoLinkServer) {
			err = fmt.Errorf("link: no native lab is running (nothing answers on %s): lab up first, or lab link -docker for the Docker lab", socket)
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, msg)
	return nil
}

func detachUp(root string, backend compose.Backend, viewAddr string, stdout io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	os.MkdirAll(stateDir, 0o755)
	logf, err := os.Create(filepath.Join(stateDir, "lab.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self, "up", "-delay", string(backend), "-view", viewAddr)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pidFile := filepath.Join(stateDir, "lab.pid")
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(pidFile); err == nil {
			out, _ := os.ReadFile(logf.Name())
			fmt.Fprint(stdout, string(out))
			return nil
		}
		if cmd.ProcessState != nil {
			break
		}
		if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, _ := os.ReadFile(logf.Name())
	return fmt.Errorf("lab did not come up:\n%s", out)
}

func down(root string, stdout io.Writer) error {
	b, err := os.ReadFile(filepath.Join(stateDir, "lab.pid"))
	if err != nil {
		return errors.New("down: no running lab (no " + filepath.Join(stateDir, "lab.pid") + ")")
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		return errors.New("down: bad pid file")
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for range 150 {
		if syscall.Kill(pid, 0) != nil {
			fmt.Fprintln(stdout, "lab down")
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("down: lab process %d still running after 30s", pid)
}

func status(ctx context.Context, root string, stdout io.Writer) error {
	topo, err := compose.Load(ctx, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		return err
	}
	n := compose.Attach(topo, "")
	delay := "none (no lab running)"
	if b, err := os.ReadFile(filepath.Join(stateDir, "delay")); err == nil {
		delay = strings.TrimSpace(string(b))
	}
	fmt.Fprintln(stdout, "delay backend:", delay)
	fmt.Fprintf(stdout, "secrets: purge token %s, control plane password %s\n", compose.LabSecret(stateDir, "purge.token"), compose.LabSecret(stateDir, "fleet.password"))
	for _, h := range topo.Hosts {
		state := "down"
		if n.Exists(h.Name) {
			state = "namespace up"
			if d, err := n.Delays(h.Name); err == nil {
				state += "; " + d
			}
		}
		fmt.Fprintf(stdout, "%-12s %-13s %s\n", h.Name, h.Addr, state)
	}
	return nil
}

// images makes the base images of compose/Dockerfile locally.
func images(ctx context.Context, root string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab images", flag.ContinueOnError)
	mirror := fs.String("mirror", "http://deb.debian.org/debian", "the Debian `mirror` debootstrap uses")
	force := fs.Bool("force", false, "remake the images even if they exist")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if err := compose.MakeImages(ctx, compose.ImagesConfig{Root: root, Mirror: *mirror, Force: *force, Logger: logger}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "base images %s and %s ready (%v); now: docker compose up -d\n", compose.DebianImage, compose.GoImage, time.Since(start).Round(time.Second))
	return nil
}

// preflight checks the machine before docker compose up.
func preflight(ctx context.Context, root string, stdout io.Writer) error {
	topo, err := compose.Load(ctx, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		return err
	}
	report, err := compose.Preflight(ctx, topo, topo.Published)
	fmt.Fprint(stdout, report)
	if err != nil {
		return fmt.Errorf("preflight:\n%w", err)
	}
	fmt.Fprintln(stdout, "preflight: ok")
	return nil
}

// containerDelay is what every lab container runs first
// (docker-compose.yml entrypoints): it installs the service's delays
// (netem, or the userspace delay line where the kernel has no netem), says
// which in its log and in /run/lab-delay, then runs the service's command.
// With netem it becomes the command (exec); the userspace line lives in
// this process, so it runs the command as its child, passes signals on
// and exits with the child's status.
func containerDelay(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab delay", flag.ContinueOnError)
	topoFile := fs.String("topology", "/etc/edgecdn/docker-compose.yml", "the lab topology `file` (the image carries a copy)")
	self := fs.String("self", "", "the `service` this container runs (required)")
	want := fs.String("delay", "auto", "delay `backend`: netem, userspace (NFQUEUE delay line in this process) or auto (netem when the kernel has it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *self == "" {
		return errors.New("delay: -self: empty, want the service name of this container (pop-eu, client-ap, ...)")
	}
	backend, err := compose.ParseBackend(*want)
	if err != nil {
		return fmt.Errorf("-delay: %w", err)
	}
	topo, err := compose.Load(ctx, *topoFile)
	if err != nil {
		return err
	}
	// The userspace line must outlive ctx's cancellation by a signal: the
	// child gets the signal and the line runs until the child exits.
	d, err := compose.ApplyContainerDelay(context.WithoutCancel(ctx), topo, *self, backend)
	if err != nil {
		return fmt.Errorf("delay for %s: %w", *self, err)
	}
	fmt.Fprint(stderr, d.Describe())
	if err := d.WriteStatus(); err != nil {
		fmt.Fprintln(stderr, "lab delay:", err)
	}
	// The userspace line lives in this process: lab link asks it here.
	// (With netem this process becomes the command, and lab link changes
	// the qdiscs itself.)
	var ls *compose.LinkServer
	if d.Choice.Backend != compose.BackendNetem {
		if ls, err = compose.StartLinkServer(compose.LinkSocket, d); err != nil {
			fmt.Fprintln(stderr, "lab delay: lab link will not reach this container:", err)
		}
	}
	closeLine := func() error {
		if ls != nil {
			ls.Close()
		}
		return d.Close()
	}
	rest := fs.Args()
	if len(rest) == 0 {
		if d.Choice.Backend == compose.BackendNetem {
			return nil
		}
		<-ctx.Done() // nothing to run: hold the line until stopped
		return closeLine()
	}
	path, err := exec.LookPath(rest[0])
	if err != nil {
		return fmt.Errorf("delay: the command: %w", err)
	}
	if d.Choice.Backend == compose.BackendNetem {
		return syscall.Exec(path, rest, os.Environ())
	}
	code := supervise(path, rest)
	closeLine()
	os.Exit(code)
	return nil
}

// supervise runs the command as a child with this process's stdio, passes
// every catchable signal on, and returns its exit code.
func supervise(path string, argv []string) int {
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args = argv
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "lab delay:", err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}
