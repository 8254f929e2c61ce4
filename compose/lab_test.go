package compose_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/compose"
	"github.com/edgecdn/cdn/compose/labtest"
)

// TestLabUp is what the lab promises its users, on the native runner:
// from a clean state every pair's RTT calibrates within tolerance; each
// client resolves www.cdn.lab with the OS resolver of its namespace to
// its own region's PoP and gets the origin's bytes through it over h1,
// h2 and h3; a cold request from client-ap straight to origin.lab costs
// its three 200 ms round trips to the first byte, a hit at pop-ap three
// 10 ms ones; headless Chromium in client-eu loads the page over HTTP/3,
// as pop-eu's own counters show, and renders the demo page's table; every
// target of compose/prometheus.yml serves metrics; the live view sees
// pop-eu stopped and client-eu sent elsewhere; and after Stop nothing is
// left: no namespace, process, interface or resolv.conf.
func TestLabUp(t *testing.T) {
	ctx := labtest.Context(t)
	lab := labtest.Start(ctx, t, "ecu")
	r, pool := lab.Runner, lab.Pool
	pids := map[string]int{}
	for _, h := range r.Topo.Hosts {
		if pid := r.PID(h.Name); pid != 0 {
			pids[h.Name] = pid
		}
	}

	table, err := r.Calibrate(ctx)
	t.Logf("calibration:\n%s", table)
	if err != nil {
		t.Errorf("calibration: %v", err)
	}

	page, err := os.ReadFile(filepath.Join(lab.Root, "origin", "testdata", "www", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	var pin string
	for _, region := range []string{"na", "eu", "ap"} {
		client, pop := "client-"+region, mustHost(t, r.Topo, "pop-"+region)
		ip := resolve(ctx, t, r, client, "www.cdn.lab")
		if ip != pop.Addr.String() {
			t.Errorf("%s: www.cdn.lab = %s, want %s (pop-%s)", client, ip, pop.Addr, region)
			continue
		}
		for _, proto := range []string{"h1", "h2", "h3"} {
			c := labClient(t, r, client, ip, proto, pool)
			resp, err := c.Get("https://www.cdn.lab/index.html")
			if err != nil {
				t.Errorf("%s %s: %v", client, proto, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(body, page) || resp.Header.Get("X-Served-By") != "pop-"+region ||
				resp.ProtoMajor != map[string]int{"h1": 1, "h2": 2, "h3": 3}[proto] {
				t.Errorf("%s %s: HTTP/%d %d from %q, %d bytes (origin's: %d)", client, proto, resp.ProtoMajor, resp.StatusCode,
					resp.Header.Get("X-Served-By"), len(body), len(page))
			}
			if region == "eu" && resp.TLS != nil {
				pin = certs.SPKIPin(resp.TLS.PeerCertificates[0])
			}
		}
	}

	// Cold and direct, against a hit at the nearest PoP: three round trips
	// each (TCP, TLS 1.3, the request), 200 ms against 10 ms.
	originIP := resolve(ctx, t, r, "client-ap", "origin.lab")
	popIP := resolve(ctx, t, r, "client-ap", "www.cdn.lab")
	labClient(t, r, "client-ap", popIP, "h1", pool).Get("https://www.cdn.lab/static/app.css") // stored
	direct := firstByte(t, labClient(t, r, "client-ap", originIP, "h1", pool), "https://origin.lab/static/app.css?cold=1")
	hit := firstByte(t, labClient(t, r, "client-ap", popIP, "h1", pool), "https://www.cdn.lab/static/app.css")
	t.Logf("client-ap time to first byte: direct to origin.lab %v, hit at pop-ap %v (%.1fx)", direct, hit, float64(direct)/float64(hit))
	if direct < 5*hit {
		t.Errorf("direct %v is not well over 5x the hit's %v", direct, hit)
	}

	chromiumOverH3(ctx, t, r, pin)
	prometheusTargetsServe(t, r, lab.Root)
	liveViewSeesPoPDown(ctx, t, lab) // stops pop-eu

	if err := lab.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (pid %d) still running after Stop", name, pid)
		}
	}
	for _, cmd := range [][]string{{"ip", "netns", "list"}, {"ip", "-o", "link"}} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			t.Errorf("%v: %v", cmd, err)
		}
		if strings.Contains(string(out), lab.Prefix) {
			t.Errorf("%v after Stop still lists %s*:\n%s", cmd, lab.Prefix, out)
		}
	}
	if left, _ := filepath.Glob("/etc/netns/" + lab.Prefix + "*"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func mustHost(t *testing.T, topo *compose.Topology, name string) compose.Host {
	t.Helper()
	h, ok := topo.Host(name)
	if !ok {
		t.Fatalf("no host %s", name)
	}
	return h
}

// resolve looks a name up inside host's namespace with the OS resolver
// (getent, through the namespace's /etc/netns resolv.conf).
func resolve(ctx context.Context, t *testing.T, r *compose.Runner, host, name string) string {
	t.Helper()
	out, err := r.Net.Exec(ctx, host, "getent", "ahostsv4", name).Output()
	if err != nil {
		t.Fatalf("%s: getent ahostsv4 %s: %v", host, name, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("%s: %s did not resolve", host, name)
	}
	return f[0]
}

// labClient is an HTTP client inside host's namespace that sends every
// request to ip, with a new connection each time.
func labClient(t *testing.T, r *compose.Runner, host, ip, proto string, pool *x509.CertPool) *http.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: pool}
	if proto == "h3" {
		pc, err := r.Net.ListenPacket(host, "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		qt := &quic.Transport{Conn: pc}
		t.Cleanup(func() { qt.Close(); pc.Close() })
		tr := &http3.Transport{TLSClientConfig: tc, Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(ip, port))
			if err != nil {
				return nil, err
			}
			return qt.DialEarly(ctx, ua, tlsCfg, cfg)
		}}
		t.Cleanup(func() { tr.Close() })
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	dial := r.Net.Dialer(host)
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return dial(ctx, network, net.JoinHostPort(ip, port))
	}}
	tr.Protocols = new(http.Protocols)
	if proto == "h2" {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// firstByte is the time from the start of a request on a new connection
// (TCP and TLS handshakes included) to the response's first byte.
func firstByte(t *testing.T, c *http.Client, url string) time.Duration {
	t.Helper()
	var first time.Time
	req, _ := http.NewRequest("GET", url, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { first = time.Now() },
	}))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	return first.Sub(start)
}

