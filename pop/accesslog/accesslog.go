// Package accesslog is the PoP's access log: one line of JSON per request,
// written to a file and streamed to followers (the admin listener's GET
// /logs), without ever holding up the request it describes.
//
// A request's path fills a Record and calls Log, which copies it into a
// bounded queue under a mutex: no allocation, no encoding, no I/O. One
// goroutine takes the queue in batches and, for each record that the file
// or some follower wants, encodes the line once (an append-style encoder,
// not encoding/json) and hands it on through two more bounded queues: the
// file's, written by a goroutine of its own in large writes, and each
// follower's, which its stream writes. A full queue drops rather than
// waits: lines for the file when the disk is slow or stuck (counted in
// Stats.Dropped), and a follower as a whole when it reads too slowly (its
// stream ends; Stats.FollowersDropped). Wanted tells the caller whether
// anyone wants lines at all, so that a PoP with no file and no follower
// does not even build a Record.
//
// A line has these fields, in this order:
//
//	time          when the request was read: RFC 3339, UTC, microseconds
//	pop           the PoP's name (Config.Name)
//	client        the client's address, ip:port
//	proto         h1, h2 or h3
//	tls           the TLS version, "1.3" or "1.2"; "" for plain HTTP
//	resumed       whether the TLS session was resumed
//	early_data    whether the request came in 0-RTT early data (HTTP/3)
//	method        the request method
//	host          the Host (or :authority) as sent
//	path          the request target as sent, query included
//	status        the response's status code
//	bytes         body bytes sent
//	cache         hit, stale, revalidated, miss or pass (cache.Result)
//	cache_status  the response's Cache-Status field
//	ttfb_ms       milliseconds from the request read to the response's
//	              header written, 3 decimals
//	origin_ms     milliseconds to the upstream's response header; only
//	              when the PoP went upstream for this response
//	upstream      the origin server that answered (host:port); only with
//	              origin_ms
//	id            the request's id, unique to this PoP process:
//	              8 hex digits chosen at start, "-", a sequence number
//
// For example:
//
//	{"time":"2026-12-03T18:04:05.123456Z","pop":"pop-eu","client":"10.77.2.100:40312","proto":"h2","tls":"1.3","resumed":false,"early_data":false,"method":"GET","host":"www.cdn.lab","path":"/gen/1k","status":200,"bytes":1024,"cache":"miss","cache_status":"pop-eu; fwd=uri-miss; stored","ttfb_ms":81.234,"origin_ms":80.911,"upstream":"10.77.1.10:443","id":"5f0c2a91-17"}
//
// Strings longer than MaxFieldBytes are cut there.
package accesslog

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecdn/cdn/cache"
)

// MaxFieldBytes is the most of one string field a line keeps.
const MaxFieldBytes = 2048

