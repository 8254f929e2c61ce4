package certs

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MinSecretLen is the shortest shared secret TicketKeys accepts.
const MinSecretLen = 32

// TicketKeysConfig configures TicketKeys.
type TicketKeysConfig struct {
	// Secret is shared by every PoP that serves the same names. Keys are
	// derived from it and the current rotation period, so PoPs with the same
	// secret and roughly synchronised clocks agree on keys without talking to
	// each other. At least MinSecretLen bytes. If nil, a random secret is made:
	// sessions then resume only on this process.
	Secret []byte
	// Rotation is how long one key is used to issue tickets. If zero, 6h.
	Rotation time.Duration
	// Keep is how many earlier keys still decrypt tickets. If zero, 3; a
	// ticket is then accepted for up to Rotation*(Keep+1). One key ahead is
	// also accepted, for PoPs whose clock runs slightly fast.
	Keep int
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// TicketKeys encrypts and decrypts TLS session tickets with keys derived
// from a shared secret. Apply installs it into a tls.Config; clones of that
// config (quic-go and net/http make them) share the keys.
//
// The secret can be replaced while serving (SetSecret: a fleet that
// distributes and rotates it); tickets issued under the secrets it
// replaced are still accepted within their lifetime.
type TicketKeys struct {
	rotation time.Duration
	keep     int
	now      func() time.Time

	mu  sync.Mutex // guards cur, old and their aeads
	cur *ticketSecret
	old []*ticketSecret // replaced secrets, oldest first, still decrypting
}

// ticketSecret is one secret and the keys derived from it so far.
type ticketSecret struct {
	secret  []byte
	retired time.Time // when it stopped issuing tickets; zero while it issues
	aeads   map[int64]cipher.AEAD
}

func newTicketSecret(secret []byte) *ticketSecret {
	return &ticketSecret{secret: secret, aeads: make(map[int64]cipher.AEAD)}
}

// NewTicketKeys validates cfg and returns TicketKeys.
func NewTicketKeys(cfg TicketKeysConfig) (*TicketKeys, error) {
	k := &TicketKeys{rotation: cfg.Rotation, keep: cfg.Keep, now: cfg.Now}
	secret := cfg.Secret
	if secret == nil {
		secret = make([]byte, MinSecretLen)
		rand.Read(secret)
	}
	k.cur = newTicketSecret(secret)
	var errs []error
	if len(secret) < MinSecretLen {
		errs = append(errs, fmt.Errorf("ticket secret: %d bytes, want at least %d", len(secret), MinSecretLen))
	}
	if k.rotation == 0 {
		k.rotation = 6 * time.Hour
	}
	if k.rotation < time.Second {
		errs = append(errs, fmt.Errorf("ticket rotation: %v, want at least 1s", k.rotation))
	}
	if k.keep == 0 {
		k.keep = 3
	}
	if k.keep < 0 {
		errs = append(errs, fmt.Errorf("ticket keep: %d, want 0 or more", k.keep))
	}
	if k.now == nil {
		k.now = time.Now
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadSecret reads a shared secret from a file: hex, base64 or raw bytes,
// surrounding whitespace ignored. It must decode to at least MinSecretLen
// bytes. Make one with: head -c 32 /dev/urandom | base64 > ticket.key
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ticket key file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if d, err := hex.DecodeString(s); err == nil && len(d) >= MinSecretLen {
		return d, nil
	}
	if d, err := base64.StdEncoding.DecodeString(s); err == nil && len(d) >= MinSecretLen {
		return d, nil
	}
	if len(b) >= MinSecretLen {
		return b, nil
	}
	return nil, fmt.Errorf("ticket key file %s: %d bytes, want at least %d bytes (hex, base64 or raw)", path, len(b), MinSecretLen)
}

// Rotation is how long one key issues tickets.
func (k *TicketKeys) Rotation() time.Duration { return k.rotation }

// Lifetime is how long a ticket is accepted at most: Rotation*(Keep+1).
// A secret replaced by SetSecret decrypts for this long afterwards.
func (k *TicketKeys) Lifetime() time.Duration { return k.rotation * time.Duration(k.keep+1) }

// SetSecret makes secret the one tickets are issued under from now on.
// The secret it replaces, and older (secrets other processes issued
// tickets under, which this one may not have seen), go on decrypting
// tickets for Lifetime from now and are then forgotten; a ticket's own
// epoch bounds its age as before. Setting the current secret again does
// nothing. Each must be at least MinSecretLen bytes.
func (k *TicketKeys) SetSecret(secret []byte, older ...[]byte) error {
	for i, s := range append([][]byte{secret}, older...) {
		if len(s) < MinSecretLen {
			return fmt.Errorf("ticket secret %d: %d bytes, want at least %d", i, len(s), MinSecretLen)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	find := func(b []byte) int {
		for i, o := range k.old {
			if bytes.Equal(o.secret, b) {
				return i
			}
		}
		return -1
	}
	if !bytes.Equal(k.cur.secret, secret) {
		prev := k.cur
		if i := find(secret); i >= 0 { // an earlier secret back in use
			k.cur = k.old[i]
			k.old = append(k.old[:i], k.old[i+1:]...)
		} else {
			k.cur = newTicketSecret(bytes.Clone(secret))
		}
		k.cur.retired = time.Time{}
		prev.retired = now
		k.old = append(k.old, prev)
	}
	for _, o := range older {
		if !bytes.Equal(o, k.cur.secret) && find(o) < 0 {
			s := newTicketSecret(bytes.Clone(o))
			s.retired = now
			k.old = append(k.old, s)
		}
	}
	k.forgetOld(now)
	return nil
}

// forgetOld drops the replaced secrets older than a ticket's lifetime.
// k.mu is held.
func (k *TicketKeys) forgetOld(now time.Time) {
	keep := k.old[:0]
	for _, o := range k.old {
		if now.Sub(o.retired) <= k.Lifetime() {
			keep = append(keep, o)
		}
	}
	clear(k.old[len(keep):])
	k.old = keep
}

func derive(secret []byte, info string) []byte {
	key, err := hkdf.Key(sha256.New, secret, nil, info, 32)
	if err != nil {
		panic(err) // only fails for lengths hkdf cannot produce
	}
	return key
}

// QUICKeys returns the keys quic-go's Transport takes as TokenGeneratorKey
// and StatelessResetKey, derived from the current secret. PoPs that share
// the secret accept each other's address-validation tokens and can reset
// each other's connections statelessly.
func (k *TicketKeys) QUICKeys() (token, reset [32]byte) {
	k.mu.Lock()
	secret := k.cur.secret
	k.mu.Unlock()
	return QUICKeys(secret)
}

// QUICKeys derives the QUIC token-generator and stateless-reset keys from
// secret, as TicketKeys.QUICKeys does from its current secret.
func QUICKeys(secret []byte) (token, reset [32]byte) {
	copy(token[:], derive(secret, "edgecdn quic token generator key"))
	copy(reset[:], derive(secret, "edgecdn quic stateless reset key"))
	return token, reset
}

func (k *TicketKeys) epoch() int64 { return k.now().UnixNano() / int64(k.rotation) }

// aead returns s's key for epoch. k.mu is held.
func (k *TicketKeys) aead(s *ticketSecret, epoch int64) cipher.AEAD {
	if a, ok := s.aeads[epoch]; ok {
		return a
	}
	block, err := aes.NewCipher(derive(s.secret, "edgecdn tls ticket key "+strconv.FormatInt(epoch, 10)+" "+k.rotation.String()))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	// Forget keys outside the window so the map stays small.
	cur := k.epoch()
	for e := range s.aeads {
		if e < cur-int64(k.keep) || e > cur+1 {
			delete(s.aeads, e)
		}
	}
	s.aeads[epoch] = a
	return a
}

// Ticket layout: 8-byte epoch, 12-byte nonce, AES-256-GCM sealed session
// state with the epoch as additional data.
const ticketHeader = 8 + 12

// Wrap encrypts a session state into a ticket. It fits tls.Config.WrapSession.
func (k *TicketKeys) Wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	epoch := k.epoch()
	k.mu.Lock()
	a := k.aead(k.cur, epoch)
	k.mu.Unlock()
	out := make([]byte, ticketHeader, ticketHeader+len(state)+a.Overhead())
	binary.BigEndian.PutUint64(out, uint64(epoch))
	rand.Read(out[8:ticketHeader])
	return a.Seal(out, out[8:ticketHeader], state, out[:8]), nil
}

// Unwrap decrypts a ticket, under the current secret or one it replaced
// less than Lifetime ago. A ticket from a key outside the window, or one
// that does not decrypt, yields (nil, nil): the client gets a full handshake.
// It fits tls.Config.UnwrapSession.
func (k *TicketKeys) Unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) < ticketHeader+16 {
		return nil, nil
	}
	epoch := int64(binary.BigEndian.Uint64(identity))
	cur := k.epoch()
	if epoch < cur-int64(k.keep) || epoch > cur+1 {
		return nil, nil
	}
	state, ok := k.open(epoch, identity)
	if !ok {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, nil
	}
	return ss, nil
}

// open decrypts a ticket of epoch with the current secret, then with the
// replaced ones, newest first.
func (k *TicketKeys) open(epoch int64, identity []byte) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for i := len(k.old); i >= 0; i-- {
		s := k.cur
		if i < len(k.old) {
			s = k.old[i]
			if now.Sub(s.retired) > k.Lifetime() {
				continue
			}
		}
		if state, err := k.aead(s, epoch).Open(nil, identity[8:ticketHeader], identity[ticketHeader:], identity[:8]); err == nil {
			return state, true
		}
	}
	return nil, false
}

// Apply makes c issue and accept tickets with these keys.
func (k *TicketKeys) Apply(c *tls.Config) {
	c.WrapSession = k.Wrap
	c.UnwrapSession = k.Unwrap
}
