// Package fleettls keeps the fleet's TLS material in NATS JetStream's
// key-value store, so that every PoP serves the same: the ACME cache
// (certificates and the ACME account key), in which only one PoP at a time
// orders a name, and the session-ticket secret, which one PoP at a time
// rotates and every PoP follows.
package fleettls

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/acme/autocert"

	"github.com/edgecdn/cdn/certs"
)

// Names in NATS.
const (
	acmeBucket  = "cdn_acme"       // autocert's cache
	locksBucket = "cdn_acme_locks" // who is ordering what, with a TTL
)

// accountKey is autocert's name for its account key; legacyAccountKey the
// name older versions used, which autocert still reads.
const (
	accountKey       = "acme_account+key"
	legacyAccountKey = "acme_account.key"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// JetStream returns the fleet's JetStream, waiting for the PoP to
	// join if it has not yet, but not past ctx. Required.
	JetStream func(ctx context.Context) (jetstream.JetStream, error)
	// Holder names this process in the locks it takes (the PoP's name).
	// If empty, "pop".
	Holder string
	// LockTTL is how long a lock outlives a holder that stopped renewing
	// it (one that crashed or lost the control plane): the longest others
	// wait for an order that will not come. The holder renews it every
	// third of it. Every PoP should use the same: the locks bucket takes
	// the TTL of the last PoP that opened it. If zero, 30s.
	LockTTL time.Duration
	// Logger receives lock troubles. If nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock for renewal. If nil, time.Now.
	Now func() time.Time
}

// Cache is an autocert.Cache in the fleet's key-value store (bucket
// cdn_acme), shared by every PoP: the first to order a name stores the
// certificate there and the others use it, and the ACME account key
// autocert stores in it is shared too.
//
// Only one PoP orders a name: autocert reads the cache before it orders
// and writes it after, so a Get that misses a certificate (or the account
// key) takes a lock on the name in bucket cdn_acme_locks (KV Create,
// which only one PoP can win) and reports the miss, and the PoP orders;
// its Put releases the lock. While another PoP holds the lock, Get of a
// missing certificate returns an error wrapping certs.ErrOrderedElsewhere,
// which certs.ACME answers by asking again shortly, and Get of the
// missing account key waits for it. Renewal is covered the same way: a
// Get of a certificate that is due for renewal (autocert's default: the
// last third of its life, at most 30 days) takes the lock and returns it,
// so that the PoP renews it, or, if another PoP holds the lock, waits for
// the renewed one.
//
// A lock lasts as long as the autocert call that took it (Get's ctx),
// renewed every LockTTL/3, and is released by the Put of its name or,
// if the order failed, when that call ends. A holder that dies leaves it
// to expire within LockTTL.
//
// A PoP that first loads a certificate while another PoP is renewing it
// waits for the renewal inside Get, where autocert holds the lock over
// all its names: its first handshakes wait as long (at most until the
// other's call ends or its lock expires).
//
// While the control plane cannot be reached, Get and Put fail: a PoP then
// serves the certificates it holds in memory but obtains none, rather
// than ordering by itself. autocert's renewal is the exception: when the
// cache fails it orders anyway, and as Put fails it drops what it got and
// tries again 30 to 60 minutes later, so an outage at renewal time costs
// each PoP an order per try.
type Cache struct {
	cfg CacheConfig
	id  string // Holder plus a random suffix: this process's locks
	log *slog.Logger

	mu          sync.Mutex // guards the buckets and held
	data, locks jetstream.KeyValue
	held        map[string]*heldLock
}

// heldLock is a lock this process holds.
type heldLock struct {
	mu       sync.Mutex // guards rev and released
	rev      uint64
	released bool
	stop     chan struct{}
}

// NewCache validates cfg and returns a Cache. It does not touch NATS:
// the buckets are opened on first use.
func NewCache(cfg CacheConfig) (*Cache, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("fleettls cache: JetStream is required")
	}
	if cfg.LockTTL < 0 {
		return nil, fmt.Errorf("fleettls cache: lock TTL %v, want a positive duration or zero for 30s", cfg.LockTTL)
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 30 * time.Second
	}
	if cfg.Holder == "" {
		cfg.Holder = "pop"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache{cfg: cfg, log: cfg.Logger, held: map[string]*heldLock{}}
	if c.log == nil {
		c.log = slog.Default()
	}
	var b [6]byte
	rand.Read(b[:])
	c.id = cfg.Holder + "/" + base64.RawURLEncoding.EncodeToString(b[:])
	return c, nil
}

// buckets opens (creating if missing) the cache's two buckets.
func (c *Cache) buckets(ctx context.Context) (data, locks jetstream.KeyValue, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != nil {
		return c.data, c.locks, nil
	}
	js, err := c.cfg.JetStream(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("fleettls cache: %w", err)
	}
	d, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: acmeBucket, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, nil, fmt.Errorf("fleettls cache: bucket %s: %w", acmeBucket, err)
	}
	l, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: locksBucket, TTL: c.cfg.LockTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, nil, fmt.Errorf("fleettls cache: bucket %s: %w", locksBucket, err)
	}
	c.data, c.locks = d, l
	return d, l, nil
}

