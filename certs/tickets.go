package certs

import (
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
type TicketKeys struct {
	secret   []byte
	rotation time.Duration
	keep     int
	now      func() time.Time

	mu    sync.Mutex // guards aeads
	aeads map[int64]cipher.AEAD
}

// NewTicketKeys validates cfg and returns TicketKeys.
func NewTicketKeys(cfg TicketKeysConfig) (*TicketKeys, error) {
	k := &TicketKeys{secret: cfg.Secret, rotation: cfg.Rotation, keep: cfg.Keep, now: cfg.Now, aeads: make(map[int64]cipher.AEAD)}
	if k.secret == nil {
		k.secret = make([]byte, MinSecretLen)
		rand.Read(k.secret)
	}
	var errs []error
	if len(k.secret) < MinSecretLen {
		errs = append(errs, fmt.Errorf("ticket secret: %d bytes, want at least %d", len(k.secret), MinSecretLen))
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

func (k *TicketKeys) derive(info string) []byte {
	key, err := hkdf.Key(sha256.New, k.secret, nil, info, 32)
	if err != nil {
		panic(err) // only fails for lengths hkdf cannot produce
	}
	return key
}

// QUICKeys returns the keys quic-go's Transport takes as TokenGeneratorKey
// and StatelessResetKey, derived from the same secret. PoPs that share the
// secret accept each other's address-validation tokens and can reset each
// other's connections statelessly.
func (k *TicketKeys) QUICKeys() (token, reset [32]byte) {
	copy(token[:], k.derive("edgecdn quic token generator key"))
	copy(reset[:], k.derive("edgecdn quic stateless reset key"))
	return token, reset
}

func (k *TicketKeys) epoch() int64 { return k.now().UnixNano() / int64(k.rotation) }

func (k *TicketKeys) aead(epoch int64) cipher.AEAD {
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, ok := k.aeads[epoch]; ok {
		return a
	}
	block, err := aes.NewCipher(k.derive("edgecdn tls ticket key " + strconv.FormatInt(epoch, 10) + " " + k.rotation.String()))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	// Forget keys outside the window so the map stays small.
	cur := k.epoch()
	for e := range k.aeads {
		if e < cur-int64(k.keep) || e > cur+1 {
			delete(k.aeads, e)
		}
	}
	k.aeads[epoch] = a
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
	a := k.aead(epoch)
	out := make([]byte, ticketHeader, ticketHeader+len(state)+a.Overhead())
	binary.BigEndian.PutUint64(out, uint64(epoch))
	rand.Read(out[8:ticketHeader])
	return a.Seal(out, out[8:ticketHeader], state, out[:8]), nil
}

// Unwrap decrypts a ticket. A ticket from a key outside the window, or one
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
	a := k.aead(epoch)
	state, err := a.Open(nil, identity[8:ticketHeader], identity[ticketHeader:], identity[:8])
	if err != nil {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, nil
	}
	return ss, nil
}

// Apply makes c issue and accept tickets with these keys.
func (k *TicketKeys) Apply(c *tls.Config) {
	c.WrapSession = k.Wrap
	c.UnwrapSession = k.Unwrap
}
