package pop_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
)

// needTool returns the path of an external client. With EDGECDN_REQUIRE_CLIENTS set (.ci/run sets it) a missing
// tool fails the test, because .ci/run installs it; elsewhere it skips.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatalf("%s not installed; .ci/run installs it", name)
		}
		t.Skipf("%s not installed (apt-get install chromium ngtcp2-client)", name)
	}
	return p
}

// viaH3 reports whether the origin saw a request for path that the PoP
// received over HTTP/3: the PoP's Via names the protocol it was asked in.
func (ro *recordingOrigin) sawVia(path, via string) (seen bool, earlyData bool) {
	for _, r := range ro.requests() {
		if r.URL.Path != path {
			continue
		}
		for _, v := range r.Header.Values("Via") {
			if v == via {
				seen = true
				if r.Header.Get("Early-Data") == "1" {
					earlyData = true
				}
			}
		}
	}
	return seen, earlyData
}

func TestChromiumFetchesOverHTTP3(t *testing.T) {
	chromium := needTool(t, "chromium")
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	hostport := "127.0.0.1:" + port(p.Addr()) // localhost may resolve to ::1, where nothing listens
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(),
		"--enable-quic", "--origin-to-force-quic-on="+hostport,
		"--ignore-certificate-errors-spki-list="+certs.SPKIPin(p.Leaf().Leaf),
		"--dump-dom", "https://"+hostport+"/chromium-page")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "recorded") {
		t.Errorf("chromium page = %q, want the origin's body", out)
	}
	if seen, _ := ro.sawVia("/chromium-page", "3 "+poptest.Name); !seen {
		t.Errorf("origin did not see the page requested through the PoP over HTTP/3 (Via: 3 %s); requests: %v", poptest.Name, viaOf(ro))
	}
}

func viaOf(ro *recordingOrigin) []string {
	var out []string
	for _, r := range ro.requests() {
		out = append(out, r.URL.Path+" via "+strings.Join(r.Header.Values("Via"), ","))
	}
	return out
}

func TestGtlsclientZeroRTT(t *testing.T) {
	client := needTool(t, "gtlsclient")
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	p := poptest.StartPoP(t, poptest.Config(ca, ro.url))
	dir := t.TempDir()
	session, tp := filepath.Join(dir, "session.pem"), filepath.Join(dir, "tp.txt")
	run := func(path string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, client, "--quiet", "--exit-on-all-streams-close",
			"--session-file="+session, "--tp-file="+tp, "--sni=localhost",
			"127.0.0.1", port(p.Addr()), "https://localhost:"+port(p.Addr())+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gtlsclient %s: %v\n%s", path, err, out)
		}
		return string(out)
	}
	run("/ticket")
	if _, err := os.Stat(session); err != nil {
		t.Fatalf("gtlsclient saved no session: %v", err)
	}
	// 0-RTT can race the handshake's completion on loopback: a few tries.
	for i := range 5 {
		path := "/zero-rtt-" + string(rune('a'+i))
		run(path)
		if seen, early := ro.sawVia(path, "3 "+poptest.Name); seen && early {
			return
		}
	}
	t.Errorf("no gtlsclient request reached the origin as HTTP/3 early data (Early-Data: 1); requests: %v", viaOf(ro))
}
