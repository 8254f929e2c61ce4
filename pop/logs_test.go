package pop_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// logBuffer collects a PoP's access log.
type logBuffer struct{ poll.Buffer }

// lines waits for at least n lines and returns them all, decoded.
func (l *logBuffer) lines(t *testing.T, n int) []map[string]any {
	t.Helper()
	var text string
	poll.Until(t, fmt.Sprintf("%d access log lines", n), func() bool {
		text = l.String()
		return strings.Count(text, "\n") >= n
	})
	return decodeLines(t, text)
}

func decodeLines(t *testing.T, text string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// getLocal is get that also returns the client's address of the
// connection the request went on (HTTP/1.1 and HTTP/2).
func getLocal(t *testing.T, c *http.Client, url string) (*http.Response, []byte, string) {
	t.Helper()
	var local string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { local = info.Conn.LocalAddr().String() },
	})
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, body, local
}

// h3LocalClient is an HTTP/3 client on a UDP socket of its own, whose
// address it returns.
func h3LocalClient(t *testing.T, ca *certs.LabCA) (*http.Client, string) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.RootPool()},
		Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			return quic.DialEarly(ctx, udp, ua, tc, qc)
		}}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	return &http.Client{Transport: tr}, udp.LocalAddr().String()
}

// TestAccessLogLines: a miss and a hit over each of HTTP/1.1, HTTP/2 and
// HTTP/3, the hits answered by the fast paths, each give one line with
// every field right.
func TestAccessLogLines(t *testing.T) {
	ca := certstest.LabCA(t)
	originURL := poptest.StartGenOrigin(t)
	var log logBuffer
	cfg := poptest.Config(ca, originURL)
	cfg.AccessLog, cfg.AccessLogWriter = "-", &log
	p := poptest.StartPoP(t, cfg)
	host := "localhost:" + port(p.Addr())
	originHost := strings.TrimPrefix(originURL, "http://")
	start := time.Now()
	ids := map[string]bool{}
	n := 0
	for _, proto := range []string{"h1", "h2", "h3"} {
		path := "/gen/1k?p=" + proto
		for _, cacheResult := range []string{"miss", "hit"} {
			var resp *http.Response
			var body []byte
			var local string
			fastBefore := p.FastHits()
			if proto == "h3" {
				var c *http.Client
				c, local = h3LocalClient(t, ca)
				resp, body = get(t, c, "https://"+host+path)
			} else {
				resp, body, local = getLocal(t, clients(t, ca)[proto], "https://"+host+path)
			}
			p.WaitCache()
			n++
			lines := log.lines(t, n)
			if len(lines) != n {
				t.Fatalf("%d lines after %d requests", len(lines), n)
			}
			line := lines[n-1]
			what := proto + " " + cacheResult
			fast := p.FastHits()
			if fastHits := fast.HTTP1 + fast.HTTP2 + fast.HTTP3 - fastBefore.HTTP1 - fastBefore.HTTP2 - fastBefore.HTTP3; fastHits != map[string]int64{"miss": 0, "hit": 1}[cacheResult] {
				t.Errorf("%s: %d fast hits; the test means the hit for the fast path", what, fastHits)
			}
			want := map[string]any{
				"pop": poptest.Name, "client": local, "proto": proto, "tls": "1.3", "resumed": false, "early_data": false,
				"method": "GET", "host": host, "path": path, "status": 200.0, "bytes": float64(len(body)),
				"cache": cacheResult, "cache_status": resp.Header.Get("Cache-Status"),
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s: %s = %#v, want %#v", what, k, line[k], v)
				}
			}
			if tm, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"])); err != nil || tm.Before(start.Add(-time.Millisecond)) || tm.After(time.Now()) {
				t.Errorf("%s: time = %v, want the request's time (%v)", what, line["time"], err)
			}
			ttfb, _ := line["ttfb_ms"].(float64)
			origin, hasOrigin := line["origin_ms"].(float64)
			if cacheResult == "miss" {
				if !hasOrigin || origin <= 0 || ttfb < origin || line["upstream"] != originHost {
					t.Errorf("%s: ttfb_ms %v, origin_ms %v, upstream %v; want the origin's time within the ttfb, from %s", what, line["ttfb_ms"], line["origin_ms"], line["upstream"], originHost)
				}
			} else if _, hasUp := line["upstream"]; hasOrigin || hasUp || ttfb < 0 {
				t.Errorf("%s: ttfb_ms %v, origin_ms %v, upstream %v; want a ttfb and no origin", what, line["ttfb_ms"], line["origin_ms"], line["upstream"])
			}
			id, _ := line["id"].(string)
			if id == "" || ids[id] {
				t.Errorf("%s: id %q, want a new one", what, id)
			}
			ids[id] = true
			if len(line) != 16+map[string]int{"miss": 2, "hit": 0}[cacheResult] {
				t.Errorf("%s: %d fields: %v", what, len(line), line)
			}
		}
	}
}

