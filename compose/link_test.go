package compose

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLinks records SetLinkDelay calls; it knows the hosts of hosts.
type fakeLinks struct {
	hosts []string
	mu    sync.Mutex // guards set
	set   map[string]time.Duration
}

func (f *fakeLinks) SetLinkDelay(host string, extra time.Duration) error {
	for _, h := range f.hosts {
		if h == host {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.set[host] = extra
			return nil
		}
	}
	return fmt.Errorf("no host %q", host)
}

// lab link's socket: a request reaches the setter and its answer (or its
// error) comes back; nothing answering is ErrNoLinkServer; a socket a
// live server holds is not taken over, a dead one's is; Close removes it.
func TestLinkServer(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "link.sock")
	ctx := context.Background()
	if _, err := SetLinkDelayAt(ctx, socket, "pop-eu", ms); !errors.Is(err, ErrNoLinkServer) {
		t.Errorf("SetLinkDelayAt with no server = %v, want ErrNoLinkServer", err)
	}
	f := &fakeLinks{hosts: []string{"pop-eu"}, set: map[string]time.Duration{}}
	ls, err := StartLinkServer(socket, f)
	if err != nil {
		t.Fatalf("StartLinkServer: %v", err)
	}
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, %v; want mode 0600 (root only)", socket, fi.Mode(), err)
	}
	msg, err := SetLinkDelayAt(ctx, socket, "pop-eu", 150*ms)
	if err != nil || msg != DescribeLinkDelay("pop-eu", 150*ms) || f.set["pop-eu"] != 150*ms {
		t.Errorf("SetLinkDelayAt(pop-eu, 150ms) = %q, %v; setter has %v; want it set and described", msg, err, f.set)
	}
	if _, err := SetLinkDelayAt(ctx, socket, "nosuch", ms); err == nil || !strings.Contains(err.Error(), `no host "nosuch"`) {
		t.Errorf("SetLinkDelayAt(nosuch) = %v, want the setter's error", err)
	}
	if _, err := StartLinkServer(socket, f); err == nil || !strings.Contains(err.Error(), "another lab process") {
		t.Errorf("a second StartLinkServer on %s = %v, want it refused", socket, err)
	}
	if err := ls.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
	// A socket file a killed process left: replaced.
	if err := os.WriteFile(socket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ls, err = StartLinkServer(socket, f)
	if err != nil {
		t.Fatalf("StartLinkServer over a stale socket: %v", err)
	}
	if _, err := SetLinkDelayAt(ctx, socket, "pop-eu", 0); err != nil || f.set["pop-eu"] != 0 {
		t.Errorf("SetLinkDelayAt(pop-eu, 0) = %v; setter has %v", err, f.set)
	}
	ls.Close()
}

// The handler refuses a bad delay, naming it, and anything but POST.
func TestLinkHandler(t *testing.T) {
	h := linkHandler(&fakeLinks{hosts: []string{"pop-eu"}, set: map[string]time.Duration{}})
	for _, tt := range []struct {
		method, extra string
		code          int
		body          string
	}{
		{"POST", "150ms", 200, "+150ms"},
		{"POST", "150", 400, `"150"`},
		{"POST", "-5ms", 400, "from 0"},
		{"GET", "150ms", 405, ""},
	} {
		form := url.Values{"host": {"pop-eu"}, "extra": {tt.extra}}
		req := httptest.NewRequest(tt.method, "/link", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.body) {
			t.Errorf("%s /link extra=%s: %d %q, want %d with %q", tt.method, tt.extra, w.Code, w.Body, tt.code, tt.body)
		}
	}
}

func TestParseLinkDelay(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "150ms": 150 * ms, " 1.5s ": 1500 * ms, "0s": 0, "10s": 10 * time.Second} {
		if got, err := ParseLinkDelay(in); got != want || err != nil {
			t.Errorf("ParseLinkDelay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "150", "-1ms", "11s", "fast", "1h"} {
		if _, err := ParseLinkDelay(in); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) || !strings.Contains(err.Error(), "like 150ms") {
			t.Errorf("ParseLinkDelay(%q) = %v, want an error naming it and saying what is right", in, err)
		}
	}
}

func FuzzParseLinkDelay(f *testing.F) {
	for _, s := range []string{"0", "150ms", "1.5s", "-1ms", "10s", "1e3ms", ".5s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseLinkDelay(s)
		if err != nil {
			return
		}
		if d < 0 || d > MaxLinkDelay {
			t.Fatalf("ParseLinkDelay(%q) = %v, outside 0..%v", s, d, MaxLinkDelay)
		}
		// What lab link -docker passes on (extra.String()) reads back the same.
		if again, err := ParseLinkDelay(d.String()); err != nil || again != d {
			t.Fatalf("ParseLinkDelay(%q) = %v, but ParseLinkDelay(%q) = %v, %v", s, d, d.String(), again, err)
		}
	})
}
