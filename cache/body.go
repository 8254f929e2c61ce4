package cache

import (
	"bytes"
	"io"
	"slices"
	"sync"
)

// A stored body is kept in at most two allocations, a head and a tail,
// sized so that Go's allocator rounds them up as little as possible: it
// rounds an allocation up to its size class (up to an eighth more) and
// one above 32 KiB to whole 8 KiB pages (4 KiB more on average), and a
// body's cost counts the whole allocation. A body of 20,000 bytes is
// 19,072 + 928 bytes (19,072 + 1,024 allocated) instead of 20,480; one of
// 100,000 bytes 98,304 + 1,696 (98,304 + 1,792) instead of 106,496. In
// bench replay's simulation (1M Zipf requests over 100k lognormal
// objects of 16 KiB median) that is a point of byte hit ratio at 64 and
// 256 MiB. Readers write the head, then the tail: LookupFast returns
// them as FastHit.Body and FastHit.Tail.
type body struct {
	head, tail []byte
}

// len is the body's length.
func (b body) len() int { return len(b.head) + len(b.tail) }

// alloc is the heap the body's allocations take.
func (b body) alloc() int64 {
	return allocSize(int64(cap(b.head))) + allocSize(int64(cap(b.tail)))
}

// same reports whether a and b are the same allocations (a freshened
// entry keeps its body).
func (b body) same(o body) bool {
	return sameBytes(b.head, o.head) && sameBytes(b.tail, o.tail)
}

// sameBytes reports whether a and b are the same slice.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// writeTo writes the body to w.
func (b body) writeTo(w io.Writer) error {
	if len(b.head) > 0 {
		if _, err := w.Write(b.head); err != nil {
			return err
		}
	}
	if len(b.tail) > 0 {
		if _, err := w.Write(b.tail); err != nil {
			return err
		}
	}
	return nil
}

// reader reads the body, for http.ServeContent.
func (b body) reader() io.ReadSeeker {
	if len(b.tail) == 0 {
		return bytes.NewReader(b.head)
	}
	return io.NewSectionReader(b, 0, int64(b.len()))
}

// ReadAt makes body an io.ReaderAt, for reader.
func (b body) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(b.head)) {
		n = copy(p, b.head[off:])
	}
	if n < len(p) {
		if t := off + int64(n) - int64(len(b.head)); t >= 0 && t < int64(len(b.tail)) {
			n += copy(p[n:], b.tail[t:])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// flat is the body in one slice: the head when there is no tail, else a
// copy (not for the hit path).
func (b body) flat() []byte {
	if len(b.tail) == 0 {
		return b.head
	}
	return slices.Concat(b.head, b.tail)
}

// splitLen is the head's length for a body of n bytes (the tail takes
// the rest): n itself when one allocation wastes nothing or a split saves
// nothing, else the largest length Go allocates exactly below n (a size
// class up to 32 KiB, whole pages above).
func splitLen(n int64) int64 {
	if n <= 0 || allocSize(n) == n {
		return n
	}
	var h int64
	if n > maxSmallSize {
		h = n &^ (pageSize - 1)
	} else {
		classes := sizeClasses()
		i, _ := slices.BinarySearch(classes, int32(n)) // classes[i] > n: not exact
		if i == 0 {
			return n
		}
		h = int64(classes[i-1])
	}
	if allocSize(h)+allocSize(n-h) >= allocSize(n) {
		return n
	}
	return h
}

// bodyAlloc is what a body of n bytes allocates, split as newBody splits
// it.
func bodyAlloc(n int64) int64 {
	h := splitLen(n)
	return allocSize(h) + allocSize(n-h)
}

// newBody allocates a body of n bytes, split as splitLen says. Each
// piece's capacity is its whole allocation.
func newBody(n int64) body {
	h := splitLen(n)
	b := body{head: slices.Grow([]byte(nil), int(h))[:h]}
	if n > h {
		b.tail = slices.Grow([]byte(nil), int(n-h))[:n-h]
	}
	return b
}

// packBody stores p, a body read whole, at the least cost: p itself when
// its allocation is no larger than newBody's for its length, else a copy
// in newBody's pieces. A body read by growing a buffer (io.ReadAll,
// appends) may hold up to twice its length, all of it counted in its
// cost; the copy holds none of that spare room.
func packBody(p []byte) body {
	if allocSize(int64(cap(p))) <= bodyAlloc(int64(len(p))) {
		return body{head: p}
	}
	b := newBody(int64(len(p)))
	n := copy(b.head, p)
	copy(b.tail, p[n:])
	return b
}

// pack is packBody for a body already in pieces: one with a tail was
// made by newBody and stays as it is.
func (b body) pack() body {
	if len(b.tail) > 0 {
		return b
	}
	return packBody(b.head)
}

// maxSmallSize is the largest of Go's small-object size classes; larger
// allocations take whole pages of pageSize bytes.
const (
	maxSmallSize = 32 << 10
	pageSize     = 8 << 10
	tinySize     = 16
)

// allocSize is what Go allocates for n bytes (make([]byte, n) rounded up
// to its size class), which a stored body's cost counts: small objects to
// one of Go's size classes, large ones to whole 8 KiB pages. Below 16
// bytes Go packs allocations without pointers into shared 16-byte blocks
// (its tiny allocator), which live as long as any of them does: 16.
func allocSize(n int64) int64 {
	if n <= 0 {
		return 0
	}
	if n < tinySize {
		return tinySize
	}
	if n > maxSmallSize {
		return (n + pageSize - 1) &^ (pageSize - 1)
	}
	classes := sizeClasses()
	i, _ := slices.BinarySearch(classes, int32(n))
	return int64(classes[i])
}

// sizeClasses are Go's small-object size classes, found once by growing
// slices (append rounds a slice's capacity up to its class).
var sizeClasses = sync.OnceValue(func() []int32 {
	var classes []int32
	for n := 1; n <= maxSmallSize; {
		c := cap(slices.Grow([]byte(nil), n))
		classes = append(classes, int32(c))
		n = c + 1
	}
	return classes
})
