package clientrtt

import (
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock a test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTable(t *testing.T, max int) (*Table, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	tab, err := New(Config{MaxPrefixes: max, Now: c.now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tab, c
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestPrefixOf(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"10.77.4.9", "10.77.4.0/24"},
		{"127.0.0.1", "127.0.0.0/24"},
		{"::ffff:10.77.4.200", "10.77.4.0/24"}, // IPv4-mapped: the IPv4 /24
		{"2001:db8:1:2:3::4", "2001:db8:1::/48"},
		{"2001:db8:1:ffff::1", "2001:db8:1::/48"},
		{"fe80::1%eth0", "fe80::/48"}, // the zone is dropped
		{"::1", "::/48"},
	}
	for _, tt := range tests {
		got, ok := PrefixOf(addr(tt.addr))
		if !ok || got.String() != tt.want {
			t.Errorf("PrefixOf(%s) = %v, %v; want %s, true", tt.addr, got, ok, tt.want)
		}
	}
	if got, ok := PrefixOf(netip.Addr{}); ok {
		t.Errorf("PrefixOf(zero Addr) = %v, true; want false", got)
	}
}

func TestMovingAverage(t *testing.T) {
	tab, c := newTable(t, 0)
	// Three clients of one /24: one entry. The first sample sets the
	// average; each later one moves it by Alpha of the difference.
	samples := []struct {
		addr    string
		rtt     time.Duration
		wantRTT time.Duration
		wantMin time.Duration
	}{
		{"10.77.4.1", 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond},
		{"10.77.4.2", 20 * time.Millisecond, 13 * time.Millisecond, 10 * time.Millisecond},       // .3*20 + .7*10
		{"10.77.4.3", 3 * time.Millisecond, 10 * time.Millisecond, 3 * time.Millisecond},         // .3*3 + .7*13
		{"::ffff:10.77.4.4", 10 * time.Millisecond, 10 * time.Millisecond, 3 * time.Millisecond}, // mapped: same /24
	}
	for i, s := range samples {
		c.advance(time.Second)
		if !tab.Add(addr(s.addr), s.rtt) {
			t.Fatalf("Add(%s, %v) = false, want true", s.addr, s.rtt)
		}
		got := tab.Snapshot()
		if len(got) != 1 {
			t.Fatalf("after sample %d: %d entries, want 1: %+v", i, len(got), got)
		}
		e := got[0]
		if e.Prefix.String() != "10.77.4.0/24" || e.RTT != s.wantRTT || e.Min != s.wantMin || e.Samples != int64(i+1) || !e.Updated.Equal(c.t) {
			t.Errorf("after Add(%s, %v): %+v; want 10.77.4.0/24, RTT %v, Min %v, %d samples, updated %v", s.addr, s.rtt, e, s.wantRTT, s.wantMin, i+1, c.t)
		}
	}
}

func TestDroppedSamples(t *testing.T) {
	tab, _ := newTable(t, 0)
	for _, s := range []struct {
		addr netip.Addr
		rtt  time.Duration
	}{
		{addr("10.0.0.1"), 0}, // no measurement yet
		{addr("10.0.0.1"), -time.Millisecond},
		{netip.Addr{}, time.Millisecond},
	} {
		if tab.Add(s.addr, s.rtt) {
			t.Errorf("Add(%v, %v) = true, want false", s.addr, s.rtt)
		}
	}
	if n := tab.Len(); n != 0 {
		t.Errorf("Len() = %d after dropped samples, want 0", n)
	}
}

func TestEvictsPrefixUpdatedLongestAgo(t *testing.T) {
	tab, c := newTable(t, 3)
	for _, a := range []string{"10.0.1.1", "10.0.2.1", "10.0.3.1"} {
		c.advance(time.Second)
		tab.Add(addr(a), time.Millisecond)
	}
	// 10.0.1.0/24 was added first but is updated last: 10.0.2.0/24 is
	// now the one updated longest ago.
	c.advance(time.Second)
	tab.Add(addr("10.0.1.2"), time.Millisecond)
	c.advance(time.Second)
	tab.Add(addr("2001:db8::1"), time.Millisecond)
	want := []string{"10.0.1.0/24", "10.0.3.0/24", "2001:db8::/48"}
	if got := prefixes(tab.Snapshot()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after a 4th prefix in a table of 3: %v, want %v", got, want)
	}
	c.advance(time.Second)
	tab.Add(addr("10.0.4.1"), time.Millisecond) // evicts 10.0.3.0/24
	want = []string{"10.0.1.0/24", "10.0.4.0/24", "2001:db8::/48"}
	if got := prefixes(tab.Snapshot()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after a 5th prefix in a table of 3: %v, want %v", got, want)
	}
	if n := tab.Len(); n != 3 {
		t.Errorf("Len() = %d, want 3", n)
	}
}

func TestSnapshotSortedByPrefix(t *testing.T) {
	tab, _ := newTable(t, 0)
	for _, a := range []string{"2001:db8:2::1", "192.0.2.7", "2001:db8:1::1", "10.1.0.1", "10.0.255.1"} {
		tab.Add(addr(a), time.Millisecond)
	}
	want := []string{"10.0.255.0/24", "10.1.0.0/24", "192.0.2.0/24", "2001:db8:1::/48", "2001:db8:2::/48"}
	if got := prefixes(tab.Snapshot()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Snapshot() = %v, want %v", got, want)
	}
}

func TestDefaultAndInvalidConfig(t *testing.T) {
	tab, err := New(Config{})
	if err != nil || tab.max != DefaultMaxPrefixes {
		t.Errorf("New(Config{}) = max %d, %v; want %d, nil", tab.max, err, DefaultMaxPrefixes)
	}
	if _, err := New(Config{MaxPrefixes: -1}); err == nil || !strings.Contains(err.Error(), "max_prefixes") {
		t.Errorf("New(MaxPrefixes -1) = %v, want an error naming max_prefixes", err)
	}
}

func TestReportJSON(t *testing.T) {
	tab, c := newTable(t, 0)
	tab.Add(addr("10.77.4.9"), 9800*time.Microsecond)
	tab.Add(addr("10.77.4.10"), 11250*time.Microsecond)
	c.advance(1500 * time.Millisecond)
	tab.Add(addr("2001:db8:1::5"), 1234567*time.Nanosecond)
	c.advance(250 * time.Millisecond)
	b, err := json.Marshal(tab.Report("pop-eu"))
	if err != nil {
		t.Fatal(err)
	}
	// .3*11.25 + .7*9.8 = 10.235 ms
	want := `{"pop":"pop-eu","prefixes":[` +
		`{"prefix":"10.77.4.0/24","rtt_ms":10.235,"min_ms":9.8,"samples":2,"age_ms":1750},` +
		`{"prefix":"2001:db8:1::/48","rtt_ms":1.235,"min_ms":1.235,"samples":1,"age_ms":250}]}`
	if string(b) != want {
		t.Errorf("Report JSON =\n%s\nwant\n%s", b, want)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Prefixes[1].Prefix != netip.MustParsePrefix("2001:db8:1::/48") {
		t.Errorf("decoding the report = %+v, %v", back, err)
	}

	empty, _ := newTable(t, 0)
	if b, _ := json.Marshal(empty.Report("p")); string(b) != `{"pop":"p","prefixes":[]}` {
		t.Errorf("empty Report JSON = %s, want an empty list", b)
	}
}

// TestConcurrentAdds is for the race detector: samples from many
// goroutines, over more prefixes than the table holds.
func TestConcurrentAdds(t *testing.T) {
	tab, err := New(Config{MaxPrefixes: 16})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				tab.Add(netip.AddrFrom4([4]byte{10, byte(g), byte(i % 32), 1}), time.Duration(i+1)*time.Microsecond)
				if i%50 == 0 {
					tab.Snapshot()
				}
			}
		})
	}
	wg.Wait()
	if n := tab.Len(); n != 16 {
		t.Errorf("Len() = %d, want 16 (full)", n)
	}
}

func prefixes(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Prefix.String())
	}
	return out
}
