package pop

import (
	"strconv"
	"testing"
	"time"
)

// TestIPLimiter: each address has its own bucket (burst, then refill at
// the rate), and a flood from many addresses leaves at most max
// remembered, the most recent ones.
func TestIPLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newIPLimiter(2, 3, 64)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if !l.allow("192.0.2.1") {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	if l.allow("192.0.2.1") {
		t.Fatal("a fourth request in the same instant allowed past a burst of 3")
	}
	if !l.allow("192.0.2.2") {
		t.Fatal("another address shares the first one's bucket")
	}
	now = now.Add(500 * time.Millisecond) // one token at 2/s
	if !l.allow("192.0.2.1") || l.allow("192.0.2.1") {
		t.Fatal("after 0.5 s at 2/s: want exactly one more request allowed")
	}
	for i := range 10_000 {
		l.allow("10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256))
	}
	if n := l.remembered(); n > 64 {
		t.Errorf("after 10,000 addresses the limiter remembers %d, want at most 64", n)
	}
	if l.allow("192.0.2.1") != true {
		t.Error("an address forgotten in the flood does not start with a full bucket")
	}
}

// BenchmarkIPLimiter is the limiter's cost per request from many
// connections at once, each client with its own address: about 90 ns on
// one core, 114 on two. The one lock is not sharded because a version
// sharded 16 ways by address (maphash) measured slower on this 2-core
// machine (104 and 131 ns); on many cores that may turn around.
func BenchmarkIPLimiter(b *testing.B) {
	l := newIPLimiter(1e9, 0, 100_000)
	ips := make([]string, 1024)
	for i := range ips {
		ips[i] = "10.1." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.allow(ips[i%len(ips)])
			i += 7
		}
	})
}
