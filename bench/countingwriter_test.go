package bench

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// seeingWriter is a connection as the cache behind it sees it: what it
// records of each write is what Served would tell at the moment the bytes
// leave, which the client may have in full before the handler runs again.
type seeingWriter struct {
	http.ResponseWriter
	n     *atomic.Int64
	seen  []int64
	short int // if > 0, the writes fail after this many bytes
}

func (w *seeingWriter) Write(p []byte) (int, error) {
	w.seen = append(w.seen, w.n.Load())
	if w.short > 0 && len(p) > w.short {
		return w.short, errors.New("connection reset")
	}
	return len(p), nil
}

// TestCountingWriterCountsBeforeTheBytesLeave: the replay origin's bytes
// are counted by the time they are on the wire. Counted after each write,
// a fetch that ended just before Replay read the counts was missing from
// them (TestReplayAgainstPoP/h2 saw byte differences of +35866, -13333).
func TestCountingWriterCountsBeforeTheBytesLeave(t *testing.T) {
	var n atomic.Int64
	sw := &seeingWriter{ResponseWriter: httptest.NewRecorder(), n: &n}
	w := &countingWriter{ResponseWriter: sw, n: &n}
	for _, size := range []int{12044, 100} {
		if k, err := w.Write(make([]byte, size)); k != size || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", size, k, err)
		}
	}
	if want := []int64{12044, 12144}; len(sw.seen) != 2 || sw.seen[0] != want[0] || sw.seen[1] != want[1] {
		t.Errorf("counts seen as the bytes left: %v, want %v", sw.seen, want)
	}
	if n.Load() != 12144 {
		t.Errorf("count %d after the writes, want 12144", n.Load())
	}

	sw.short = 10
	if k, err := w.Write(make([]byte, 50)); k != 10 || err == nil {
		t.Fatalf("short Write = %d, %v; want 10 and an error", k, err)
	}
	if n.Load() != 12154 {
		t.Errorf("count %d after a write of 10 of 50 bytes, want 12154 (only what was written)", n.Load())
	}
}
