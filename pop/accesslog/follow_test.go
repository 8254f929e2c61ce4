package accesslog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// followRun is a Follow running on its own goroutine.
type followRun struct {
	query string
	done  chan struct{}
	err   error
}

// wait returns Follow's result once it has returned, failing the test
// if it does not within poll.Timeout.
func (f *followRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-f.done:
		return f.err
	case <-time.After(poll.Timeout):
		t.Fatalf("Follow(%q) did not return", f.query)
		return nil
	}
}

// follow starts a follower of l with the filter of query, writing to w;
// cancel ends it. The test's end cancels it and waits for it.
func follow(t *testing.T, l *Logger, query string, w io.Writer) (run *followRun, cancel context.CancelFunc) {
	t.Helper()
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFilter(q)
	if err != nil {
		t.Fatalf("ParseFilter(%q) = %v", query, err)
	}
	before := l.Stats().Followers
	ctx, cancel := context.WithCancel(context.Background())
	run = &followRun{query: query, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		run.err = l.Follow(ctx, w, f)
	}()
	poll.Until(t, "the follower to start", func() bool { return l.Stats().Followers > before })
	t.Cleanup(func() {
		cancel()
		run.wait(t)
	})
	return run, cancel
}

// TestFollowFilters: each kind of filter admits exactly its lines, two
// followers get their own selections of the same records at once, and
// the file gets everything.
func TestFollowFilters(t *testing.T) {
	type rc struct {
		status int
		result cache.Result
		path   string
		client string
	}
	records := []rc{
		{200, cache.ResultHit, "/a/1", "10.77.2.100:1000"},
		{404, cache.ResultMiss, "/a/2", "10.77.3.100:1000"},
		{503, cache.ResultMiss, "/b/1", "[2001:db8::1]:443"},
		{502, cache.ResultPass, "/b/2", "10.77.2.7:9"},
		{304, cache.ResultRevalidated, "/a", "[::ffff:10.77.2.5]:80"},
		{200, cache.ResultStale, "/c", "192.0.2.1:5"},
	}
	tests := []struct {
		query string
		want  []string // paths
	}{
		{"", []string{"/a/1", "/a/2", "/b/1", "/b/2", "/a", "/c"}},
		{"status=404", []string{"/a/2"}},
		{"status=5xx", []string{"/b/1", "/b/2"}},
		{"status=404,503&status=2xx", []string{"/a/1", "/a/2", "/b/1", "/c"}},
		{"cache=miss", []string{"/a/2", "/b/1"}},
		{"cache=hit,stale", []string{"/a/1", "/c"}},
		{"cache=revalidated&cache=pass", []string{"/b/2", "/a"}},
		{"path=/a/", []string{"/a/1", "/a/2"}},
		{"path=/a", []string{"/a/1", "/a/2", "/a"}},
		{"client=10.77.2.0/24", []string{"/a/1", "/b/2", "/a"}},
		{"client=2001:db8::/32,192.0.2.1", []string{"/b/1", "/c"}},
		{"client=::ffff:10.77.3.0/120", []string{"/a/2"}},
		{"status=5xx&cache=miss&path=/b&client=2001:db8::/32", []string{"/b/1"}},
		{"sample=1", []string{"/a/1", "/a/2", "/b/1", "/b/2", "/a", "/c"}},
	}
	var file poll.Buffer
	l := newLogger(t, Config{Writer: &file})
	outs := make([]*poll.Buffer, len(tests))
	runs := make([]*followRun, len(tests))
	for i, tt := range tests {
		outs[i] = &poll.Buffer{}
		runs[i], _ = follow(t, l, tt.query, outs[i])
	}
	for _, r := range records {
		rec := sample()
		rec.Status, rec.Cache, rec.Path, rec.Client = r.status, r.result, r.path, r.client
		l.Log(&rec)
	}
	l.Close() // every follower gets what was logged before, then ends
	for _, run := range runs {
		if err := run.wait(t); err != nil {
			t.Errorf("Follow(%q) = %v after Close, want nil", run.query, err)
		}
	}
	if n := len(lines(t, file.String())); n != len(records) {
		t.Errorf("the file got %d lines, want %d", n, len(records))
	}
	for i, tt := range tests {
		var got []string
		for _, m := range lines(t, outs[i].String()) {
			got = append(got, m["path"].(string))
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("follower %q got %q, want %q", tt.query, got, tt.want)
		}
	}
}

// TestFollowWithoutFile: with no file, lines are built for followers
// alone, and Wanted follows the followers.
func TestFollowWithoutFile(t *testing.T) {
	l := newLogger(t, Config{})
	var out poll.Buffer
	_, cancel := follow(t, l, "", &out)
	if !l.Wanted() {
		t.Fatal("Wanted() = false with a follower")
	}
	r := sample()
	l.Log(&r)
	poll.Until(t, "the follower's line", func() bool { return strings.Count(out.String(), "\n") == 1 })
	cancel()
	poll.Until(t, "the follower to leave", func() bool { return l.Stats().Followers == 0 })
	if l.Wanted() {
		t.Error("Wanted() = true after the last follower left, with no file")
	}
}