// Config configures a Logger.
type Config struct {
	// Name is the PoP's name, the pop field of every line. If empty,
	// "pop".
	Name string
	// Writer receives the lines, whole lines per write, from a goroutine
	// of the Logger's. If nil, there is no file log: lines are built only
	// for followers.
	Writer io.Writer
	// BufferBytes bounds the lines waiting for Writer; lines that do not
	// fit are dropped and counted, so that a slow or stuck disk never
	// holds up serving. If zero, 4 MiB.
	BufferBytes int
	// QueueRecords bounds the requests waiting to be encoded; beyond it
	// they are dropped and counted. If zero, 4096.
	QueueRecords int
	// FollowerBufferBytes bounds the lines waiting for one follower; a
	// follower that falls further behind is dropped. If zero, 4 MiB
	// (about 10,000 lines: a burst the follower's stream takes a moment
	// to catch up with is not a slow follower).
	FollowerBufferBytes int
	// Logger receives Writer's errors, at most one a minute. If nil,
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports every bad field at once.
func (c *Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"BufferBytes", c.BufferBytes}, {"QueueRecords", c.QueueRecords}, {"FollowerBufferBytes", c.FollowerBufferBytes}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("accesslog: %s: %d, want 0 (default) or more", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// Record is what Log writes about one request. Its strings may be views
// of buffers the caller reuses: Log copies what it keeps before it
// returns.
type Record struct {
	Time       time.Time // when the request was read
	Client     string    // the client's address, ip:port
	ProtoMajor int       // 1, 2 or 3
	TLSVersion uint16    // tls.VersionTLS13, ...; 0 for plain HTTP
	Resumed    bool
	EarlyData  bool
	Method     string
	Host       string
	Path       string // the request target as sent
	Status     int
	Bytes      int64 // body bytes sent
	Cache      cache.Result
	// CacheStatus is the response's Cache-Status field.
	CacheStatus string
	// TTFB is the time from Time to the response's header written.
	TTFB time.Duration
	// Origin is the time the upstream took to the response's header, and
	// Upstream the server that answered; zero and "" when the PoP did not
	// go upstream for this response.
	Origin   time.Duration
	Upstream string
}

// Stats are a Logger's counts since New.
type Stats struct {
	// Lines is the number of lines written to Config.Writer.
	Lines uint64
	// Dropped is the number of lines lost because a queue was full: the
	// file's (a slow disk) or the encoder's (the PoP out of CPU).
	Dropped uint64
	// WriteErrors counts failed writes to Config.Writer.
	WriteErrors uint64
	// Followers is the number of followers now.
	Followers int
	// FollowersDropped counts followers ended for reading too slowly.
	FollowersDropped uint64
}

// Logger is an access log. Its methods are safe for concurrent use.
type Logger struct {
	cfg     Config
	log     *slog.Logger
	enc     encoder
	maxRecs int

	// wanted is whether a file or some follower wants lines.
	wanted atomic.Bool

	mu     sync.Mutex // guards in, seq, closed
	in     *batch     // filled by Log
	seq    uint64
	closed bool

	spare *batch        // the encoder's; swapped with in
	wake  chan struct{} // Log to the encoder: in was empty
	quit  chan struct{} // closed by Close
	ended chan struct{} // closed by the encoder when it has emitted its last batch

	file *fileQueue // nil without a Writer

	fmu       sync.Mutex // guards followers; writers also swap the pointer
	followers atomic.Pointer[[]*follower]

	dropped, lines, writeErrors, followersDropped atomic.Uint64

	wg sync.WaitGroup // the encoder and the file writer
}

// batch is a queue of records and the bytes of their strings.
type batch struct {
	recs []rec
	data []byte
}

// rec is a Record as queued: its strings are spans of batch.data.
type rec struct {
	unixNano, ttfb, origin, bytes int64
	id                            uint64
	status                        int32
	tls                           uint16
	proto                         uint8
	resumed, early                bool
	result                        uint8 // index in cache.Results, or len for an unknown one
	client, method, host, path    span
	cacheStatus, upstream         span
}

type span struct{ off, n uint32 }

// New validates cfg and starts the Logger's goroutines; Close stops them.
func New(cfg Config) (*Logger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "pop"
	}
	if cfg.BufferBytes == 0 {
		cfg.BufferBytes = 4 << 20
	}
	if cfg.QueueRecords == 0 {
		cfg.QueueRecords = 4096
	}
	if cfg.FollowerBufferBytes == 0 {
		cfg.FollowerBufferBytes = 4 << 20
	}
	l := &Logger{cfg: cfg, log: cfg.Logger, maxRecs: cfg.QueueRecords,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), ended: make(chan struct{})}
	if l.log == nil {
		l.log = slog.Default()
	}
	var boot [4]byte
	rand.Read(boot[:])
	l.enc.init(cfg.Name, binary.BigEndian.Uint32(boot[:]))
	l.in = newBatch(cfg.QueueRecords)
	l.spare = newBatch(cfg.QueueRecords)
	l.followers.Store(&[]*follower{})
	if cfg.Writer != nil {
		l.file = &fileQueue{w: cfg.Writer, max: cfg.BufferBytes, wake: make(chan struct{}, 1)}
		l.wanted.Store(true)
		l.wg.Go(l.writeFile)
	}
	l.wg.Go(l.encode)
	return l, nil
}

func newBatch(n int) *batch {
	// Strings average well under 128 bytes a record.
	return &batch{recs: make([]rec, 0, n), data: make([]byte, 0, n*128)}
}

// Wanted reports whether Log would write anything: a file or a follower
// wants lines. Callers check it before they build a Record.
func (l *Logger) Wanted() bool { return l != nil && l.wanted.Load() }

