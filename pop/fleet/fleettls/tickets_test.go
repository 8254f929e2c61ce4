package fleettls_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/fleet"
	"github.com/edgecdn/cdn/pop/fleet/fleettest"
	"github.com/edgecdn/cdn/pop/fleet/fleettls"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// startTickets runs Tickets for pop in srv's fleet until the test ends.
func startTickets(t *testing.T, srv *fleettest.Server, pop string) (*fleettls.Tickets, *fleet.Fleet) {
	t.Helper()
	f := join(t, srv, pop)
	keys, err := certs.NewTicketKeys(certs.TicketKeysConfig{Rotation: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := fleettls.NewTickets(fleettls.TicketsConfig{Keys: keys, PoP: pop, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk.Run(ctx, f.JetStream())
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-tk.Ready():
	case <-time.After(poll.Timeout):
		t.Fatalf("%s: no secret from the fleet within %v", pop, poll.Timeout)
	}
	return tk, f
}

// TestTicketsRotateOnce: two PoPs racing to rotate the fleet's secret
// from the same revision: one wins, the other is told it lost, the
// bucket's history holds one rotation, and both end on the winner's
// secret with the QUIC secret unchanged.
func TestTicketsRotateOnce(t *testing.T) {
	srv := fleettest.Start(t)
	a, fa := startTickets(t, srv, "pop-a")
	b, _ := startTickets(t, srv, "pop-b")
	if a.Revision() != b.Revision() {
		t.Fatalf("revisions %d and %d, want both PoPs on the first secret", a.Revision(), b.Revision())
	}
	qa, _, _ := a.QUICKeys()
	first := a.Revision()

	start := make(chan struct{})
	won := make([]bool, 2)
	var wg sync.WaitGroup
	for i, tk := range []*fleettls.Tickets{a, b} {
		wg.Go(func() {
			<-start
			ok, err := tk.Rotate(context.Background())
			if err != nil {
				t.Errorf("Rotate: %v", err)
			}
			won[i] = ok
		})
	}
	close(start)
	wg.Wait()
	if won[0] == won[1] {
		t.Fatalf("Rotate won = %v, want exactly one winner", won)
	}

	kv, err := fa.JetStream().KeyValue(context.Background(), "cdn_tls")
	if err != nil {
		t.Fatal(err)
	}
	hist, err := kv.History(context.Background(), "tickets")
	if err != nil {
		t.Fatal(err)
	}
	var by []string
	for _, e := range hist {
		var v struct{ By string }
		json.Unmarshal(e.Value(), &v)
		by = append(by, v.By)
	}
	winner := map[bool]string{true: "pop-a", false: "pop-b"}[won[0]]
	if len(hist) != 2 || hist[0].Revision() != first || by[1] != winner {
		t.Fatalf("history of the secret: %d revisions by %v, want the first and one rotation by %s", len(hist), by, winner)
	}
	poll.Until(t, "both PoPs on the rotated secret", func() bool {
		return a.Revision() == hist[1].Revision() && b.Revision() == hist[1].Revision()
	})
	if qb, _, _ := b.QUICKeys(); qb != qa {
		t.Errorf("QUIC keys changed with the rotation, want them kept (quic-go fixes them at start)")
	}
}
