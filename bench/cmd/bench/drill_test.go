package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDrills runs every drill against a private native lab (root) and
// asserts their expectations: counts and orderings.
func TestDrills(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, _ := filepath.Abs("../../..")
	checks, err := runDrills(ctx, root, t.TempDir(), fmt.Sprintf("edt%d-", os.Getpid()), drillNames, 4*time.Second)
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
	// origin-down 4, origin-slow 2, pop-down 4, pop-drain 3, cold-restart 1,
	// flood 5, hostile 15 (11 and the four resource attacks); and one
	// informational row per drill.
	if expected != 34 || info != len(drillNames) {
		t.Errorf("%d checks and %d informational rows, want 34 and %d", expected, info, len(drillNames))
	}
	for _, c := range checks {
		t.Logf("%s: %s: %s (pass %v)", c.Drill, c.Expectation, c.Measured, c.Pass)
		if !c.Pass {
			t.Errorf("%s: %s: measured %s", c.Drill, c.Expectation, c.Measured)
		}
	}
}
