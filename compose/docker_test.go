package compose_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/compose"
	"github.com/edgecdn/cdn/compose/labtest"
	"github.com/edgecdn/cdn/compose/view"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestDockerLab is issue 14's promise on a real Docker engine: base images
// made locally, docker compose up -d --build with every service healthy,
// the RTT matrix calibrated from inside the containers, each client sent by
// geodns to its own PoP and served the origin's bytes over h1, h2 (curl)
// and h3 (gtlsclient), a cold direct request from client-ap far slower
// than a hit at pop-ap, Chromium loading the page over HTTP/3, the
// published ports answering an HTTP/3 request and a DNS query from the
// host, two drills (a PoP stopped and started, which the live view
// service sees too; the origin cut off), and
// down -v leaving nothing of the project.
//
// It runs where a Docker engine answers; EDGECDN_REQUIRE_DOCKER=1 (set by
// .ci/run) turns a missing engine into a failure.
func TestDockerLab(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root := requireDocker(ctx, t)
	d, err := compose.NewDocker(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compose: %s", d.Compose)
	down := func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer dcancel()
		if out, err := d.Run(dctx, "--profile", "browser", "down", "-v", "--remove-orphans", "-t", "2"); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
	}
	down() // a clean start
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := d.Run(context.Background(), "--profile", "browser", "logs", "--no-color", "--tail", "40")
			t.Logf("logs:\n%s", out)
		}
		runReadmeLines(context.Background(), t, root, readmeBlock(t, root, "docker-down"), nil)
		if left, _ := d.Leftovers(context.Background()); len(left) > 0 {
			down()
		}
		left, err := d.Leftovers(context.Background())
		if err != nil || len(left) > 0 {
			t.Errorf("after down -v: left %v (%v), want nothing of project %s", left, err, compose.ProjectName)
		}
	})

	// The subnet taken by another network is named, with the way out.
	if out, err := exec.CommandContext(ctx, "docker", "network", "create", "--subnet", "10.77.128.0/24", "edgecdn-preflight-test").CombinedOutput(); err != nil {
		t.Fatalf("docker network create: %v\n%s", err, out)
	}
	_, err = compose.Preflight(ctx, d.Topo, d.Topo.Published)
	exec.Command("docker", "network", "rm", "edgecdn-preflight-test").Run()
	if err == nil || !strings.Contains(err.Error(), `"edgecdn-preflight-test"`) || !strings.Contains(err.Error(), "sed -i") {
		t.Errorf("preflight with 10.77.128.0/24 taken: %v; want an error naming the network and how to move the lab", err)
	}
	if report, err := compose.Preflight(ctx, d.Topo, d.Topo.Published); err != nil {
		t.Fatalf("preflight: %v\n%s", err, report)
	}
	start := time.Now()
	runReadmeLines(ctx, t, root, readmeBlock(t, root, "docker-up"), nil) // lab images; docker compose up -d --build
	if t.Failed() {
		t.FailNow()
	}
	if err := d.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("base images, build and up until all healthy: %v", time.Since(start).Round(time.Second))

	start = time.Now()
	table, err := d.Calibrate(ctx)
	t.Logf("calibration from inside the containers (%v):\n%s", time.Since(start).Round(time.Second), table)
	if err != nil {
		t.Errorf("calibration: %v", err)
	}
	delay, err := d.Exec(ctx, "pop-eu", "cat", compose.StatusFile)
	if err != nil || !strings.Contains(string(delay), "backend ") {
		t.Errorf("pop-eu %s = %q, %v; want the delay backend it chose", compose.StatusFile, delay, err)
	}
	t.Logf("pop-eu: %s", delay)
	// Without NET_ADMIN a service stops at once and says why.
	// (The browser's address is free until its profile starts.)
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", compose.ProjectName+"_lab",
		"--ip", mustHost(t, d.Topo, "browser").Addr.String(), "--entrypoint", "lab", "edgecdn-lab",
		"delay", "-self", "browser", "--", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "NET_ADMIN") {
		t.Errorf("lab delay without NET_ADMIN: %v\n%s\nwant a failure that names NET_ADMIN", err, out)
	}

	page, err := os.ReadFile(filepath.Join(root, "origin", "testdata", "www", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("clients", func(t *testing.T) {
		for _, region := range []string{"na", "eu", "ap"} {
			client, pop := "client-"+region, "pop-"+region
			if ip := dockerResolve(ctx, t, d, client, "www.cdn.lab"); ip != mustHost(t, d.Topo, pop).Addr.String() {
				t.Errorf("%s: www.cdn.lab = %s, want %s's address", client, ip, pop)
				continue
			}
			for _, proto := range []string{"h1", "h2", "h3"} {
				body, servedBy, version := dockerGet(ctx, t, d, client, proto, "https://www.cdn.lab/index.html")
				if !bytes.Equal(body, page) || servedBy != pop || version != proto {
					t.Errorf("%s %s: %d bytes (origin's: %d) from %q over %s; want the page from %s over %s",
						client, proto, len(body), len(page), servedBy, version, pop, proto)
				}
			}
		}
	})

	t.Run("direct vs hit", func(t *testing.T) {
		// Both pay a DNS lookup; the rest is three round trips each
		// (TCP, TLS 1.3, the request): 200 ms to origin, 10 ms to pop-ap.
		dockerGet(ctx, t, d, "client-ap", "h1", "https://www.cdn.lab/static/app.css") // stored
		direct := curlTTFB(ctx, t, d, "client-ap", "https://origin.lab/static/app.css?cold=1")
		hit := curlTTFB(ctx, t, d, "client-ap", "https://www.cdn.lab/static/app.css")
		t.Logf("client-ap time to first byte after DNS: direct to origin.lab %v, hit at pop-ap %v (%.1fx)", direct, hit, float64(direct)/float64(hit))
		if direct < 5*hit {
			t.Errorf("direct %v is not well over 5x the hit's %v", direct, hit)
		}
	})

	t.Run("README: docker-try", func(t *testing.T) {
		runReadmeLines(ctx, t, root, readmeBlock(t, root, "docker-try"), nil)
	})

	t.Run("chromium over h3", func(t *testing.T) {
		start := time.Now()
		runReadmeLines(ctx, t, root, readmeBlock(t, root, "docker-browser"), browserOverH3("http://127.77.2.20:9901/metrics"))
		t.Logf("browser image, container and page load: %v", time.Since(start).Round(time.Second))
	})

	t.Run("from the host", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("www.cdn.lab.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).ExchangeContext(ctx, m, "127.77.0.53:53")
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("DNS query to the published geodns (127.77.0.53:53): %v %v", r, err)
		}
		if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != mustHost(t, d.Topo, "pop-eu").Addr.String() {
			t.Errorf("host: www.cdn.lab = %v, want pop-eu (the host counts as eu)", r.Answer[0])
		}
		gtls, err := exec.LookPath("gtlsclient")
		if err != nil {
			if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
				t.Fatalf("gtlsclient is required (EDGECDN_REQUIRE_CLIENTS): %v", err)
			}
			t.Skip("gtlsclient not installed (apt-get install ngtcp2-client)")
		}
		for _, pop := range []string{"pop-na", "pop-eu", "pop-ap"} {
			addr := "127.77." + strings.TrimPrefix(mustHost(t, d.Topo, pop).Addr.String(), "10.77.")
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			out, err := exec.CommandContext(cctx, gtls, "--exit-on-all-streams-close", "--no-quic-dump", "--no-http-dump",
				addr, "443", "https://www.cdn.lab/gen/1k").CombinedOutput()
			cancel()
			if err != nil || !bytes.Contains(out, []byte("[:status: 200]")) || !bytes.Contains(out, []byte("[x-served-by: "+pop+"]")) {
				t.Errorf("gtlsclient (HTTP/3) from the host to %s:443/udp: %v\n%s", addr, err, tail(out))
			}
		}
		runReadmeLines(ctx, t, root, readmeBlock(t, root, "docker-host"), browserOverH3("http://127.77.2.20:9901/metrics"))
	})

	t.Run("fleet: shield and global purge", func(t *testing.T) {
		// One cold object asked at once in every region: pop-na (the
		// parent tier) fetches it once for all.
		url := fmt.Sprintf("https://www.cdn.lab/gen/1k?cc=public,max-age%%3D600&o=shield-%d", time.Now().UnixNano())
		var wg sync.WaitGroup
		for _, region := range []string{"na", "eu", "ap"} {
			wg.Go(func() {
				if body, _, _ := dockerGet(ctx, t, d, "client-"+region, "h2", url); len(body) != 1024 {
					t.Errorf("client-%s: %d bytes, want 1024", region, len(body))
				}
			})
		}
		wg.Wait()
		_, query, _ := strings.Cut(url, "?")
		logs, err := d.Run(ctx, "logs", "--no-color", "origin")
		if n := strings.Count(string(logs), query+`"`); err != nil || n != 1 {
			t.Errorf("origin requests for a cold object asked in three regions at once: %d (%v), want 1 (through the shield)", n, err)
		}
		// A purge posted at pop-eu: every PoP acknowledges, and each
		// region's next request is a miss again.
		out, err := d.Exec(ctx, "client-eu", "sh", "-c", `curl -sS --max-time 10 -X POST -H "Authorization: Bearer $(cat /lab/purge.token)" `+
			`"http://`+mustHost(t, d.Topo, "pop-eu").Addr.String()+`:9901/purge?url=`+neturl.QueryEscape(url)+`"`)
		var res struct {
			Fleet   bool `json:"fleet"`
			Results []struct {
				Acks []struct {
					PoP       string  `json:"pop"`
					Purged    int     `json:"purged"`
					LatencyMs float64 `json:"latency_ms"`
				} `json:"acks"`
				Missing []string `json:"missing"`
			} `json:"results"`
		}
		if err != nil || json.Unmarshal(out, &res) != nil || !res.Fleet || len(res.Results) != 1 || len(res.Results[0].Acks) != 3 {
			t.Fatalf("POST /purge at pop-eu: %v\n%s\nwant the three PoPs' acknowledgements", err, out)
		}
		t.Logf("purge at pop-eu, acknowledged: %+v", res.Results[0].Acks)
		for _, a := range res.Results[0].Acks {
			if a.Purged != 1 {
				t.Errorf("%s purged %d entries, want 1", a.PoP, a.Purged)
			}
		}
		for _, region := range []string{"na", "eu", "ap"} {
			out, err := d.Exec(ctx, "client-"+region, "curl", "-sS", "--max-time", "30", "--cacert", labtest.ContainerCARoot,
				"-o", "/dev/null", "-w", "%header{cache-status}", url)
			if cs := string(out); err != nil || strings.Contains(cs, "; hit") {
				t.Errorf("client-%s after the purge: Cache-Status %q (%v), want a miss at every layer", region, cs, err)
			}
		}

		// The control plane stops: the cache keeps serving, a purge is
		// refused (503, not purged); back, a purge is acknowledged by all.
		purgeStatus := func() string {
			out, _ := d.Exec(ctx, "client-eu", "sh", "-c", `curl -sS --max-time 10 -o /tmp/purge -w "%{http_code}" -X POST -H "Authorization: Bearer $(cat /lab/purge.token)" `+
				`"http://`+mustHost(t, d.Topo, "pop-eu").Addr.String()+`:9901/purge?tag=docker-test"; echo; cat /tmp/purge`)
			code, body, _ := strings.Cut(string(out), "\n")
			if code == "200" && strings.Count(body, `"pop":`) != 3 {
				return "200 without all three PoPs: " + body
			}
			return code
		}
		if out, err := d.Run(ctx, "stop", "-t", "2", "nats"); err != nil {
			t.Fatalf("stop nats: %v\n%s", err, out)
		}
		if body, servedBy, _ := dockerGet(ctx, t, d, "client-eu", "h2", url); len(body) != 1024 || servedBy != "pop-eu" {
			t.Errorf("client-eu with nats stopped: %d bytes from %q, want the object from pop-eu", len(body), servedBy)
		}
		if code := purgeStatus(); code != "503" {
			t.Errorf("purge with nats stopped: %s, want 503 (not purged)", code)
		}
		if out, err := d.Run(ctx, "start", "nats"); err != nil {
			t.Fatalf("start nats: %v\n%s", err, out)
		}
		deadline := time.Now().Add(60 * time.Second)
		for code := purgeStatus(); code != "200"; code = purgeStatus() {
			if time.Now().After(deadline) {
				t.Fatalf("purge after nats restarted: %s for 60 s, want 200", code)
			}
			time.Sleep(time.Second)
		}
	})

	t.Run("drill: pop-eu stopped and started", func(t *testing.T) {
		eu := mustHost(t, d.Topo, "pop-eu").Addr.String()
		// The view service, published on the host, sees it too.
		viewWait(t, "every region up and sent to its own PoP", func(s view.Snapshot) bool {
			for _, r := range s.Regions {
				if r.PoP.Health != "up" || r.AnswerPoP != r.PoP.Name || r.Probes <= r.ProbeErrors {
					return false
				}
			}
			return len(s.Regions) == 3
		})
		start := time.Now()
		if out, err := d.Run(ctx, "stop", "-t", "5", "pop-eu"); err != nil {
			t.Fatalf("stop pop-eu: %v\n%s", err, out)
		}
		stopped := time.Since(start)
		got := waitResolve(ctx, t, d, "client-eu", func(ip string) bool { return ip != eu && ip != "" }, 30*time.Second)
		t.Logf("pop-eu stopped (stop took %v): client-eu sent to %s after %v", stopped.Round(100*time.Millisecond), got, time.Since(start).Round(100*time.Millisecond))
		body, servedBy, _ := dockerGet(ctx, t, d, "client-eu", "h2", "https://www.cdn.lab/index.html")
		if !bytes.Equal(body, page) || servedBy == "pop-eu" || servedBy == "" {
			t.Errorf("client-eu with pop-eu down: %d bytes from %q", len(body), servedBy)
		}
		viewWait(t, "pop-eu down and eu sent elsewhere", func(s view.Snapshot) bool {
			for _, r := range s.Regions {
				if r.Name == "eu" {
					return r.PoP.Health == "down" && r.AnswerPoP != "" && r.AnswerPoP != "pop-eu"
				}
			}
			return false
		})
		start = time.Now()
		if out, err := d.Run(ctx, "start", "pop-eu"); err != nil {
			t.Fatalf("start pop-eu: %v\n%s", err, out)
		}
		waitResolve(ctx, t, d, "client-eu", func(ip string) bool { return ip == eu }, 60*time.Second)
		t.Logf("pop-eu started: client-eu back on it after %v", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("drill: origin cut off, stale-if-error", func(t *testing.T) {
		url := "https://www.cdn.lab/gen/2k?cc=max-age%3D0,stale-if-error%3D600&o=drill"
		first, _, _ := dockerGet(ctx, t, d, "client-na", "h2", url)
		if len(first) != 2048 {
			t.Fatalf("first fetch: %d bytes, want 2048", len(first))
		}
		network := compose.ProjectName + "_lab"
		originID, err := d.Container(ctx, "origin")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(ctx, "docker", "network", "disconnect", "-f", network, originID).CombinedOutput(); err != nil {
			t.Fatalf("docker network disconnect: %v\n%s", err, out)
		}
		reconnected := false
		reconnect := func() {
			if reconnected {
				return
			}
			reconnected = true
			ip := mustHost(t, d.Topo, "origin").Addr.String()
			if out, err := exec.Command("docker", "network", "connect", "--ip", ip, network, originID).CombinedOutput(); err != nil {
				t.Errorf("docker network connect: %v\n%s", err, out)
			}
		}
		defer reconnect()
		start := time.Now()
		out, err := d.Exec(ctx, "client-na", "curl", "-sS", "--max-time", "60", "--cacert", labtest.ContainerCARoot,
			"-D", "/dev/stderr", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url)
		t.Logf("origin cut off: %s in %v", out, time.Since(start).Round(10*time.Millisecond))
		if err != nil || string(out) != "200 2048" {
			t.Errorf("with the origin unreachable: %q %v; want the stored 2048 bytes (stale-if-error)", out, err)
		}
		reconnect()
	})
}

// requireDocker skips (or, with EDGECDN_REQUIRE_DOCKER, fails) the test
// unless a Docker engine answers and the test runs as root (debootstrap
// makes the base images), and returns the repository root.
func requireDocker(ctx context.Context, t *testing.T) string {
	t.Helper()
	if _, err := compose.DockerVersion(ctx); err != nil {
		if os.Getenv("EDGECDN_REQUIRE_DOCKER") != "" {
			t.Fatalf("a Docker engine is required (EDGECDN_REQUIRE_DOCKER): %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	labtest.RequireRoot(t, "making the base images (debootstrap)")
	return labtest.RepoRoot(t)
}

// dockerResolve looks name up in service's container with its own
// resolver (getent: the container's resolv.conf, Docker's embedded DNS,
// then geodns).
func dockerResolve(ctx context.Context, t *testing.T, d *compose.Docker, service, name string) string {
	t.Helper()
	out, err := d.Exec(ctx, service, "getent", "ahostsv4", name)
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// waitResolve polls www.cdn.lab in service until ok, for at most max,
// logging each answer it sees, and returns the last.
// viewWait polls the Docker lab's live view (the view service, published
// on 127.0.0.1:8099) until its snapshot satisfies ok.
func viewWait(t *testing.T, what string, ok func(view.Snapshot) bool) {
	t.Helper()
	var last []byte
	poll.Within(t, 60*time.Second, "the live view: "+what, func() bool {
		resp, err := http.Get("http://127.0.0.1:8099/state")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		last, _ = io.ReadAll(resp.Body)
		var s view.Snapshot
		return json.Unmarshal(last, &s) == nil && ok(s)
	})
	t.Logf("live view (Docker): %s: %s", what, last)
}

func waitResolve(ctx context.Context, t *testing.T, d *compose.Docker, service string, ok func(string) bool, max time.Duration) string {
	t.Helper()
	ip, seen := "", "(none yet)"
	poll.Within(t, max, service+"'s answer for www.cdn.lab to change", func() bool {
		if ip = dockerResolve(ctx, t, d, service, "www.cdn.lab"); ip != seen {
			t.Logf("%s: www.cdn.lab = %q", service, ip)
			seen = ip
		}
		return ok(ip)
	})
	return ip
}

// servedBy finds X-Served-By in curl's header dump and in gtlsclient's
// ("http: stream 0x0 [x-served-by: pop-eu]").
var servedBy = regexp.MustCompile(`(?im)(?:^|\[)x-served-by: ([a-z0-9-]+)`)

// dockerGet fetches url inside service with a real client: curl for h1
// and h2, gtlsclient (ngtcp2, not Go) for h3. It returns the body, the
// X-Served-By header and the HTTP version used.
func dockerGet(ctx context.Context, t *testing.T, d *compose.Docker, service, proto, url string) ([]byte, string, string) {
	t.Helper()
	if proto == "h3" {
		host := strings.Split(strings.TrimPrefix(url, "https://"), "/")[0]
		dir := fmt.Sprintf("/tmp/dl-%d", time.Now().UnixNano())
		out, err := d.Exec(ctx, service, "sh", "-c", fmt.Sprintf(
			"mkdir -p %[1]s/b && timeout 20 gtlsclient --exit-on-all-streams-close --no-quic-dump --no-http-dump --download=%[1]s/b %[2]s 443 '%[3]s' >%[1]s/log 2>&1; cat %[1]s/log; echo ---body---; cat %[1]s/b/*; rm -rf %[1]s",
			dir, host, url))
		if err != nil {
			t.Errorf("%s gtlsclient %s: %v", service, url, err)
			return nil, "", ""
		}
		dump, body, _ := bytes.Cut(out, []byte("---body---\n"))
		version := ""
		if bytes.Contains(dump, []byte("[:status: 200]")) {
			version = "h3"
		}
		m := servedBy.FindSubmatch(dump)
		if m == nil {
			return body, "", version
		}
		return body, string(m[1]), version
	}
	flag := map[string]string{"h1": "--http1.1", "h2": "--http2"}[proto]
	out, err := d.Exec(ctx, service, "sh", "-c", fmt.Sprintf(
		"curl -sS %s --max-time 30 --cacert %s -D /tmp/h -o /tmp/b '%s' && cat /tmp/h && echo ---body--- && cat /tmp/b", flag, labtest.ContainerCARoot, url))
	if err != nil {
		t.Errorf("%s curl %s %s: %v", service, flag, url, err)
		return nil, "", ""
	}
	head, body, _ := bytes.Cut(out, []byte("---body---\n"))
	version := ""
	switch {
	case bytes.HasPrefix(head, []byte("HTTP/1.1 200")):
		version = "h1"
	case bytes.HasPrefix(head, []byte("HTTP/2 200")):
		version = "h2"
	}
	m := servedBy.FindSubmatch(head)
	if m == nil {
		return body, "", version
	}
	return body, string(m[1]), version
}

// curlTTFB is curl's time to first byte less its DNS lookup, on a new
// connection inside service.
func curlTTFB(ctx context.Context, t *testing.T, d *compose.Docker, service, url string) time.Duration {
	t.Helper()
	out, err := d.Exec(ctx, service, "curl", "-sS", "--http1.1", "--max-time", "30", "--cacert", labtest.ContainerCARoot,
		"-o", "/dev/null", "-w", "%{http_code} %{time_namelookup} %{time_starttransfer}", url)
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 || f[0] != "200" {
		t.Fatalf("curl %s: %q, want 200 and two times", url, out)
	}
	dns, _ := strconv.ParseFloat(f[1], 64)
	first, _ := strconv.ParseFloat(f[2], 64)
	return time.Duration((first - dns) * float64(time.Second))
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}

// TestDockerSeveralMachines runs the README's several-machines recipe as
// written: two Compose projects playing two machines on one shared
// network, the second given the first's CA and ticket key, and client-eu
// (machine 2) served by pop-eu (machine 2) as resolved by geodns (machine
// 1) from the origin (machine 1), under the CA both share.
func TestDockerSeveralMachines(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root := requireDocker(ctx, t)
	if err := compose.MakeImages(ctx, compose.ImagesConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	downLines := readmeBlock(t, root, "docker-multi-down")
	clean := func() {
		for _, l := range downLines {
			exec.Command("bash", "-c", l).Run() // a clean start: whatever is there
		}
	}
	clean()
	t.Cleanup(func() {
		runReadmeLines(context.Background(), t, root, downLines, nil)
		for _, p := range []string{"edgecdn-na", "edgecdn-eu"} {
			out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+p).Output()
			vols, _ := exec.Command("docker", "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+p).Output()
			if len(bytes.TrimSpace(out)) > 0 || len(bytes.TrimSpace(vols)) > 0 {
				t.Errorf("project %s left containers %q, volumes %q", p, out, vols)
			}
		}
		if exec.Command("docker", "network", "inspect", "edgecdn-wan").Run() == nil {
			t.Errorf("the shared network edgecdn-wan is left")
		}
	})
	lines := readmeBlock(t, root, "docker-multi")
	check := func(line string) func([]byte) error {
		if !strings.Contains(line, "exec client-eu curl") {
			return nil
		}
		return func(out []byte) error {
			if !bytes.Contains(out, []byte("x-served-by: pop-eu")) || !bytes.Contains(out, []byte("edgecdn lab origin")) {
				return fmt.Errorf("want the origin's page from pop-eu")
			}
			return nil
		}
	}
	runReadmeLines(ctx, t, root, lines, check)
}
