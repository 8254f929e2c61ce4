package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/compose/labtest"
)

// TestLabEndToEnd brings the native lab up (root), runs bench lab from
// every client and checks the orderings the physics promise, the report
// files, and that the HTML renders in headless Chromium.
func TestLabEndToEnd(t *testing.T) {
	ctx := labtest.Context(t)
	lab := labtest.Start(ctx, t, "ebl")
	cfg, err := bench.LabConfigFrom(lab.Topo, lab.Net, lab.Pool, 2)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := bench.RunLab(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(client, target, proto, mode string) float64 {
		for _, row := range rows {
			if row.Client == client && row.Target == target && row.Proto == proto && row.Mode == mode {
				if row.Error != "" {
					t.Fatalf("%s %s %s %s: %s", client, target, proto, mode, row.Error)
				}
				return row.TTFBms
			}
		}
		t.Fatalf("no row %s %s %s %s", client, target, proto, mode)
		return 0
	}
	// One round trip separates 0-RTT, h3 and h2 hits (10 ms client to PoP
	// in every region), about as much as two samples of one client can
	// scatter on a loaded 2-core machine; summed over the three clients the
	// gap is three round trips and the ordering is physics, not luck.
	var zero, h3, h2 float64
	for _, c := range []string{"client-na", "client-eu", "client-ap"} {
		zero += get(c, "hit", "h3", "0rtt")
		h3 += get(c, "hit", "h3", "cold")
		h2 += get(c, "hit", "h2", "cold")
	}
	if !(zero < h3 && h3 < h2) {
		t.Errorf("hits summed over the clients: 0-RTT %.1f, h3 %.1f, h2 %.1f ms; want 0-RTT < h3 < h2", zero, h3, h2)
	}
	// A first visit that asks for the HTTPS record saves the TCP round trip.
	var first, firstHTTPS float64
	for _, c := range []string{"client-na", "client-eu", "client-ap"} {
		first += get(c, "hit", "h2", "first")
		firstHTTPS += get(c, "hit", "h3", "first-https")
	}
	if !(firstHTTPS < first) {
		t.Errorf("first visits summed over the clients: with the HTTPS record %.1f ms, without %.1f ms; want it faster with", firstHTTPS, first)
	}
	for _, c := range []string{"client-eu", "client-ap"} { // the origin is in na
		hit, miss, direct := get(c, "hit", "h2", "cold"), get(c, "miss", "h2", "cold"), get(c, "direct", "h2", "cold")
		if !(hit < miss && miss < direct) {
			t.Errorf("%s: hit %.1f, miss %.1f, direct %.1f ms; want hit < miss < direct", c, hit, miss, direct)
		}
	}
	// Every phase that has a floor took time, and its p99 is no less
	// than its p50 (bench lab's per-phase columns).
	for _, row := range rows {
		if row.Error != "" {
			continue
		}
		if len(row.Phases) != 3 || row.TTFBP99ms < row.TTFBms {
			t.Errorf("%s %s %s %s: phases %+v, ttfb p50 %.1f p99 %.1f; want dns, connect, tls and p99 >= p50", row.Client, row.Target, row.Proto, row.Mode, row.Phases, row.TTFBms, row.TTFBP99ms)
		}
		for _, ph := range row.Phases {
			if ph.Floorms > 0 && (ph.P50ms <= 0 || ph.P99ms < ph.P50ms) {
				t.Errorf("%s %s %s %s: phase %+v, want time spent where the floor is %.0f ms", row.Client, row.Target, row.Proto, row.Mode, ph, ph.Floorms)
			}
		}
	}
	chromiumFirstVisit(ctx, t, lab)
	out := t.TempDir()
	if err := bench.WriteLabReport(out, rows); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(page), `class="bar"`); n != len(rows) || !strings.Contains(string(page), "<svg") {
		t.Errorf("report.html has %d bars for %d rows", n, len(rows))
	}
	if _, err := os.Stat(filepath.Join(out, "report.md")); err != nil {
		t.Error(err)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatal("chromium not installed; .ci/run installs it")
		}
		return
	}
	shot := filepath.Join(out, "report.png")
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--window-size=1300,900", "--screenshot="+shot, "file://"+filepath.Join(out, "report.html"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Errorf("screenshot %s: %v (size %v), want a rendered page", shot, err, fi)
	}
	for _, row := range rows {
		t.Logf("%-10s %-6s %-3s %-8s %7.1f ms floor %7.1f ms x%.2f", row.Client, row.Target, row.Proto, row.Mode, row.TTFBms, row.Floorms, row.Ratio)
	}
}

var requestsByProto = regexp.MustCompile(`pop_requests_total\{code="200",proto="(h[123])"\} (\d+)`)

// chromiumFirstVisit loads the lab's page in headless Chromium from a
// fresh profile in client-eu, twice: www.cdn.lab, whose HTTPS record offers
// h3, must come over HTTP/3 from its first request (pop-eu's counters: h3
// requests, no h2 or h1); pop-eu.cdn.lab, which has an A record only, over
// HTTP/2 (Chromium learns Alt-Svc there only from that first response).
// The second loads one object without subresources: the demo page's
// later requests (images, its script's fetches) would rightly follow the
// Alt-Svc of the first response to HTTP/3.
// Chromium speaks QUIC only to certificates of publicly known roots, or to
// hosts named by --origin-to-force-quic-on: naming each host with port 1,
// where nothing listens, lets it accept the lab's root over QUIC without
// forcing QUIC on port 443.
func chromiumFirstVisit(ctx context.Context, t *testing.T, lab *labtest.Lab) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatal("chromium not installed; .ci/run installs it")
		}
		return
	}
	popEU, _ := lab.Topo.Host("pop-eu")
	admin := &http.Client{Transport: &http.Transport{DialContext: lab.Net.Dialer("client-eu")}, Timeout: 10 * time.Second}
	get := func(path string) string {
		resp, err := admin.Get("http://" + popEU.Addr.String() + ":9901" + path)
		if err != nil {
			t.Fatalf("pop-eu %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	counts := func() map[string]int {
		out := map[string]int{}
		for _, m := range requestsByProto.FindAllStringSubmatch(get("/metrics"), -1) {
			out[m[1]], _ = strconv.Atoi(m[2])
		}
		return out
	}
	pin := strings.TrimSpace(get("/spki"))
	for _, tc := range []struct{ host, path, want string }{{"www.cdn.lab", "/", "h3"}, {"pop-eu.cdn.lab", "/static/app.css", "h2"}} {
		before := counts()
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		out, err := lab.Net.Exec(cctx, "client-eu", chromium,
			"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir="+t.TempDir(), "--ignore-certificate-errors-spki-list="+pin,
			"--origin-to-force-quic-on="+tc.host+":1",
			"--dump-dom", "https://"+tc.host+tc.path).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "</html>") {
			t.Fatalf("chromium %s: %v\n%s", tc.host, err, out)
		}
		after := counts()
		got := map[string]int{}
		total := 0
		for _, p := range []string{"h1", "h2", "h3"} {
			got[p] = after[p] - before[p]
			total += got[p]
		}
		t.Logf("chromium first visit to %s: requests at pop-eu by protocol %v", tc.host, got)
		if total == 0 || got[tc.want] != total {
			t.Errorf("chromium first visit to %s: requests by protocol %v, want all %d over %s", tc.host, got, total, tc.want)
		}
	}
}
