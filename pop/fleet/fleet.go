// Package fleet is the PoPs' control plane on NATS JetStream: global
// purge here; shared certificates and ticket keys in its subpackage
// fleettls, over the connection JetStream returns.
//
// A purge is published to a JetStream stream, where it is kept; every PoP
// reads the stream through its own durable consumer, applies each purge to
// its cache, acknowledges it to JetStream and tells the publisher (with how
// long it took) on the purge's acknowledgement subject. The publisher waits
// for the PoPs that were alive when it published: those with a fresh
// record in the fleet's key-value bucket, which each PoP renews.
//
// A PoP that was down or cut off finds the purges it missed waiting in its
// consumer when it comes back. Until it has applied every purge that was in
// the stream when it (re)connected, Synced reports false, and a PoP must
// not serve from its cache meanwhile. A PoP out of touch for longer than
// Config.MaxOffline can no longer know what was purged: StaleBefore then
// tells it to revalidate what it stored before it lost touch.
//
// The control plane requires credentials (Config.User and Password) and,
// given Config.RootCAs, TLS: without them nothing can be published.
package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a PoP's membership of the fleet.
type Config struct {
	// URL is the NATS server (or servers, comma-separated) to join, e.g.
	// nats://10.77.0.5:4222 or tls://... . Required.
	URL string
	// PoP is this PoP's name: its consumer, its record and its
	// acknowledgements carry it. Required; letters, digits, '-' and '_'.
	PoP string
	// User and Password authenticate to the NATS server. Required: the
	// control plane carries purges, which anyone who can publish could
	// send.
	User, Password string
	// RootCAs, if set, makes the connection TLS, trusting these roots
	// (the lab CA). If nil, the connection is plain TCP.
	RootCAs *x509.CertPool
	// Apply purges this PoP's cache as p says and returns how many
	// entries it removed or marked stale. Required.
	Apply func(p Purge) (int, error)
	// MaxOffline is how long the PoP may be out of touch with the
	// control plane before what it stored earlier can no longer be
	// trusted (see StaleBefore). If zero, 30s.
	MaxOffline time.Duration
	// Alive is how long a PoP's record in the fleet lasts unless renewed
	// (it is renewed every third of it). If zero, 6s.
	Alive time.Duration
	// Logger receives connection changes. If nil, slog.Default().
	Logger *slog.Logger
}

// Names in NATS.
const (
	purgeStream   = "CDN_PURGE"
	purgeSubject  = "cdn.purge"
	ackSubject    = "cdn.purge.ack." // + the purge's ID
	membersBucket = "cdn_fleet"
)

// Purge is one purge: of a URL (its cache key) or of a surrogate key
// (tag), hard (removed) or soft (marked stale, revalidated before reuse).
type Purge struct {
	ID   string    `json:"id"`
	URL  string    `json:"url,omitempty"`
	Tag  string    `json:"tag,omitempty"`
	Soft bool      `json:"soft,omitempty"`
	From string    `json:"from"` // the PoP that published it
	At   time.Time `json:"at"`   // when it was published
}

func (p Purge) validate() error {
	switch {
	case (p.URL == "") == (p.Tag == ""):
		return errors.New("purge: give a url or a tag, one of them")
	case p.URL != "" && !strings.HasPrefix(p.URL, "http://") && !strings.HasPrefix(p.URL, "https://"):
		return fmt.Errorf("purge: url %q: want an absolute http or https URL", p.URL)
	}
	return nil
}

// Ack is one PoP's acknowledgement of a purge.
type Ack struct {
	PoP     string        `json:"pop"`
	Removed int           `json:"removed"`
	Error   string        `json:"error,omitempty"`
	Latency time.Duration `json:"latency_ns"` // from publication to applied
}

