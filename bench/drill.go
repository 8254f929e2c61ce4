package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// LabControl stops and starts the lab's services for drills.
type LabControl interface {
	StopService(name string) error
	StartService(ctx context.Context, name string) error
	// WaitGeoDNS returns when GeoDNS sees every PoP healthy.
	WaitGeoDNS(ctx context.Context) error
	// ServiceLog is the path of a service's log (the origin logs each request).
	ServiceLog(name string) string
	// StartServiceArgs starts a stopped service with extra flags appended
	// to its command line (later flags win).
	StartServiceArgs(ctx context.Context, name string, extra ...string) error
	// PID is a running service's process id, or 0.
	PID(name string) int
}

// DrillCheck is one expectation of a drill and what was measured.
type DrillCheck struct {
	Drill       string `json:"drill"`
	Expectation string `json:"expectation"`
	Measured    string `json:"measured"`
	Pass        bool   `json:"pass"`
	// Info marks a row that reports without expecting anything.
	Info bool `json:"info,omitempty"`
}

// WriteDrillTable prints drill checks as a markdown table.
func WriteDrillTable(w io.Writer, checks []DrillCheck) {
	fmt.Fprintln(w, "| drill | expectation | measured | result |\n|---|---|---|---|")
	for _, c := range checks {
		res := "PASS"
		switch {
		case c.Info:
			res = "info"
		case !c.Pass:
			res = "FAIL"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", c.Drill, c.Expectation, c.Measured, res)
	}
}

// labClient is an HTTP/2 client that resolves and dials from inside a
// client's namespace.
func labClient(c LabClient, resolver string, cfg LabConfig, timeout time.Duration) *http.Client {
	res := newResolver(resolver, c.Dial)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: cfg.RootCAs},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true, // every request re-resolves: a moved name is followed
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := res.LookupHost(ctx, host)
			if err != nil {
				return nil, err
			}
			return c.Dial(ctx, network, net.JoinHostPort(ips[0], port))
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

type outcome struct {
	status int
	err    error
	took   time.Duration
	pop    string
	cache  string
}

func fetch(ctx context.Context, c *http.Client, url string) outcome {
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return outcome{err: err, took: time.Since(start)}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return outcome{status: resp.StatusCode, took: time.Since(start), pop: resp.Header.Get("X-Served-By"), cache: resp.Header.Get("Cache-Status")}
}

// DrillOriginDown stops the origin while clients in every region request
// cached and uncached objects: cached ones must keep coming (stale-if-error)
// with zero 5xx, uncached ones must fail fast with 502/504 and nothing may
// hang; after the origin returns, fresh content must flow again.
func DrillOriginDown(ctx context.Context, cfg LabConfig, ctl LabControl, load time.Duration) ([]DrillCheck, error) {
	if err := ctl.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	stamp := time.Now().UnixNano()
	cached := func(i int) string {
		return fmt.Sprintf("%s/gen/1k?cc=public,max-age=1,stale-if-error=600&drill=%d-c%d", cfg.CDNURL, stamp, i)
	}
	uncached := func(i int) string { return fmt.Sprintf("%s/gen/1k?cc=no-store&drill=%d-u%d", cfg.CDNURL, stamp, i) }
	clients := map[string]*http.Client{}
	var prefetched []string
	for _, c := range cfg.Clients {
		hc := labClient(c, cfg.Resolver, cfg, 20*time.Second)
		clients[c.Name] = hc
		for i := range 3 { // fill each region's PoP
			o := fetch(ctx, hc, cached(i))
			if o.err != nil || o.status != 200 {
				return nil, fmt.Errorf("%s: prefetch: %v %d", c.Name, o.err, o.status)
			}
			prefetched = append(prefetched, fmt.Sprintf("%s c%d via %s (%s)", c.Name, i, o.pop, o.cache))
		}
	}
	if err := ctl.StopService("origin"); err != nil {
		return nil, err
	}
	var mu sync.Mutex // guards the counters
	cachedStatus, uncachedStatus := map[string]int{}, map[string]int{}
	var longest time.Duration
	var failures []string // PoP and Cache-Status of failed cached requests
	var wg sync.WaitGroup
	deadline := time.Now().Add(load)
	for name, hc := range clients {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				for _, kind := range []string{"cached", "uncached"} {
					url := cached(i % 3)
					if kind == "uncached" {
						url = uncached(i)
					}
					o := fetch(ctx, hc, url)
					key := fmt.Sprint(o.status)
					if o.err != nil {
						key = "error"
					}
					mu.Lock()
					if kind == "cached" && o.status >= 500 {
						failures = append(failures, fmt.Sprintf("%s c%d at %s", name, i%3, o.pop))
					}
					if kind == "cached" {
						cachedStatus[key]++
					} else {
						uncachedStatus[key]++
					}
					longest = max(longest, o.took)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	restartErr := ctl.StartService(ctx, "origin")
	// After the origin is back, a new object must flow within the PoPs'
	// breaker pause (a few seconds).
	recovered := time.Duration(-1)
	start := time.Now()
	hc := clients[cfg.Clients[0].Name]
	for time.Since(start) < 30*time.Second && restartErr == nil {
		if o := fetch(ctx, hc, fmt.Sprintf("%s/gen/1k?drill=%d-after-%d", cfg.CDNURL, stamp, time.Now().UnixNano())); o.err == nil && o.status == 200 {
			recovered = time.Since(start)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	fives := 0
	for k, v := range cachedStatus {
		if strings.HasPrefix(k, "5") || k == "error" {
			fives += v
		}
	}
	uncachedOK := uncachedStatus["200"] == 0 && uncachedStatus["error"] == 0
	for k := range uncachedStatus {
		if k != "502" && k != "504" {
			uncachedOK = false
		}
	}
	checks := []DrillCheck{
		{"origin-down", "cached objects keep being served (stale-if-error), zero 5xx", cachedMeasure(cachedStatus, failures, prefetched), fives == 0 && cachedStatus["200"] > 0, false},
		{"origin-down", "uncached objects get 502/504", fmt.Sprintf("uncached statuses %v", uncachedStatus), uncachedOK && len(uncachedStatus) > 0, false},
		{"origin-down", "no request hangs (longest < 10 s)", fmt.Sprintf("longest response %v", longest.Round(time.Millisecond)), longest < 10*time.Second, false},
		{"origin-down", "fresh content flows after the origin returns", fmt.Sprintf("restart %v, first fresh 200 after %v", restartErr, recovered.Round(time.Millisecond)), restartErr == nil && recovered >= 0, false},
	}
	return checks, nil
}

// DrillPoPDown stops pop-eu: GeoDNS must stop handing it to client-eu
// within its health window, client-eu must be served by another PoP, and
// when pop-eu returns traffic must go back to it.
func DrillPoPDown(ctx context.Context, cfg LabConfig, ctl LabControl, popName, popAddr, clientName string) ([]DrillCheck, error) {
	var client LabClient
	for _, c := range cfg.Clients {
		if c.Name == clientName {
			client = c
		}
	}
	if client.Dial == nil {
		return nil, fmt.Errorf("no client %s", clientName)
	}
	res := newResolver(cfg.Resolver, client.Dial)
	answer := func() string {
		ips, err := res.LookupHost(ctx, strings.TrimPrefix(cfg.CDNURL, "https://"))
		if err != nil || len(ips) == 0 {
			return ""
		}
		return ips[0]
	}
	hc := labClient(client, cfg.Resolver, cfg, 20*time.Second)
	if err := ctl.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	before := answer()
	// SIGTERM: the PoP reports not ready at once and drains; GeoDNS should
	// drop it within its health window (interval x fall), timed from here.
	stopped := time.Now()
	stopErr := make(chan error, 1)
	go func() { stopErr <- ctl.StopService(popName) }()
	moved := time.Duration(-1)
	for time.Since(stopped) < 30*time.Second {
		if a := answer(); a != "" && a != popAddr {
			moved = time.Since(stopped)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-stopErr; err != nil {
		return nil, err
	}
	during := fetch(ctx, hc, cfg.CDNURL+"/gen/1k")
	restartErr := ctl.StartService(ctx, popName)
	restarted := time.Now()
	back := time.Duration(-1)
	for time.Since(restarted) < 30*time.Second && restartErr == nil {
		if answer() == popAddr {
			back = time.Since(restarted)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := fetch(ctx, hc, cfg.CDNURL+"/gen/1k")
	return []DrillCheck{
		{"pop-down", "before: " + clientName + " is sent to " + popName, "answer " + before, before == popAddr, false},
		{"pop-down", "geodns stops handing out " + popName + " within its health window", fmt.Sprintf("after %v", moved.Round(time.Millisecond)), moved >= 0 && moved < 10*time.Second, false},
		{"pop-down", clientName + " is served by another PoP", fmt.Sprintf("status %d from %q (%v)", during.status, during.pop, during.err), during.err == nil && during.status == 200 && during.pop != popName, false},
		{"pop-down", "traffic goes back when " + popName + " returns", fmt.Sprintf("answer back after %v; then status %d from %q", back.Round(time.Millisecond), after.status, after.pop), back >= 0 && after.status == 200 && after.pop == popName, false},
	}, nil
}

// clientByName finds a lab client.
func clientByName(cfg LabConfig, name string) (LabClient, error) {
	for _, c := range cfg.Clients {
		if c.Name == name {
			return c, nil
		}
	}
	return LabClient{}, fmt.Errorf("no client %s", name)
}

// DrillPoPDrain sends SIGTERM to a PoP while a client of its region keeps
// requesting: not one request may fail (the PoP reports not ready first,
// GeoDNS moves the client, in-flight requests finish), and readyz must go
// false before the PoP stops serving.
func DrillPoPDrain(ctx context.Context, cfg LabConfig, ctl LabControl, popName, popAddr, clientName string) ([]DrillCheck, error) {
	client, err := clientByName(cfg, clientName)
	if err != nil {
		return nil, err
	}
	if err := ctl.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	hc := labClient(client, cfg.Resolver, cfg, 20*time.Second)
	admin := labClient(client, cfg.Resolver, cfg, time.Second)
	var mu sync.Mutex // guards the counts
	statuses := map[string]int{}
	var pops []string
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				o := fetch(ctx, hc, cfg.CDNURL+"/gen/1k")
				key := fmt.Sprint(o.status)
				if o.err != nil {
					key = "error: " + errorKind(o.err)
				}
				mu.Lock()
				statuses[key]++
				if len(pops) == 0 || pops[len(pops)-1] != o.pop {
					pops = append(pops, o.pop)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second) // load before the drain
	stopped := time.Now()
	stopErr := make(chan error, 1)
	go func() { stopErr <- ctl.StopService(popName) }()
	notReady := time.Duration(-1)
	for time.Since(stopped) < 10*time.Second {
		o := fetch(ctx, admin, "http://"+popAddr+":9901/readyz")
		if o.err == nil && o.status == http.StatusServiceUnavailable {
			notReady = time.Since(stopped)
			break
		}
		if o.err != nil {
			break // already gone: readyz never said not ready
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-stopErr; err != nil {
		close(stopLoad)
		wg.Wait()
		return nil, err
	}
	gone := time.Since(stopped)
	time.Sleep(time.Second) // load after the drain
	close(stopLoad)
	wg.Wait()
	restartErr := ctl.StartService(ctx, popName)
	failed := 0
	for k, v := range statuses {
		if k != "200" {
			failed += v
		}
	}
	return []DrillCheck{
		{"pop-drain", "zero failed requests while " + popName + " drains", fmt.Sprintf("statuses %v; served by %v", statuses, pops), failed == 0 && statuses["200"] > 0, false},
		{"pop-drain", "readyz goes false before the PoP stops", fmt.Sprintf("readyz 503 after %v, process gone after %v", notReady.Round(time.Millisecond), gone.Round(time.Millisecond)), notReady >= 0 && notReady < gone, false},
		{"pop-drain", popName + " comes back", fmt.Sprintf("restart: %v", restartErr), restartErr == nil, false},
	}, nil
}

// DrillColdRestart restarts a PoP with an empty cache while clients keep
// asking for a few objects: the origin must see at most one request per
// object per PoP process (coalescing), not one per client.
func DrillColdRestart(ctx context.Context, cfg LabConfig, ctl LabControl, popName, popAddr, clientName string) ([]DrillCheck, error) {
	client, err := clientByName(cfg, clientName)
	if err != nil {
		return nil, err
	}
	if err := ctl.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	hc := labClient(client, cfg.Resolver, cfg, 20*time.Second)
	base := int(time.Now().UnixNano()%100000) + 100000 // object sizes, unique per run
	paths := make([]string, 5)
	for i := range paths {
		paths[i] = fmt.Sprintf("/gen/%d", base+i)
	}
	var mu sync.Mutex // guards okCount, bad
	okCount, bad := 0, map[string]int{}
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 20
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				o := fetch(ctx, hc, cfg.CDNURL+paths[i%len(paths)])
				mu.Lock()
				if o.err == nil && o.status == 200 {
					okCount++
				} else if o.err != nil {
					bad["error: "+errorKind(o.err)]++
				} else {
					bad[fmt.Sprint(o.status)]++
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	stopErr := ctl.StopService(popName)
	startErr := ctl.StartService(ctx, popName)
	time.Sleep(2 * time.Second) // load on the restarted, empty PoP
	close(stopLoad)
	wg.Wait()
	if stopErr != nil || startErr != nil {
		return nil, fmt.Errorf("restart %s: %v %v", popName, stopErr, startErr)
	}
	// Count the origin's requests per object and per PoP address.
	logData, err := os.ReadFile(ctl.ServiceLog("origin"))
	if err != nil {
		return nil, err
	}
	perPoP := map[string]int{}
	worst := 0
	for _, line := range strings.Split(string(logData), "\n") {
		for _, p := range paths {
			if strings.Contains(line, "path="+p+" ") {
				remote := ""
				for _, f := range strings.Fields(line) {
					if r, ok := strings.CutPrefix(f, "remote="); ok {
						remote, _, _ = strings.Cut(r, ":")
					}
				}
				k := p + "@" + remote
				perPoP[k]++
				worst = max(worst, perPoP[k])
			}
		}
	}
	// pop-na's first process fetched each object once and its restarted
	// process once more; every other PoP (reached while it was down) once.
	ok := worst <= 2
	for k, v := range perPoP {
		if !strings.HasSuffix(k, "@"+popAddr) && v > 1 {
			ok = false
		}
	}
	return []DrillCheck{
		{"cold-restart", fmt.Sprintf("origin sees at most one request per object per PoP process (%d clients)", workers),
			fmt.Sprintf("origin requests per object@PoP %v; client 200s %d, other %v", perPoP, okCount, bad), ok && len(perPoP) > 0, false},
	}, nil
}

// DrillOriginSlow makes the origin answer one cold object after 5 s while
// many clients ask for it at once: the origin must see exactly one request
// (coalescing), and hits on other objects must not wait for it.
func DrillOriginSlow(ctx context.Context, cfg LabConfig, ctl LabControl, clientName string, clients int) ([]DrillCheck, error) {
	client, err := clientByName(cfg, clientName)
	if err != nil {
		return nil, err
	}
	if err := ctl.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	size := int(time.Now().UnixNano()%100000) + 300000
	slowPath := fmt.Sprintf("/gen/%d", size)
	slowURL := cfg.CDNURL + slowPath + "?delay=5s"
	hitURL := fmt.Sprintf("%s/gen/%d", cfg.CDNURL, size+1)
	hc := labClient(client, cfg.Resolver, cfg, 30*time.Second)
	if o := fetch(ctx, hc, hitURL); o.err != nil || o.status != 200 {
		return nil, fmt.Errorf("prefetch: %v %d", o.err, o.status)
	}
	measureHits := func(n int) time.Duration {
		var worst time.Duration
		for range n {
			if o := fetch(ctx, hc, hitURL); o.err == nil && o.status == 200 {
				worst = max(worst, o.took)
			}
		}
		return worst
	}
	before := measureHits(10)
	var mu sync.Mutex // guards slowOK, slowBad
	slowOK, slowBad := 0, map[string]int{}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			o := fetch(ctx, hc, slowURL)
			mu.Lock()
			defer mu.Unlock()
			if o.err == nil && o.status == 200 {
				slowOK++
			} else if o.err != nil {
				slowBad["error: "+errorKind(o.err)]++
			} else {
				slowBad[fmt.Sprint(o.status)]++
			}
		})
	}
	time.Sleep(time.Second) // the slow fetch is in flight
	during := measureHits(10)
	wg.Wait()
	logData, err := os.ReadFile(ctl.ServiceLog("origin"))
	if err != nil {
		return nil, err
	}
	originRequests := strings.Count(string(logData), "path="+slowPath+" ")
	return []DrillCheck{
		{"origin-slow", fmt.Sprintf("%d concurrent clients for a cold object the origin answers in 5 s: exactly one origin request", clients),
			fmt.Sprintf("origin requests %d; clients served %d, other %v", originRequests, slowOK, slowBad), originRequests == 1 && slowOK == clients, false},
		{"origin-slow", "hits on other objects do not wait for the slow origin (worst hit under 1 s)",
			fmt.Sprintf("worst hit before %v, during %v", before.Round(time.Millisecond), during.Round(time.Millisecond)), during > 0 && during < time.Second, false},
	}, nil
}

// cachedMeasure reports the cached objects' statuses; on failure, where
// each failed and where it had been prefetched.
func cachedMeasure(statuses map[string]int, failures, prefetched []string) string {
	m := fmt.Sprintf("cached statuses %v", statuses)
	if len(failures) > 0 {
		m += " failed: " + strings.Join(failures, "; ") + " [prefetched: " + strings.Join(prefetched, ", ") + "]"
	}
	return m
}
