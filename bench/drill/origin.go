package drill

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// originDown stops the origin while clients in every region request
// cached and uncached objects: cached ones must keep coming (stale-if-error)
// with zero 5xx, uncached ones must fail fast with 502/504 and nothing may
// hang; after the origin returns, fresh content must flow again.
func originDown(ctx context.Context, lab Lab, load time.Duration) ([]Check, error) {
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	stamp := time.Now().UnixNano()
	cached := func(i int) string {
		return fmt.Sprintf("%s/gen/1k?cc=public,max-age=1,stale-if-error=600&drill=%d-c%d", lab.CDNURL, stamp, i)
	}
	uncached := func(i int) string { return fmt.Sprintf("%s/gen/1k?cc=no-store&drill=%d-u%d", lab.CDNURL, stamp, i) }
	clients := map[string]*http.Client{}
	var prefetched []string
	for _, c := range lab.Clients {
		hc := labClient(c, lab.Resolver, lab.LabConfig, 20*time.Second)
		clients[c.Name] = hc
		for i := range 3 { // fill each region's PoP
			o := fetch(ctx, hc, cached(i))
			if o.err != nil || o.status != 200 {
				return nil, fmt.Errorf("%s: prefetch: %v %d", c.Name, o.err, o.status)
			}
			prefetched = append(prefetched, fmt.Sprintf("%s c%d via %s (%s)", c.Name, i, o.pop, o.cache))
		}
	}
	if err := lab.StopService("origin"); err != nil {
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
	restartErr := lab.StartService(ctx, "origin")
	// After the origin is back, a new object must flow within the PoPs'
	// breaker pause (a few seconds).
	recovered := time.Duration(-1)
	start := time.Now()
	hc := clients[lab.Clients[0].Name]
	for time.Since(start) < 30*time.Second && restartErr == nil {
		if o := fetch(ctx, hc, fmt.Sprintf("%s/gen/1k?drill=%d-after-%d", lab.CDNURL, stamp, time.Now().UnixNano())); o.err == nil && o.status == 200 {
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
	checks := []Check{
		{"origin-down", "cached objects keep being served (stale-if-error), zero 5xx", cachedMeasure(cachedStatus, failures, prefetched), fives == 0 && cachedStatus["200"] > 0, false},
		{"origin-down", "uncached objects get 502/504", fmt.Sprintf("uncached statuses %v", uncachedStatus), uncachedOK && len(uncachedStatus) > 0, false},
		{"origin-down", "no request hangs (longest < 10 s)", fmt.Sprintf("longest response %v", longest.Round(time.Millisecond)), longest < 10*time.Second, false},
		{"origin-down", "fresh content flows after the origin returns", fmt.Sprintf("restart %v, first fresh 200 after %v", restartErr, recovered.Round(time.Millisecond)), restartErr == nil && recovered >= 0, false},
	}
	return checks, nil
}

// originSlow makes the origin answer one cold object after 5 s while
// many clients ask for it at once: the origin must see exactly one request
// (coalescing), and hits on other objects must not wait for it.
func originSlow(ctx context.Context, lab Lab, t Target, clients int) ([]Check, error) {
	client, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	size := int(time.Now().UnixNano()%100000) + 300000
	slowPath := fmt.Sprintf("/gen/%d", size)
	slowURL := lab.CDNURL + slowPath + "?delay=5s"
	hitURL := fmt.Sprintf("%s/gen/%d", lab.CDNURL, size+1)
	// Pinned to the region's PoP: coalescing is one PoP's doing, and
	// GeoDNS may send a share of answers to other PoPs to measure them
	// (latency steering's exploration), whose own fetches would count.
	hc := popClient(client, t.PoPAddr, &tls.Config{RootCAs: lab.RootCAs, ServerName: hostOf(lab.CDNURL)}, true)
	hc.Timeout = 30 * time.Second
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
				slowBad["error: "+bench.ErrorKind(o.err)]++
			} else {
				slowBad[fmt.Sprint(o.status)]++
			}
		})
	}
	time.Sleep(time.Second) // the slow fetch is in flight
	during := measureHits(10)
	wg.Wait()
	logData, err := os.ReadFile(lab.ServiceLog("origin"))
	if err != nil {
		return nil, err
	}
	originRequests := strings.Count(string(logData), "path="+slowPath+" ")
	return []Check{
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

// originCount counts the origin's log lines that mention marker, or is -1
// if the log cannot be read (which fails a check that wants a count).
func originCount(ctl Control, marker string) int {
	b, err := os.ReadFile(ctl.ServiceLog("origin"))
	if err != nil {
		return -1
	}
	return strings.Count(string(b), marker)
}
