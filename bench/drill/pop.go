package drill

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// popDown stops a PoP: GeoDNS must stop handing it to its region's client
// within its health window, the client must be served by another PoP, and
// when the PoP returns traffic must go back to it.
func popDown(ctx context.Context, lab Lab, t Target) ([]Check, error) {
	client, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	res := newResolver(lab.Resolver, client.Dial)
	answer := func() string {
		ips, err := res.LookupHost(ctx, strings.TrimPrefix(lab.CDNURL, "https://"))
		if err != nil || len(ips) == 0 {
			return ""
		}
		return ips[0]
	}
	hc := labClient(client, lab.Resolver, lab.LabConfig, 20*time.Second)
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	before := answer()
	// SIGTERM: the PoP reports not ready at once and drains; GeoDNS should
	// drop it within its health window (interval x fall), timed from here.
	stopped := time.Now()
	stopErr := make(chan error, 1)
	go func() { stopErr <- lab.StopService(t.PoP) }()
	moved := time.Duration(-1)
	for time.Since(stopped) < 30*time.Second {
		if a := answer(); a != "" && a != t.PoPAddr {
			moved = time.Since(stopped)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-stopErr; err != nil {
		return nil, err
	}
	during := fetch(ctx, hc, lab.CDNURL+"/gen/1k")
	restartErr := lab.StartService(ctx, t.PoP)
	restarted := time.Now()
	back := time.Duration(-1)
	for time.Since(restarted) < 30*time.Second && restartErr == nil {
		if answer() == t.PoPAddr {
			back = time.Since(restarted)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := fetch(ctx, hc, lab.CDNURL+"/gen/1k")
	return []Check{
		{"pop-down", "before: " + t.Client + " is sent to " + t.PoP, "answer " + before, before == t.PoPAddr, false},
		{"pop-down", "geodns stops handing out " + t.PoP + " within its health window", fmt.Sprintf("after %v", moved.Round(time.Millisecond)), moved >= 0 && moved < 10*time.Second, false},
		{"pop-down", t.Client + " is served by another PoP", fmt.Sprintf("status %d from %q (%v)", during.status, during.pop, during.err), during.err == nil && during.status == 200 && during.pop != t.PoP, false},
		{"pop-down", "traffic goes back when " + t.PoP + " returns", fmt.Sprintf("answer back after %v; then status %d from %q", back.Round(time.Millisecond), after.status, after.pop), back >= 0 && after.status == 200 && after.pop == t.PoP, false},
	}, nil
}

// popDrain sends SIGTERM to a PoP while a client of its region keeps
// requesting: not one request may fail (the PoP reports not ready first,
// GeoDNS moves the client, in-flight requests finish), and readyz must go
// false before the PoP stops serving.
func popDrain(ctx context.Context, lab Lab, t Target) ([]Check, error) {
	client, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	hc := labClient(client, lab.Resolver, lab.LabConfig, 20*time.Second)
	admin := labClient(client, lab.Resolver, lab.LabConfig, time.Second)
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
				o := fetch(ctx, hc, lab.CDNURL+"/gen/1k")
				key := fmt.Sprint(o.status)
				if o.err != nil {
					key = "error: " + bench.ErrorKind(o.err)
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
	go func() { stopErr <- lab.StopService(t.PoP) }()
	notReady := time.Duration(-1)
	for time.Since(stopped) < 10*time.Second {
		o := fetch(ctx, admin, "http://"+t.PoPAddr+":9901/readyz")
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
	restartErr := lab.StartService(ctx, t.PoP)
	failed := 0
	for k, v := range statuses {
		if k != "200" {
			failed += v
		}
	}
	return []Check{
		{"pop-drain", "zero failed requests while " + t.PoP + " drains", fmt.Sprintf("statuses %v; served by %v", statuses, pops), failed == 0 && statuses["200"] > 0, false},
		{"pop-drain", "readyz goes false before the PoP stops", fmt.Sprintf("readyz 503 after %v, process gone after %v", notReady.Round(time.Millisecond), gone.Round(time.Millisecond)), notReady >= 0 && notReady < gone, false},
		{"pop-drain", t.PoP + " comes back", fmt.Sprintf("restart: %v", restartErr), restartErr == nil, false},
	}, nil
}

// coldRestart restarts a PoP with an empty cache while clients keep
// asking for a few objects: the origin must see at most one request per
// object per PoP process (coalescing), not one per client.
func coldRestart(ctx context.Context, lab Lab, t Target) ([]Check, error) {
	client, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	hc := labClient(client, lab.Resolver, lab.LabConfig, 20*time.Second)
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
				o := fetch(ctx, hc, lab.CDNURL+paths[i%len(paths)])
				mu.Lock()
				if o.err == nil && o.status == 200 {
					okCount++
				} else if o.err != nil {
					bad["error: "+bench.ErrorKind(o.err)]++
				} else {
					bad[fmt.Sprint(o.status)]++
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	stopErr := lab.StopService(t.PoP)
	startErr := lab.StartService(ctx, t.PoP)
	time.Sleep(2 * time.Second) // load on the restarted, empty PoP
	close(stopLoad)
	wg.Wait()
	if stopErr != nil || startErr != nil {
		return nil, fmt.Errorf("restart %s: %v %v", t.PoP, stopErr, startErr)
	}
	// Count the origin's requests per object and per PoP address.
	logData, err := os.ReadFile(lab.ServiceLog("origin"))
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
		if !strings.HasSuffix(k, "@"+t.PoPAddr) && v > 1 {
			ok = false
		}
	}
	return []Check{
		{"cold-restart", fmt.Sprintf("origin sees at most one request per object per PoP process (%d clients)", workers),
			fmt.Sprintf("origin requests per object@PoP %v; client 200s %d, other %v", perPoP, okCount, bad), ok && len(perPoP) > 0, false},
	}, nil
}
