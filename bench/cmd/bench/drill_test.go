package main

import (
	"testing"
	"time"

	"github.com/edgecdn/cdn/bench/drill"
	"github.com/edgecdn/cdn/compose/labtest"
)

// TestDrills runs every drill, as bench drill does, against a private
// native lab (root) and asserts their expectations: counts and orderings.
func TestDrills(t *testing.T) {
	labtest.RequireLab(t)
	ctx := labtest.Context(t)
	checks, err := drill.Run(ctx, drill.Config{Root: labtest.RepoRoot(t), StateDir: t.TempDir(), Prefix: labtest.Prefix("edt"), Load: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	expected, info := 0, 0
	for _, c := range checks {
		if c.Info {
			info++
		} else {
			expected++
		}
	}
	// origin-down 4, origin-slow 2, origin-partition 6, pop-down 4,
	// pop-drain 3, cold-restart 1, flood 5, hostile 15 (11 and the four
	// resource attacks), latency-steer 4, purge 3, control-plane 5,
	// shield 4; and one informational row per drill.
	if expected != 56 || info != len(drill.Names()) {
		t.Errorf("%d checks and %d informational rows, want 56 and %d", expected, info, len(drill.Names()))
	}
	for _, c := range checks {
		t.Logf("%s: %s: %s (pass %v)", c.Drill, c.Expectation, c.Measured, c.Pass)
		if !c.Pass {
			t.Errorf("%s: %s: measured %s", c.Drill, c.Expectation, c.Measured)
		}
	}
}
