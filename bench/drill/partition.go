package drill

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// originPartition cuts one PoP off from its upstreams (the origin and
// its parent tier), and only that PoP: the origin keeps serving the other
// regions. The PoP must stay ready and
// say it is degraded; GeoDNS must keep the region's clients on it (the
// next PoP is an ocean away, and this PoP still has the content); cached
// objects must keep coming from it with zero 5xx; and when the partition
// heals, it must stop being degraded and fetch fresh content again.
func originPartition(ctx context.Context, lab Lab, t Target, load time.Duration) ([]Check, error) {
	const name = "origin-partition"
	if lab.Exec == nil {
		return nil, fmt.Errorf("%s: the lab cannot run commands in a host", name)
	}
	client, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	other, err := clientByName(lab.LabConfig, t.Bystander)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	stamp := time.Now().UnixNano()
	cached := func(i int) string {
		return fmt.Sprintf("%s/gen/1k?cc=public,max-age=1,stale-if-error=600&drill=%d-p%d", lab.CDNURL, stamp, i)
	}
	hc := labClient(client, lab.Resolver, lab.LabConfig, 20*time.Second)
	for i := range 3 {
		if o := fetch(ctx, hc, cached(i)); o.err != nil || o.status != 200 || o.pop != t.PoP {
			return nil, fmt.Errorf("%s: prefetch from %s: %v %d via %q, want 200 via %s", name, t.Client, o.err, o.status, o.pop, t.PoP)
		}
	}
	// Its upstreams: the origin, and the other PoPs' HTTPS (its parent
	// tier is one of them).
	rules := [][]string{{"OUTPUT", "-d", lab.Origin, "-j", "DROP"}}
	for pop, addr := range lab.PoPs {
		if pop != t.PoP {
			rules = append(rules, []string{"OUTPUT", "-d", addr, "-p", "tcp", "--dport", "443", "-j", "DROP"})
		}
	}
	var cut [][]string
	heal := func() error {
		var errs []error
		for _, rule := range cut {
			if out, err := lab.Exec(context.Background(), t.PoP, append([]string{"iptables", "-D"}, rule...)...); err != nil {
				errs = append(errs, fmt.Errorf("%v: %s", err, out))
			}
		}
		cut = nil
		return errors.Join(errs...)
	}
	defer heal()
	for _, rule := range rules {
		if out, err := lab.Exec(ctx, t.PoP, append([]string{"iptables", "-I"}, rule...)...); err != nil {
			return nil, fmt.Errorf("%s: cut %s from its upstreams: %v: %s", name, t.PoP, err, out)
		}
		cut = append(cut, rule)
	}

	admin := adminClient(client)
	readyz := "http://" + net.JoinHostPort(t.PoPAddr, "9901") + "/readyz"
	degraded := func() (ready, degraded bool) {
		resp, err := admin.Get(readyz)
		if err != nil {
			return false, false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Header.Get("X-PoP-Degraded") == "1"
	}
	start := time.Now()
	becameDegraded := time.Duration(-1)
	for time.Since(start) < 30*time.Second && ctx.Err() == nil {
		if ready, d := degraded(); ready && d {
			becameDegraded = time.Since(start)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The region's client keeps asking: every DNS answer and every cached
	// object; the bystander fetches new objects, from the origin.
	res := newResolver(lab.Resolver, client.Dial)
	answers, statuses, pops := map[string]int{}, map[string]int{}, map[string]int{}
	byStatus := map[string]int{}
	notReady := 0
	var slowest time.Duration
	bystander := labClient(other, lab.Resolver, lab.LabConfig, 20*time.Second)
	deadline := time.Now().Add(load)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		ips, err := res.LookupHost(ctx, hostOf(lab.CDNURL))
		if err != nil || len(ips) == 0 {
			answers["error"]++
		} else {
			answers[ips[0]]++
		}
		o := fetch(ctx, hc, cached(i%3))
		slowest = max(slowest, o.took)
		statuses[statusKey(o)]++
		pops[o.pop]++
		b := fetch(ctx, bystander, fmt.Sprintf("%s/gen/1k?cc=no-store&drill=%d-b%d", lab.CDNURL, stamp, i))
		byStatus[statusKey(b)]++
		if ready, _ := degraded(); !ready {
			notReady++
		}
		time.Sleep(100 * time.Millisecond)
	}
	fives := 0
	for k, v := range statuses {
		if strings.HasPrefix(k, "5") || k == "error" {
			fives += v
		}
	}

	healErr := heal()
	start = time.Now()
	recovered := time.Duration(-1)
	for time.Since(start) < 30*time.Second && healErr == nil && ctx.Err() == nil {
		_, d := degraded()
		o := fetch(ctx, hc, fmt.Sprintf("%s/gen/1k?cc=no-store&drill=%d-after-%d", lab.CDNURL, stamp, time.Now().UnixNano()))
		if !d && o.err == nil && o.status == 200 && o.pop == t.PoP {
			recovered = time.Since(start)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return []Check{
		{name, fmt.Sprintf("%s stays ready and says degraded", t.PoP),
			fmt.Sprintf("degraded after %v; not ready %d times under load", becameDegraded.Round(time.Millisecond), notReady),
			becameDegraded >= 0 && notReady == 0, false},
		{name, fmt.Sprintf("GeoDNS keeps %s on %s", t.Client, t.PoP), fmt.Sprintf("answers %v", answers),
			len(answers) == 1 && answers[t.PoPAddr] > 0, false},
		{name, fmt.Sprintf("cached objects keep coming from %s, zero 5xx", t.PoP), fmt.Sprintf("statuses %v, served by %v, slowest %v", statuses, pops, slowest.Round(time.Millisecond)),
			fives == 0 && statuses["200"] > 0 && len(pops) == 1 && pops[t.PoP] > 0, false},
		{name, "no cached object waits for the unreachable origin (slowest < 1 s)", fmt.Sprintf("slowest cached response %v", slowest.Round(time.Millisecond)),
			slowest < time.Second, false},
		{name, fmt.Sprintf("the origin keeps serving %s", t.Bystander), fmt.Sprintf("new objects: statuses %v", byStatus),
			len(byStatus) == 1 && byStatus["200"] > 0, false},
		{name, "healed: not degraded, fresh content flows", fmt.Sprintf("heal %v, fresh 200 from %s after %v", healErr, t.PoP, recovered.Round(time.Millisecond)),
			healErr == nil && recovered >= 0, false},
	}, nil
}

func statusKey(o outcome) string {
	if o.err != nil {
		return "error"
	}
	return fmt.Sprint(o.status)
}

// hostOf is the host of a URL such as https://www.cdn.lab.
func hostOf(url string) string {
	h := strings.TrimPrefix(strings.TrimPrefix(url, "https://"), "http://")
	if i := strings.IndexAny(h, ":/"); i >= 0 {
		h = h[:i]
	}
	return h
}
