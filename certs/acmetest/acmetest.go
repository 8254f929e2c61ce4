// Package acmetest runs pebble, Let's Encrypt's test ACME CA, in-process
// for tests of ACME clients (certs.ACME), with a DNS server on loopback
// that points its validations at the test's listeners: nothing leaves
// loopback. It also has the small servers such a test needs: a listener
// for each challenge, a port that refuses every validation, and a wait
// for autocert's background work to end.
package acmetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"golang.org/x/crypto/acme/autocert"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// Zone is what the test DNS server answers for: every name in it is
// 127.0.0.1, so a refusal for a name in it can only come from the client's
// host policy.
const Zone = "cdn.test."

// Pebble's paths for a new order and a new account (wfe's newOrderPath
// and newAccountPath, which it does not export; the directory lists them).
const (
	newOrderPath   = "/order-plz"
	newAccountPath = "/sign-me-up"
)

// Pebble is pebble, wired as its cmd/pebble/main.go does, with its API
// served over TLS from a lab CA.
type Pebble struct {
	DirURL string            // the ACME directory
	Roots  *x509.CertPool    // verifies pebble's API (the lab CA)
	Root   *x509.Certificate // pebble's issuing root
	Issuer *x509.CertPool    // holds Root: verifies what pebble issues
	DB     *db.MemoryStore

	orders, accounts atomic.Int64
}

// StartPebble starts pebble and its DNS server, stopped when the test
// ends. Pebble validates http-01 challenges on 127.0.0.1:httpPort and
// tls-alpn-01 ones on 127.0.0.1:tlsPort; it neither sleeps before a
// validation nor rejects good nonces, and every order is validated afresh.
func StartPebble(t testing.TB, httpPort, tlsPort int) *Pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s sleep before each validation
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no "badNonce" for 5% of good nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	lab := certstest.LabCA(t)
	leaf, err := lab.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pebble{
		DirURL: "https://" + ln.Addr().String() + wfe.DirectoryPath,
		Roots:  lab.RootPool(),
		Root:   authority.GetRootCert(0).Cert,
		Issuer: x509.NewCertPool(),
		DB:     store,
	}
	p.Issuer.AddCert(p.Root)
	api := front.Handler()
	Serve(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		api.ServeHTTP(rec, r)
		if r.Method == http.MethodPost && rec.code == http.StatusCreated {
			switch r.URL.Path {
			case newOrderPath:
				p.orders.Add(1)
			case newAccountPath:
				p.accounts.Add(1)
			}
		}
	}), nil)
	return p
}

// NewOrders is how many orders pebble has created, for every account:
// what a client asked the CA for.
func (p *Pebble) NewOrders() int { return int(p.orders.Load()) }

// NewAccounts is how many accounts pebble has created.
func (p *Pebble) NewAccounts() int { return int(p.accounts.Load()) }

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Validations returns how many orders the account in cache (autocert's
// account key) has placed at pebble, and every challenge pebble validated
// for them as "type status", in order. It reads pebble's store, not the
// ACME API, so it counts what the CA holds whatever the client did.
func (p *Pebble) Validations(t testing.TB, cache autocert.Cache) (orders int, tried []string) {
	t.Helper()
	data, err := cache.Get(context.Background(), "acme_account+key") // autocert's name for its account key
	if err != nil {
		t.Fatalf("account key: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("account key: no PEM block")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("account key: %v", err)
	}
	acct, err := p.DB.GetAccountByKey(key.Public())
	if err != nil || acct == nil {
		t.Fatalf("pebble has no account for autocert's key (err %v)", err)
	}
	all := p.DB.GetOrdersByAccountID(acct.ID)
	for _, o := range all {
		o.RLock()
		authzs := o.AuthorizationObjects
		o.RUnlock()
		for _, z := range authzs {
			z.RLock()
			chals := z.Challenges
			z.RUnlock()
			for _, c := range chals {
				c.RLock()
				if c.Status != "pending" {
					tried = append(tried, c.Type+" "+c.Status)
				}
				c.RUnlock()
			}
		}
	}
	return len(all), tried
}

// startDNS runs real DNS servers on one loopback port, UDP and TCP (pebble
// asks over TCP), authoritative for Zone: A 127.0.0.1 for every name in
// it, an empty answer for other types (AAAA), REFUSED outside it.
func startDNS(t testing.TB) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if len(q.Question) != 1 || !dns.IsSubDomain(Zone, q.Question[0].Name) {
			m.Rcode = dns.RcodeRefused
		} else if qq := q.Question[0]; qq.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})
	ln := Listen(t)
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{Listener: ln, Handler: handler}, {PacketConn: pc, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("dns server: %v", err)
		}
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return ln.Addr().String()
}

// Listen listens on a loopback port until the test ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Port is ln's port.
func Port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// ClosingPort returns a loopback port whose listener closes every
// connection at once, so a validation sent there fails quickly. It stays
// bound for the whole test, so nothing else can take the port.
func ClosingPort(t testing.TB) int {
	t.Helper()
	ln := Listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return Port(ln)
}

// Serve runs an HTTP server on ln, over TLS when cfg is set, until the
// test ends.
func Serve(t testing.TB, ln net.Listener, h http.Handler, cfg *tls.Config) {
	t.Helper()
	srv := &http.Server{Handler: h, TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan error, 1)
	go func() {
		if cfg != nil {
			done <- srv.ServeTLS(ln, "", "")
		} else {
			done <- srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve %s: %v", ln.Addr(), err)
		}
	})
}

// WaitAutocertIdle waits for the goroutines autocert starts at the end of
// an issuance (deactivating leftover authorizations, deleting challenge
// tokens) to end, so none outlives the CA or the cache. There is no event
// to wait on, so it polls the goroutine stacks; if they never end, the
// failure shows them. Register it with t.Cleanup after the servers and the
// CA, so that it runs before they stop.
func WaitAutocertIdle(t testing.TB) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var stacks string
	busy := func() bool {
		stacks = string(buf[:runtime.Stack(buf, true)])
		return strings.Contains(stacks, "/acme/autocert.")
	}
	defer func() {
		if strings.Contains(stacks, "/acme/autocert.") { // poll.Until gave up
			t.Logf("goroutines:\n%s", stacks)
		}
	}()
	poll.Until(t, "autocert's goroutines to end", func() bool { return !busy() })
}
