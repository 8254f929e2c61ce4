package drill

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// controlPlane breaks the fleet's control plane two ways.
//
// Partition: t.PoP (pop-ap) is cut off from the NATS server (both ways)
// while three objects it holds are purged at pop-eu; the purges are
// acknowledged by the others and say t.PoP is missing. When the cut is
// restored, t.PoP's region keeps asking for the three objects every 10 ms:
// once t.PoP has caught up (pop_fleet_synced 1 again, the time reported),
// it never answers with a copy older than the restore, and each object
// comes fresh from the origin.
//
// Server down: the NATS server stops while every region's client keeps
// asking for cached objects: they keep coming (zero errors), a purge is
// refused with a 503 that says nothing was purged, and once the server is
// back every PoP rejoins and a purge is acknowledged by all of them.
func controlPlane(ctx context.Context, lab Lab, t Target) ([]Check, error) {
	const name = "control-plane"
	if lab.Exec == nil || lab.PurgeToken == "" {
		return nil, fmt.Errorf("%s: the lab cannot run commands in a host or has no purge token", name)
	}
	natsHost, ok := lab.Topo.Host("nats")
	if !ok {
		return nil, fmt.Errorf("%s: the lab has no nats host", name)
	}
	natsAddr := natsHost.Addr.String()
	client, err := lab.client(t.Client) // in t.PoP's region
	if err != nil {
		return nil, err
	}
	poster, err := lab.client(t.Bystander) // client-eu, posting at pop-eu
	if err != nil {
		return nil, err
	}
	euAddr := lab.PoPs["pop-eu"]
	tlsCfg := &tls.Config{RootCAs: lab.RootCAs, ServerName: hostOf(lab.CDNURL)}
	probe := popClient(client, t.PoPAddr, tlsCfg, true)
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: poster.Dial}}
	metricsOf := adminClient(client)
	synced := func(addr string) bool {
		text, err := popMetrics(ctx, metricsOf, addr)
		return err == nil && metricValue(text, "pop_fleet_synced") == 1
	}
	waitFor := func(what string, limit time.Duration, cond func() bool) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < limit {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if cond() {
				return time.Since(start), nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return 0, fmt.Errorf("%s: %s not within %v", name, what, limit)
	}
	purge := func(rawURL, tag string) (int, string) {
		q := "url=" + url.QueryEscape(rawURL)
		if tag != "" {
			q = "tag=" + url.QueryEscape(tag)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+net.JoinHostPort(euAddr, "9901")+"/purge?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+lab.PurgeToken)
		resp, err := admin.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if _, err := waitFor("every PoP in the fleet", 30*time.Second, func() bool {
		for _, addr := range lab.PoPs {
			if !synced(addr) {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, err
	}

	// Partition.
	stamp := time.Now().UnixNano()
	objs := make([]string, 3)
	for i := range objs {
		objs[i] = fmt.Sprintf("%s/gen/1k?cc=public,max-age=600&drill=%d-cp-%d", lab.CDNURL, stamp, i)
		fetch(ctx, probe, objs[i])
		if o := fetch(ctx, probe, objs[i]); o.err != nil || !strings.Contains(o.cache, "hit") {
			return nil, fmt.Errorf("%s: %s's copy of %s: %v %q, want a hit", name, t.PoP, objs[i], o.err, o.cache)
		}
	}
	rules := [][]string{{"OUTPUT", "-d", natsAddr, "-j", "DROP"}, {"INPUT", "-s", natsAddr, "-j", "DROP"}}
	for _, r := range rules {
		if out, err := lab.Exec(ctx, t.PoP, append([]string{"iptables", "-I"}, r...)...); err != nil {
			return nil, fmt.Errorf("%s: cut %s from nats: %v: %s", name, t.PoP, err, out)
		}
	}
	cut := true
	restore := func() error {
		if !cut {
			return nil
		}
		cut = false
		for _, r := range rules {
			if out, err := lab.Exec(context.Background(), t.PoP, append([]string{"iptables", "-D"}, r...)...); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
		}
		return nil
	}
	defer restore()
	lostAfter, lostErr := waitFor(t.PoP+" to notice the cut", 20*time.Second, func() bool { return !synced(t.PoPAddr) })
	missing := 0
	for _, o := range objs {
		// Acknowledged by the others, not by the PoP cut off (which is
		// listed missing until its record in the fleet expires).
		code, body := purge(o, "")
		if code == http.StatusOK && strings.Count(body, `"pop":`) == len(lab.PoPs)-1 && !strings.Contains(body, `"pop":"`+t.PoP+`"`) {
			missing++
		}
	}
	restoreErr := restore()
	restored := time.Now()
	// From the restore on: every answer for the three objects, until each
	// came fresh and t.PoP is synced.
	var staleAfterSync, staleBeforeSync, answers int
	var caughtUp time.Duration = -1
	fresh := make([]bool, len(objs))
	for time.Since(restored) < 30*time.Second && ctx.Err() == nil {
		isSynced := synced(t.PoPAddr)
		if isSynced && caughtUp < 0 {
			caughtUp = time.Since(restored)
		}
		for i, obj := range objs {
			o := fetch(ctx, probe, obj)
			age := o.age
			if o.err != nil {
				continue
			}
			answers++
			old := age > time.Since(restored)+time.Second // stored before the restore: the purged copy
			switch {
			case old && caughtUp >= 0:
				staleAfterSync++
			case old:
				staleBeforeSync++
			default:
				fresh[i] = true
			}
		}
		if caughtUp >= 0 && fresh[0] && fresh[1] && fresh[2] {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	allFresh := fresh[0] && fresh[1] && fresh[2]

	// Server down.
	var during, errs int
	stopErr := lab.StopService("nats")
	_, downErr := waitFor("pop-eu to see nats gone", 20*time.Second, func() bool { return !synced(euAddr) })
	code, body := purge(objs[0], "")
	refused := code == http.StatusServiceUnavailable && strings.Contains(body, "not purged")
	for range 20 {
		for _, c := range lab.Clients {
			if o := fetch(ctx, labClient(c, lab.Resolver, lab.LabConfig, 10*time.Second), objs[0]); o.err != nil || o.status != 200 {
				errs++
			}
			during++
		}
	}
	startErr := lab.StartService(ctx, "nats")
	back, backErr := waitFor("every PoP back in the fleet", 30*time.Second, func() bool {
		for _, addr := range lab.PoPs {
			if !synced(addr) {
				return false
			}
		}
		return true
	})
	code2, body2 := purge("", "drill-"+strconv.FormatInt(stamp, 10))
	allAcked := code2 == http.StatusOK && strings.Count(body2, `"pop":`) == len(lab.PoPs) && !strings.Contains(body2, `"missing"`)

	return []Check{
		{name, fmt.Sprintf("%s cut off the control plane: purges at pop-eu are acknowledged by the others, not by it", t.PoP),
			fmt.Sprintf("noticed the cut after %v (%v); %d of 3 purges acknowledged by the others and not by %s", lostAfter.Round(time.Millisecond), lostErr, missing, t.PoP),
			lostErr == nil && missing == 3, false},
		{name, fmt.Sprintf("restored: %s catches up and never serves a purged copy once synced", t.PoP),
			fmt.Sprintf("restore %v; synced %v after the restore (until then it serves its cache, within fleet.max_offline); answers %d: purged copy %d before synced, %d after; all 3 fresh %v",
				restoreErr, caughtUp.Round(time.Millisecond), answers, staleBeforeSync, staleAfterSync, allFresh),
			restoreErr == nil && caughtUp >= 0 && staleAfterSync == 0 && allFresh, false},
		{name, "nats stopped: cached objects keep coming, purges are refused with 503 (not purged)",
			fmt.Sprintf("stop %v, pop-eu out of the fleet (%v); purge: %d %q; %d requests, %d not 200", stopErr, downErr, code, firstLine(body), during, errs),
			stopErr == nil && downErr == nil && refused && errs == 0, false},
		{name, "nats back: every PoP rejoins, a purge is acknowledged by all",
			fmt.Sprintf("start %v, all synced after %v (%v); purge: %d %s", startErr, back.Round(time.Millisecond), backErr, code2, firstLine(body2)),
			startErr == nil && backErr == nil && allAcked, false},
	}, nil
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