// Fleet is a PoP's membership of the fleet.
type Fleet struct {
	cfg  Config
	log  *slog.Logger
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	cons jetstream.ConsumeContext

	// target is the stream's last sequence when the PoP last (re)joined:
	// it has caught up once it has applied that far (applied): every
	// purge up to applied, not merely one that far, since redeliveries
	// (after a partition, each purge's ack wait) come in any order.
	// Purges applied above the first gap wait in ahead (guarded by
	// appliedMu, which every change of applied holds).
	target, applied atomic.Uint64
	appliedMu       sync.Mutex
	ahead           map[uint64]bool
	// offlineAt is when the connection was lost (UnixNano; 0 while
	// connected); staleBefore the cutoff of the last long absence.
	offlineAt, staleBefore atomic.Int64
	connected              atomic.Bool

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var (
	errNotConnected = errors.New("fleet: not connected to the control plane")
)

func (cfg *Config) validate() error {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("fleet url: empty, want nats://host:port"))
	}
	if cfg.PoP == "" || strings.ContainsFunc(cfg.PoP, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) {
		errs = append(errs, fmt.Errorf("fleet pop name %q: want letters, digits, '-' and '_'", cfg.PoP))
	}
	if cfg.User == "" || cfg.Password == "" {
		errs = append(errs, errors.New("fleet credentials: user and password are required"))
	}
	if cfg.Apply == nil {
		errs = append(errs, errors.New("fleet: Apply is required"))
	}
	if cfg.MaxOffline < 0 || cfg.Alive < 0 {
		errs = append(errs, errors.New("fleet: MaxOffline and Alive must not be negative"))
	}
	return errors.Join(errs...)
}

// Join connects to the control plane, creates the purge stream, this
// PoP's consumer and the fleet's bucket if they are missing, and starts
// applying purges. It fails if the control plane cannot be reached now;
// once joined, it reconnects by itself.
func Join(ctx context.Context, cfg Config) (*Fleet, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxOffline == 0 {
		cfg.MaxOffline = 30 * time.Second
	}
	if cfg.Alive == 0 {
		cfg.Alive = 6 * time.Second
	}
	f := &Fleet{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	if f.log == nil {
		f.log = slog.Default()
	}
	opts := []nats.Option{
		nats.Name("pop " + cfg.PoP),
		nats.UserInfo(cfg.User, cfg.Password),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A partition shows as missed pings within about 3 s (the default
		// is minutes), so the PoP knows it is out of touch.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(2),
		// A reconnect attempt that started during a partition gives up
		// within two seconds, so the PoP is back soon after the network;
		// a connection's handshake (TCP, TLS, INFO, CONNECT and a PING)
		// is about four round trips, which must fit: 240 ms apart, as
		// pop-ap and the lab's NATS server are, one second did not
		// always.
		nats.Timeout(2 * time.Second),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { f.lost(time.Now()) }),
		nats.ReconnectHandler(func(*nats.Conn) { f.rejoin() }),
	}
	if cfg.RootCAs != nil {
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("fleet: connect to %s: %w", cfg.URL, err)
	}
	f.nc = nc
	if err := f.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	f.connected.Store(true)
	f.wg.Add(1)
	go f.heartbeat()
	return f, nil
}

func (f *Fleet) setup(ctx context.Context) error {
	js, err := jetstream.New(f.nc)
	if err != nil {
		return fmt.Errorf("fleet: jetstream: %w", err)
	}
	f.js = js
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     purgeStream,
		Subjects: []string{purgeSubject},
		// A purge older than this cannot matter to a PoP that was away
		// longer than MaxOffline: it revalidates all it held anyway.
		MaxAge:  24 * time.Hour,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("fleet: purge stream: %w", err)
	}
	if f.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: membersBucket, TTL: f.cfg.Alive}); err != nil {
		return fmt.Errorf("fleet: members bucket: %w", err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "pop-" + f.cfg.PoP,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// A purge delivered while the PoP was cut off went to a pull
		// request the server still thought alive, and comes again only
		// once its ack wait is over: after a partition heals, that wait
		// is most of the catch-up (5 s made it 5.4 s in the lab's
		// control-plane drill). Applying a purge takes microseconds and
		// an acknowledgement one round trip, so a second is ample; one
		// delivered twice is applied twice, which changes nothing.
		AckWait: time.Second,
	})
	if err != nil {
		return fmt.Errorf("fleet: consumer pop-%s: %w", f.cfg.PoP, err)
	}
	// What this PoP applied in an earlier life is acknowledged and will
	// not come again: it counts as applied.
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("fleet: consumer pop-%s: %w", f.cfg.PoP, err)
	}
	f.appliedFloor(info.AckFloor.Stream)
	if err := f.setTarget(ctx, stream); err != nil {
		return err
	}
	if f.cons, err = cons.Consume(f.apply); err != nil {
		return fmt.Errorf("fleet: consume: %w", err)
	}
	if _, err := f.kv.Put(ctx, f.cfg.PoP, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("fleet: record pop %s: %w", f.cfg.PoP, err)
	}
	return nil
}

