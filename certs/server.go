package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ServerConfig describes a TLS server configuration.
type ServerConfig struct {
	// GetCertificate picks the certificate for a handshake: a FileSource's,
	// an ACME's, or a function over LabCA-issued certificates. Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Tickets encrypts session tickets. If nil, crypto/tls's automatic keys
	// are used (per process, rotated daily): sessions resume only on this
	// process.
	Tickets *TicketKeys
	// AllowTLS12 admits TLS 1.2 clients. If false, TLS 1.3 only.
	AllowTLS12 bool
	// NextProtos is the ALPN list. If nil, h2 then http/1.1.
	NextProtos []string
}

// TLSConfig returns a new server *tls.Config for c.
func (c ServerConfig) TLSConfig() (*tls.Config, error) {
	if c.GetCertificate == nil {
		return nil, errors.New("tls: no certificate source, want a lab CA, certificate files or ACME")
	}
	cfg := &tls.Config{
		GetCertificate: c.GetCertificate,
		MinVersion:     tls.VersionTLS13,
		NextProtos:     c.NextProtos,
	}
	if cfg.NextProtos == nil {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if c.AllowTLS12 {
		cfg.MinVersion = tls.VersionTLS12
		// ECDHE with AEADs only; crypto/tls's defaults already exclude the rest.
		cfg.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		}
	}
	if c.Tickets != nil {
		c.Tickets.Apply(cfg)
	}
	return cfg, nil
}

// StaticCertificate returns a GetCertificate function that always serves cert.
func StaticCertificate(cert tls.Certificate) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
}

// LoadPool reads PEM certificates from a file into a new pool, for clients
// that trust a private CA (an origin's, the lab's).
func LoadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificates found, want a file of -----BEGIN CERTIFICATE----- blocks", path)
	}
	return pool, nil
}

// SystemPoolWith returns the system roots plus extra certificates (an empty
// pool plus extra when the system pool is unavailable).
func SystemPoolWith(extra ...*x509.Certificate) *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range extra {
		pool.AddCert(c)
	}
	return pool
}
