package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDrills runs the origin-down and pop-down drills against a private
// native lab (root) and asserts their expectations: counts and orderings.
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
	checks, err := runDrills(ctx, root, t.TempDir(), fmt.Sprintf("edt%d-", os.Getpid()), []string{"origin-down", "origin-slow", "pop-down", "pop-drain", "cold-restart"}, 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 14 {
		t.Errorf("%d checks, want 14", len(checks))
	}
	for _, c := range checks {
		t.Logf("%s: %s: %s (pass %v)", c.Drill, c.Expectation, c.Measured, c.Pass)
		if !c.Pass {
			t.Errorf("%s: %s: measured %s", c.Drill, c.Expectation, c.Measured)
		}
	}
}
