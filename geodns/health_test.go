package geodns

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// checkServer stands in for a PoP's admin /readyz: always 200, with
// X-PoP-Degraded: 1 while degraded is set.
type checkServer struct {
	url      string
	degraded atomic.Bool
}

func startCheckServer(t *testing.T) *checkServer {
	t.Helper()
	c := &checkServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.degraded.Load() {
			w.Header().Set("X-PoP-Degraded", "1")
			w.Write([]byte("ready; degraded: upstream origin has no healthy server\n"))
			return
		}
		w.Write([]byte("ready\n"))
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL + "/readyz"
	return c
}

// TestDegradedPreferredOnlyWithinRegion: a degraded PoP (ready, but its
// origin has no healthy server) gives way to a healthy PoP of the same
// region, never to one in another region, which would reach the same
// dead origin from farther away.
func TestDegradedPreferredOnlyWithinRegion(t *testing.T) {
	checks := map[string]*checkServer{}
	s := startServer(t, fmt.Sprintf(labConfig, bigTXT()), func(c *Config) {
		c.PoPs = append(c.PoPs, PoP{Name: "pop-eu2", A: []string{"10.77.2.21"}, Region: "eu", Lat: 52.4, Lon: 4.9})
		for i := range c.PoPs {
			cs := startCheckServer(t)
			checks[c.PoPs[i].Name] = cs
			c.PoPs[i].Check = Check{URL: cs.url, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}
		}
	})
	ask := func(ecs string) string {
		return strings.Join(answerIPs(query(t, s, "udp", "www.cdn.lab.", dns.TypeA, ecs)), ",")
	}
	const eu, ap = "10.77.2.0/24", "10.77.3.0/24"
	poll.Until(t, "every PoP's first check", func() bool { return ask(eu) == "10.77.2.20" && ask(ap) == "10.77.3.20" })

	checks["pop-eu"].degraded.Store(true)
	poll.Until(t, "pop-eu2 to replace degraded pop-eu", func() bool { return ask(eu) == "10.77.2.21" })

	checks["pop-eu2"].degraded.Store(true)
	poll.Until(t, "pop-eu back with both eu PoPs degraded", func() bool { return ask(eu) == "10.77.2.20" })
	if got := ask(eu); got != "10.77.2.20" {
		t.Errorf("eu client with every eu PoP degraded = %s, want pop-eu (10.77.2.20): never another region", got)
	}

	checks["pop-ap"].degraded.Store(true)
	poll.Until(t, "geodns to see pop-ap degraded", func() bool { return degradedOf(s, "pop-ap") })
	if got := ask(ap); got != "10.77.3.20" {
		t.Errorf("ap client with pop-ap degraded = %s, want pop-ap (10.77.3.20): no healthy PoP in ap, and none elsewhere is better", got)
	}

	checks["pop-eu"].degraded.Store(false)
	checks["pop-eu2"].degraded.Store(false)
	poll.Until(t, "pop-eu first again once its origin is back", func() bool { return ask(eu) == "10.77.2.20" && !degradedOf(s, "pop-eu") })
}

func degradedOf(s *Server, name string) bool {
	for _, p := range s.state.Load().pops {
		if p.cfg.Name == name {
			return p.degraded.Load()
		}
	}
	return false
}
