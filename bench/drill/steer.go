package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// latencySteer shows GeoDNS steering by the RTTs the PoPs measure, with no
// manual step: client-moved, which the locator places in eu while the
// network puts it 10 ms from pop-na and 90 ms from pop-eu, starts on
// pop-eu and must be moved to pop-na, its hits' TTFB falling by the ratio
// the RTT matrix predicts; then pop-eu's link gets slower at run time and
// client-eu must move to the next best PoP (pop-na), and back when the
// link is restored.
func latencySteer(ctx context.Context, lab Lab, t Target, window time.Duration) ([]Check, error) {
	const name = "latency-steer"
	if lab.Topo == nil || lab.SetLink == nil {
		return nil, fmt.Errorf("%s: the lab has no topology or cannot change a link", name)
	}
	moved, err := lab.client(t.Client)
	if err != nil {
		return nil, err
	}
	eu, err := lab.client(t.Bystander)
	if err != nil {
		return nil, err
	}
	movedHost, ok1 := lab.Topo.Host(t.Client)
	popEU, ok2 := lab.Topo.Host(t.PoP)
	popNA, ok3 := lab.Topo.Host("pop-na")
	geo, ok4 := lab.Topo.Host("geodns")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, fmt.Errorf("%s: the lab lacks %s, %s, pop-na or geodns", name, t.Client, t.PoP)
	}
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	url := fmt.Sprintf("%s/gen/1k?drill=steer-%d", lab.CDNURL, time.Now().UnixNano())
	s := &steerProbe{lab: lab, url: url}

	// 1. The misplaced client: geography first, then measured latency.
	before, err := s.until(ctx, moved, window, t.PoP, 3)
	if err != nil {
		return nil, fmt.Errorf("%s: %s at first: %w", name, t.Client, err)
	}
	start := time.Now()
	after, err := s.until(ctx, moved, window, "pop-na", 5)
	switched := time.Since(start)
	movedOK := err == nil
	why := s.reason(moved, geo.Addr.String())
	// What the matrix predicts is the time saved: the same DNS, TLS and
	// server work either way, three round trips of 90 ms become three of
	// 10 ms. The saving is compared, not the ratio: per-request overhead
	// on a loaded machine (here, eight probes at once) adds to both TTFBs
	// alike and would skew a ratio of a 40 ms floor far more than of 280.
	dns := lab.Topo.RTTBetween(movedHost, geo)
	farFloor, nearFloor := dns+3*lab.Topo.RTTBetween(movedHost, popEU), dns+3*lab.Topo.RTTBetween(movedHost, popNA)
	predicted := ms(farFloor - nearFloor)
	saved := 0.0
	if movedOK && before > 0 && after > 0 {
		saved = before - after
	}
	checks := []Check{
		{name, fmt.Sprintf("GeoDNS moves %s from %s (geography) to pop-na (measured RTT) within %v, unaided", t.Client, t.PoP, window),
			fmt.Sprintf("5 answers in a row for pop-na after %v (%v); geodns /status: %s", switched.Round(time.Second), errText(err), why), movedOK, false},
		{name, "its hits' TTFB falls by what the RTT matrix predicts (within 25%)",
			fmt.Sprintf("h2 cold hit TTFB p50 %.1f ms at %s, %.1f ms at pop-na: %.1f ms saved, %.1f ms predicted (floors %.0f and %.0f ms; x%.2f measured, x%.2f by the floors)",
				before, t.PoP, after, saved, predicted, ms(farFloor), ms(nearFloor), before/max(after, 1e-9), float64(farFloor)/float64(nearFloor)),
			movedOK && saved > 0.75*predicted && saved < 1.25*predicted, false},
	}

	// 2. A slower link: pop-eu's clients move to the next best PoP and
	// come back when it is restored.
	if _, err := s.until(ctx, eu, window, t.PoP, 3); err != nil {
		return nil, fmt.Errorf("%s: %s at first: %w", name, t.Bystander, err)
	}
	const extra = 150 * time.Millisecond
	if err := lab.SetLink(t.PoP, extra); err != nil {
		return nil, fmt.Errorf("%s: slow %s's link: %w", name, t.PoP, err)
	}
	restored := false
	defer func() {
		if !restored {
			lab.SetLink(t.PoP, 0)
		}
	}()
	start = time.Now()
	_, err = s.until(ctx, eu, window, "pop-na", 5)
	away, awayErr := time.Since(start), err
	awayWhy := s.reason(eu, geo.Addr.String())
	restoreErr := lab.SetLink(t.PoP, 0)
	restored = restoreErr == nil
	// Back means pop-eu alone again, not sharing the answers with pop-na
	// while its measurement catches up: geodns's shares say so.
	start = time.Now()
	for {
		_, err = s.until(ctx, eu, window-time.Since(start), t.PoP, 5)
		if _, share := s.status(eu, geo.Addr.String()); err != nil || share[t.PoP] >= 0.9 {
			break
		}
	}
	back, backErr := time.Since(start), err
	backWhy := s.reason(eu, geo.Addr.String())
	if restoreErr != nil {
		backErr = restoreErr
	}
	checks = append(checks,
		Check{name, fmt.Sprintf("%s's link +%v: %s moves to pop-na within %v", t.PoP, extra, t.Bystander, window),
			fmt.Sprintf("5 answers in a row for pop-na after %v (%v); geodns /status: %s", away.Round(time.Second), errText(awayErr), awayWhy), awayErr == nil, false},
		Check{name, fmt.Sprintf("link restored: %s comes back to %s alone within %v", t.Bystander, t.PoP, window),
			fmt.Sprintf("90%% of the answers for %s after %v (%v); geodns /status: %s", t.PoP, back.Round(time.Second), errText(backErr), backWhy), backErr == nil, false},
	)
	return checks, nil
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// steerProbe makes cold HTTP/2 requests through GeoDNS, each looking the
// name up again and opening a new connection (which the PoP measures).
type steerProbe struct {
	lab Lab
	url string
}

