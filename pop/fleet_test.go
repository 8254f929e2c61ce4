package pop_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/fleet/fleettest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestFleetPurge: three PoPs joined to one control plane (a real NATS
// server); a purge posted to one PoP's admin listener empties every
// PoP's copy, each acknowledging it with its latency; with the control
// plane down the purge is refused with a 503 that says so, and the PoPs
// go on serving their caches.
func TestFleetPurge(t *testing.T) {
	nats := fleettest.Start(t)
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "catalog")
		w.Write([]byte("item"))
	})
	var pops []*pop.Server
	for _, name := range []string{"pop-a", "pop-b", "pop-c"} {
		cfg := poptest.Config(ca, ro.url)
		cfg.Name = name
		cfg.Cache.PurgeToken = "s3cret"
		cfg.Fleet = pop.FleetConfig{URL: nats.URL(), User: fleettest.User, Password: fleettest.Password, AckWait: 5 * time.Second}
		pops = append(pops, poptest.StartPoP(t, cfg))
	}
	poll.Until(t, "every PoP joined the fleet", func() bool {
		for _, p := range pops {
			if !p.FleetSynced() {
				return false
			}
		}
		return true
	})
	if _, _, m := adminGet(t, pops[2].AdminAddr().String(), "/metrics"); !strings.Contains(m, "pop_fleet_synced 1") {
		t.Errorf("pop-c /metrics has no pop_fleet_synced 1")
	}
	c := clients(t, ca)["h2"]
	fill := func() {
		for _, p := range pops {
			get(t, c, "https://localhost:"+port(p.Addr())+"/item")
			p.WaitCache()
		}
	}
	fill()
	fill()
	if n := len(ro.requests()); n != 3 {
		t.Fatalf("origin requests = %d, want 3 (one per PoP, then hits)", n)
	}
	purge := func(p *pop.Server, query string) (int, string) {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+p.AdminAddr().String()+"/purge?"+query, nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := purge(pops[0], "url=https://localhost/item")
	var out struct {
		Fleet   bool
		Results []struct {
			Acks []struct {
				PoP       string
				Purged    int
				LatencyMs float64 `json:"latency_ms"`
			}
			Missing []string
		}
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || code != 200 || !out.Fleet || len(out.Results) != 1 {
		t.Fatalf("POST /purge at pop-a = %d %s, want 200 with one fleet result", code, body)
	}
	if r := out.Results[0]; len(r.Acks) != 3 || len(r.Missing) != 0 {
		t.Fatalf("purge acknowledged by %+v, missing %v; want all three PoPs", r.Acks, r.Missing)
	}
	for _, a := range out.Results[0].Acks {
		if a.Purged != 1 || a.LatencyMs <= 0 {
			t.Errorf("%s acknowledged purged=%d latency=%v ms, want 1 and a latency", a.PoP, a.Purged, a.LatencyMs)
		}
	}
	fill()
	if n := len(ro.requests()); n != 6 {
		t.Errorf("after the purge at pop-a: origin requests = %d, want 6 (every PoP fetched again)", n)
	}

	// Control plane down: purges refused, caches still served.
	nats.Stop()
	code, body = purge(pops[1], "tag=catalog")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not purged") {
		t.Errorf("purge with the control plane down = %d %s, want 503 saying it is not purged", code, body)
	}
	fill()
	if n := len(ro.requests()); n != 6 {
		t.Errorf("control plane down: origin requests = %d, want 6 (the PoPs keep serving their caches)", n)
	}
	nats.Restart()
	poll.Until(t, "every PoP back in the fleet", func() bool {
		for _, p := range pops {
			if !p.FleetSynced() {
				return false
			}
		}
		return true
	})
	if code, body := purge(pops[1], "tag=catalog"); code != 200 || strings.Count(body, `"pop":`) != 3 {
		t.Errorf("purge after the control plane came back = %d %s, want 200 acknowledged by 3 PoPs", code, body)
	}
}

// TestFleetBadCAFile: a fleet.ca_file that cannot be read fails New,
// naming the field, rather than a PoP that never joins.
func TestFleetBadCAFile(t *testing.T) {
	cfg := poptest.Config(certstest.LabCA(t), "http://127.0.0.1:1")
	cfg.Fleet = pop.FleetConfig{URL: "tls://127.0.0.1:4222", User: "pop", Password: "pw", CAFile: t.TempDir() + "/missing.pem"}
	if _, err := pop.New(cfg); err == nil || !strings.HasPrefix(err.Error(), "fleet.ca_file: ") {
		t.Errorf("pop.New with a missing fleet.ca_file = %v, want an error naming fleet.ca_file", err)
	}
}
