package compose_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgecdn/cdn/compose/labtest"
)

// The README's example commands run here exactly as written, so they
// cannot rot: each fenced block after a "<!-- readme-test: NAME -->"
// marker.

// readmeBlock returns the lines of the fenced block after the marker
// NAME, continuation lines joined, comments and blank lines dropped.
func readmeBlock(t *testing.T, root, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- readme-test: "+name+" -->")
	if !ok {
		t.Fatalf("README.md has no <!-- readme-test: %s --> block", name)
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, _ := strings.Cut(rest, "```")
	var lines []string
	var cur string
	for _, l := range strings.Split(block, "\n") {
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\")
			continue
		}
		l = strings.TrimSpace(cur + l)
		cur = ""
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// runReadmeLines runs each line with bash from root; a line fails the
// test when it exits non-zero, prints nothing (unless it writes a file,
// -o /PATH), or fails the check that
// around (if not nil) returns for it before it runs. A line whose program is
// not installed is skipped unless EDGECDN_REQUIRE_CLIENTS is set; a
// curl --http3 line is skipped where curl lacks HTTP/3 (Debian's does).
func runReadmeLines(ctx context.Context, t *testing.T, root string, lines []string, around func(line string) func(out []byte) error) {
	t.Helper()
	for _, line := range lines {
		prog := strings.Fields(line)[0]
		if _, err := exec.LookPath(prog); err != nil && prog != "go" {
			if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
				t.Errorf("README line %q: %s is not installed", line, prog)
			} else {
				t.Logf("skipped (no %s): %s", prog, line)
			}
			continue
		}
		if strings.Contains(line, "--http3") {
			if v, _ := exec.Command("curl", "-V").Output(); !strings.Contains(string(v), "HTTP3") {
				t.Logf("skipped (this curl has no HTTP/3): %s", line)
				continue
			}
		}
		var check func([]byte) error
		if around != nil {
			check = around(line)
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a first docker compose build takes minutes
		cmd := exec.CommandContext(lctx, "bash", "-o", "pipefail", "-c", line)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		writesFile := strings.Contains(line, " -o /")
		if err != nil || (len(strings.TrimSpace(string(out))) == 0 && !writesFile) {
			t.Errorf("README line failed: %s\n%v\n%s", line, err, tail(out))
			continue
		}
		if check != nil {
			if err := check(out); err != nil {
				t.Errorf("README line: %s: %v\n%s", line, err, tail(out))
				continue
			}
		}
		t.Logf("ok: %s", line)
	}
}

// TestREADME starts the README's main job as written and runs its "Try
// the PoP" lines against it.
func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	root := labtest.RepoRoot(t)
	main := readmeBlock(t, root, "main-job")
	if len(main) != 1 {
		t.Fatalf("the main job is %d lines, want one command", len(main))
	}
	try := readmeBlock(t, root, "try-pop")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if resp, err := http.Get("http://127.0.0.1:9901/readyz"); err == nil {
		resp.Body.Close()
		t.Fatal("something already serves 127.0.0.1:9901 (a main job left running?): the README's main job needs the port")
	}
	job := exec.Command("bash", "-c", main[0])
	job.Dir = root
	job.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var log strings.Builder
	job.Stdout, job.Stderr = &log, &log
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { job.Wait(); close(exited) }()
	defer func() {
		syscall.Kill(-job.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(-job.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()
	for {
		resp, err := http.Get("http://127.0.0.1:9901/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("the main job exited:\n%s", log.String())
		case <-ctx.Done():
			t.Fatalf("the main job never got ready:\n%s", log.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	runReadmeLines(ctx, t, root, try, browserOverH3("http://127.0.0.1:9901/metrics"))
}

// browserOverH3 checks that a chromium line got the lab page over
// HTTP/3, on the counters of the PoP whose metrics are at url.
func browserOverH3(url string) func(line string) func([]byte) error {
	count := func() int {
		resp, err := http.Get(url)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n := 0
		if m := h3Requests.FindSubmatch(b); m != nil {
			n, _ = strconv.Atoi(string(m[1]))
		}
		return n
	}
	return func(line string) func([]byte) error {
		if !strings.HasPrefix(line, "chromium ") && !strings.Contains(line, " chromium ") {
			return nil
		}
		before := count()
		return func(out []byte) error {
			if !strings.Contains(string(out), "edgecdn lab origin") {
				return errors.New("no lab page in chromium's output")
			}
			if after := count(); after <= before {
				return fmt.Errorf("the PoP counted no HTTP/3 200 (%d before, %d after)", before, after)
			}
			return nil
		}
	}
}
