package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// rssKiB is a process's resident memory (VmRSS of /proc/PID/status).
func rssKiB(pid int) (int64, error) { return procStatusKiB(pid, "VmRSS:") }

// procStatusKiB reads one kB field of /proc/PID/status, such as "VmRSS:"
// or "VmHWM:" (the resident high-water mark since the process started).
func procStatusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, strings.TrimSuffix(field, ":"))
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may hold spaces, so look after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// adminClient fetches a PoP's admin endpoints from a client's namespace.
func adminClient(c LabClient) *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: c.Dial, DisableKeepAlives: true}}
}

// popMetrics returns the text of a PoP's admin /metrics.
func popMetrics(ctx context.Context, hc *http.Client, popAddr string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(popAddr, "9901")+"/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	return string(b), err
}

// metricValue finds a sample in Prometheus text: series is the name with
// its labels as exposed, e.g. `pop_rejected_requests_total{reason="overload"}`.
// A missing series is 0.
func metricValue(text, series string) float64 {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// goroutines is a PoP's go_goroutines, or -1 if its admin does not answer.
func goroutines(ctx context.Context, hc *http.Client, popAddr string) int {
	text, err := popMetrics(ctx, hc, popAddr)
	if err != nil || !strings.Contains(text, "go_goroutines ") {
		return -1
	}
	return int(metricValue(text, "go_goroutines"))
}

// popSample is a PoP's goroutines and resident memory at one moment.
type popSample struct {
	goroutines int
	rssKiB     int64
}

func (s popSample) String() string {
	return fmt.Sprintf("%d goroutines, %.1f MiB RSS", s.goroutines, float64(s.rssKiB)/1024)
}

func samplePoP(ctx context.Context, hc *http.Client, popAddr string, pid int) popSample {
	rss, err := rssKiB(pid)
	if err != nil {
		rss = -1
	}
	return popSample{goroutines: goroutines(ctx, hc, popAddr), rssKiB: rss}
}

// settle waits up to limit for a PoP's goroutines to come back to at most
// want, and returns the last sample.
func settle(ctx context.Context, hc *http.Client, popAddr string, pid, want int, limit time.Duration) popSample {
	deadline := time.Now().Add(limit)
	for {
		s := samplePoP(ctx, hc, popAddr, pid)
		if (s.goroutines >= 0 && s.goroutines <= want) || time.Now().After(deadline) || ctx.Err() != nil {
			return s
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// PoPResources reports each PoP's goroutines and resident memory, read
// from its admin /metrics (from the client's namespace) and /proc.
func PoPResources(ctx context.Context, cfg LabConfig, ctl LabControl, clientName string, pops map[string]string) (string, error) {
	client, err := clientByName(cfg, clientName)
	if err != nil {
		return "", err
	}
	hc := adminClient(client)
	var parts []string
	for _, name := range []string{"pop-na", "pop-eu", "pop-ap"} {
		addr, ok := pops[name]
		if !ok {
			continue
		}
		pid := ctl.PID(name)
		if pid == 0 {
			parts = append(parts, name+" not running")
			continue
		}
		parts = append(parts, name+" "+samplePoP(ctx, hc, addr, pid).String())
	}
	return strings.Join(parts, "; "), nil
}

// rcodeName names the DNS response codes a drill expects.
func rcodeName(rcode byte) string {
	switch rcode {
	case 0:
		return DNSNoError
	case 1:
		return DNSFormErr
	case 4:
		return DNSNotImp
	case 5:
		return DNSRefused
	}
	return fmt.Sprintf("rcode %d", rcode)
}

// dnsOutcome sends one packet on a connected UDP socket and classifies
// the reply: no answer, or the reply's rcode.
func dnsOutcome(conn net.Conn, pkt []byte, wait time.Duration) string {
	conn.SetDeadline(time.Now().Add(wait))
	if _, err := conn.Write(pkt); err != nil {
		return "send error"
	}
	buf := make([]byte, 65536)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return DNSNoAnswer
		}
		if n < 12 {
			return "short reply"
		}
		if len(pkt) >= 2 && n >= 2 && buf[0] == pkt[0] && buf[1] == pkt[1] || len(pkt) < 2 {
			return rcodeName(buf[3] & 0x0f)
		}
		// A late reply to an earlier packet: keep reading.
	}
}

// metricSum adds every sample of a metric (all label sets).
func metricSum(text, name string) float64 {
	sum := 0.0
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if i := strings.LastIndexByte(rest, ' '); i >= 0 {
			f, _ := strconv.ParseFloat(strings.TrimSpace(rest[i+1:]), 64)
			sum += f
		}
	}
	return sum
}