// setTarget notes the stream's last sequence: the PoP has caught up when
// it has applied that far.
func (f *Fleet) setTarget(ctx context.Context, stream jetstream.Stream) error {
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("fleet: purge stream info: %w", err)
	}
	if info.State.FirstSeq > 0 {
		f.appliedFloor(info.State.FirstSeq - 1)
	}
	f.target.Store(info.State.LastSeq)
	return nil
}

// lost notes that the connection went down at t.
func (f *Fleet) lost(t time.Time) {
	f.connected.Store(false)
	f.offlineAt.CompareAndSwap(0, t.UnixNano())
	select {
	case <-f.stop:
		return // Close: leaving is not losing
	default:
	}
	f.log.Warn("fleet: lost the control plane", "pop", f.cfg.PoP)
}

// rejoin runs when the connection is back: it notes how far the stream
// has gone, which the PoP must apply before it has caught up.
func (f *Fleet) rejoin() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := f.js.Stream(ctx, purgeStream)
	if err == nil {
		err = f.setTarget(ctx, stream)
	}
	if err != nil {
		// Not connected as far as Synced goes; the next reconnect tries
		// again.
		f.log.Warn("fleet: back, but cannot read the purge stream", "pop", f.cfg.PoP, "error", err)
		return
	}
	if off := f.offlineAt.Swap(0); off != 0 && time.Since(time.Unix(0, off)) > f.cfg.MaxOffline {
		f.staleBefore.Store(off)
	}
	// Alive again at once: a purge published now waits for this PoP.
	if _, err := f.kv.Put(ctx, f.cfg.PoP, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		f.log.Warn("fleet: back, but cannot record this PoP as alive", "pop", f.cfg.PoP, "error", err)
	}
	f.connected.Store(true)
	f.log.Info("fleet: back in touch with the control plane", "pop", f.cfg.PoP)
}

// apply applies one purge from the stream and acknowledges it.
func (f *Fleet) apply(msg jetstream.Msg) {
	var p Purge
	ack := Ack{PoP: f.cfg.PoP}
	if err := json.Unmarshal(msg.Data(), &p); err != nil {
		ack.Error = fmt.Sprintf("undecodable purge: %v", err)
	} else if err := p.validate(); err != nil {
		ack.Error = err.Error()
	} else if n, err := f.cfg.Apply(p); err != nil {
		ack.Error = err.Error()
	} else {
		ack.Removed = n
	}
	if !p.At.IsZero() {
		ack.Latency = time.Since(p.At)
	}
	if err := msg.Ack(); err != nil {
		f.log.Warn("fleet: ack purge", "id", p.ID, "error", err)
	}
	if meta, err := msg.Metadata(); err == nil {
		f.markApplied(meta.Sequence.Stream)
	}
	if p.ID != "" {
		b, _ := json.Marshal(ack)
		f.nc.Publish(ackSubject+p.ID, b)
	}
}

// markApplied notes that the purge at stream sequence seq is applied, and
// moves applied past every purge applied without a gap.
func (f *Fleet) markApplied(seq uint64) {
	f.appliedMu.Lock()
	defer f.appliedMu.Unlock()
	a := f.applied.Load()
	if seq <= a {
		return
	}
	if f.ahead == nil {
		f.ahead = map[uint64]bool{}
	}
	f.ahead[seq] = true
	f.advance(a)
}

// appliedFloor raises applied to at least seq: what is below the
// stream's first sequence (expired) or acknowledged in an earlier life
// will not come.
func (f *Fleet) appliedFloor(seq uint64) {
	f.appliedMu.Lock()
	defer f.appliedMu.Unlock()
	if seq <= f.applied.Load() {
		return
	}
	for k := range f.ahead {
		if k <= seq {
			delete(f.ahead, k)
		}
	}
	f.advance(seq)
}

// advance stores applied as a moved past the purges in ahead that follow
// it without a gap. Caller holds appliedMu.
func (f *Fleet) advance(a uint64) {
	for f.ahead[a+1] {
		delete(f.ahead, a+1)
		a++
	}
	f.applied.Store(a)
}

