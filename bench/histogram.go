package bench

import (
	"math"
	"math/bits"
)

// Histogram is an HDR-style log-linear histogram of microseconds: 64
// sub-buckets per power of two, so every value is kept to within ~1.6%.
// The zero value is an empty histogram. It is not safe for concurrent use:
// load runs keep one per worker and merge them at the end.
type Histogram struct {
	counts [64 * 48]int64
	max    int64
	n      int64
}

func bucketOf(us int64) int {
	if us < 128 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 7 // us >> e is in [64, 128)
	return min((e+1)*64+int(us>>uint(e))-64, len(Histogram{}.counts)-1)
}

// valueOf is the largest value bucket b holds.
func valueOf(b int) int64 {
	if b < 128 {
		return int64(b)
	}
	e := b/64 - 1
	m := int64(b%64 + 64)
	return (m+1)<<uint(e) - 1
}

// Record adds one value in microseconds.
func (h *Histogram) Record(us int64) {
	h.counts[bucketOf(us)]++
	h.n++
	h.max = max(h.max, us)
}

// Merge adds every value of o.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Quantile returns the value at q (0..1) in microseconds, or 0 if the
// histogram is empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	target := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= target {
			return min(valueOf(i), h.max)
		}
	}
	return h.max
}

// Count is the number of values recorded.
func (h *Histogram) Count() int64 { return h.n }

// Max is the largest value recorded, exactly.
func (h *Histogram) Max() int64 { return h.max }
