package bench

import (
	"math"
	"testing"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 100000; v++ {
		h.Record(v)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		got, want := float64(h.Quantile(q)), q*100000
		if math.Abs(got-want)/want > 0.02 {
			t.Errorf("quantile(%v) = %v, want %v within 2%%", q, got, want)
		}
	}
	if h.Quantile(1) != 100000 || h.Count() != 100000 {
		t.Errorf("max %d n %d", h.Quantile(1), h.Count())
	}
	for _, v := range []int64{0, 1, 63, 64, 65, 1 << 20, 1 << 40} {
		if b := bucketOf(v); valueOf(b) < v || float64(valueOf(b)-v) > 0.016*float64(v)+1 {
			t.Errorf("bucket of %d tops at %d: off by more than 1.6%%", v, valueOf(b))
		}
	}
}
