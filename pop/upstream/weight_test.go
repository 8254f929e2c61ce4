package upstream

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestWeightsShareRequests: weights 3:1 give 3:1 shares of requests under
// every balancer (round robin exactly, interleaved; least_outstanding
// and hash in expectation, sequential requests with nothing in flight);
// weight 0 is a backup, sent nothing until the weighted servers are out.
func TestWeightsShareRequests(t *testing.T) {
	for _, bal := range []string{RoundRobin, LeastOutstanding, Hash} {
		t.Run(bal, func(t *testing.T) {
			poll.CheckGoroutines(t)
			heavy, light, backup := newOrigin(t, false, nil), newOrigin(t, false, nil), newOrigin(t, false, nil)
			g := newGroup(t, Config{Servers: []string{heavy.srv.URL, light.srv.URL, backup.srv.URL}, Balancer: bal, HealthInterval: 10 * time.Millisecond,
				Weights: map[string]int{heavy.srv.URL: 3, backup.srv.URL: 0}})
			if err := g.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			const n = 400
			var seq strings.Builder
			for i := range n {
				path := "/w"
				if bal == Hash {
					path = fmt.Sprintf("/w%d", i) // the ring shares URLs, not requests
				}
				_, body, err := get(t, g, "GET", path)
				if err != nil {
					t.Fatal(err)
				}
				if i < 8 {
					if servedBy(body) == heavy.addr() {
						seq.WriteByte('h')
					} else {
						seq.WriteByte('l')
					}
				}
			}
			h, l := heavy.requests.Load(), light.requests.Load()
			if b := backup.requests.Load(); b != 0 {
				t.Errorf("the backup (weight 0) got %d requests while both weighted servers were up, want 0", b)
			}
			switch bal {
			case RoundRobin:
				if h != 300 || l != 100 {
					t.Errorf("round robin 3:1: heavy %d, light %d of %d; want 300 and 100", h, l, n)
				}
				if s := seq.String(); strings.Contains(s, "hhhh") || strings.Count(s, "l") != 2 {
					t.Errorf("round robin order %q, want the light server interleaved (one in four)", s)
				}
			default:
				// 3:1 in expectation: 300 ± 4 standard deviations (about 35).
				if h < 260 || h > 340 || h+l != n {
					t.Errorf("%s 3:1: heavy %d, light %d of %d; want about 300 and 100", bal, h, l, n)
				}
			}
			// Both weighted servers out of rotation (failing their health
			// checks): the backup takes the requests.
			heavy.healthy.Store(false)
			light.healthy.Store(false)
			poll.Until(t, "the weighted servers to leave rotation", func() bool {
				st := g.Stats()
				return !st.Servers[0].Healthy && !st.Servers[1].Healthy
			})
			for range 3 {
				if _, body, err := get(t, g, "GET", "/after"); err != nil || servedBy(body) != backup.addr() {
					t.Fatalf("with the weighted servers out: %q, %v; want the backup's answer", body, err)
				}
			}
		})
	}
}

func TestWeightsValidate(t *testing.T) {
	a, b := "https://a.example:443", "https://b.example:443"
	for _, tt := range []struct {
		weights map[string]int
		want    string
	}{
		{map[string]int{"https://c.example:443": 2}, `weights: "https://c.example:443" is not one of servers`},
		{map[string]int{a: 101}, `weights["https://a.example:443"]: 101, want 0 (a backup) to 100`},
		{map[string]int{a: -1}, `weights["https://a.example:443"]: -1`},
		{map[string]int{a: 0, b: 0}, "weights: every server has weight 0"},
	} {
		err := Config{Servers: []string{a, b}, Weights: tt.weights}.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(weights %v) = %v, want an error containing %q", tt.weights, err, tt.want)
		}
	}
	if err := (Config{Servers: []string{a, b}, Weights: map[string]int{a: 0, b: 5}}).Validate(); err != nil {
		t.Errorf("Validate(a backup and a weighted server) = %v, want nil", err)
	}
}
