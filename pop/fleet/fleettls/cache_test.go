package fleettls_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/acme/autocert"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/fleet"
	"github.com/edgecdn/cdn/pop/fleet/fleettest"
	"github.com/edgecdn/cdn/pop/fleet/fleettls"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// join joins srv's fleet as pop, until the test ends, and returns its
// JetStream.
func join(t *testing.T, srv *fleettest.Server, pop string) *fleet.Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := fleet.Join(ctx, fleet.Config{URL: srv.URL(), PoP: pop, User: fleettest.User, Password: fleettest.Password,
		Apply: func(fleet.Purge) (int, error) { return 0, nil }, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("join as %s: %v", pop, err)
	}
	t.Cleanup(f.Close)
	return f
}

// newCache is a Cache for pop in srv's fleet.
func newCache(t *testing.T, srv *fleettest.Server, pop string, ttl time.Duration) (*fleettls.Cache, *fleet.Fleet) {
	t.Helper()
	f := join(t, srv, pop)
	c, err := fleettls.NewCache(fleettls.CacheConfig{Holder: pop, LockTTL: ttl, Logger: testLogger(t),
		JetStream: func(context.Context) (jetstream.JetStream, error) { return f.JetStream(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

// testLogger logs into the test's output, shown when it fails or with -v.
func testLogger(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestCacheRoundTrip: what one PoP puts, another gets, under autocert's
// names (with '+' and '.'); a missing or deleted name is
// autocert.ErrCacheMiss; deleting what is not there is no error.
func TestCacheRoundTrip(t *testing.T) {
	srv := fleettest.Start(t)
	a, _ := newCache(t, srv, "pop-a", 0)
	b, _ := newCache(t, srv, "pop-b", 0)
	ctx := ctxT(t)
	for _, name := range []string{"www.cdn.test+token", "abc-_DEF+http-01", "acme_account.key"} {
		if _, err := a.Get(ctx, name); err != autocert.ErrCacheMiss {
			t.Errorf("Get(%q) before Put = %v, want autocert.ErrCacheMiss", name, err)
		}
		val := []byte("value of " + name)
		if err := a.Put(ctx, name, val); err != nil {
			t.Fatalf("Put(%q): %v", name, err)
		}
		if got, err := b.Get(ctx, name); err != nil || !bytes.Equal(got, val) {
			t.Errorf("Get(%q) at the other PoP = %q, %v; want %q", name, got, err, val)
		}
		if err := b.Delete(ctx, name); err != nil {
			t.Errorf("Delete(%q): %v", name, err)
		}
		if _, err := a.Get(ctx, name); err != autocert.ErrCacheMiss {
			t.Errorf("Get(%q) after Delete = %v, want autocert.ErrCacheMiss", name, err)
		}
		if err := a.Delete(ctx, name); err != nil {
			t.Errorf("Delete(%q) again = %v, want nil", name, err)
		}
	}
}

// TestCacheLocksOrders: the first PoP to miss a certificate takes the
// lock and orders; another PoP's Get then says it is ordered elsewhere
// until the first stores it; a lock ends with the call that took it, and
// one whose holder is gone expires.
func TestCacheLocksOrders(t *testing.T) {
	srv := fleettest.Start(t)
	a, fa := newCache(t, srv, "pop-a", time.Second)
	b, _ := newCache(t, srv, "pop-b", time.Second)
	ctx := ctxT(t)
	const name = "www.cdn.test"

	if _, err := a.Get(ctx, name); err != autocert.ErrCacheMiss {
		t.Fatalf("first Get at pop-a = %v, want autocert.ErrCacheMiss (and the lock)", err)
	}
	if _, err := a.Get(ctx, name); err != autocert.ErrCacheMiss {
		t.Fatalf("second Get at pop-a = %v, want autocert.ErrCacheMiss (it holds the lock)", err)
	}
	if _, err := b.Get(ctx, name); !errors.Is(err, certs.ErrOrderedElsewhere) {
		t.Fatalf("Get at pop-b while pop-a orders = %v, want certs.ErrOrderedElsewhere", err)
	}
	// The lock outlives its TTL while the call that took it goes on.
	time.Sleep(1500 * time.Millisecond)
	if _, err := b.Get(ctx, name); !errors.Is(err, certs.ErrOrderedElsewhere) {
		t.Fatalf("Get at pop-b after the lock's TTL = %v, want certs.ErrOrderedElsewhere (pop-a renews it)", err)
	}
	if err := a.Put(ctx, name, []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, name); err != nil || string(got) != "cert" {
		t.Fatalf("Get at pop-b after pop-a's Put = %q, %v; want %q", got, err, "cert")
	}

	// An order that fails (no Put) releases the lock when its call ends.
	const rsa = "www.cdn.test+rsa"
	actx, cancel := context.WithCancel(ctx)
	if _, err := a.Get(actx, rsa); err != autocert.ErrCacheMiss {
		t.Fatalf("Get(%q) at pop-a = %v, want autocert.ErrCacheMiss", rsa, err)
	}
	cancel()
	poll.Until(t, "pop-b to take the lock pop-a's ended call released", func() bool {
		_, err := b.Get(ctx, rsa)
		return err == autocert.ErrCacheMiss
	})

	// A holder that is gone (its connection closed) leaves the lock to
	// expire.
	const other = "img.cdn.test"
	if _, err := a.Get(ctx, other); err != autocert.ErrCacheMiss {
		t.Fatalf("Get(%q) at pop-a = %v, want autocert.ErrCacheMiss", other, err)
	}
	fa.Close()
	start := time.Now()
	poll.Until(t, "pop-a's lock to expire", func() bool {
		_, err := b.Get(ctx, other)
		return err == autocert.ErrCacheMiss
	})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("pop-b waited %v for an abandoned lock, want about the 1s TTL", d)
	}
}

// TestCacheWaitsForRenewalAndAccountKey: a certificate due for renewal is
// renewed by the PoP that takes the lock, and a PoP that asks meanwhile
// gets the renewed one; the account key is made by one PoP and the
// others wait for it.
func TestCacheWaitsForRenewalAndAccountKey(t *testing.T) {
	srv := fleettest.Start(t)
	a, _ := newCache(t, srv, "pop-a", 0)
	b, _ := newCache(t, srv, "pop-b", 0)
	ctx := ctxT(t)
	const name = "www.cdn.test"
	now := time.Now()
	old := certPEM(t, now.Add(-60*24*time.Hour), now.Add(20*24*time.Hour)) // in its last third
	fresh := certPEM(t, now, now.Add(90*24*time.Hour))
	if err := a.Put(ctx, name, old); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, name); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("Get of a certificate due for renewal at pop-a = %v, want it (and the lock, to renew it)", err)
	}
	for _, step := range []struct {
		name      string
		put, want []byte
	}{{name, fresh, fresh}, {"acme_account+key", []byte("key"), []byte("key")}} {
		if step.name != name { // the account key: pop-a misses it first
			if _, err := a.Get(ctx, step.name); err != autocert.ErrCacheMiss {
				t.Fatalf("Get(%q) at pop-a = %v, want autocert.ErrCacheMiss", step.name, err)
			}
		}
		got := make(chan []byte, 1)
		go func() {
			v, err := b.Get(ctx, step.name)
			if err != nil {
				t.Errorf("Get(%q) at pop-b: %v", step.name, err)
			}
			got <- v
		}()
		select {
		case v := <-got:
			t.Fatalf("Get(%q) at pop-b returned %q while pop-a held the lock, want it to wait", step.name, v)
		case <-time.After(300 * time.Millisecond):
		}
		if err := a.Put(ctx, step.name, step.put); err != nil {
			t.Fatal(err)
		}
		select {
		case v := <-got:
			if !bytes.Equal(v, step.want) {
				t.Errorf("Get(%q) at pop-b = %q, want what pop-a put", step.name, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Get(%q) at pop-b still waiting 10s after pop-a's Put", step.name)
		}
	}
}

// certPEM is a self-signed certificate valid from notBefore to notAfter,
// in autocert's cache format: the key, then the certificate.
func certPEM(t *testing.T, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "www.cdn.test"},
		DNSNames: []string{"www.cdn.test"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
}
