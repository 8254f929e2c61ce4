package poptest_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestStartPoP is how a test uses poptest: a PoP with the test's lab CA in
// front of a generated-object origin, serving a hit by the time StartPoP
// returns, and leaving no goroutine behind once the test ends.
func TestStartPoP(t *testing.T) {
	poll.CheckGoroutines(t)
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.RootPool()}}
	defer tr.CloseIdleConnections()
	url := "https://" + p.Addr().String() + "/gen/1k"
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(body) != 1024 || resp.Header.Get("X-Served-By") != poptest.Name {
		t.Errorf("GET %s = %d, %d bytes from %q (%v); want 200, 1024 bytes from %s", url, resp.StatusCode, len(body), resp.Header.Get("X-Served-By"), err, poptest.Name)
	}
}
