// Package labtest brings up a native lab (compose.StartLab) private to one
// test: its own network namespaces, named with a prefix of the test's own
// and the process id, its own state directory (the lab CA among it), and
// its processes, stopped when the test ends. It also holds what every lab
// test needs first: skipping unless the test runs as root and without
// -short, a context bounded by Timeout, the repository root to build the
// lab from, and where the Docker lab's containers keep its CA's root
// certificate (a native lab's is compose.CARoot of its state directory).
//
// The Docker lab's tests (compose_test) use RequireRoot, RepoRoot and
// ContainerCARoot. compose's internal tests cannot import labtest, which
// imports compose.
package labtest

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/compose"
)

// Timeout bounds a lab test, from building the lab's programs to the
// last request in it.
const Timeout = 5 * time.Minute

// ContainerCARoot is the lab CA's root certificate inside the Docker
// lab's containers: the lab-ca volume is mounted at /lab and the services
// keep their CA in /lab/ca (docker-compose.yml).
const ContainerCARoot = "/lab/ca/" + certs.RootCertFile

// RequireRoot skips the test unless it runs as root. why names what needs
// root, for the skip message: "network namespaces", "debootstrap".
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s: needs root", why)
	}
}

// RequireLab skips the test unless a native lab can run: as root (it
// makes network namespaces), and not with -short (it takes minutes).
func RequireLab(t testing.TB) {
	t.Helper()
	RequireRoot(t, "the native lab (network namespaces)")
	if testing.Short() {
		t.Skip("the native lab takes minutes: skipped with -short")
	}
}

// Context returns a context for a lab test: it ends after Timeout, or when
// the test does.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// RepoRoot returns the repository root (the directory of go.mod above the
// test's working directory), which the lab builds its programs from and
// reads docker-compose.yml in. It fails the test if there is none.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("repository root: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Prefix returns the prefix of a lab's namespaces for a test: tag, which
// each test chooses for itself, then the process id and a dash, so that
// neither two tests nor two test binaries collide. Network interface
// names are short (15 bytes): keep tag to a few letters.
func Prefix(tag string) string {
	return tag + strconv.Itoa(os.Getpid()) + "-"
}

// Lab is a native lab private to one test.
type Lab struct {
	*compose.Runner
	// Root is the repository root the lab was built from.
	Root string
	// State is the lab's state directory, under t.TempDir: the lab CA's
	// volume, the built programs and the services' logs.
	State string
	// Prefix is the prefix of the lab's namespaces (see Prefix).
	Prefix string
	// Pool trusts the lab CA, for clients of the lab's PoPs and origin.
	Pool *x509.CertPool

	stopOnce sync.Once
	stopErr  error
}

// Start skips the test unless RequireLab allows it, then brings up a
// native lab (compose.StartLab) from the repository root, in a state
// directory of its own, with namespaces named Prefix(tag), and returns it
// with its services healthy. It fails the test if the lab does not come
// up. When the test ends the lab is stopped, unless the test stopped it
// itself, and a failure to stop fails the test.
func Start(ctx context.Context, t testing.TB, tag string) *Lab {
	t.Helper()
	RequireLab(t)
	l := &Lab{Root: RepoRoot(t), State: t.TempDir(), Prefix: Prefix(tag)}
	r, err := compose.StartLab(ctx, compose.RunnerConfig{Root: l.Root, StateDir: l.State, Prefix: l.Prefix})
	if err != nil {
		t.Fatalf("StartLab: %v", err)
	}
	l.Runner = r
	t.Cleanup(func() {
		stopped := false
		l.stopOnce.Do(func() { stopped, l.stopErr = true, r.Stop() })
		if stopped && l.stopErr != nil {
			t.Errorf("lab Stop: %v", l.stopErr)
		}
	})
	if l.Pool, err = certs.LoadPool(compose.CARoot(l.State)); err != nil {
		t.Fatalf("lab CA: %v", err)
	}
	return l
}

// Stop stops the lab's services and removes its network (Runner.Stop).
// Only the first call stops the lab; later calls return its error, and
// the cleanup at the end of the test has nothing left to do.
func (l *Lab) Stop() error {
	l.stopOnce.Do(func() { l.stopErr = l.Runner.Stop() })
	return l.stopErr
}

// KeepArtifact logs the path of a file a test made for people to look at
// (a screenshot, a report) and, when EDGECDN_ARTIFACTS names a directory,
// copies it there as name, so that it outlives the test's temporary
// directory (CI keeps that directory). A failure to copy fails the test.
func KeepArtifact(t testing.TB, path, name string) {
	t.Helper()
	dir := os.Getenv("EDGECDN_ARTIFACTS")
	if dir == "" {
		t.Logf("artifact: %s (set EDGECDN_ARTIFACTS=DIR to keep it)", path)
		return
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	dst := filepath.Join(dir, name)
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		t.Errorf("keep artifact %s: %v", path, err)
		return
	}
	t.Logf("artifact: %s (copied from %s)", dst, path)
}

// Chromium returns the path of the chromium program, or skips the test
// when it is not installed (fails it with EDGECDN_REQUIRE_CLIENTS set,
// as .ci/run sets it).
func Chromium(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatalf("chromium is required (EDGECDN_REQUIRE_CLIENTS): %v", err)
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	return path
}

// ChromiumArgs are the flags of a headless Chromium run in a test: no
// sandbox, GPU, first-run or background traffic, a fresh profile in a
// directory of the test's, a 1300x1000 window, and a budget of virtual
// time for the page's scripts before --dump-dom or --screenshot (0: none).
// A page that keeps a request open (an event stream) never spends virtual
// time: give it wait instead, real time after which Chromium stops loading
// and dumps or shoots what it has.
func ChromiumArgs(t testing.TB, budget, wait time.Duration) []string {
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir=" + t.TempDir(), "--window-size=1300,1000"}
	if budget > 0 {
		args = append(args, "--virtual-time-budget="+strconv.Itoa(int(budget/time.Millisecond)))
	}
	if wait > 0 {
		args = append(args, "--timeout="+strconv.Itoa(int(wait/time.Millisecond)))
	}
	return args
}
