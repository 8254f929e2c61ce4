package fleettls

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgecdn/cdn/certs"
)

// Names in NATS.
const (
	tlsBucket  = "cdn_tls" // the ticket secrets
	secretsKey = "tickets"
	// tlsHistory is how many revisions of the secrets the bucket keeps: a
	// record of who rotated when.
	tlsHistory = 16
)

// secrets is the value under secretsKey.
type secrets struct {
	// Secret issues session tickets now; Created is when it was made, and
	// By the PoP that made it.
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
	By      string    `json:"by"`
	// Older are the secrets it replaced less than a ticket's lifetime
	// ago, newest last: tickets issued under them are still accepted, by
	// PoPs that joined after them too.
	Older []retired `json:"older,omitempty"`
	// QUIC is the secret QUIC's token-generator and stateless-reset keys
	// derive from. It is made once with the first Secret and never
	// rotated: quic-go fixes those keys when a PoP's transport starts, so
	// a key rotated by one PoP would differ from the one every running
	// PoP keeps until it restarts.
	QUIC []byte `json:"quic"`
}

type retired struct {
	Secret  []byte    `json:"secret"`
	Retired time.Time `json:"retired"`
}

// TicketsConfig configures Tickets.
type TicketsConfig struct {
	// Keys receive the fleet's secret (certs.TicketKeys.SetSecret); they
	// keep whatever secret they were made with until the fleet answers.
	// Its Rotation is also how long one fleet secret issues tickets before
	// a PoP replaces it. Required.
	Keys *certs.TicketKeys
	// PoP names this PoP in the secrets it makes. Required.
	PoP string
	// Poll is how often the PoP reads the secret besides watching it (in
	// case a watch misses an update across a reconnection). If zero, 10s.
	Poll time.Duration
	// Logger receives rotations and connection troubles. If nil,
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Tickets distributes the session-ticket secret through the fleet's
// key-value store (bucket cdn_tls): the first PoP to find none creates
// it (KV Create, which only one can win), every PoP watches it and
// installs it into its certs.TicketKeys, and when it has issued tickets
// for a rotation period one PoP replaces it (KV Update at the revision
// it read, which only one PoP can win; the others receive the winner's).
// The replaced secrets travel with the new one for a ticket's lifetime,
// so a rotation never stops a ticket from resuming at any PoP.
type Tickets struct {
	cfg   TicketsConfig
	log   *slog.Logger
	ready chan struct{} // closed when the first fleet secret is installed
	once  sync.Once

	mu     sync.Mutex // guards kv, cur, rev, jitter
	kv     jetstream.KeyValue
	cur    secrets
	rev    uint64
	jitter time.Duration // after cur's period, before this PoP rotates
}

// NewTickets validates cfg and returns Tickets; Run connects them.
func NewTickets(cfg TicketsConfig) (*Tickets, error) {
	var errs []error
	if cfg.Keys == nil {
		errs = append(errs, errors.New("fleettls tickets: Keys is required"))
	}
	if cfg.PoP == "" {
		errs = append(errs, errors.New("fleettls tickets: PoP is required"))
	}
	if cfg.Poll < 0 {
		errs = append(errs, fmt.Errorf("fleettls tickets: poll %v, want a positive duration or zero for 10s", cfg.Poll))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Poll == 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Tickets{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
	if t.log == nil {
		t.log = slog.Default()
	}
	return t, nil
}

// Ready is closed once the fleet's secret is in Keys.
func (t *Tickets) Ready() <-chan struct{} { return t.ready }

// QUICKeys returns the QUIC token-generator and stateless-reset keys of
// the fleet, and false before Ready.
func (t *Tickets) QUICKeys() (token, reset [32]byte, ok bool) {
	t.mu.Lock()
	quic := t.cur.QUIC
	t.mu.Unlock()
	if quic == nil {
		return token, reset, false
	}
	token, reset = certs.QUICKeys(quic)
	return token, reset, true
}

// Revision is the revision of the secret installed last (0 before Ready).
func (t *Tickets) Revision() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rev
}

// Run keeps Keys on the fleet's secret, rotating it when due, until ctx
// ends. It opens the bucket through js and, when it loses the control
// plane, tries again every second.
func (t *Tickets) Run(ctx context.Context, js jetstream.JetStream) {
	for ctx.Err() == nil {
		err := t.follow(ctx, js)
		if ctx.Err() != nil {
			return
		}
		t.log.Warn("fleet ticket keys: lost the secret's updates; trying again", "pop", t.cfg.PoP, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// follow opens the bucket, makes sure there is a secret, installs it and
// follows its updates until ctx ends or something fails.
func (t *Tickets) follow(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: tlsBucket, History: tlsHistory, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", tlsBucket, err)
	}
	t.mu.Lock()
	t.kv = kv
	t.mu.Unlock()
	if err := t.read(ctx, kv); err != nil {
		return err
	}
	w, err := kv.Watch(ctx, secretsKey)
	if err != nil {
		return fmt.Errorf("watch %s: %w", secretsKey, err)
	}
	defer w.Stop()
	poll := time.NewTicker(t.cfg.Poll)
	defer poll.Stop()
	for {
		t.mu.Lock()
		due := t.cur.Created.Add(t.cfg.Keys.Rotation() + t.jitter)
		t.mu.Unlock()
		rotate := time.NewTimer(max(0, due.Sub(t.cfg.Now())))
		select {
		case <-ctx.Done():
			rotate.Stop()
			return nil
		case e, ok := <-w.Updates():
			rotate.Stop()
			if !ok {
				return errors.New("watch ended")
			}
			if e == nil { // the end of the initial values
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				// Removed by hand: make a new one.
				if err := t.read(ctx, kv); err != nil {
					return err
				}
				continue
			}
			if err := t.install(e.Value(), e.Revision()); err != nil {
				t.log.Warn("fleet ticket keys: ignoring an unreadable secret", "revision", e.Revision(), "error", err)
			}
		case <-poll.C:
			rotate.Stop()
			if err := t.read(ctx, kv); err != nil {
				return err
			}
		case <-rotate.C:
			won, err := t.Rotate(ctx)
			if err != nil {
				return err
			}
			if !won { // take the winner's secret now, not when the watch brings it
				if err := t.read(ctx, kv); err != nil {
					return err
				}
			}
		}
	}
}

// read installs the stored secret, creating it if there is none.
func (t *Tickets) read(ctx context.Context, kv jetstream.KeyValue) error {
	for {
		e, err := kv.Get(ctx, secretsKey)
		if err == nil {
			return t.install(e.Value(), e.Revision())
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("get %s: %w", secretsKey, err)
		}
		s := secrets{Secret: newSecret(), Created: t.cfg.Now(), By: t.cfg.PoP, QUIC: newSecret()}
		b, _ := json.Marshal(s)
		rev, err := kv.Create(ctx, secretsKey, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // another PoP was first: take its secret
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", secretsKey, err)
		}
		t.log.Info("fleet ticket keys: made the fleet's first secret", "pop", t.cfg.PoP, "revision", rev)
		return t.install(b, rev)
	}
}

// install puts the secrets stored at rev into Keys, unless a later
// revision is installed already.
func (t *Tickets) install(value []byte, rev uint64) error {
	var s secrets
	if err := json.Unmarshal(value, &s); err != nil {
		return fmt.Errorf("secret revision %d: %w", rev, err)
	}
	if len(s.QUIC) < certs.MinSecretLen {
		return fmt.Errorf("secret revision %d: QUIC secret of %d bytes, want at least %d", rev, len(s.QUIC), certs.MinSecretLen)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if rev <= t.rev {
		return nil
	}
	older := make([][]byte, len(s.Older))
	for i, o := range s.Older {
		older[i] = o.Secret
	}
	if err := t.cfg.Keys.SetSecret(s.Secret, older...); err != nil {
		return fmt.Errorf("secret revision %d: %w", rev, err)
	}
	if t.cur.QUIC != nil && string(t.cur.QUIC) != string(s.QUIC) {
		t.log.Warn("fleet ticket keys: the fleet's QUIC secret changed; this PoP keeps the QUIC keys it started with until it restarts", "revision", rev)
	}
	t.cur, t.rev = s, rev
	// Up to a tenth of the period (at most 30s) past it, so that the PoPs
	// do not all try at the same instant; one wins anyway.
	t.jitter = time.Duration(rand.Int64N(int64(min(t.cfg.Keys.Rotation()/10, 30*time.Second)) + 1))
	t.once.Do(func() { close(t.ready) })
	return nil
}

func newSecret() []byte {
	b := make([]byte, certs.MinSecretLen)
	crand.Read(b)
	return b
}

// Rotate replaces the secret this PoP installed last with a new one, if
// no other PoP has replaced it meanwhile: it reports whether it did. The
// loser of a race installs the winner's secret from its watch. Run calls
// it when a secret has issued tickets for a rotation period.
func (t *Tickets) Rotate(ctx context.Context) (bool, error) {
	t.mu.Lock()
	kv, cur, rev := t.kv, t.cur, t.rev
	t.mu.Unlock()
	if kv == nil || rev == 0 {
		return false, errors.New("fleettls tickets: rotate: no secret from the fleet yet")
	}
	now := t.cfg.Now()
	next := secrets{Secret: newSecret(), Created: now, By: t.cfg.PoP, QUIC: cur.QUIC}
	for _, o := range append(cur.Older, retired{Secret: cur.Secret, Retired: now}) {
		if now.Sub(o.Retired) <= t.cfg.Keys.Lifetime() {
			next.Older = append(next.Older, o)
		}
	}
	b, _ := json.Marshal(next)
	newRev, err := kv.Update(ctx, secretsKey, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("fleettls tickets: rotate at revision %d: %w", rev, err)
	}
	t.log.Info("fleet ticket keys: rotated the fleet's secret", "pop", t.cfg.PoP, "revision", newRev)
	return true, t.install(b, newRev)
}