// TestFollowSample: sample=0.1 passes about a tenth of the lines (the
// bounds are over 10 standard deviations wide), sample=0.5 about half.
func TestFollowSample(t *testing.T) {
	l := newLogger(t, Config{QueueRecords: 1 << 15})
	var tenth, half poll.Buffer
	r1, _ := follow(t, l, "sample=0.1", &tenth)
	r2, _ := follow(t, l, "sample=0.5&status=200", &half)
	const n = 20000
	r := sample()
	for range n {
		l.Log(&r)
	}
	l.Close()
	r1.wait(t)
	r2.wait(t)
	if st := l.Stats(); st.Dropped != 0 {
		t.Fatalf("%d lines dropped; the test needs them all", st.Dropped)
	}
	// n*p ± 10 sqrt(n p (1-p)): 2000 ± 424, 10000 ± 707.
	for _, c := range []struct {
		name   string
		out    *poll.Buffer
		lo, hi int
	}{{"sample=0.1", &tenth, 1576, 2424}, {"sample=0.5", &half, 9293, 10707}} {
		if got := strings.Count(c.out.String(), "\n"); got < c.lo || got > c.hi {
			t.Errorf("%s passed %d of %d lines, want %d to %d", c.name, got, n, c.lo, c.hi)
		}
	}
}

// stalledWriter is a follower that stops reading: its first write blocks
// until a write deadline cuts it short, as a stalled HTTP client's does.
type stalledWriter struct {
	mu       sync.Mutex // guards deadline
	deadline chan struct{}
	entered  chan struct{}
	once     sync.Once
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.deadline
	return 0, errors.New("write deadline exceeded")
}

func (w *stalledWriter) SetWriteDeadline(time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.deadline:
	default:
		close(w.deadline)
	}
	return nil
}

// TestSlowFollowerDropped: a follower that stops reading is dropped once
// its queue is full (Follow returns ErrTooSlow, cut out of its stuck
// write), while Log never waits and the other follower and the file get
// every line.
func TestSlowFollowerDropped(t *testing.T) {
	var file, fast poll.Buffer
	l := newLogger(t, Config{Writer: &file, FollowerBufferBytes: 8 << 10})
	slow := &stalledWriter{deadline: make(chan struct{}), entered: make(chan struct{})}
	slowRun, _ := follow(t, l, "", slow)
	follow(t, l, "", &fast)
	r := sample()
	l.Log(&r)
	select {
	case <-slow.entered:
	case <-time.After(poll.Timeout):
		t.Fatal("the slow follower was never written to")
	}
	// 1000 lines, about 400 KiB, 50 times the follower's queue, in
	// rounds of 10 (4 KiB) that the fast follower keeps up with.
	const n = 1000
	logged := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(poll.Timeout)
		for i := range n {
			r.Path = fmt.Sprintf("/p/%d", i)
			l.Log(&r)
			for i%10 == 9 && strings.Count(fast.String(), "\n") < i+2 {
				if time.Now().After(deadline) {
					logged <- fmt.Errorf("the fast follower fell behind at line %d", i+2)
					return
				}
				time.Sleep(time.Millisecond) // a pause between polls, not a wait for an event
			}
		}
		logged <- nil
	}()
	select {
	case err := <-logged:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * poll.Timeout):
		t.Fatal("logging did not finish: blocked behind a stalled follower?")
	}
	if err := slowRun.wait(t); !errors.Is(err, ErrTooSlow) {
		t.Errorf("the slow follower's Follow = %v, want ErrTooSlow", err)
	}
	if got := strings.Count(fast.String(), "\n"); got != n+1 {
		t.Errorf("the fast follower got %d lines, want %d", got, n+1)
	}
	if st := l.Stats(); st.FollowersDropped != 1 || st.Followers != 1 {
		t.Errorf("Stats = %+v, want one follower dropped and one left", st)
	}
	l.Close()
	if st := l.Stats(); st.Dropped != 0 || st.Lines != n+1 {
		t.Errorf("Stats = %+v, want %d lines written, none dropped", st, n+1)
	}
}

// TestParseFilterErrors: each bad value is named with what would be
// right, all of them at once.
func TestParseFilterErrors(t *testing.T) {
	tests := []struct {
		query string
		want  []string
	}{
		{"status=6xx", []string{`status: "6xx", want a status code such as 404 or a class such as 5xx`}},
		{"status=abc,200", []string{`status: "abc"`}},
		{"status=99", []string{`status: "99"`}},
		{"cache=fresh", []string{`cache: "fresh", want hit, stale, revalidated, miss or pass`}},
		{"path=gen", []string{`path: "gen", want a path prefix starting with /`}},
		{"client=10.0.0.0/33", []string{`client: "10.0.0.0/33", want a CIDR prefix such as 10.77.2.0/24 or an address`}},
		{"client=nowhere", []string{`client: "nowhere"`}},
		{"sample=0", []string{`sample: "0", want a share of lines in (0, 1] such as 0.1`}},
		{"sample=1.5", []string{`sample: "1.5"`}},
		{"sample=x", []string{`sample: "x"`}},
		{"sample=0.1&sample=0.2", []string{"sample: given 2 times, want it once"}},
		{"stauts=404", []string{`unknown parameter "stauts", want status, cache, path, client or sample`}},
		{"status=6xx&cache=fresh&sample=2", []string{`status: "6xx"`, `cache: "fresh"`, `sample: "2"`}},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		_, err := ParseFilter(q)
		if err == nil {
			t.Errorf("ParseFilter(%q) = nil, want an error", tt.query)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseFilter(%q) = %q, want it to say %q", tt.query, err, w)
			}
		}
	}
}

// TestFollowAfterClose: a follower of a closed log ends at once.
func TestFollowAfterClose(t *testing.T) {
	l := newLogger(t, Config{})
	l.Close()
	done := make(chan error, 1)
	go func() { done <- l.Follow(context.Background(), io.Discard, Filter{}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Follow after Close = %v, want nil", err)
		}
	case <-time.After(poll.Timeout):
		t.Fatal("Follow after Close did not return")
	}
}
