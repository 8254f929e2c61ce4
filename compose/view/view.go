// Package view is the lab's live view: one self-contained page that shows,
// every second, the three regions of a running lab as a person watching it
// wants them: each PoP's health (/readyz, and degraded when its origin is
// down), its requests per second, cache hit ratio and cache bytes (from its
// /metrics), the time to first byte clients of each region see (p50 and p99
// of a steady, bounded probe: one request a second from each client
// region), where GeoDNS sends each region now (an A query for www.cdn.lab
// with the region's client subnet, RFC 7871), and the RTT matrix (the
// configured one from docker-compose.yml beside what each PoP measured to
// each region's clients, from its /rtt).
//
// A Server collects (Run) and serves (Handler): GET / is the page, GET
// /state the latest snapshot as JSON, GET /events the snapshots as
// server-sent events, one a second, which the page listens to.
//
// The same code runs in both lab runners: lab up serves it on the host and
// opens every connection from inside the lab's namespaces (Config.DialFrom),
// and the Docker lab's view service runs lab view, whose connections leave
// its own container.
package view

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/compose"
)

// Config configures a Server.
type Config struct {
	// Topo is the lab. Required: its PoPs (hosts running pop with
	// -admin), clients (client-REGION), geodns and RTT matrix are what the
	// view shows.
	Topo *compose.Topology
	// DialFrom returns how to open connections (TCP, and UDP for DNS) from
	// inside the lab host name. If nil, every connection is opened
	// directly (a view running on the lab network itself, as in Docker).
	DialFrom func(host string) func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verifies the PoPs for the probes (the lab CA). If nil, the
	// system roots.
	RootCAs *x509.CertPool
	// CDNName is the name probed and asked of GeoDNS. If empty,
	// www.cdn.lab.
	CDNName string
	// ProbePath is what the probes request. If empty, /gen/1k?view=1.
	ProbePath string
	// Interval is how often the view collects and sends a snapshot, and
	// each region probes once. If zero, 1s.
	Interval time.Duration
	// Window is how many probe samples per region the percentiles cover.
	// If zero, 60 (a minute at the default interval).
	Window int
	// Logger receives what fails in the background. If nil,
	// slog.Default().
	Logger *slog.Logger
}

// Server collects the lab's state and serves the view.
type Server struct {
	cfg     Config
	log     *slog.Logger
	regions []region
	geo     netip.Addr

	mu     sync.Mutex // guards latest, subs
	latest []byte     // the latest Snapshot, as JSON
	subs   map[chan []byte]struct{}
}

// region is what the view follows in one region: its PoP and its client.
type region struct {
	name   string
	pop    compose.Host
	admin  string // host:port of the PoP's admin listener
	client compose.Host
	probe  *prober
	pstate *popState
}

// New checks cfg against the topology and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Topo == nil {
		return nil, errors.New("view: Config.Topo is nil, want the lab topology (compose.Load)")
	}
	if cfg.CDNName == "" {
		cfg.CDNName = "www.cdn.lab"
	}
	if cfg.ProbePath == "" {
		cfg.ProbePath = "/gen/1k?view=1"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 60
	}
	s := &Server{cfg: cfg, log: cfg.Logger, subs: map[chan []byte]struct{}{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	geo, ok := cfg.Topo.Host("geodns")
	if !ok {
		return nil, errors.New("view: the topology has no geodns host")
	}
	s.geo = geo.Addr
	for _, h := range cfg.Topo.Hosts {
		name, ok := strings.CutPrefix(h.Name, "pop-")
		if !ok {
			continue
		}
		admin, ok := h.Flag("admin")
		if !ok {
			return nil, fmt.Errorf("view: %s has no -admin in its command, want its admin listener (health and /metrics)", h.Name)
		}
		client, ok := cfg.Topo.Host("client-" + name)
		if !ok {
			return nil, fmt.Errorf("view: region %s has %s but no client-%s to probe from", name, h.Name, name)
		}
		r := region{name: name, pop: h, admin: admin, client: client, pstate: &popState{}}
		r.probe = newProber(s.dialer(client.Name), s.geo, client.Addr, cfg, cfg.Window)
		s.regions = append(s.regions, r)
	}
	if len(s.regions) == 0 {
		return nil, errors.New("view: the topology has no PoPs (hosts named pop-REGION)")
	}
	order := map[string]int{"na": 0, "eu": 1, "ap": 2}
	sort.SliceStable(s.regions, func(i, j int) bool {
		oi, ok1 := order[s.regions[i].name]
		oj, ok2 := order[s.regions[j].name]
		if ok1 != ok2 {
			return ok1
		}
		return oi < oj || oi == oj && s.regions[i].name < s.regions[j].name
	})
	s.latest, _ = json.Marshal(Snapshot{})
	return s, nil
}

// dialer opens connections from host, or directly.
func (s *Server) dialer(host string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.cfg.DialFrom != nil {
		return s.cfg.DialFrom(host)
	}
	return (&net.Dialer{}).DialContext
}

// Run collects a snapshot every Interval, and probes from every region,
// until ctx ends.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range s.regions {
		wg.Go(func() { r.probe.run(ctx, s.cfg.Interval) })
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.publish(s.collect(ctx))
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// publish keeps snap as the latest and sends it to every subscriber that
// has taken the previous one (a slow one skips snapshots).
func (s *Server) publish(snap Snapshot) {
	b, err := json.Marshal(snap)
	if err != nil {
		s.log.Error("view: snapshot", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = b
	for ch := range s.subs {
		select {
		case ch <- b:
		default:
		}
	}
}
