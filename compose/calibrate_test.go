package compose

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCalibrateMeasuresAgain: a pair measured above its tolerance in the
// parallel pass is measured again, alone, and passes if it then agrees
// with the matrix; a pair that stays off, or is below the matrix (a
// missing delay), fails.
func TestCalibrateMeasuresAgain(t *testing.T) {
	topo, err := Load(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	hosts := []Host{}
	for _, name := range []string{"client-eu", "pop-eu", "pop-na"} {
		for _, h := range topo.Hosts {
			if h.Name == name {
				hosts = append(hosts, h)
			}
		}
	}
	if len(hosts) != 3 {
		t.Fatalf("hosts %v", hosts)
	}
	// measured: per pair, the values returned on successive measurements.
	run := func(measured map[string][]time.Duration) (string, error) {
		var mu sync.Mutex
		return calibrate(topo, hosts, 4, func(a, b Host) (time.Duration, error) {
			mu.Lock()
			defer mu.Unlock()
			k := a.Name + "-" + b.Name
			want := topo.RTTBetween(a, b)
			vs := measured[k]
			if len(vs) == 0 {
				return want, nil
			}
			measured[k] = vs[1:]
			return vs[0], nil
		})
	}
	eu := topo.RTTBetween(hosts[0], hosts[1])
	if _, err := run(map[string][]time.Duration{"client-eu-pop-eu": {eu + 7*time.Millisecond, eu + time.Millisecond}}); err != nil {
		t.Errorf("a pair off once, then right: %v, want it to pass", err)
	}
	if _, err := run(map[string][]time.Duration{"client-eu-pop-eu": {eu + 7*time.Millisecond, eu + 7*time.Millisecond, eu + 6*time.Millisecond}}); err == nil || !strings.Contains(err.Error(), "client-eu-pop-eu") {
		t.Errorf("a pair off three times: %v, want it named as off", err)
	}
	if _, err := run(map[string][]time.Duration{"client-eu-pop-eu": {eu / 2, eu}}); err == nil {
		t.Error("a pair below the matrix (a missing delay) passed, want it off")
	}
}
