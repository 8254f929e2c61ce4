package pop

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/certs"
)

// tlsSetup is what the listeners need from the TLS configuration.
type tlsSetup struct {
	config  *tls.Config // TCP: h2, http/1.1 (and acme-tls/1)
	tickets *certs.TicketKeys
	acme    *certs.ACME  // nil unless ACME is the source
	labCA   *certs.LabCA // nil unless a lab CA is the source
	leaf    *x509.Certificate
	files   *certs.FileSource // nil unless cert_file/key_file are the source
	// fleet hands the fleet, once joined, to the ACME cache and the ticket
	// keys; nil unless fleet.url is set (fleet.go).
	fleet *fleetTLS
	// reloadFailures counts certificate file reloads that failed (the
	// previous certificate stays in use).
	reloadFailures prometheus.Counter
}

// currentLeaf is the certificate being served when it is known up front
// (lab CA, files: after any reload), or nil (ACME).
func (t *tlsSetup) currentLeaf() *x509.Certificate {
	if t.files != nil {
		return t.files.Leaf()
	}
	return t.leaf
}

// buildTLS creates the certificate source named by cfg.TLS and the shared
// ticket keys.
func buildTLS(cfg *Config) (*tlsSetup, error) {
	t := &tlsSetup{reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pop_tls_certificate_reload_failures_total",
		Help: "Certificate file reloads that failed; the previous certificate stays in use.",
	})}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	var secret []byte
	if cfg.TLS.TicketKeyFile != "" {
		s, err := certs.LoadSecret(cfg.TLS.TicketKeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ticket_key_file: %w", err)
		}
		secret = s
	}
	keys, err := certs.NewTicketKeys(certs.TicketKeysConfig{Secret: secret, Rotation: cfg.TLS.TicketRotation})
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	t.tickets = keys
	if cfg.Fleet.URL != "" {
		// The fleet's secret replaces the file's (or the random one) once
		// the PoP has joined.
		if t.fleet, err = newFleetTLS(cfg, keys, logger); err != nil {
			return nil, err
		}
	}
	sc := certs.ServerConfig{Tickets: keys, AllowTLS12: cfg.TLS.AllowTLS12}
	switch {
	case cfg.TLS.CertFile != "":
		src, err := certs.NewFileSource(certs.FileSourceConfig{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
			OnReloadError: func(err error) {
				t.reloadFailures.Inc()
				logger.Warn("certificate reload failed; still serving the previous certificate", "error", err)
			}})
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		sc.GetCertificate = src.GetCertificate
		t.files = src
	case cfg.TLS.ACME != nil:
		a := cfg.TLS.ACME
		ac := certs.ACMEConfig{Hosts: a.Hosts, Dir: a.Dir, Email: a.Email, DirectoryURL: a.DirectoryURL}
		if t.fleet != nil {
			ac.Cache = t.fleet.acmeCache // in the fleet's KV, not a.Dir
		}
		m, err := certs.NewACME(ac)
		if err != nil {
			return nil, fmt.Errorf("tls.acme: %w", err)
		}
		sc.GetCertificate = m.GetCertificate
		sc.NextProtos = m.NextProtos([]string{"h2", "http/1.1"})
		t.acme = m
	default:
		ca, err := certs.OpenLabCA(cfg.TLS.CADir)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_dir: %w", err)
		}
		leaf, err := ca.Issue(labNames(cfg)...)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_dir: %w", err)
		}
		sc.GetCertificate = certs.StaticCertificate(leaf)
		t.labCA, t.leaf = ca, leaf.Leaf
	}
	t.config, err = sc.TLSConfig()
	if err != nil {
		return nil, err
	}
	return t, nil
}

// labNames lists what a lab certificate covers: every site host, the
// listen host, localhost and loopback, and the machine's host name.
func labNames(cfg *Config) []string {
	set := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	for _, s := range cfg.Sites {
		for _, h := range s.Hosts {
			if n, err := normalizeHostPattern(h); err == nil {
				set[n] = true
			}
		}
	}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			set[strings.ToLower(host)] = true
		}
	}
	if hn, err := os.Hostname(); err == nil && hn != "" && !strings.ContainsAny(hn, " _") {
		set[strings.ToLower(hn)] = true
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
