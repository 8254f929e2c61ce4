// Package clientrtt keeps a PoP's round-trip times to its clients, per
// client prefix, for latency-based DNS steering: the PoP adds a sample
// for each client connection it terminates (the kernel's smoothed RTT of
// a TCP connection, quic-go's of a QUIC one), the table folds it into a
// moving average for the client's prefix, and the PoP serves the table
// as a [Report] for geodns to pull.
//
// A prefix is what a resolver's EDNS client subnet usually carries, and
// so what DNS can steer by: the /24 of an IPv4 address (IPv4-mapped IPv6
// addresses count as IPv4) and the /48 of an IPv6 address; see [PrefixOf].
//
// The table is bounded: when it holds MaxPrefixes prefixes, a sample for
// a new one evicts the prefix updated longest ago. Samples arrive per
// connection, not per request, so one mutex serves.
package clientrtt

import (
	"container/list"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Alpha is the weight of a new sample in a prefix's moving average: the
// average becomes Alpha*sample + (1-Alpha)*average. A prefix's first
// sample sets it.
const Alpha = 0.3

// Config configures a Table. A PoP's YAML names its fields under
// client_rtt.
type Config struct {
	// MaxPrefixes bounds the prefixes held; a sample for a new prefix
	// when full evicts the prefix updated longest ago. If zero, 4096.
	MaxPrefixes int `yaml:"max_prefixes"`
	// Now is the clock, for tests. If nil, time.Now.
	Now func() time.Time `yaml:"-"`
}

// Validate reports what is wrong with c, naming the field.
func (c Config) Validate() error {
	if c.MaxPrefixes < 0 {
		return fmt.Errorf("max_prefixes: %d, want 0 (default, %d) or more", c.MaxPrefixes, DefaultMaxPrefixes)
	}
	return nil
}

// DefaultMaxPrefixes is MaxPrefixes when zero.
const DefaultMaxPrefixes = 4096

// Entry is what a Table knows of one client prefix.
type Entry struct {
	Prefix  netip.Prefix
	RTT     time.Duration // moving average of the samples (see Alpha)
	Min     time.Duration // the least sample
	Samples int64         // samples taken
	Updated time.Time     // when the last sample was taken
}

// Table holds an Entry per client prefix, at most MaxPrefixes of them. It
// is safe for concurrent use.
type Table struct {
	max int
	now func() time.Time

	mu       sync.Mutex // guards byPrefix, order
	byPrefix map[netip.Prefix]*list.Element
	order    list.List // of *Entry, the most recently updated first
}

// New returns an empty table, or an error if cfg is invalid.
func New(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Table{max: cfg.MaxPrefixes, now: cfg.Now, byPrefix: map[netip.Prefix]*list.Element{}}
	if t.max == 0 {
		t.max = DefaultMaxPrefixes
	}
	if t.now == nil {
		t.now = time.Now
	}
	return t, nil
}

// PrefixOf is the prefix a client address counts under: the /24 of an
// IPv4 or IPv4-mapped IPv6 address, the /48 of any other IPv6 address
// (without its zone). It reports false for the zero Addr.
func PrefixOf(addr netip.Addr) (netip.Prefix, bool) {
	addr = addr.Unmap().WithZone("")
	bits := 48
	if addr.Is4() {
		bits = 24
	}
	p, err := addr.Prefix(bits)
	return p, err == nil && p.IsValid()
}

// Add folds a sample of the round trip to addr into its prefix's entry
// and reports whether it did: a sample that is not positive (no
// measurement yet) or of the zero Addr is dropped.
func (t *Table) Add(addr netip.Addr, rtt time.Duration) bool {
	p, ok := PrefixOf(addr)
	if !ok || rtt <= 0 {
		return false
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.byPrefix[p]; ok {
		e := el.Value.(*Entry)
		e.RTT = time.Duration(math.Round(Alpha*float64(rtt) + (1-Alpha)*float64(e.RTT)))
		e.Min = min(e.Min, rtt)
		e.Samples++
		e.Updated = now
		t.order.MoveToFront(el)
		return true
	}
	if len(t.byPrefix) >= t.max {
		oldest := t.order.Back()
		delete(t.byPrefix, oldest.Value.(*Entry).Prefix)
		t.order.Remove(oldest)
	}
	t.byPrefix[p] = t.order.PushFront(&Entry{Prefix: p, RTT: rtt, Min: rtt, Samples: 1, Updated: now})
	return true
}

// Len is the number of prefixes held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byPrefix)
}

// Snapshot returns a copy of every entry, sorted by prefix (IPv4 before
// IPv6, then by address: netip.Prefix.Compare).
func (t *Table) Snapshot() []Entry {
	t.mu.Lock()
	out := make([]Entry, 0, len(t.byPrefix))
	for el := t.order.Front(); el != nil; el = el.Next() {
		out = append(out, *el.Value.(*Entry))
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int { return a.Prefix.Compare(b.Prefix) })
	return out
}