// kvKey is autocert's name made a valid KV key: autocert's names hold '+'
// (and '.', which NATS takes as a token separator), so they are stored
// base64url-encoded.
func kvKey(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

// What a name in autocert's cache is, for locking.
type kind int

const (
	plain   kind = iota // challenge tokens and the like: never locked
	cert                // a certificate: "example.com" or "example.com+rsa"
	account             // the account key
)

func kindOf(name string) kind {
	switch {
	case name == accountKey:
		return account
	case name == legacyAccountKey:
		return plain
	case !strings.Contains(name, "+"), strings.HasSuffix(name, "+rsa"):
		return cert
	}
	return plain
}

// Get returns the data stored under name, or autocert.ErrCacheMiss. For a
// certificate or the account key it takes the lock or waits, as the
// type's comment says.
func (c *Cache) Get(ctx context.Context, name string) ([]byte, error) {
	data, locks, err := c.buckets(ctx)
	if err != nil {
		return nil, err
	}
	k, kd := kvKey(name), kindOf(name)
	wait := 50 * time.Millisecond
	for {
		e, err := data.Get(ctx, k)
		switch {
		case err == nil:
			if kd != cert || !c.due(e.Value()) {
				return e.Value(), nil
			}
			// Due for renewal: the lock's holder renews it.
			holder, err := c.lock(ctx, locks, k)
			if err != nil {
				return nil, fmt.Errorf("fleettls cache: lock %s: %w", name, err)
			}
			if holder == "" {
				return e.Value(), nil
			}
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			if kd == plain {
				return nil, autocert.ErrCacheMiss
			}
			holder, err := c.lock(ctx, locks, k)
			if err != nil {
				return nil, fmt.Errorf("fleettls cache: lock %s: %w", name, err)
			}
			if holder == "" {
				return nil, autocert.ErrCacheMiss
			}
			if kd == cert {
				return nil, fmt.Errorf("fleettls cache: %s: %w (%s)", name, certs.ErrOrderedElsewhere, holder)
			}
		default:
			return nil, fmt.Errorf("fleettls cache: get %s: %w", name, err)
		}
		// Another PoP holds the lock: wait for what it stores, or for the
		// lock to go (released or expired), and look again.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fleettls cache: waiting for %s from another PoP: %w", name, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// due reports whether the certificate in data (autocert's PEM: key, then
// chain) is due for renewal by autocert's default: in the last third of
// its life, at most the last 30 days. Data it cannot read is not due:
// autocert decides what to do with it.
func (c *Cache) due(data []byte) bool {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return false
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return false
		}
		threshold := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
		return !c.cfg.Now().Before(leaf.NotAfter.Add(-threshold))
	}
}

// lock takes the lock on key k for as long as ctx lasts, and returns ""
// if this process holds it (now or already), or the holder's name.
func (c *Cache) lock(ctx context.Context, locks jetstream.KeyValue, k string) (holder string, err error) {
	for {
		rev, err := locks.Create(ctx, k, []byte(c.id))
		if err == nil {
			c.hold(ctx, locks, k, rev)
			return "", nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", err
		}
		e, err := locks.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return "", err
		}
		if string(e.Value()) == c.id {
			return "", nil
		}
		return string(e.Value()), nil
	}
}

// hold keeps the lock on k (at revision rev) until Put releases it or ctx
// ends, renewing it every LockTTL/3.
func (c *Cache) hold(ctx context.Context, locks jetstream.KeyValue, k string, rev uint64) {
	h := &heldLock{rev: rev, stop: make(chan struct{})}
	c.mu.Lock()
	c.held[k] = h
	c.mu.Unlock()
	go func() {
		t := time.NewTicker(c.cfg.LockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-ctx.Done():
				c.release(locks, k, h)
				return
			case <-t.C:
				h.mu.Lock()
				if !h.released {
					rctx, cancel := context.WithTimeout(context.Background(), c.cfg.LockTTL/3)
					rev, err := locks.Update(rctx, k, []byte(c.id), h.rev)
					cancel()
					if err != nil {
						c.log.Warn("fleet acme cache: cannot renew a lock; another PoP may take it when it expires", "key", k, "error", err)
					} else {
						h.rev = rev
					}
				}
				h.mu.Unlock()
			}
		}
	}()
}

// release deletes the lock on k if this process still holds it.
func (c *Cache) release(locks jetstream.KeyValue, k string, h *heldLock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	h.released = true
	close(h.stop)
	c.mu.Lock()
	if c.held[k] == h {
		delete(c.held, k)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := locks.Delete(ctx, k, jetstream.LastRevision(h.rev)); err != nil {
		c.log.Warn("fleet acme cache: cannot release a lock; it expires by itself", "key", k, "error", err)
	}
}

// Put stores data under name and releases this process's lock on it.
func (c *Cache) Put(ctx context.Context, name string, data []byte) error {
	d, locks, err := c.buckets(ctx)
	if err != nil {
		return err
	}
	k := kvKey(name)
	if _, err := d.Put(ctx, k, data); err != nil {
		return fmt.Errorf("fleettls cache: put %s: %w", name, err)
	}
	c.mu.Lock()
	h := c.held[k]
	c.mu.Unlock()
	if h != nil {
		c.release(locks, k, h)
	}
	return nil
}

// Delete removes name. Removing what is not there is not an error.
func (c *Cache) Delete(ctx context.Context, name string) error {
	d, _, err := c.buckets(ctx)
	if err != nil {
		return err
	}
	if err := d.Delete(ctx, kvKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("fleettls cache: delete %s: %w", name, err)
	}
	return nil
}