var h3Requests = regexp.MustCompile(`pop_requests_total\{code="200",proto="h3"\} (\d+)`)

// chromiumOverH3 loads https://www.cdn.lab/ in headless Chromium inside
// client-eu, QUIC forced and the lab certificate pinned, and checks on
// pop-eu's metrics that the requests came over HTTP/3.
func chromiumOverH3(ctx context.Context, t *testing.T, r *compose.Runner, pin string) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatalf("chromium is required (EDGECDN_REQUIRE_CLIENTS): %v", err)
		}
		t.Log("chromium not installed (apt-get install chromium): the browser check is skipped")
		return
	}
	admin := "http://" + mustHost(t, r.Topo, "pop-eu").Addr.String() + ":9901/metrics"
	metrics := &http.Client{Transport: &http.Transport{DialContext: r.Net.Dialer("client-eu")}, Timeout: 10 * time.Second}
	h3 := func() int {
		resp, err := metrics.Get(admin)
		if err != nil {
			t.Fatalf("pop-eu metrics: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		n := 0
		if m := h3Requests.FindSubmatch(b); m != nil {
			n, _ = strconv.Atoi(string(m[1]))
		}
		return n
	}
	before := h3()
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--enable-quic", "--origin-to-force-quic-on=www.cdn.lab:443",
		"--ignore-certificate-errors-spki-list=" + pin,
		// The page's script fills its table once everything has loaded.
		"--virtual-time-budget=5000", "--window-size=1300,1400"}
	out, err := r.Net.Exec(cctx, "client-eu", chromium, append(args, "--user-data-dir="+t.TempDir(),
		"--dump-dom", "https://www.cdn.lab/")...).CombinedOutput()
	if err != nil {
		t.Fatalf("chromium in client-eu: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "edgecdn lab origin") {
		t.Errorf("chromium in client-eu got %q, want the lab page", out)
	}
	if after := h3(); after <= before {
		t.Errorf("pop-eu answered %d HTTP/3 200s while Chromium loaded the page, want some", after-before)
	} else {
		t.Logf("chromium in client-eu: pop-eu answered %d requests over HTTP/3", after-before)
	}
	demoPageRows(t, r, string(out))
	shot := filepath.Join(t.TempDir(), "demo-page.png")
	if b, err := r.Net.Exec(cctx, "client-eu", chromium, append(args, "--user-data-dir="+t.TempDir(),
		"--screenshot="+shot, "https://www.cdn.lab/")...).CombinedOutput(); err != nil {
		t.Errorf("chromium screenshot in client-eu: %v\n%s", err, b)
	} else {
		labtest.KeepArtifact(t, shot, "lab-demo-page.png")
	}
}

var (
	demoRow  = regexp.MustCompile(`(?s)<tr data-path="([^"]*)" data-proto="([^"]*)">(.*?)</tr>`)
	demoCell = regexp.MustCompile(`<td[^>]*>([^<]*)</td>`)
)

// demoPageRows checks the demo page's table as Chromium rendered it in
// client-eu: a row for the page, over HTTP/3, and one for each of its
// resources, with a time to first byte. Where pop-eu sends Server-Timing,
// the rows name it and its cache's verdict; where it does not yet, the
// page says so.
func demoPageRows(t *testing.T, r *compose.Runner, dom string) {
	t.Helper()
	rows := map[string][]string{}
	for _, m := range demoRow.FindAllStringSubmatch(dom, -1) {
		var cells []string
		for _, c := range demoCell.FindAllStringSubmatch(m[3], -1) {
			cells = append(cells, c[1])
		}
		rows[m[1]] = cells
	}
	for _, p := range []string{"/", "/static/app.css", "/static/app.js", "/static/img/hero-1600.jpg", "/static/img/tile-eu.png",
		"/static/font/dejavu-sans-bold-latin.woff2", "/clock", "/account/me.json"} {
		row := rows[p]
		if len(row) != 9 || row[1] != "h3" || row[4] == "\u2013" {
			t.Errorf("the demo page's row for %s = %q, want it loaded over h3 with a TTFB", p, row)
		}
	}
	t.Logf("the demo page's row for itself: %q", rows["/"])
	probe := labClient(t, r, "client-eu", mustHost(t, r.Topo, "pop-eu").Addr.String(), "h2", nil)
	probe.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true // only the header matters here
	resp, err := probe.Get("https://www.cdn.lab/static/app.css")
	if err != nil {
		t.Fatalf("pop-eu: %v", err)
	}
	resp.Body.Close()
	if resp.Header.Get("Server-Timing") == "" {
		if !strings.Contains(dom, "No response carried Server-Timing") {
			t.Errorf("pop-eu sends no Server-Timing and the demo page does not say so")
		}
		t.Log("pop-eu sends no Server-Timing yet: the page's PoP and cache columns are dashes")
		return
	}
	if row := rows["/static/app.css"]; len(row) != 9 || row[2] != "pop-eu" || row[3] == "\u2013" {
		t.Errorf("pop-eu sends Server-Timing, but the demo page's row for /static/app.css = %q, want pop-eu and a cache verdict", row)
	}
}

var promTarget = regexp.MustCompile(`"(\d+\.\d+\.\d+\.\d+:\d+)"`)

// prometheusTargetsServe scrapes every target of compose/prometheus.yml
// from client-na, as a Prometheus on the lab network would: each answers
// /metrics in Prometheus's text format.
func prometheusTargetsServe(t *testing.T, r *compose.Runner, root string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "compose", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{DialContext: r.Net.Dialer("client-na")}, Timeout: 10 * time.Second}
	targets := promTarget.FindAllStringSubmatch(string(b), -1)
	for _, m := range targets {
		resp, err := c.Get("http://" + m[1] + "/metrics")
		if err != nil {
			t.Errorf("scrape %s: %v", m[1], err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte("# TYPE ")) {
			t.Errorf("scrape %s/metrics = %d, %d bytes, want Prometheus metrics", m[1], resp.StatusCode, len(body))
		}
	}
	t.Logf("prometheus.yml: %d targets scraped from client-na", len(targets))
}