// Log queues r to be written. It never blocks on I/O and never allocates;
// a record that finds the queue full is dropped and counted.
func (l *Logger) Log(r *Record) {
	if !l.Wanted() {
		return
	}
	need := clip(r.Client) + clip(r.Method) + clip(r.Host) + clip(r.Path) + clip(r.CacheStatus) + clip(r.Upstream)
	l.mu.Lock()
	b := l.in
	if l.closed || len(b.recs) == cap(b.recs) || len(b.data)+need > cap(b.data) {
		if !l.closed {
			l.dropped.Add(1)
		}
		l.mu.Unlock()
		return
	}
	l.seq++
	b.recs = append(b.recs, rec{
		unixNano: r.Time.UnixNano(), ttfb: int64(r.TTFB), origin: int64(r.Origin), bytes: r.Bytes,
		id: l.seq, status: int32(r.Status), tls: r.TLSVersion, proto: uint8(r.ProtoMajor),
		resumed: r.Resumed, early: r.EarlyData, result: resultIndex(r.Cache),
	})
	q := &b.recs[len(b.recs)-1]
	q.client = b.add(r.Client)
	q.method = b.add(r.Method)
	q.host = b.add(r.Host)
	q.path = b.add(r.Path)
	q.cacheStatus = b.add(r.CacheStatus)
	q.upstream = b.add(r.Upstream)
	// The encoder runs every flushEvery; it is woken early only for a
	// batch half full, so that a busy PoP does not wake it (and the file
	// writer after it) for every request.
	half := len(b.recs) == cap(b.recs)/2 || len(b.data) >= cap(b.data)/2 && len(b.data)-need < cap(b.data)/2
	l.mu.Unlock()
	if half {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// flushEvery is how often the encoder takes what Log queued: the delay of
// a line to the file and to /logs followers, at most.
const flushEvery = 20 * time.Millisecond

func clip(s string) int { return min(len(s), MaxFieldBytes) }

// add appends s, cut at MaxFieldBytes, to the batch's data.
func (b *batch) add(s string) span {
	s = s[:clip(s)]
	off := len(b.data)
	b.data = append(b.data, s...)
	return span{uint32(off), uint32(len(s))}
}

func (b *batch) str(s span) []byte { return b.data[s.off : s.off+s.n] }

func resultIndex(r cache.Result) uint8 {
	for i, c := range cache.Results {
		if c == r {
			return uint8(i)
		}
	}
	return uint8(len(cache.Results))
}

// encode is the encoder goroutine: it takes Log's queue in batches and
// hands each wanted line to the file and the followers that want it.
func (l *Logger) encode() {
	defer close(l.ended)
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for {
		select {
		case <-l.wake:
		case <-tick.C:
		case <-l.quit:
			l.mu.Lock()
			l.in, l.spare = l.spare, l.in
			l.mu.Unlock()
			l.emit(l.spare)
			return
		}
		l.mu.Lock()
		if len(l.in.recs) == 0 {
			l.mu.Unlock()
			continue
		}
		l.in, l.spare = l.spare, l.in
		l.mu.Unlock()
		l.emit(l.spare)
	}
}

// emit encodes a batch's wanted lines and passes them on, then empties
// the batch.
func (l *Logger) emit(b *batch) {
	fs := *l.followers.Load()
	var fq *fileQueue
	if l.file != nil {
		fq = l.file
		fq.mu.Lock()
	}
	full := false
	line := l.enc.line[:0]
	for i := range b.recs {
		r := &b.recs[i]
		line = line[:0]
		if fq != nil {
			line = l.enc.appendLine(line, r, b)
			if len(fq.data)+len(line) > fq.max {
				l.dropped.Add(1)
				full = true
			} else {
				fq.data = append(fq.data, line...)
				fq.n++
			}
		}
		for _, f := range fs {
			if f.dropped.Load() || !f.filter.match(r, b) {
				continue
			}
			if len(line) == 0 {
				line = l.enc.appendLine(line, r, b)
			}
			if !f.add(line) {
				l.drop(f)
			}
		}
	}
	l.enc.line = line
	if fq != nil {
		queued := len(fq.data) > 0
		fq.mu.Unlock()
		if queued {
			fq.signal()
		}
		if full {
			fq.noteFull(l.log)
		}
	}
	b.recs, b.data = b.recs[:0], b.data[:0]
}

// fileQueue holds the lines waiting for Config.Writer.
type fileQueue struct {
	w    io.Writer
	max  int
	wake chan struct{} // the encoder to the writer: lines queued

	mu   sync.Mutex // guards data, n
	data []byte
	n    uint64 // lines in data

	lastErr  time.Time // the writer's: when an error was last logged
	lastFull time.Time // the encoder's: when a drop was last logged
}

func (q *fileQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// noteFull logs, at most once a minute, that lines are being dropped.
func (q *fileQueue) noteFull(log *slog.Logger) {
	if time.Since(q.lastFull) >= time.Minute {
		q.lastFull = time.Now()
		log.Warn("access log: the writer is behind, dropping lines (pop_access_log_dropped_total)", "buffer_bytes", q.max)
	}
}

// writeFile is the file writer goroutine: it writes what the encoder
// queued, in one write per turn, until the encoder has ended and
// everything it queued is written.
func (l *Logger) writeFile() {
	q := l.file
	var out []byte
	for {
		last := false
		select {
		case <-q.wake:
		case <-l.ended:
			last = true
		}
		q.mu.Lock()
		out, q.data = q.data, out[:0]
		n := q.n
		q.n = 0
		q.mu.Unlock()
		if len(out) > 0 {
			if _, err := q.w.Write(out); err != nil {
				l.writeErrors.Add(1)
				l.dropped.Add(n)
				if time.Since(q.lastErr) >= time.Minute {
					q.lastErr = time.Now()
					l.log.Warn("access log: write failed, lines dropped", "error", err)
				}
			} else {
				l.lines.Add(n)
			}
		}
		if last {
			return
		}
	}
}

// Close writes what is queued and stops the Logger: Log does nothing
// after it, and every Follow returns. It does not close Config.Writer.
func (l *Logger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.wanted.Store(false)
	close(l.quit)
	l.wg.Wait()
	return nil
}

// Stats returns the Logger's counts.
func (l *Logger) Stats() Stats {
	return Stats{Lines: l.lines.Load(), Dropped: l.dropped.Load(), WriteErrors: l.writeErrors.Load(),
		Followers: len(*l.followers.Load()), FollowersDropped: l.followersDropped.Load()}
}
