package cache

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// TestSplitLen: newBody's pieces are allocated as their lengths say (the
// head exactly, the tail rounded up to its size class), and never cost
// more than one allocation of the whole length.
func TestSplitLen(t *testing.T) {
	for n := int64(1); n < 300_000; n += 1 + n/97 {
		b := newBody(n)
		if int64(b.len()) != n {
			t.Fatalf("newBody(%d): %d bytes", n, b.len())
		}
		if h := int64(len(b.head)); allocSize(h) != h && len(b.tail) > 0 {
			t.Errorf("newBody(%d): a head of %d bytes, which Go allocates as %d", n, h, allocSize(h))
		}
		if got, whole := b.alloc(), allocSize(n); got > whole || got != bodyAlloc(n) {
			t.Errorf("newBody(%d) allocates %d bytes (bodyAlloc %d), one piece %d", n, got, bodyAlloc(n), whole)
		}
		if c := cap(b.head); c >= tinySize && int64(c) != allocSize(int64(c)) || cap(b.tail) >= tinySize && int64(cap(b.tail)) != allocSize(int64(cap(b.tail))) {
			t.Errorf("newBody(%d): capacities %d and %d are not whole allocations", n, cap(b.head), cap(b.tail))
		}
	}
	for _, tc := range []struct{ n, alloc int64 }{{20_000, 19_072 + 1_024}, {100_000, 98_304 + 1_792}, {16 << 10, 16 << 10}, {64 << 10, 64 << 10}} {
		if got := bodyAlloc(tc.n); got != tc.alloc {
			t.Errorf("bodyAlloc(%d) = %d, want %d", tc.n, got, tc.alloc)
		}
	}
}

// TestPackBody: a body read into a grown buffer is copied into newBody's
// pieces, losing the buffer's spare room; one allocated as well as it can
// be is kept as it is.
func TestPackBody(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 2_000) // 20,000 bytes
	grown := append(make([]byte, 0, 100_000), data...)
	b := packBody(grown)
	if !bytes.Equal(b.flat(), data) || b.alloc() != bodyAlloc(int64(len(data))) {
		t.Errorf("packBody of 20000 bytes in 100000: %d bytes in allocations of %d, want the same bytes in %d", b.len(), b.alloc(), bodyAlloc(int64(len(data))))
	}
	if b2 := b.pack(); !b2.same(b) {
		t.Error("pack copied a body already in its pieces")
	}
	exact := make([]byte, 16<<10)
	if b := packBody(exact); !sameBytes(b.head, exact) || len(b.tail) != 0 {
		t.Error("packBody copied a body of 16 KiB, which Go allocates exactly")
	}
}

// TestBodyReader: a body in two pieces reads, seeks and ranges as one.
func TestBodyReader(t *testing.T) {
	data := []byte(strings.Repeat("abcdefghij", 3_600)) // 36,000 bytes: 32 KiB + 3,232
	b := newBody(int64(len(data)))
	copy(b.head, data)
	copy(b.tail, data[len(b.head):])
	if len(b.tail) == 0 {
		t.Fatal("36,000 bytes were not split")
	}
	if err := iotest.TestReader(b.reader(), data); err != nil {
		t.Error(err)
	}
	var w bytes.Buffer
	if err := b.writeTo(&w); err != nil || !bytes.Equal(w.Bytes(), data) {
		t.Errorf("writeTo: %d bytes, %v", w.Len(), err)
	}
	e := &entry{key: "k", status: http.StatusOK, header: FieldsOf(http.Header{"Content-Type": {"text/plain"}}), data: b}
	c := &Cache{cfg: Config{Name: "t"}}
	for _, rng := range []string{"bytes=32760-32780", "bytes=0-9,32767-32768,-5"} {
		r := httptest.NewRequest("GET", "http://h/k", nil)
		r.Header.Set("Range", rng)
		w := httptest.NewRecorder()
		c.serveEntry(w, r, e, 0, "hit")
		if w.Code != http.StatusPartialContent {
			t.Fatalf("Range %s: %d", rng, w.Code)
		}
		if rng == "bytes=32760-32780" && w.Body.String() != string(data[32760:32781]) {
			t.Errorf("Range %s across the pieces: %q, want %q", rng, w.Body.String(), data[32760:32781])
		}
		if rng != "bytes=32760-32780" && !strings.Contains(w.Body.String(), string(data[32767:32769])) {
			t.Errorf("Range %s: the part across the pieces is missing", rng)
		}
	}
}

// TestSharedBodyFillsPieces: a fill reads into the head, then the tail,
// and a reader following it sees the whole body in order; a short body
// fails the fill.
func TestSharedBodyFillsPieces(t *testing.T) {
	data := []byte(strings.Repeat("0123456789", 10_000)) // 100,000 bytes
	follow := func(sb *sharedBody) <-chan []byte {
		done := make(chan []byte, 1)
		go func() {
			var got []byte
			for {
				p, err := sb.next(len(got))
				got = append(got, p...)
				if err != nil {
					done <- got
					return
				}
			}
		}()
		return done
	}
	short := newSharedBody()
	short.reserve(int64(len(data)))
	done := follow(short)
	err := short.fill(iotest.OneByteReader(bytes.NewReader(data[:50_000])), int64(len(data)))
	if err != io.ErrUnexpectedEOF {
		t.Errorf("fill of a short body: %v, want %v", err, io.ErrUnexpectedEOF)
	}
	short.finish(err)
	if got := <-done; !bytes.Equal(got, data[:50_000]) {
		t.Errorf("the reader of a short body saw %d bytes, not the 50000 sent", len(got))
	}

	sb := newSharedBody()
	sb.reserve(int64(len(data)))
	done = follow(sb)
	if err := sb.fill(iotest.HalfReader(bytes.NewReader(data)), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	sb.finish(nil)
	if got := <-done; !bytes.Equal(got, data) {
		t.Errorf("the reader saw %d bytes, not the body", len(got))
	}
	b := sb.pieces()
	if !bytes.Equal(b.flat(), data) || len(b.tail) == 0 || b.alloc() != bodyAlloc(int64(len(data))) {
		t.Errorf("stored %d bytes (tail %d) in %d allocated, want the body split, %d", b.len(), len(b.tail), b.alloc(), bodyAlloc(int64(len(data))))
	}
}

// TestFastHitInPieces: a stored body split in two comes back whole from
// ServeHTTP, and from LookupFast as Body then Tail.
func TestFastHitInPieces(t *testing.T) {
	body := strings.Repeat("x", 20_000)
	rg := newRigWith(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "application/octet-stream") // not compressed at the edge
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	})
	if _, got := rg.get("/p"); got != body {
		t.Fatalf("miss: %d bytes", len(got))
	}
	rg.cache.Wait()
	if resp, got := rg.get("/p"); got != body || resp.Header.Get("Content-Length") != "20000" {
		t.Fatalf("hit: %d bytes, Content-Length %q", len(got), resp.Header.Get("Content-Length"))
	}
	host := strings.TrimPrefix(rg.front.URL, "http://")
	hit, ok := rg.cache.LookupFast(AppendKey(nil, false, host, "/p", QueryKeep), "")
	if !ok || hit.Len() != len(body) || len(hit.Tail) == 0 || string(hit.Body)+string(hit.Tail) != body {
		t.Errorf("LookupFast: ok %v, %d + %d bytes", ok, len(hit.Body), len(hit.Tail))
	}
}
