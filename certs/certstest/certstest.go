// Package certstest gives tests a lab CA (certs.LabCA) that fails the
// test when it cannot be opened, rather than a nil CA whose error was
// dropped and which panics later, far from the cause.
//
// It imports only certs, so the tests of every other package may use it;
// certs' own internal tests call certs.OpenLabCA and check its error.
package certstest

import (
	"testing"

	"github.com/edgecdn/cdn/certs"
)

// LabCA creates a lab CA in a new directory of its own (t.TempDir, removed
// when the test ends) and fails the test if it cannot. The directory, for
// configurations that take one (pop's tls.ca_dir, origin's -ca-dir), is
// filepath.Dir(ca.RootPath()).
func LabCA(t testing.TB) *certs.LabCA {
	t.Helper()
	return OpenLabCA(t, t.TempDir())
}

// OpenLabCA opens the lab CA in dir, creating it on first use (as
// certs.OpenLabCA does), and fails the test if it cannot: for a test that
// trusts the CA a program under test made in dir.
func OpenLabCA(t testing.TB, dir string) *certs.LabCA {
	t.Helper()
	ca, err := certs.OpenLabCA(dir)
	if err != nil {
		t.Fatalf("certs.OpenLabCA(%q): %v", dir, err)
	}
	return ca
}
