package accesslog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecdn/cdn/cache"
)

// Filter selects the lines a follower gets. Each kind of condition that
// is set must hold (and), and within a kind one of the values (or).
type Filter struct {
	// Status codes: a code (404) or a class (5 for 5xx, as Class).
	Status []StatusMatch
	// Cache results.
	Cache []cache.Result
	// PathPrefixes the request target starts with.
	PathPrefixes []string
	// Clients are prefixes the client's address is in.
	Clients []netip.Prefix
	// Sample is the share of the matching lines sent, drawn at random
	// per line, in (0, 1]. If zero, 1: every line.
	Sample float64
}

// StatusMatch is a status code or, when Class is set, a class of them.
type StatusMatch struct {
	Code  int // 100 to 599, when Class is 0
	Class int // 1 to 5: 1xx to 5xx
}

func (m StatusMatch) match(code int) bool {
	if m.Class != 0 {
		return code/100 == m.Class
	}
	return code == m.Code
}

// ErrTooSlow ends a follower that fell behind by more than
// Config.FollowerBufferBytes.
var ErrTooSlow = errors.New("follower too slow: dropped")

// filterParams are the query parameters ParseFilter knows.
const filterParams = "status, cache, path, client or sample"

// ParseFilter reads a filter from query parameters, as GET /logs takes
// them: status=404 or status=5xx, cache=hit (hit, stale, revalidated,
// miss, pass), path=/prefix, client=10.0.0.0/8 (or one address),
// sample=0.1. Values of status, cache and client may be comma-separated
// lists and every parameter but sample may repeat. An error names the
// parameter and what would be right.
func ParseFilter(q url.Values) (Filter, error) {
	var f Filter
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for name, values := range q {
		switch name {
		case "status":
			for _, v := range splitValues(values) {
				m, ok := parseStatus(v)
				if !ok {
					bad("status: %q, want a status code such as 404 or a class such as 5xx", v)
					continue
				}
				f.Status = append(f.Status, m)
			}
		case "cache":
			for _, v := range splitValues(values) {
				r, err := cache.ParseResult(strings.ToLower(v))
				if err != nil {
					bad("cache: %v", err)
					continue
				}
				f.Cache = append(f.Cache, r)
			}
		case "path":
			for _, v := range values {
				if !strings.HasPrefix(v, "/") {
					bad("path: %q, want a path prefix starting with /", v)
					continue
				}
				f.PathPrefixes = append(f.PathPrefixes, v)
			}
		case "client":
			for _, v := range splitValues(values) {
				p, err := parseClient(v)
				if err != nil {
					bad("client: %q, want a CIDR prefix such as 10.77.2.0/24 or an address", v)
					continue
				}
				f.Clients = append(f.Clients, p)
			}
		case "sample":
			if len(values) > 1 {
				bad("sample: given %d times, want it once", len(values))
				continue
			}
			s, err := strconv.ParseFloat(values[0], 64)
			if err != nil || !(s > 0 && s <= 1) {
				bad("sample: %q, want a share of lines in (0, 1] such as 0.1", values[0])
				continue
			}
			f.Sample = s
		default:
			bad("unknown parameter %q, want %s", name, filterParams)
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return f, errors.Join(errs...)
}

func splitValues(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(p))
		}
	}
	return out
}

