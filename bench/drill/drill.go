// Package drill breaks the lab on purpose and checks that the CDN copes.
//
// A Drill does one bad thing to the native lab (package compose) while the
// lab's clients keep asking for objects, and measures what they get:
//
//   - origin-down: the origin stops; cached objects keep coming
//     (stale-if-error), uncached ones fail fast, fresh ones flow again after.
//   - origin-partition: only pop-eu loses its upstreams (the origin and
//     its parent tier, pop-na); it stays ready but degraded, GeoDNS keeps
//     eu on it, cached objects keep coming, the other regions fetch from
//     the origin as usual.
//   - origin-slow: the origin takes 5 s over one cold object that hundreds
//     of clients want; it sees one request, and hits do not wait.
//   - pop-down, pop-drain: a PoP stops; GeoDNS sends its clients elsewhere
//     within its health window and back after, and a drain fails nothing.
//   - cold-restart: a PoP restarts with an empty cache under load; the
//     origin sees one request per object, not one per client.
//   - flood: open-loop load above a PoP's limits; it sheds with 503 and 429
//     and stays bounded in latency and memory.
//   - hostile: one client attacks a PoP and GeoDNS (the HostileHTTP1 and
//     MalformedDNSQueries corpora, HTTP/2 floods, slowloris, cache
//     poisoning, resource exhaustion) while another must not notice.
//   - purge: a purge posted to pop-eu reaches every PoP through the
//     fleet's control plane (NATS); per PoP, the p50 and p99 over 50
//     purges of the time until it stops serving the purged copy, beside
//     the one-way floor.
//   - control-plane: pop-ap is cut off the control plane while objects it
//     holds are purged, then restored: it catches up and never serves a
//     purged copy once synced; the NATS server stops: caches keep
//     serving, purges are refused with a 503, and all rejoin after.
//   - shield: the tiered cache. One cold object asked at once in every
//     region makes one origin request, through pop-na (the parent of
//     pop-eu and pop-ap); a miss at pop-ap through it costs about one
//     same-region round trip more than straight to the origin; with
//     pop-na stopped the children fetch from the origin, and use it again
//     once it is back.
//   - latency-steer: GeoDNS moves a misplaced client (client-moved: eu by
//     its address, 10 ms from na by the network) to the PoP of lowest
//     measured RTT, unaided, and eu's clients away from pop-eu while its
//     link is slowed at run time, and back after.
//
// Each drill returns Checks: an expectation, what was measured and pass or
// fail. Run brings up a private lab and runs the drills named (All is the
// list); WriteTable and WriteReport print the checks. The program is
// bench drill (bench/cmd/bench). HostileHTTP1 is also the corpus of the
// PoP's own hostile-request test.
package drill

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/compose"
)

// Check is one expectation of a drill and what was measured.
type Check struct {
	Drill       string `json:"drill"`
	Expectation string `json:"expectation"`
	Measured    string `json:"measured"`
	Pass        bool   `json:"pass"`
	// Info marks a row that reports without expecting anything.
	Info bool `json:"info,omitempty"`
}

