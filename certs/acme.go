package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig configures certificates from an ACME CA.
type ACMEConfig struct {
	// Hosts are the only names certificates are requested for (the host
	// policy). Required: without it any SNI a client sends would trigger an
	// issuance.
	Hosts []string
	// Cache holds account keys, certificates and in-flight challenge state.
	// Every PoP that serves a name must share it, because the CA validates
	// from several vantage points and GeoDNS sends them to different PoPs.
	// If nil, autocert.DirCache(Dir). A cache shared by processes that may
	// start at the same moment should make sure that only one of them
	// orders a name (see ErrOrderedElsewhere); a DirCache does not.
	Cache autocert.Cache
	// Dir is the directory of the default cache. Required when Cache is nil;
	// put it on storage every PoP mounts.
	Dir string
	// Email is the account's contact address. If empty, none.
	Email string
	// DirectoryURL is the CA's ACME directory. If empty, Let's Encrypt's
	// production directory.
	DirectoryURL string
	// RootCAs verifies the ACME server's TLS certificate. If nil, system roots.
	RootCAs *x509.CertPool
}

// ErrOrderedElsewhere is what a shared Cache's Get wraps when another
// process (another PoP) is ordering the certificate asked for. ACME's
// GetCertificate then waits a moment and asks again, until the other
// process has stored the certificate (or given up, and this one orders
// it). Get returns it rather than waiting itself because autocert holds a
// lock over all of its names while it reads the cache for one.
var ErrOrderedElsewhere = errors.New("certificate being ordered by another process")

// ACME obtains and renews certificates through autocert. Its GetCertificate
// also answers TLS-ALPN-01 challenges, so the TCP listener's ALPN list must
// include acme.ALPNProto (ACME.NextProtos does that); HTTPHandler answers
// HTTP-01 challenges on port 80.
type ACME struct {
	m *autocert.Manager
}

// NewACME validates cfg and returns an ACME source.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	var errs []error
	if len(cfg.Hosts) == 0 {
		errs = append(errs, errors.New("acme hosts: empty, want the names to request certificates for"))
	}
	for i, h := range cfg.Hosts {
		if net.ParseIP(h) != nil || checkDNSName(h) != nil || strings.Contains(h, "*") {
			errs = append(errs, fmt.Errorf("acme hosts[%d]: %q, want a DNS name without wildcards", i, h))
		}
	}
	if cfg.Cache == nil && cfg.Dir == "" {
		errs = append(errs, errors.New("acme dir: empty, want a cache directory shared by the PoPs"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cache := cfg.Cache
	if cache == nil {
		cache = autocert.DirCache(cfg.Dir)
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      cache,
		HostPolicy: autocert.HostWhitelist(cfg.Hosts...),
		Email:      cfg.Email,
	}
	if cfg.DirectoryURL != "" || cfg.RootCAs != nil {
		client := &acme.Client{DirectoryURL: cfg.DirectoryURL}
		if cfg.RootCAs != nil {
			client.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs}}}
		}
		m.Client = client
	}
	return &ACME{m: m}, nil
}

// GetCertificate fits tls.Config.GetCertificate. While the cache says
// the certificate is being ordered elsewhere (ErrOrderedElsewhere) it
// asks again, at most every second, for up to 5 minutes (autocert's own
// bound on an issuance) or until the handshake is abandoned.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ctx := context.Background()
	if c := hello.Context(); c != nil {
		ctx = c
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	wait := 50 * time.Millisecond
	for {
		cert, err := a.m.GetCertificate(hello)
		if !errors.Is(err, ErrOrderedElsewhere) {
			return cert, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("acme: %s: %w, and %w", hello.ServerName, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// NextProtos returns protos with the TLS-ALPN-01 protocol appended.
func (a *ACME) NextProtos(protos []string) []string {
	return append(append([]string(nil), protos...), acme.ALPNProto)
}

// HTTPHandler answers HTTP-01 challenges and passes every other request to
// fallback. If fallback is nil, other requests are redirected to https.
//
// The port is stripped from the Host header first: autocert checks the host
// policy against the whole Host, so a listener reached on a port other than
// 80 (behind NAT, in a lab) would otherwise refuse every challenge.
func (a *ACME) HTTPHandler(fallback http.Handler) http.Handler {
	h := a.m.HTTPHandler(fallback)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r = r.Clone(r.Context())
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
}
