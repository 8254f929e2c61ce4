package bench

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgecdn/cdn/compose"
)

// TestMissFloorThroughTheShield: in the lab's topology pop-eu and pop-ap
// reach the origin through pop-na (-parent), so a miss there costs the
// round trip to pop-na and pop-na's to the origin; pop-na's own miss
// costs its round trip to the origin.
func TestMissFloorThroughTheShield(t *testing.T) {
	topo, err := compose.Load(context.Background(), filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := topo.Host("origin")
	for pop, want := range map[string]time.Duration{"pop-na": 10 * time.Millisecond, "pop-eu": 90 * time.Millisecond, "pop-ap": 210 * time.Millisecond} {
		h, ok := topo.Host(pop)
		if !ok {
			t.Fatalf("no %s in the lab", pop)
		}
		if got := missRTT(topo, h, origin); got != want {
			t.Errorf("miss floor's round trip at %s = %v, want %v", pop, got, want)
		}
	}
}