// workers is how many probes run at once: enough answers a second that
// the 5% of exploring answers measure the other PoPs within seconds.
const workers = 8

// until probes from c until in answers in a row (in the order they
// complete), three of them hits, came from want, or window passes; it
// returns the median TTFB of want's hits among them.
func (s *steerProbe) until(ctx context.Context, c bench.LabClient, window time.Duration, want string, in int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var mu sync.Mutex
	run, last := 0, ""
	var ttfb []float64
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				rs, err := bench.Probe(ctx, bench.ProbeConfig{Proto: bench.H2, Mode: bench.Cold, N: 1, Resolver: s.lab.Resolver,
					RootCAs: s.lab.RootCAs, Dial: c.Dial, Timeout: 5 * time.Second}, s.url)
				if err != nil || len(rs) == 0 || rs[0].Error != "" {
					continue
				}
				r := rs[0]
				mu.Lock()
				last = r.PoP
				if r.PoP == want {
					run++
					if strings.Contains(r.CacheStatus, "; hit") {
						ttfb = append(ttfb, r.TTFBms)
					}
				} else {
					run, ttfb = 0, ttfb[:0]
				}
				if run >= in && len(ttfb) >= 3 {
					once.Do(func() { close(done); cancel() })
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	default:
		return 0, fmt.Errorf("no %d answers in a row (three hits) for %s within %v (last: %q)", in, want, window, last)
	}
	slices.Sort(ttfb)
	return ttfb[len(ttfb)/2], nil
}

// reason is what GeoDNS's /status says of c's prefix: why its answers go
// where they go.
func (s *steerProbe) reason(c bench.LabClient, geodns string) string {
	why, _ := s.status(c, geodns)
	return why
}

// status is GeoDNS's /status entry for c's prefix: the reason and each
// PoP's share of the answers.
func (s *steerProbe) status(c bench.LabClient, geodns string) (string, map[string]float64) {
	h, ok := s.lab.Topo.Host(c.Name)
	if !ok {
		return "no host " + c.Name, nil
	}
	resp, err := adminClient(c).Get("http://" + net.JoinHostPort(geodns, "9953") + "/status")
	if err != nil {
		return err.Error(), nil
	}
	defer resp.Body.Close()
	var st struct {
		Latency struct {
			Prefixes []struct {
				Prefix string             `json:"prefix"`
				Reason string             `json:"reason"`
				Shares map[string]float64 `json:"shares"`
			} `json:"prefixes"`
		} `json:"latency"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return err.Error(), nil
	}
	for _, p := range st.Latency.Prefixes {
		if pfx, err := netip.ParsePrefix(p.Prefix); err == nil && pfx.Contains(h.Addr) {
			return p.Prefix + ": " + p.Reason, p.Shares
		}
	}
	return "no entry for " + h.Addr.String(), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
