package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// FileSource serves a certificate and key from PEM files and reloads them
// when either file changes on disk. It checks the files' modification times
// at most once per CheckInterval, during handshakes, so it needs no goroutine.
// A reload that fails (a half-written file, a key that does not match) keeps
// the previous certificate and is reported by Err.
type FileSource struct {
	certFile, keyFile string
	interval          time.Duration
	now               func() time.Time
	onErr             func(error)

	mu      sync.Mutex // guards cert, certMod, keyMod, checked, lastErr
	cert    *tls.Certificate
	certMod time.Time
	keyMod  time.Time
	checked time.Time
	lastErr error
}

// FileSourceConfig configures a FileSource.
type FileSourceConfig struct {
	CertFile, KeyFile string
	// CheckInterval is how often the files' modification times are checked.
	// If zero, 1s.
	CheckInterval time.Duration
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// OnReloadError, if set, is called with the error of a reload that
	// failed (the previous certificate stays in use), once per distinct
	// failure rather than at every check while the files stay broken.
	OnReloadError func(error)
}

// NewFileSource loads the certificate and key; it fails if either cannot be
// read or they do not match.
func NewFileSource(cfg FileSourceConfig) (*FileSource, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, fmt.Errorf("certificate files: cert %q and key %q, want both set", cfg.CertFile, cfg.KeyFile)
	}
	s := &FileSource{certFile: cfg.CertFile, keyFile: cfg.KeyFile, interval: cfg.CheckInterval, now: cfg.Now, onErr: cfg.OnReloadError}
	if s.interval == 0 {
		s.interval = time.Second
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// reload reads both files if their modification times changed. Callers hold
// s.mu or own s exclusively.
func (s *FileSource) reload() error {
	ci, err := os.Stat(s.certFile)
	if err != nil {
		return fmt.Errorf("certificate file: %w", err)
	}
	ki, err := os.Stat(s.keyFile)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if s.cert != nil && ci.ModTime().Equal(s.certMod) && ki.ModTime().Equal(s.keyMod) {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("load %s and %s: %w", s.certFile, s.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("parse %s: %w", s.certFile, err)
	}
	pair.Leaf = leaf
	s.cert, s.certMod, s.keyMod = &pair, ci.ModTime(), ki.ModTime()
	return nil
}

// GetCertificate returns the current certificate, reloading the files first
// if they changed since the last check. It fits tls.Config.GetCertificate.
func (s *FileSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.checked) >= s.interval {
		s.checked = now
		err := s.reload()
		if err != nil && s.onErr != nil && (s.lastErr == nil || s.lastErr.Error() != err.Error()) {
			s.onErr(err)
		}
		s.lastErr = err
	}
	return s.cert, nil
}

// Err returns the error of the last failed reload, or nil.
func (s *FileSource) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Leaf returns the certificate currently served.
func (s *FileSource) Leaf() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert.Leaf
}
