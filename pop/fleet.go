package pop

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/fleet"
)

// FleetConfig joins the PoP to the fleet's control plane on NATS JetStream
// (package fleet): a purge posted to any PoP's admin listener reaches every
// PoP, and a PoP that missed purges applies them before it serves from its
// cache again. If URL is empty the PoP is alone, as it always was.
type FleetConfig struct {
	// URL is the NATS server: nats://host:4222, or tls://host:4222 with
	// CAFile. Several, comma-separated, for a cluster. Credentials may
	// come in it (nats://user:password@host:4222) instead of below.
	URL string `yaml:"url"`
	// User and Password authenticate to it; required with URL, here or
	// in it.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// CAFile, if set, makes the connection TLS, trusting this root (the
	// lab CA's root.pem).
	CAFile string `yaml:"ca_file"`
	// MaxOffline is how long the PoP goes on serving its cache while out
	// of touch with the control plane; past it, what it stored before is
	// revalidated. If zero, 30s.
	MaxOffline time.Duration `yaml:"max_offline"`
	// AckWait is how long POST /purge waits for every live PoP to
	// acknowledge. If zero, 2s.
	AckWait time.Duration `yaml:"ack_wait"`
}

// split returns the servers' URLs without credentials, and the
// credentials, from User and Password or else from the first URL that
// has them.
func (fc FleetConfig) split() (urls []string, user, password string, err error) {
	user, password = fc.User, fc.Password
	for _, raw := range strings.Split(fc.URL, ",") {
		u, perr := url.Parse(strings.TrimSpace(raw))
		if perr != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Hostname() == "" || u.Port() == "" {
			if perr == nil {
				raw = u.Redacted() // the password stays out of logs
			}
			return nil, "", "", fmt.Errorf("fleet.url: %q, want nats://host:port or tls://host:port", raw)
		}
		if u.User != nil {
			if p, ok := u.User.Password(); ok && user == "" && password == "" {
				user, password = u.User.Username(), p
			}
			u.User = nil
		}
		urls = append(urls, u.String())
	}
	return urls, user, password, nil
}

func (fc FleetConfig) validate(add func(string, ...any)) {
	if fc.URL == "" {
		return
	}
	_, user, password, err := fc.split()
	if err != nil {
		add("%v", err)
		return
	}
	if user == "" || password == "" {
		add("fleet.user, fleet.password: required with fleet.url, there or in it (the control plane takes no anonymous purges)")
	}
	if fc.MaxOffline < 0 || fc.AckWait < 0 {
		add("fleet.max_offline, fleet.ack_wait: want a positive duration or zero for the default")
	}
}

// loadFleetRoots reads fleet.ca_file, if set: the roots the control
// plane's certificate is checked against.
func loadFleetRoots(fc FleetConfig) (*x509.CertPool, error) {
	if fc.URL == "" || fc.CAFile == "" {
		return nil, nil
	}
	pool, err := certs.LoadPool(fc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("fleet.ca_file: %w", err)
	}
	return pool, nil
}

// vouch is the cache's Config.Vouch when the PoP is in a fleet: until it
// has joined, nothing is served from the cache without the origin's word.
func (s *Server) vouch(now time.Time) (bool, time.Time) {
	f := s.fleet.Load()
	if f == nil {
		return false, time.Time{}
	}
	return f.Vouch(now)
}

// joinFleet joins the control plane, trying every second until it can or
// the server stops.
func (s *Server) joinFleet() {
	fc := s.cfg.Fleet
	urls, user, password, _ := fc.split() // validated in New
	cfg := fleet.Config{
		URL: strings.Join(urls, ","), PoP: s.cfg.Name, User: user, Password: password, RootCAs: s.fleetRoots,
		MaxOffline: fc.MaxOffline, Logger: s.log, Apply: s.applyPurge,
	}
	for {
		ctx, cancel := context.WithTimeout(s.startCtx, 10*time.Second)
		f, err := fleet.Join(ctx, cfg)
		cancel()
		if err == nil {
			s.fleet.Store(f)
			s.log.Info("joined the fleet", "url", cfg.URL)
			return
		}
		s.log.Warn("cannot join the fleet yet; the cache is revalidated meanwhile", "url", cfg.URL, "error", err)
		select {
		case <-s.startCtx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// applyPurge applies a purge, from the fleet or from this PoP's own
// POST /purge, to this PoP's cache, and remembers it for a while (see
// recentPurges).
func (s *Server) applyPurge(p fleet.Purge) (int, error) {
	if s.cache == nil {
		return 0, nil
	}
	now := time.Now()
	if p.URL != "" {
		n, err := s.cache.PurgeURL(p.URL, p.Soft)
		if u, perr := url.Parse(p.URL); err == nil && perr == nil {
			s.purges.url(canonicalHost(u.Host), u.EscapedPath(), now)
		}
		return n, err
	}
	s.purges.tag(now)
	return s.cache.PurgeTag(p.Tag, p.Soft), nil
}

// leaveFleet leaves the control plane, if joined.
func (s *Server) leaveFleet() {
	if f := s.fleet.Swap(nil); f != nil {
		f.Close()
	}
}

var errNoFleet = errors.New("not joined to the fleet's control plane (fleet.url) yet")

// purgeFleet publishes purges to the fleet and waits for the PoPs'
// acknowledgements.
func (s *Server) purgeFleet(ctx context.Context, urls, tags []string, soft bool) ([]fleet.Result, error) {
	f := s.fleet.Load()
	if f == nil {
		return nil, errNoFleet
	}
	wait := s.cfg.Fleet.AckWait
	if wait == 0 {
		wait = 2 * time.Second
	}
	var out []fleet.Result
	var ps []fleet.Purge
	for _, u := range urls {
		ps = append(ps, fleet.Purge{URL: u, Soft: soft})
	}
	for _, t := range tags {
		ps = append(ps, fleet.Purge{Tag: t, Soft: soft})
	}
	// Published at once, so that n purges wait one ack_wait, not n.
	res := make([]fleet.Result, len(ps))
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { res[i], errs[i] = f.Purge(ctx, p, wait) })
	}
	wg.Wait()
	for i, p := range ps {
		if errs[i] != nil {
			return out, fmt.Errorf("%s%s: %w", p.URL, p.Tag, errs[i])
		}
		out = append(out, res[i])
	}
	return out, nil
}

// FleetSynced reports whether the PoP has joined the fleet's control plane
// and applied every purge published before it last (re)joined.
func (s *Server) FleetSynced() bool {
	f := s.fleet.Load()
	return f != nil && f.Synced()
}

// fleetGauge is pop_fleet_synced, for a PoP in a fleet.
func (s *Server) fleetGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pop_fleet_synced",
		Help: "1 if the PoP is joined to the fleet's control plane and has applied every purge published before it (re)joined; 0 while it is not (its cache is then revalidated or, within fleet.max_offline of losing touch, served).",
	}, func() float64 {
		if s.FleetSynced() {
			return 1
		}
		return 0
	})
}
