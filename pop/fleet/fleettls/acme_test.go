package fleettls_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/certs/acmetest"
	"github.com/edgecdn/cdn/pop/fleet/fleettest"
)

// TestACMEOneOrderForTheFleet: three PoPs' ACME (certs.ACME) sharing the
// fleet's cache, against pebble, are each asked for the same name at the
// same moment. Pebble gets exactly one order, from one account, and all
// three serve the same certificate.
//
// Pebble validates tls-alpn-01 on one port, pop-0's listener, whichever
// PoP placed the order: as GeoDNS would send the CA to any PoP, pop-0
// answers from the shared cache when another PoP ordered.
func TestACMEOneOrderForTheFleet(t *testing.T) {
	const host = "www.cdn.test"
	srv := fleettest.Start(t)
	lns := []net.Listener{acmetest.Listen(t), acmetest.Listen(t), acmetest.Listen(t)}
	p := acmetest.StartPebble(t, acmetest.ClosingPort(t), acmetest.Port(lns[0]))
	for i, ln := range lns {
		cache, _ := newCache(t, srv, fmt.Sprintf("pop-%d", i), 0)
		a, err := certs.NewACME(certs.ACMEConfig{Hosts: []string{host}, Cache: cache, DirectoryURL: p.DirURL, RootCAs: p.Roots})
		if err != nil {
			t.Fatal(err)
		}
		acmetest.Serve(t, ln, http.NotFoundHandler(), &tls.Config{GetCertificate: a.GetCertificate, NextProtos: a.NextProtos([]string{"http/1.1"})})
	}
	t.Cleanup(func() { acmetest.WaitAutocertIdle(t) })

	start := make(chan struct{})
	serials := make([]string, len(lns))
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Go(func() {
			<-start
			d := &tls.Dialer{Config: &tls.Config{ServerName: host, RootCAs: p.Issuer}}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Errorf("pop-%d: handshake for %s: %v", i, host, err)
				return
			}
			defer conn.Close()
			serials[i] = conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
		})
	}
	close(start)
	wg.Wait()
	if n := p.NewOrders(); n != 1 {
		t.Errorf("pebble got %d orders for %s from the fleet, want 1", n, host)
	}
	if n := p.NewAccounts(); n != 1 {
		t.Errorf("pebble got %d new accounts, want 1 (the account key is shared)", n)
	}
	for i, s := range serials {
		if s != "" && serials[0] != "" && s != serials[0] {
			t.Errorf("pop-%d serves certificate serial %s, pop-0 %s; want the same certificate", i, s, serials[0])
		}
	}
}
