package accesslog

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func newLogger(t testing.TB, cfg Config) *Logger {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sample is a record with every field set.
func sample() Record {
	return Record{
		Time: time.Date(2026, 12, 3, 18, 4, 5, 123456789, time.UTC), Client: "10.77.2.100:40312", ProtoMajor: 2,
		TLSVersion: tls.VersionTLS13, Resumed: true, EarlyData: false, Method: "GET", Host: "www.cdn.lab",
		Path: "/gen/1k?x=1", Status: 200, Bytes: 1024, Cache: cache.ResultMiss,
		CacheStatus: "pop-eu; fwd=uri-miss; stored", TTFB: 81234567 * time.Nanosecond,
		Origin: 80911000 * time.Nanosecond, Upstream: "10.77.1.10:443",
	}
}

// lines splits the log's output into decoded lines.
func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var got []map[string]any
	for _, l := range strings.SplitAfter(out, "\n") {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			t.Fatalf("line %q does not end in a newline", l)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, m)
	}
	return got
}

// TestLineFields: a record becomes one line with every documented field,
// in order, with the values given; origin_ms and upstream only when the
// PoP went upstream.
func TestLineFields(t *testing.T) {
	var out poll.Buffer
	l := newLogger(t, Config{Name: "pop-eu", Writer: &out})
	r := sample()
	l.Log(&r)
	hit := sample()
	hit.Cache, hit.CacheStatus, hit.Origin, hit.Upstream, hit.ProtoMajor, hit.TLSVersion = cache.ResultHit, "pop-eu; hit; ttl=59", 0, "", 3, tls.VersionTLS13
	hit.EarlyData, hit.Resumed, hit.TTFB = true, false, 81*time.Microsecond
	l.Log(&hit)
	l.Close()
	text := out.String()
	first := strings.SplitN(text, "\n", 2)[0]
	want := `{"time":"2026-12-03T18:04:05.123456Z","pop":"pop-eu","client":"10.77.2.100:40312","proto":"h2","tls":"1.3","resumed":true,"early_data":false,"method":"GET","host":"www.cdn.lab","path":"/gen/1k?x=1","status":200,"bytes":1024,"cache":"miss","cache_status":"pop-eu; fwd=uri-miss; stored","ttfb_ms":81.235,"origin_ms":80.911,"upstream":"10.77.1.10:443","id":"`
	if !strings.HasPrefix(first, want) {
		t.Errorf("line =\n%s\nwant it to start\n%s", first, want)
	}
	got := lines(t, text)
	if len(got) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(got), text)
	}
	h := got[1]
	for k, v := range map[string]any{"proto": "h3", "early_data": true, "resumed": false, "cache": "hit", "ttfb_ms": 0.081, "cache_status": "pop-eu; hit; ttl=59"} {
		if h[k] != v {
			t.Errorf("hit line: %s = %v, want %v", k, h[k], v)
		}
	}
	for _, k := range []string{"origin_ms", "upstream"} {
		if _, ok := h[k]; ok {
			t.Errorf("hit line has %s, want it only when the PoP went upstream", k)
		}
	}
	id0, id1 := got[0]["id"].(string), got[1]["id"].(string)
	if len(id0) < 10 || id0 == id1 || id0[:9] != id1[:9] {
		t.Errorf("ids %q and %q: want one 8-hex-digit prefix and distinct sequence numbers", id0, id1)
	}
	if st := l.Stats(); st.Lines != 2 || st.Dropped != 0 {
		t.Errorf("Stats = %+v, want 2 lines, none dropped", st)
	}
}

// blockingWriter blocks every write until released.
type blockingWriter struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once
	n       int
	mu      sync.Mutex // guards n
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	w.mu.Lock()
	w.n += bytes.Count(p, []byte("\n"))
	w.mu.Unlock()
	return len(p), nil
}

