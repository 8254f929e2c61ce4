package drill

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/compose"
)

// purgeLatency measures how fast a purge posted to one PoP reaches every
// PoP through the fleet's control plane. Each round, every region's client
// caches a fresh object at its PoP and then asks for it every few
// milliseconds over a kept-alive connection; the purge is posted to t.PoP's
// admin listener (from t.Client); a PoP's latency is from the POST's
// arrival at t.PoP to the arrival at the PoP of the first probe it no
// longer answers from the purged copy (each taken as sent plus half the
// client's RTT to it; probes go out every 2 ms without waiting for each
// other, so that is the resolution). Beside
// each PoP's p50 and p99 over the rounds is its floor: the one-way delay
// from t.PoP to the control plane and on to the PoP. The p50 is checked
// against the floor + 20 ms; the p99, which a busy two-core machine
// stretches by tens of milliseconds, is reported.
func purgeLatency(ctx context.Context, lab Lab, t Target, rounds int) ([]Check, error) {
	const name = "purge"
	const probeEvery = 2 * time.Millisecond
	if lab.PurgeToken == "" {
		return nil, fmt.Errorf("%s: the lab has no purge token", name)
	}
	poster, err := lab.client(t.Client)
	if err != nil {
		return nil, err
	}
	type region struct {
		pop, addr string
		client    bench.LabClient
		half      time.Duration // one way, client to PoP
		floor     time.Duration
		probe     *http.Client
		lat       bench.Histogram // µs
		missed    int
	}
	nats, ok := lab.Topo.Host("nats")
	if !ok {
		return nil, fmt.Errorf("%s: the lab has no nats host (the control plane)", name)
	}
	origin, _ := lab.Topo.Host(t.PoP)
	var regions []*region
	for _, pop := range popNames() {
		addr, ok := lab.PoPs[pop]
		if !ok {
			continue
		}
		cname := "client-" + strings.TrimPrefix(pop, "pop-")
		c, err := lab.client(cname)
		if err != nil {
			return nil, err
		}
		ch, _ := lab.Topo.Host(cname)
		ph, _ := lab.Topo.Host(pop)
		r := &region{pop: pop, addr: addr, client: c, half: lab.Topo.RTTBetween(ch, ph) / 2,
			floor: lab.Topo.RTTBetween(origin, nats)/2 + lab.Topo.RTTBetween(nats, ph)/2}
		r.probe = popClient(c, addr, &tls.Config{RootCAs: lab.RootCAs, ServerName: hostOf(lab.CDNURL)}, true)
		// A probe tells the purged copy from a new one by a miss, and a
		// child's probe that fetched through the parent tier would
		// store a new copy there, which the parent's own probe would then
		// hit: the probes ask each PoP to go to the origin itself (a
		// CDN-Loop that says the request already passed this CDN), so
		// that each PoP's cache holds only what its own probe fetched.
		r.probe.Transport = withHeader{r.probe.Transport, "CDN-Loop", "edgecdn; pop=bench-drill"}
		regions = append(regions, r)
	}
	// Kept alive and warmed before each purge, so that the POST leaves
	// at once rather than after a TCP handshake.
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: poster.Dial}}
	livez := "http://" + net.JoinHostPort(t.PoPAddr, "9901") + "/livez"
	posterHost, _ := lab.Topo.Host(t.Client)
	postHalf := lab.Topo.RTTBetween(posterHost, origin) / 2
	purgeURL := "http://" + net.JoinHostPort(t.PoPAddr, "9901") + "/purge?url="
	stamp := time.Now().UnixNano()
	var acks []int
	for round := range rounds {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		obj := fmt.Sprintf("%s/gen/1k?cc=public,max-age=600&drill=%d-purge-%d", lab.CDNURL, stamp, round)
		for _, r := range regions {
			fetch(ctx, r.probe, obj)
			if o := fetch(ctx, r.probe, obj); o.err != nil || !strings.Contains(o.cache, "hit") {
				return nil, fmt.Errorf("%s: %s's copy at %s: %v, Cache-Status %q, want a hit", name, r.client.Name, r.pop, o.err, o.cache)
			}
		}
		// Probes, then the purge.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var wg sync.WaitGroup
		seen := make([]time.Time, len(regions))
		for i, r := range regions {
			wg.Go(func() { seen[i] = firstMiss(pctx, r.probe, obj, probeEvery, r.half) })
		}
		if o := fetch(ctx, admin, livez); o.err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("%s: %s's admin listener: %w", name, t.PoP, o.err)
		}
		time.Sleep(20 * time.Millisecond) // the probes are running
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, purgeURL+url.QueryEscape(obj), nil)
		req.Header.Set("Authorization", "Bearer "+lab.PurgeToken)
		posted := time.Now()
		resp, err := admin.Do(req)
		if err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("%s: POST /purge at %s: %w", name, t.PoP, err)
		}
		var out struct {
			Results []struct {
				Acks []struct{ PoP string }
			}
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || len(out.Results) != 1 {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("%s: POST /purge at %s: %d %s", name, t.PoP, resp.StatusCode, body)
		}
		acks = append(acks, len(out.Results[0].Acks))
		wg.Wait()
		cancel()
		at := posted.Add(postHalf)
		for i, r := range regions {
			if seen[i].IsZero() {
				r.missed++
				continue
			}
			r.lat.Record(max(0, seen[i].Sub(at)).Microseconds())
		}
	}
	var checks []Check
	allAcked := !slices.ContainsFunc(acks, func(n int) bool { return n != len(regions) })
	checks = append(checks, Check{name, fmt.Sprintf("every purge acknowledged by all %d PoPs", len(regions)),
		fmt.Sprintf("%d purges at %s, acknowledgements per purge %v", rounds, t.PoP, summarizeInts(acks)), allAcked, false})
	for _, r := range regions {
		p50, p99 := time.Duration(r.lat.Quantile(0.50))*time.Microsecond, time.Duration(r.lat.Quantile(0.99))*time.Microsecond
		checks = append(checks, Check{name,
			fmt.Sprintf("%s stops serving the purged copy within its floor + 20 ms (p50; p99 beside it)", r.pop),
			fmt.Sprintf("p50 %v, p99 %v, floor %v (%s -> nats -> %s, one way), probe every %v; %d of %d rounds never saw it",
				p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), r.floor, t.PoP, r.pop, probeEvery, r.missed, rounds),
			r.missed == 0 && r.lat.Count() > 0 && p50 <= r.floor+20*time.Millisecond, false})
	}
	return checks, nil
}