func parseStatus(v string) (StatusMatch, bool) {
	if len(v) == 3 && (v[1] == 'x' || v[1] == 'X') && (v[2] == 'x' || v[2] == 'X') && v[0] >= '1' && v[0] <= '5' {
		return StatusMatch{Class: int(v[0] - '0')}, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 || n > 599 {
		return StatusMatch{}, false
	}
	return StatusMatch{Code: n}, true
}

func parseClient(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// match reports whether the filter admits a record, sampling included.
func (f *Filter) match(r *rec, q *batch) bool {
	if len(f.Status) > 0 && !slices.ContainsFunc(f.Status, func(m StatusMatch) bool { return m.match(int(r.status)) }) {
		return false
	}
	if len(f.Cache) > 0 && (int(r.result) >= len(cache.Results) || !slices.Contains(f.Cache, cache.Results[r.result])) {
		return false
	}
	if len(f.PathPrefixes) > 0 {
		path := q.str(r.path)
		if !slices.ContainsFunc(f.PathPrefixes, func(p string) bool { return len(path) >= len(p) && string(path[:len(p)]) == p }) {
			return false
		}
	}
	if len(f.Clients) > 0 {
		addr, ok := clientAddr(string(q.str(r.client)))
		if !ok || !slices.ContainsFunc(f.Clients, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return false
		}
	}
	return f.Sample == 0 || f.Sample >= 1 || rand.Float64() < f.Sample
}

// clientAddr is the address of "ip:port" (or of a bare IP), unmapped.
func clientAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// follower is one Follow's queue, filled by the encoder and written by
// Follow.
type follower struct {
	filter  Filter
	max     int
	wake    chan struct{} // the encoder to Follow: lines queued, or dropped
	dropped atomic.Bool   // set once by the encoder when the queue overflowed
	abort   func()        // unblocks Follow's write in progress; nil if it cannot

	mu   sync.Mutex // guards data
	data []byte
}

// add queues a line, or reports false when it does not fit. The first
// line of an empty queue wakes the follower, so that it drains the queue
// while a large batch is still being encoded.
func (f *follower) add(line []byte) bool {
	f.mu.Lock()
	if len(f.data)+len(line) > f.max {
		f.mu.Unlock()
		return false
	}
	first := len(f.data) == 0
	f.data = append(f.data, line...)
	f.mu.Unlock()
	if first {
		f.signal()
	}
	return true
}

func (f *follower) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// take swaps the queued lines for buf's storage.
func (f *follower) take(buf []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.data
	f.data = buf[:0]
	return out
}

// drop ends a follower that fell behind: it gets no more lines, and a
// write of its in progress is cut short.
func (l *Logger) drop(f *follower) {
	if f.dropped.Swap(true) {
		return
	}
	l.followersDropped.Add(1)
	l.removeFollower(f)
	if f.abort != nil {
		f.abort()
	}
	f.signal()
}

// deadliner is a writer whose writes can be cut short, as an HTTP
// response's can through http.ResponseController.
type deadliner interface {
	SetWriteDeadline(time.Time) error
}

// Follow writes to w the lines that f admits, as they are logged, until
// ctx ends (it returns nil), the Logger closes (nil, after the lines
// logged before Close), a write fails (that error), or the follower falls
// more than Config.FollowerBufferBytes behind (ErrTooSlow). It never
// makes the logging wait: lines pile up in the follower's own bounded
// queue. If w has a SetWriteDeadline method, a write in progress when
// the follower is dropped is cut short through it (a deadline in the
// past), so that a follower that stopped reading ends at once.
func (l *Logger) Follow(ctx context.Context, w io.Writer, f Filter) error {
	fl := &follower{filter: f, max: l.cfg.FollowerBufferBytes, wake: make(chan struct{}, 1)}
	if d, ok := w.(deadliner); ok {
		fl.abort = func() { d.SetWriteDeadline(time.Unix(1, 0)) }
	}
	if !l.addFollower(fl) {
		return nil // closed
	}
	defer l.removeFollower(fl)
	var buf []byte
	for {
		last := false
		select {
		case <-fl.wake:
		case <-ctx.Done():
			return nil
		case <-l.ended:
			last = true
		}
		buf = fl.take(buf)
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				if fl.dropped.Load() {
					return ErrTooSlow
				}
				return err
			}
		}
		if fl.dropped.Load() {
			return ErrTooSlow
		}
		if last {
			return nil
		}
	}
}

// addFollower adds a follower, unless the Logger is closed.
func (l *Logger) addFollower(f *follower) bool {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return false
	}
	l.fmu.Lock()
	defer l.fmu.Unlock()
	old := *l.followers.Load()
	fs := append(slices.Clip(old), f)
	l.followers.Store(&fs)
	l.wanted.Store(true)
	return true
}

func (l *Logger) removeFollower(f *follower) {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	old := *l.followers.Load()
	i := slices.Index(old, f)
	if i < 0 {
		return
	}
	fs := slices.Delete(slices.Clone(old), i, i+1)
	l.followers.Store(&fs)
	l.mu.Lock()
	if !l.closed {
		l.wanted.Store(l.file != nil || len(fs) > 0)
	}
	l.mu.Unlock()
}
