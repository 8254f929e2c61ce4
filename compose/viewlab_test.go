package compose_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/compose/labtest"
	"github.com/edgecdn/cdn/compose/view"
)

// liveViewSeesPoPDown runs the live view against a running native lab
// (as lab up does: on the host, connecting from inside the namespaces),
// waits on its event stream until every region is up and sent to its own
// PoP, stops pop-eu as the pop-down drill does, and waits until the view
// shows pop-eu down and client-eu's GeoDNS answer moved to another PoP;
// then Chromium renders the page, which must say the same, and a
// screenshot is kept. It leaves pop-eu stopped.
func liveViewSeesPoPDown(ctx context.Context, t *testing.T, lab *labtest.Lab) {
	t.Helper()
	v, err := view.New(view.Config{Topo: lab.Topo, DialFrom: lab.Net.Dialer, RootCAs: lab.Pool})
	if err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { v.Run(vctx) })
	srv := httptest.NewServer(v.Handler())
	defer func() { cancel(); srv.CloseClientConnections(); srv.Close(); wg.Wait() }()

	req, _ := http.NewRequestWithContext(vctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	events.Buffer(make([]byte, 64<<10), 1<<20)
	// waitFor reads snapshots until ok holds for one, for at most limit.
	waitFor := func(what string, limit time.Duration, ok func(view.Snapshot) bool) view.Snapshot {
		t.Helper()
		deadline := time.AfterFunc(limit, cancel) // ends the stream, and the scan below
		defer deadline.Stop()
		start := time.Now()
		var last view.Snapshot
		for events.Scan() {
			data, found := strings.CutPrefix(events.Text(), "data: ")
			if !found {
				continue
			}
			if err := json.Unmarshal([]byte(data), &last); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			if ok(last) {
				t.Logf("live view: %s after %v", what, time.Since(start).Round(100*time.Millisecond))
				return last
			}
		}
		t.Fatalf("live view: not %s within %v; last snapshot %+v", what, limit, last)
		return last
	}
	region := func(s view.Snapshot, name string) view.RegionState {
		for _, r := range s.Regions {
			if r.Name == name {
				return r
			}
		}
		return view.RegionState{}
	}
	waitFor("every region up, sent to its own PoP, probed", 60*time.Second, func(s view.Snapshot) bool {
		for _, name := range []string{"na", "eu", "ap"} {
			r := region(s, name)
			if r.PoP.Health != "up" || r.AnswerPoP != "pop-"+name || r.Probes <= r.ProbeErrors || r.TTFBp50ms <= 0 {
				return false
			}
		}
		return s.RTT.Configured != nil
	})
	if err := lab.StopService("pop-eu"); err != nil {
		t.Fatal(err)
	}
	s := waitFor("pop-eu down and client-eu sent elsewhere", 60*time.Second, func(s view.Snapshot) bool {
		eu := region(s, "eu")
		return eu.PoP.Health == "down" && eu.AnswerPoP != "" && eu.AnswerPoP != "pop-eu"
	})
	eu := region(s, "eu")
	t.Logf("live view: eu now %+v", eu)

	chromium := labtest.Chromium(t)
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	defer ccancel()
	out, err := exec.CommandContext(cctx, chromium, append(labtest.ChromiumArgs(t, 0, 3*time.Second), "--dump-dom", srv.URL+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, want := range []string{`id="region-eu" data-health="down" data-answer="` + eu.AnswerPoP + `"`, "pop-eu: down",
		"client-eu \u2192 " + eu.AnswerPoP, `id="region-na" data-health="up"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the live view in Chromium lacks %q:\n%s", want, out)
		}
	}
	shot := filepath.Join(t.TempDir(), "live-view.png")
	if b, err := exec.CommandContext(cctx, chromium, append(labtest.ChromiumArgs(t, 0, 3*time.Second), "--screenshot="+shot, srv.URL+"/")...).CombinedOutput(); err != nil {
		t.Errorf("chromium --screenshot: %v\n%s", err, b)
	} else {
		labtest.KeepArtifact(t, shot, "lab-live-view-pop-eu-down.png")
	}
}