// firstMiss asks c for url every interval, without waiting for answers
// (HTTP/2 carries them side by side), until one is not a hit, and returns
// when the first probe not answered from the cache reached the PoP: its
// sending time plus half, the one-way delay to the PoP. Zero if none was
// before ctx ended.
// withHeader adds a header field to every request.
type withHeader struct {
	next        http.RoundTripper
	name, value string
}

func (w withHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(w.name, w.value)
	return w.next.RoundTrip(r)
}

func firstMiss(ctx context.Context, c *http.Client, url string, interval, half time.Duration) time.Time {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex // guards first
	var first time.Time
	var wg sync.WaitGroup
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for ctx.Err() == nil {
		sent := time.Now()
		wg.Go(func() {
			if o := fetch(ctx, c, url); o.err == nil && !strings.Contains(o.cache, "hit") {
				mu.Lock()
				if first.IsZero() || sent.Before(first) {
					first = sent
				}
				mu.Unlock()
				// Probes sent before this one are answered within
				// about a round trip: let them land, then stop.
				time.AfterFunc(4*half, stop)
			}
		})
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	wg.Wait()
	if first.IsZero() {
		return first
	}
	return first.Add(half)
}

// summarizeInts counts the values of xs: {3: 50}.
func summarizeInts(xs []int) map[int]int {
	m := map[int]int{}
	for _, x := range xs {
		m[x]++
	}
	return m
}

// readPurgeToken reads the native lab's purge token from its state
// directory, as lab-init wrote it.
func readPurgeToken(stateDir string) (string, error) {
	b, err := os.ReadFile(compose.LabSecret(stateDir, "purge.token"))
	return strings.TrimSpace(string(b)), err
}
