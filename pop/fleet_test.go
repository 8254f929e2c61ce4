package pop_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	// Back in the fleet, a PoP trusts what it stores again: a new object's
	// second request is a hit.
	before := len(ro.requests())
	for range 2 {
		get(t, c, "https://localhost:"+port(pops[0].Addr())+"/new")
		pops[0].WaitCache()
	}
	if n := len(ro.requests()) - before; n != 1 {
		t.Errorf("a new object asked twice after the control plane came back: %d origin requests, want 1 (then a hit)", n)
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

// TestFleetTicketKeys: two PoPs in one fleet, without a ticket key file,
// share the fleet's session-ticket secret. A session from pop-a resumes
// at pop-b, over TCP and QUIC, also after the secret was rotated (by one
// of them, every tls.ticket_rotation) between the two handshakes, and a
// session from after the rotation resumes too. The secret's history in
// the fleet shows one rotation per period: never two PoPs rotating at
// once.
func TestFleetTicketKeys(t *testing.T) {
	const rotation = 3 * time.Second
	srv := fleettest.Start(t)
	ca := certstest.LabCA(t)
	ro := startRecordingOrigin(t, nil)
	var pops []*pop.Server
	for _, name := range []string{"pop-a", "pop-b"} {
		cfg := poptest.Config(ca, ro.url)
		cfg.Name = name
		cfg.TLS.TicketRotation = rotation
		cfg.Fleet = pop.FleetConfig{URL: srv.URL(), User: fleettest.User, Password: fleettest.Password}
		pops = append(pops, poptest.StartPoP(t, cfg))
	}
	nc, err := nats.Connect(srv.URL(), nats.UserInfo(fleettest.User, fleettest.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "cdn_tls")
	if err != nil {
		t.Fatalf("the fleet's ticket bucket: %v", err)
	}
	revision := func() uint64 {
		e, err := kv.Get(ctx, "tickets")
		if err != nil {
			t.Fatalf("the fleet's ticket secret: %v", err)
		}
		return e.Revision()
	}
	client := func() *tls.Config {
		return &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	}
	transports := []string{"tcp", "quic"}

	// Sessions from pop-a under one secret (no rotation between reading
	// the revision before and after them).
	var sessions []*tls.Config
	var before uint64
	poll.Until(t, "sessions from pop-a under one secret", func() bool {
		sessions = sessions[:0]
		before = revision()
		for _, tr := range transports {
			c := client()
			if resumedVia(t, tr, pops[0], c) {
				t.Fatalf("%s: first handshake at pop-a resumed, want a full one", tr)
			}
			sessions = append(sessions, c)
		}
		return revision() == before
	})
	for i, tr := range transports {
		if !resumedVia(t, tr, pops[1], sessions[i]) {
			t.Errorf("%s: a session from pop-a did not resume at pop-b, want the fleet's secret shared", tr)
		}
	}
	poll.Until(t, "a rotation of the fleet's ticket secret", func() bool { return revision() > before })
	for i, tr := range transports {
		if !resumedVia(t, tr, pops[1], sessions[i]) {
			t.Errorf("%s: a session from pop-a before the rotation did not resume at pop-b after it", tr)
		}
	}
	for _, tr := range transports {
		// The PoP that did not rotate has the new secret a moment later.
		poll.Until(t, tr+": a session from pop-b after the rotation resuming at pop-a", func() bool {
			c := client()
			resumedVia(t, tr, pops[1], c)
			return resumedVia(t, tr, pops[0], c)
		})
	}

	hist, err := kv.History(ctx, "tickets")
	if err != nil {
		t.Fatal(err)
	}
	var prev time.Time
	for _, e := range hist {
		var v struct {
			Created time.Time
			By      string
		}
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			t.Fatalf("revision %d: %v", e.Revision(), err)
		}
		if !prev.IsZero() && v.Created.Sub(prev) < rotation {
			t.Errorf("revision %d by %s made %v after the one before, want at least the rotation period %v (one PoP rotates each time)",
				e.Revision(), v.By, v.Created.Sub(prev), rotation)
		}
		prev = v.Created
	}
	if len(hist) < 2 {
		t.Errorf("the secret's history has %d revisions, want a rotation", len(hist))
	}
}