// blockedWriter is a disk that stopped answering: writes block until
// the test ends.
type blockedWriter struct{ release chan struct{} }

func (w *blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// metricNumber is metricValue as a number, failing the test if the
// series is missing.
func metricNumber(t *testing.T, p *pop.Server, name string) float64 {
	t.Helper()
	v := metricValue(t, p.AdminAddr().String(), name)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("metric %s: %q", name, v)
	}
	return f
}

// TestAccessLogStuckDisk: with the access log's file stuck, hits are
// served as ever, on the fast path, and the lines that do not fit the
// buffer are dropped and counted.
func TestAccessLogStuckDisk(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	w := &blockedWriter{release: make(chan struct{})}
	cfg.AccessLog, cfg.AccessLogWriter, cfg.AccessLogBufferBytes = "-", w, 16<<10
	p := poptest.StartPoP(t, cfg)
	t.Cleanup(func() { close(w.release) }) // before the PoP's cleanup closes the log
	get(t, clients(t, ca)["h1"], "https://localhost:"+port(p.Addr())+"/gen/1k")
	p.WaitCache()
	c := dialH1(t, p, ca) // 10 s deadline: a request held up by the log fails the test
	const n = 300         // about 100 KiB of lines
	for range n {
		c.send(t, "GET /gen/1k HTTP/1.1\r\nHost: localhost\r\n\r\n")
		if resp, body := c.read(t, "GET"); resp.StatusCode != 200 || len(body) != 1024 {
			t.Fatalf("hit = %d with %d bytes", resp.StatusCode, len(body))
		}
	}
	if got := p.FastHits().HTTP1; got != n {
		t.Errorf("fast path served %d of %d hits", got, n)
	}
	poll.Until(t, "pop_access_log_dropped_total to count lines", func() bool {
		return metricNumber(t, p, "pop_access_log_dropped_total") > 0
	})
}

// follower is a client of GET /logs on a PoP's admin listener.
type follower struct {
	lines chan map[string]any
	body  io.ReadCloser
	n     int64 // lines counted by TestLogsSample
}