// Control stops and starts the lab's services for drills. compose.Runner
// is one.
type Control interface {
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

// Lab is the running lab a drill works in.
type Lab struct {
	// LabConfig has the clients (with sockets in their namespaces), the
	// resolver (GeoDNS), the CA and the CDN's URL.
	bench.LabConfig
	// Control stops and starts services: "origin", "geodns", the PoPs.
	Control
	// PoPs maps each PoP's service name ("pop-na") to its address.
	PoPs map[string]string
	// Origin is the origin's address.
	Origin string
	// Exec runs a command inside a lab host (its network namespace) and
	// returns its combined output.
	Exec func(ctx context.Context, host string, args ...string) ([]byte, error)
	// SetLink adds extra one-way delay to everything host sends (0: the
	// matrix again).
	SetLink func(host string, extra time.Duration) error
	// Topo is the lab's topology: hosts and the RTT matrix.
	Topo *compose.Topology
	// Others are the lab's clients that bench lab does not measure (they
	// have no PoP of their own region): client-moved.
	Others []bench.LabClient
	// PurgeToken is the PoPs' token for POST /purge (lab-init's
	// purge.token).
	PurgeToken string
}

// client finds a lab client, measured by bench lab or not.
func (l Lab) client(name string) (bench.LabClient, error) {
	for _, c := range append(slices.Clone(l.Clients), l.Others...) {
		if c.Name == name {
			return c, nil
		}
	}
	return bench.LabClient{}, fmt.Errorf("no client %s in the lab", name)
}

// Target is what a drill aims at: a PoP and the lab clients that use it.
// Which fields a drill needs is in All; the others are empty.
type Target struct {
	// PoP is the service name of the PoP the drill stops, restarts,
	// floods or attacks, such as "pop-eu".
	PoP string
	// PoPAddr is PoP's address: HTTPS on port 443, the admin listener
	// (/metrics, /readyz) on 9901. Drill.Run fills it in from Lab.PoPs.
	PoPAddr string
	// Client is the lab client that drives the drill, such as "client-eu";
	// GeoDNS sends it to PoP. In hostile, it is the attacker.
	Client string
	// Bystander is a client in another region that must not notice the
	// drill (hostile).
	Bystander string
}

// A Drill is one failure drill, aimed at its Target.
type Drill struct {
	// Name is the drill's name on bench drill's command line.
	Name   string
	Target Target
	run    func(ctx context.Context, lab Lab, t Target) ([]Check, error)
}

// Run runs the drill in lab and returns its checks.
func (d Drill) Run(ctx context.Context, lab Lab) ([]Check, error) {
	t := d.Target
	if t.PoP != "" {
		addr, ok := lab.PoPs[t.PoP]
		if !ok {
			return nil, fmt.Errorf("no PoP %s in the lab", t.PoP)
		}
		t.PoPAddr = addr
	}
	return d.run(ctx, lab, t)
}

// All returns every drill, in the order Run runs them when none is named.
// load is how long origin-down's clients keep requesting while the origin
// is down.
func All(load time.Duration) []Drill {
	eu := Target{PoP: "pop-eu", Client: "client-eu"}
	na := Target{PoP: "pop-na", Client: "client-na"}
	return []Drill{
		{"origin-down", Target{}, func(ctx context.Context, lab Lab, _ Target) ([]Check, error) { return originDown(ctx, lab, load) }},
		{"origin-slow", Target{PoP: "pop-na", Client: "client-na"}, func(ctx context.Context, lab Lab, t Target) ([]Check, error) {
			return originSlow(ctx, lab, t, 300)
		}},
		{"origin-partition", Target{PoP: "pop-eu", Client: "client-eu", Bystander: "client-na"}, func(ctx context.Context, lab Lab, t Target) ([]Check, error) {
			return originPartition(ctx, lab, t, load)
		}},
		{"pop-down", eu, popDown},
		{"pop-drain", eu, popDrain},
		{"cold-restart", na, coldRestart},
		{"flood", na, func(ctx context.Context, lab Lab, t Target) ([]Check, error) {
			return flood(ctx, lab, t, defaultFloodPlan())
		}},
		{"hostile", Target{PoP: "pop-na", Client: "client-na", Bystander: "client-eu"}, hostile},
		{"latency-steer", Target{PoP: "pop-eu", Client: "client-moved", Bystander: "client-eu"}, func(ctx context.Context, lab Lab, t Target) ([]Check, error) {
			return latencySteer(ctx, lab, t, 60*time.Second)
		}},
		{"purge", eu, func(ctx context.Context, lab Lab, t Target) ([]Check, error) { return purgeLatency(ctx, lab, t, 50) }},
		{"control-plane", Target{PoP: "pop-ap", Client: "client-ap", Bystander: "client-eu"}, controlPlane},
		{"shield", Target{}, shield},
	}
}

// Names are the drills' names, in All's order.
func Names() []string {
	var names []string
	for _, d := range All(0) {
		names = append(names, d.Name)
	}
	return names
}

// Select returns the named drills in the order given, or all of them if
// none is named.
func Select(names []string, load time.Duration) ([]Drill, error) {
	all := All(load)
	if len(names) == 0 {
		return all, nil
	}
	var out []Drill
	for _, n := range names {
		i := slices.IndexFunc(all, func(d Drill) bool { return d.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("drill %q: want one of %s", n, strings.Join(Names(), ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// clientByName finds a lab client.
func clientByName(cfg bench.LabConfig, name string) (bench.LabClient, error) {
	for _, c := range cfg.Clients {
		if c.Name == name {
			return c, nil
		}
	}
	return bench.LabClient{}, fmt.Errorf("no client %s", name)
}