// heartbeat renews the PoP's record in the fleet.
func (f *Fleet) heartbeat() {
	defer f.wg.Done()
	t := time.NewTicker(f.cfg.Alive / 3)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Alive/3)
			if f.connected.Load() {
				f.kv.Put(ctx, f.cfg.PoP, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
			}
			cancel()
		}
	}
}

// JetStream is the PoP's JetStream on its connection to the control
// plane, for the rest of what the fleet shares (package fleettls). Its
// operations fail while the connection is down, and after Close.
func (f *Fleet) JetStream() jetstream.JetStream { return f.js }

// Synced reports whether the PoP is in touch with the control plane and
// has applied every purge that was published before it last (re)joined.
func (f *Fleet) Synced() bool {
	return f.connected.Load() && f.applied.Load() >= f.target.Load()
}

// Vouch says what of the PoP's cache may be served at now without asking
// the origin (cache.Config.Vouch): nothing (ok false) while it catches up
// with purges it missed after coming back; and when it is, or was, out of
// touch for longer than MaxOffline, nothing it stored before it lost touch
// (since). Within MaxOffline of losing touch it goes on serving what it
// holds: a purge published meanwhile reaches it when it is back.
func (f *Fleet) Vouch(now time.Time) (ok bool, since time.Time) {
	ok = f.applied.Load() >= f.target.Load()
	if off := f.offlineAt.Load(); off != 0 && now.Sub(time.Unix(0, off)) > f.cfg.MaxOffline {
		return ok, time.Unix(0, off)
	}
	if sb := f.staleBefore.Load(); sb != 0 {
		return ok, time.Unix(0, sb)
	}
	return ok, time.Time{}
}

// StaleBefore is Vouch's since at now.
func (f *Fleet) StaleBefore() time.Time {
	_, since := f.Vouch(time.Now())
	return since
}

// Result is what a published purge came to.
type Result struct {
	ID string `json:"id"`
	// Expected are the PoPs alive when it was published; Acks the
	// acknowledgements that came within the wait, by PoP.
	Expected []string       `json:"expected"`
	Acks     map[string]Ack `json:"acks"`
}

// Missing are the expected PoPs that did not acknowledge.
func (r Result) Missing() []string {
	var m []string
	for _, p := range r.Expected {
		if _, ok := r.Acks[p]; !ok {
			m = append(m, p)
		}
	}
	return m
}

// Purge publishes p to the fleet and waits up to wait for the
// acknowledgements of every PoP alive now. It fails, saying so, if the
// control plane is out of reach or does not store the purge: a purge is
// never dropped silently.
func (f *Fleet) Purge(ctx context.Context, p Purge, wait time.Duration) (Result, error) {
	if err := p.validate(); err != nil {
		return Result{}, err
	}
	if !f.connected.Load() {
		return Result{}, errNotConnected
	}
	p.ID, p.From = nats.NewInbox()[len(nats.InboxPrefix):], f.cfg.PoP
	res := Result{ID: p.ID, Acks: map[string]Ack{}}
	acks := make(chan *nats.Msg, 1024)
	sub, err := f.nc.ChanSubscribe(ackSubject+p.ID, acks)
	if err != nil {
		return res, fmt.Errorf("fleet: subscribe to acknowledgements: %w", err)
	}
	defer sub.Unsubscribe()
	p.At = time.Now()
	b, _ := json.Marshal(p)
	if _, err := f.js.Publish(ctx, purgeSubject, b); err != nil {
		return res, fmt.Errorf("fleet: publish purge: %w", err)
	}
	// Who to wait for is asked after publishing, not before: the purge
	// is on its way meanwhile.
	members, err := f.kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return res, fmt.Errorf("fleet: published, but cannot tell who is alive: %w", err)
	}
	res.Expected = members
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(res.Missing()) > 0 {
		select {
		case m := <-acks:
			var a Ack
			if json.Unmarshal(m.Data, &a) == nil && a.PoP != "" {
				res.Acks[a.PoP] = a
			}
		case <-timer.C:
			return res, nil
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	return res, nil
}

// Close leaves the fleet: stops applying purges and closes the
// connection. The PoP's consumer stays, so that it catches up when it
// joins again. Closing again does nothing.
func (f *Fleet) Close() {
	f.closeOnce.Do(func() {
		close(f.stop)
		f.wg.Wait()
		if f.cons != nil {
			f.cons.Stop()
		}
		f.nc.Close()
	})
}