// TestStuckWriterDropsNotBlocks: while the writer is stuck (a disk that
// does not answer), Log keeps returning at once and lines beyond the
// buffer are dropped and counted; once it answers, what was kept is
// written, and written plus dropped is everything logged.
func TestStuckWriterDropsNotBlocks(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{}), entered: make(chan struct{})}
	l := newLogger(t, Config{Writer: w, BufferBytes: 16 << 10, QueueRecords: 64})
	var release sync.Once
	unblock := func() { release.Do(func() { close(w.release) }) }
	t.Cleanup(unblock) // before Close, which waits for the writer
	r := sample()
	l.Log(&r)
	select {
	case <-w.entered: // the writer holds the first line and is stuck
	case <-time.After(poll.Timeout):
		t.Fatal("the writer was never called")
	}
	const n = 20000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			l.Log(&r)
		}
	}()
	select {
	case <-done:
	case <-time.After(poll.Timeout):
		t.Fatalf("Log blocked behind a stuck writer")
	}
	poll.Until(t, "lines dropped", func() bool { return l.Stats().Dropped > 0 })
	l.file.mu.Lock()
	queued := len(l.file.data)
	l.file.mu.Unlock()
	if queued > 16<<10 {
		t.Errorf("%d bytes queued for the stuck writer, want at most BufferBytes (16 KiB)", queued)
	}
	unblock()
	l.Close()
	st := l.Stats()
	w.mu.Lock()
	written := w.n
	w.mu.Unlock()
	if st.Lines != uint64(written) || st.Lines+st.Dropped != n+1 {
		t.Errorf("Stats = %+v, writer got %d lines; want lines = written and lines + dropped = %d", st, written, n+1)
	}
	// What waited for the writer is bounded: the buffer's lines (about
	// 370 bytes each), the records of both halves of the encoder's
	// queue, and the line the writer held.
	if max := 16<<10/300 + 2*64 + 1; written > max {
		t.Errorf("the stuck writer got %d lines once released, want at most %d: the buffer is not bounded", written, max)
	}
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteErrorsCounted(t *testing.T) {
	l := newLogger(t, Config{Writer: failingWriter{}})
	r := sample()
	l.Log(&r)
	l.Log(&r)
	l.Close()
	if st := l.Stats(); st.WriteErrors == 0 || st.Dropped != 2 || st.Lines != 0 {
		t.Errorf("Stats = %+v, want write errors and both lines dropped", st)
	}
}

// TestNotWanted: without a file or a follower, Log does nothing and
// costs nothing.
func TestNotWanted(t *testing.T) {
	l := newLogger(t, Config{})
	if l.Wanted() {
		t.Fatal("Wanted() = true with no writer and no follower")
	}
	r := sample()
	if n := testing.AllocsPerRun(100, func() { l.Log(&r) }); n != 0 {
		t.Errorf("Log allocates %v times when not wanted", n)
	}
	var nilLog *Logger
	if nilLog.Wanted() {
		t.Error("a nil Logger is wanted")
	}
}

func TestLogAllocatesNothing(t *testing.T) {
	l := newLogger(t, Config{Writer: io.Discard})
	r := sample()
	if n := testing.AllocsPerRun(1000, func() { l.Log(&r) }); n != 0 {
		t.Errorf("Log allocates %v times, want 0", n)
	}
}

// TestLongFieldsCut: a string longer than MaxFieldBytes is cut there.
func TestLongFieldsCut(t *testing.T) {
	var out poll.Buffer
	l := newLogger(t, Config{Writer: &out})
	r := sample()
	r.Path = "/" + strings.Repeat("a", 10000)
	l.Log(&r)
	l.Close()
	got := lines(t, out.String())
	if p := got[0]["path"].(string); len(p) != MaxFieldBytes {
		t.Errorf("path of %d bytes logged as %d, want %d", len(r.Path), len(p), MaxFieldBytes)
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := New(Config{BufferBytes: -1, FollowerBufferBytes: -2})
	if err == nil || !strings.Contains(err.Error(), "BufferBytes: -1") || !strings.Contains(err.Error(), "FollowerBufferBytes: -2") {
		t.Errorf("New with negative sizes = %v, want errors naming both fields", err)
	}
}

// BenchmarkLog is what a request's path pays with the log on: Log's copy
// into the queue (the encoder and the writer run on goroutines of their
// own; cpu-ns/op would show them, see pop's BenchmarkFastHit).
func BenchmarkLog(b *testing.B) {
	l := newLogger(b, Config{Writer: io.Discard, QueueRecords: 1 << 16})
	r := sample()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(&r)
	}
}

// BenchmarkEncode is the encoder's work for one line.
func BenchmarkEncode(b *testing.B) {
	var e encoder
	e.init("pop-eu", 0x5f0c2a91)
	q := newBatch(1)
	r := sample()
	q.recs = append(q.recs, rec{unixNano: r.Time.UnixNano(), ttfb: int64(r.TTFB), origin: int64(r.Origin), bytes: r.Bytes, id: 17, status: 200, tls: r.TLSVersion, proto: 2})
	q.recs[0].client, q.recs[0].method, q.recs[0].host = q.add(r.Client), q.add(r.Method), q.add(r.Host)
	q.recs[0].path, q.recs[0].cacheStatus, q.recs[0].upstream = q.add(r.Path), q.add(r.CacheStatus), q.add(r.Upstream)
	var line []byte
	b.ReportAllocs()
	for b.Loop() {
		line = e.appendLine(line[:0], &q.recs[0], q)
	}
	b.SetBytes(int64(len(line)))
}
