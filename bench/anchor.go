package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// An anchor is a cache whose policy is known, replayed beside the one
// under test so that the tool itself is checked against the offline
// references: Varnish with malloc storage of the budget and
// lru_interval=0 (every hit moves its object, so it is a true LRU) must
// land on SimulateLRU's numbers. nginx is no anchor: its cache manager
// evicts behind the writes, so at high miss rates it holds more than
// max_size, and its hit ratio is not that of the budget.

// ErrNoVarnish is returned by StartVarnish when varnishd is not installed.
var ErrNoVarnish = errors.New("varnishd not found in PATH (Debian: apt-get install varnish)")

// VarnishConfig configures an anchor Varnish.
type VarnishConfig struct {
	// Origin is the backend's host:port, plain HTTP. Required.
	Origin string
	// Budget is the malloc storage's size in bytes. Required.
	Budget int64
	// Listen is the client address. If empty, a free port on 127.0.0.1.
	Listen string
	// Log also receives varnishd's output. If nil, none.
	Log io.Writer
}

// Varnish is a varnishd this process started, with a work directory of
// its own.
type Varnish struct {
	cmd  *exec.Cmd
	dir  string
	addr string
	out  *lockedBuffer // varnishd's output
	done chan error    // receives cmd.Wait's result
}

// StartVarnish starts varnishd in the foreground (-F) with the default
// VCL's caching, cfg.Origin as its only backend, malloc storage of
// cfg.Budget and lru_interval=0. Its nuke_limit is raised to 10000 so
// that a large object can always evict enough small ones to fit (at the
// default 50 its fetch would fail instead). Close stops it.
func StartVarnish(cfg VarnishConfig) (*Varnish, error) {
	bin, err := exec.LookPath("varnishd")
	if err != nil {
		return nil, ErrNoVarnish
	}
	host, port, err := net.SplitHostPort(cfg.Origin)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("varnish origin %q: want host:port", cfg.Origin)
	}
	if cfg.Budget < 1<<20 {
		return nil, fmt.Errorf("varnish budget %d: want at least 1 MiB", cfg.Budget)
	}
	if cfg.Listen == "" {
		if cfg.Listen, err = freePort(); err != nil {
			return nil, fmt.Errorf("varnish listen: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "bench-varnish-")
	if err != nil {
		return nil, fmt.Errorf("varnish: %w", err)
	}
	// varnishd reads the VCL as its unprivileged user.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("varnish: %w", err)
	}
	vcl := filepath.Join(dir, "replay.vcl")
	body := fmt.Sprintf("vcl 4.1;\nbackend origin { .host = %q; .port = %q; }\n", host, port)
	if err := os.WriteFile(vcl, []byte(body), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("varnish: %w", err)
	}
	// The work directory must not exist yet: varnishd creates it with the
	// ownership its jail wants.
	cmd := exec.Command(bin, "-F", "-a", cfg.Listen, "-T", "none", "-f", vcl, "-n", filepath.Join(dir, "work"),
		"-s", "malloc,"+strconv.FormatInt(cfg.Budget, 10), "-p", "lru_interval=0", "-p", "nuke_limit=10000")
	v := &Varnish{cmd: cmd, dir: dir, addr: cfg.Listen, out: &lockedBuffer{}, done: make(chan error, 1)}
	var w io.Writer = v.out
	if cfg.Log != nil {
		w = io.MultiWriter(v.out, cfg.Log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start varnishd: %w", err)
	}
	go func() { v.done <- cmd.Wait() }()
	return v, nil
}

// URL is Varnish's base URL.
func (v *Varnish) URL() string { return "http://" + v.addr }

// CachePID is the pid of varnishd's cache process (the manager's child
// that holds the storage, not the VCL compiler's): the process whose
// memory counts. varnishd -F prints it ("Child (PID) Started"); CachePID
// waits up to timeout for that line.
func (v *Varnish) CachePID(timeout time.Duration) (int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := childStarted.FindStringSubmatch(v.out.String()); m != nil {
			return strconv.Atoi(m[1])
		}
		select {
		case err := <-v.done:
			v.done <- err
			out := v.out.String()
			return 0, fmt.Errorf("varnishd exited (%v): %s", err, strings.TrimSpace(out[max(0, len(out)-2000):]))
		case <-timer.C:
			return 0, fmt.Errorf("varnishd (pid %d) reported no cache process in %v", v.cmd.Process.Pid, timeout)
		case <-tick.C:
		}
	}
}

var childStarted = regexp.MustCompile(`Child \((\d+)\) Started`)

// lockedBuffer is a bytes.Buffer written by exec's copying goroutine and
// read by CachePID.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Close stops varnishd (SIGTERM to the manager, which stops its child),
// waits for it and removes its directory.
func (v *Varnish) Close() error {
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
	return os.RemoveAll(v.dir)
}

// freePort returns a loopback address with a port free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// AnchorResult is a replay against an anchor.
type AnchorResult struct {
	// Name says which anchor and how it was set up.
	Name   string       `json:"name"`
	Replay ReplayResult `json:"replay"`
}

// RunVarnishAnchor starts Varnish at cfg's budget in front of originAddr
// (host:port), replays reqs against it with rc (whose Target and WatchPID
// it sets) and stops it.
func RunVarnishAnchor(ctx context.Context, rc ReplayConfig, originAddr string, budget int64, reqs []TraceRequest) (AnchorResult, error) {
	v, err := StartVarnish(VarnishConfig{Origin: originAddr, Budget: budget})
	if err != nil {
		return AnchorResult{}, err
	}
	defer v.Close()
	pid, err := v.CachePID(10 * time.Second)
	if err != nil {
		return AnchorResult{}, err
	}
	rc.Target, rc.WatchPID, rc.Proto = v.URL(), pid, H1
	res, err := Replay(ctx, rc, reqs)
	if err != nil {
		return AnchorResult{}, fmt.Errorf("varnish anchor: %w", err)
	}
	return AnchorResult{Name: "varnish malloc lru_interval=0", Replay: res}, nil
}