// follow starts a follower with query and waits until the PoP counts it.
func follow(t *testing.T, p *pop.Server, query string) *follower {
	t.Helper()
	before := metricNumber(t, p, "pop_logs_followers")
	req, err := http.NewRequest("GET", "http://"+p.AdminAddr().String()+"/logs?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /logs?%s = %d %q", query, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	f := &follower{lines: make(chan map[string]any, 1000), body: resp.Body}
	go func() {
		defer close(f.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				f.lines <- m
			}
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	poll.Until(t, "the follower to be counted", func() bool { return metricNumber(t, p, "pop_logs_followers") > before })
	return f
}

// next returns the follower's next line, failing the test if none comes.
func (f *follower) next(t *testing.T, what string) map[string]any {
	t.Helper()
	select {
	case m, ok := <-f.lines:
		if !ok {
			t.Fatalf("%s: the stream ended", what)
		}
		return m
	case <-time.After(poll.Timeout):
		t.Fatalf("%s: no line within %v", what, poll.Timeout)
	}
	return nil
}

// none checks that the follower has no line waiting; its lines up to
// a later marker request must come first (see TestLogsFollowers).
func (f *follower) none(t *testing.T, what string) {
	t.Helper()
	select {
	case m := <-f.lines:
		t.Errorf("%s: unexpected line %v", what, m)
	default:
	}
}

// TestLogsFollowers: followers of GET /logs, with no access log file,
// each get the lines their filter admits (status, cache, path, client;
// sampling below), several at once, over every protocol.
func TestLogsFollowers(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	base := "https://localhost:" + port(p.Addr())
	hits := follow(t, p, "cache=hit&path=/gen/1k")
	errs := follow(t, p, "status=4xx")
	notLoopback := follow(t, p, "client=10.0.0.0/8")
	loopback := follow(t, p, "client=127.0.0.0/8&path=/gen/")
	all := follow(t, p, "")

	type request struct {
		proto, path string
		status      int
	}
	requests := []request{
		{"h1", "/gen/1k", 200},    // miss
		{"h1", "/gen/1k", 200},    // hit (fast path)
		{"h2", "/gen/1k", 200},    // hit (fast path)
		{"h3", "/gen/1k", 200},    // hit (fast path)
		{"h2", "/gen/2k", 200},    // miss
		{"h3", "/_origin/x", 404}, // denied at the edge
	}
	// A request's line is logged after its response has been written,
	// so the next request could overtake it: each request waits for its
	// own line at the unfiltered follower, which fixes the order every
	// follower sees.
	for i, r := range requests {
		resp, _ := get(t, clients(t, ca)[r.proto], base+r.path)
		p.WaitCache()
		if resp.StatusCode != r.status {
			t.Fatalf("%s GET %s = %d, want %d", r.proto, r.path, resp.StatusCode, r.status)
		}
		m := all.next(t, "unfiltered follower")
		if m["proto"] != r.proto || m["path"] != r.path || m["status"] != float64(r.status) {
			t.Errorf("unfiltered follower line %d: %s %v %v, want %s %s %d", i, m["proto"], m["path"], m["status"], r.proto, r.path, r.status)
		}
	}
	for _, proto := range []string{"h1", "h2", "h3"} {
		if m := hits.next(t, "cache=hit&path=/gen/1k"); m["proto"] != proto || m["cache"] != "hit" || m["path"] != "/gen/1k" {
			t.Errorf("cache=hit&path=/gen/1k: %v, want the %s hit", m, proto)
		}
	}
	if m := errs.next(t, "status=4xx"); m["status"] != 404.0 || m["path"] != "/_origin/x" {
		t.Errorf("status=4xx: %v, want the 404", m)
	}
	for range 5 {
		if m := loopback.next(t, "client=127.0.0.0/8&path=/gen/"); !strings.HasPrefix(m["path"].(string), "/gen/") {
			t.Errorf("client=127.0.0.0/8&path=/gen/: %v", m)
		}
	}
	// A marker every follower but notLoopback admits: once it has
	// arrived, nothing else is on its way.
	get(t, clients(t, ca)["h1"], base+"/gen/1k")
	hits.next(t, "marker")
	all.next(t, "marker")
	loopback.next(t, "marker")
	hits.none(t, "cache=hit&path=/gen/1k")
	errs.none(t, "status=4xx")
	loopback.none(t, "client=127.0.0.0/8&path=/gen/")
	all.none(t, "unfiltered follower")
	notLoopback.none(t, "client=10.0.0.0/8")
}

// TestLogsSample: sample=0.5 passes about half the lines (the bounds are
// 7 standard deviations wide).
func TestLogsSample(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	half := follow(t, p, "sample=0.5")
	all := follow(t, p, "")
	get(t, clients(t, ca)["h1"], "https://localhost:"+port(p.Addr())+"/gen/1k")
	p.WaitCache()
	c := dialH1(t, p, ca)
	const n = 200
	for range n {
		c.send(t, "GET /gen/1k HTTP/1.1\r\nHost: localhost\r\n\r\n")
		c.read(t, "GET")
	}
	for i := range n + 1 {
		all.next(t, fmt.Sprintf("line %d", i))
	}
	// Every line has reached the unfiltered follower, so the sampled
	// one's are queued too (one encoder serves both): count them until
	// no more come.
	got := poll.Steady(t, "the sampled follower's lines", 200*time.Millisecond, 0, func() int64 {
		for {
			select {
			case <-half.lines:
				half.n++
			default:
				return half.n
			}
		}
	})
	if got < 100-35 || got > 100+35 {
		t.Errorf("sample=0.5 passed %d of %d lines, want 65 to 135", got, n+1)
	}
}

// TestLogsSlowFollowerDropped: a follower that stops reading is dropped
// (its stream ends, pop_logs_followers_dropped_total counts it) while
// requests are served as ever and another follower gets every line.
func TestLogsSlowFollowerDropped(t *testing.T) {
	ca := certstest.LabCA(t)
	cfg := poptest.Config(ca, poptest.StartGenOrigin(t))
	cfg.AccessLogBufferBytes = 16 << 10
	p := poptest.StartPoP(t, cfg)
	// The slow follower asks, then never reads; its receive buffer is
	// small, so that the PoP's writes to it stall soon.
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	stalled, err := d.Dial("tcp", p.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stalled.Close() })
	fmt.Fprintf(stalled, "GET /logs HTTP/1.1\r\nHost: admin\r\n\r\n")
	poll.Until(t, "the stalled follower to be counted", func() bool { return metricNumber(t, p, "pop_logs_followers") == 1 })
	fast := follow(t, p, "")
	// Long lines (a long query), so that fewer requests fill the buffers.
	target := "/gen/1k?pad=" + strings.Repeat("x", 1800)
	get(t, clients(t, ca)["h1"], "https://localhost:"+port(p.Addr())+target)
	p.WaitCache()
	fast.next(t, "the miss")
	c := dialH1(t, p, ca)
	sent := 0
	for metricNumber(t, p, "pop_logs_followers_dropped_total") == 0 {
		if sent >= 20000 {
			t.Fatalf("the stalled follower was not dropped after %d lines", sent)
		}
		// Rounds of 5 lines (11 KiB), which the reading follower takes
		// before the next round: only the stalled one falls behind.
		for range 5 {
			c.send(t, "GET "+target+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
			c.read(t, "GET")
			c.c.SetDeadline(time.Now().Add(10 * time.Second)) // each request gets its own 10 s
			sent++
		}
		for range 5 {
			fast.next(t, "a hit")
		}
	}
	if got := metricNumber(t, p, "pop_logs_followers"); got != 1 {
		t.Errorf("pop_logs_followers = %v after the drop, want 1 (the reading one)", got)
	}
	// The stalled follower's stream ends: what was sent, then EOF.
	stalled.SetReadDeadline(time.Now().Add(poll.Timeout))
	if _, err := io.Copy(io.Discard, stalled); err != nil {
		t.Errorf("reading the dropped follower's stream: %v, want it to end", err)
	}
	t.Logf("dropped after %d lines", sent)
}

// TestLogsBadQuery: a bad filter is a 400 that names the parameter.
func TestLogsBadQuery(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	for query, want := range map[string]string{
		"sample=2":        `sample: "2", want a share of lines in (0, 1]`,
		"client=10.0.0/8": `client: "10.0.0/8", want a CIDR prefix`,
		"status=6xx":      `status: "6xx"`,
		"cache=fresh":     `cache: "fresh", want hit, stale, revalidated, miss or pass`,
		"path=gen":        `path: "gen", want a path prefix starting with /`,
		"colour=blue":     `unknown parameter "colour"`,
	} {
		resp, err := http.Get("http://" + p.AdminAddr().String() + "/logs?" + query)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), want) {
			t.Errorf("GET /logs?%s = %d %q, want 400 saying %q", query, resp.StatusCode, body, want)
		}
	}
}
