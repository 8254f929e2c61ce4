package pop

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/fleet"
	"github.com/edgecdn/cdn/pop/fleet/fleettls"
)

// FleetConfig joins the PoP to the fleet's control plane on NATS JetStream
// (package fleet): a purge posted to any PoP's admin listener reaches every
// PoP, and a PoP that missed purges applies them before it serves from its
// cache again. The fleet also shares TLS (package fleettls, see fleetTLS):
// ACME certificates and account key, ordered once for the fleet, and the
// session-ticket secret. If URL is empty the PoP is alone, as it always was.
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
			if ft := s.tls.fleet; ft != nil {
				ft.joined(f)
				s.wg.Go(func() { ft.tickets.Run(s.startCtx, f.JetStream()) })
			}
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
			s.purges.url(purgeKey(u.Host, u), now)
		}
		return n, err
	}
	s.purges.tag(p.Tag, now)
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

// fleetTLS is the TLS material a PoP in a fleet shares with the others
// through the fleet's key-value store (package fleettls):
//
//   - with tls.acme, the ACME cache (certificates, the account key and
//     challenge state) is the fleet's instead of tls.acme.dir, and the
//     fleet orders each name once. While the PoP has not joined, a lookup
//     in it waits up to fleetJoinWait and then fails: the handshake that
//     needed a certificate the PoP does not hold fails, and the PoP orders
//     nothing by itself;
//   - the session-ticket secret is the fleet's once the PoP has joined:
//     tls.ticket_key_file's secret (or, without the file, a random one)
//     issues tickets only until then, and tickets issued under it are
//     still accepted afterwards for their lifetime. One PoP at a time
//     rotates the fleet's secret every tls.ticket_rotation;
//   - the QUIC token and stateless-reset keys come from the fleet's QUIC
//     secret, which is never rotated: quic-go fixes them when the QUIC
//     listener starts (quicKeys).
//
// Both are built with the server, before it joins; joined hands them the
// fleet.
type fleetTLS struct {
	acmeCache *fleettls.Cache // nil without tls.acme
	tickets   *fleettls.Tickets

	f          atomic.Pointer[fleet.Fleet]
	joinedCh   chan struct{} // closed by joined
	joinedOnce sync.Once
}

const (
	// fleetJoinWait is how long an ACME cache lookup waits for the PoP
	// to join the fleet before it fails.
	fleetJoinWait = 10 * time.Second
	// fleetKeysWait is how long Serve waits for the fleet's QUIC secret
	// before it starts the QUIC listener with keys of its own.
	fleetKeysWait = 5 * time.Second
)

func newFleetTLS(cfg *Config, keys *certs.TicketKeys, logger *slog.Logger) (*fleetTLS, error) {
	ft := &fleetTLS{joinedCh: make(chan struct{})}
	var err error
	if ft.tickets, err = fleettls.NewTickets(fleettls.TicketsConfig{Keys: keys, PoP: cfg.Name, Logger: logger}); err != nil {
		return nil, fmt.Errorf("fleet tls: %w", err)
	}
	if cfg.TLS.ACME != nil {
		if ft.acmeCache, err = fleettls.NewCache(fleettls.CacheConfig{JetStream: ft.jetStream, Holder: cfg.Name, Logger: logger}); err != nil {
			return nil, fmt.Errorf("fleet tls: %w", err)
		}
	}
	return ft, nil
}

// joined hands the fleet, now joined, to the cache and the ticket keys.
func (ft *fleetTLS) joined(f *fleet.Fleet) {
	ft.f.Store(f)
	ft.joinedOnce.Do(func() { close(ft.joinedCh) })
}

// jetStream is the fleet's JetStream, once joined.
func (ft *fleetTLS) jetStream(ctx context.Context) (jetstream.JetStream, error) {
	select {
	case <-ft.joinedCh:
		return ft.f.Load().JetStream(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(fleetJoinWait):
		return nil, errNoFleet
	}
}

// quicKeys are the QUIC transport's token-generator and stateless-reset
// keys, which quic-go fixes when the transport starts. In a fleet they are
// the fleet's, so that every PoP accepts the others' tokens and resets
// their connections: Serve waits up to fleetKeysWait for them (the join
// runs meanwhile), and if the fleet has not answered by then this process
// keeps keys of its own secret (tls.ticket_key_file's, or random) until it
// restarts.
func (s *Server) quicKeys() (token, reset [32]byte) {
	ft := s.tls.fleet
	if ft == nil {
		return s.tls.tickets.QUICKeys()
	}
	select {
	case <-ft.tickets.Ready():
		if token, reset, ok := ft.tickets.QUICKeys(); ok {
			return token, reset
		}
	case <-time.After(fleetKeysWait):
	case <-s.startCtx.Done():
	}
	s.log.Warn("QUIC keys: no answer from the fleet; this PoP's QUIC tokens and stateless resets are its own until it restarts", "waited", fleetKeysWait)
	return s.tls.tickets.QUICKeys()
}
