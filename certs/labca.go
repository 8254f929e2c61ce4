// Package certs builds every *tls.Config the CDN uses.
//
// It has four sources of certificates and one of keys:
//
//   - LabCA: a private certificate authority created once into a directory
//     (root.pem, root-key.pem) and reused on later runs. It issues ECDSA P-256
//     leaf certificates for any set of DNS names and IP addresses, so that a lab
//     of PoPs, an origin and clients can all trust one root.
//   - FileSource: a certificate and key from static PEM files, reloaded when the
//     files change on disk, without a restart.
//   - ACME: certificates from an ACME CA through x/crypto/acme/autocert, with a
//     mandatory host policy and a shared cache.
//   - TicketKeys: session-ticket keys derived from a secret shared by every PoP
//     that serves a name, rotated on a schedule while older keys still decrypt,
//     so a client that met one PoP resumes on another. The same secret yields
//     the QUIC token-generator and stateless-reset keys.
//
// ServerConfig puts a certificate source and ticket keys together into a
// TLS 1.3 server configuration.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names of the files a LabCA keeps in its directory.
const (
	RootCertFile = "root.pem"
	RootKeyFile  = "root-key.pem"
)

// Validity periods of lab certificates.
const (
	rootValidity = 10 * 365 * 24 * time.Hour
	leafValidity = 90 * 24 * time.Hour
)

// LabCA is a private certificate authority persisted in a directory.
// It is safe for concurrent use.
type LabCA struct {
	dir     string
	root    *x509.Certificate
	rootDER []byte
	key     crypto.Signer
	pool    *x509.CertPool
}

// OpenLabCA opens the lab CA in dir, creating dir, root.pem and root-key.pem
// on first use. Several processes may open the same directory; the first to
// create the root wins and the others load it.
func OpenLabCA(dir string) (*LabCA, error) {
	if dir == "" {
		return nil, errors.New("lab CA: directory is empty, want a path such as /var/lib/edgecdn/ca")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab CA: create directory: %w", err)
	}
	ca, err := loadLabCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := createLabCA(dir); err != nil {
			return nil, err
		}
		ca, err = loadLabCA(dir)
	}
	if err != nil {
		return nil, err
	}
	return ca, nil
}

func loadLabCA(dir string) (*LabCA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("lab CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, RootKeyFile))
	if err != nil {
		return nil, fmt.Errorf("lab CA: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("lab CA %s: %w", dir, err)
	}
	root, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("lab CA %s: parse root: %w", dir, err)
	}
	if !root.IsCA {
		return nil, fmt.Errorf("lab CA %s: %s is not a CA certificate", dir, RootCertFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("lab CA %s: root key cannot sign", dir)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &LabCA{dir: dir, root: root, rootDER: pair.Certificate[0], key: signer, pool: pool}, nil
}

// createLabCA writes a new root into dir. The key file is created with
// O_EXCL so that two processes racing on a fresh directory agree on one root:
// the loser sees the winner's files (it retries briefly while the winner
// finishes writing the certificate).
func createLabCA(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("lab CA: generate key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "edgecdn lab root", Organization: []string{"edgecdn lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("lab CA: create root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("lab CA: marshal key: %w", err)
	}
	keyPath := filepath.Join(dir, RootKeyFile)
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return waitForRoot(dir)
	}
	if err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	// Write the certificate first under a temporary name, then the key, then
	// rename the certificate into place: a reader that finds root.pem finds a
	// complete key too.
	certTmp := filepath.Join(dir, RootCertFile+".tmp")
	if err := os.WriteFile(certTmp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		f.Close()
		return fmt.Errorf("lab CA: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}); err != nil {
		f.Close()
		return fmt.Errorf("lab CA: write key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("lab CA: write key: %w", err)
	}
	if err := os.Rename(certTmp, filepath.Join(dir, RootCertFile)); err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	return nil
}

func waitForRoot(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, RootCertFile)); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // another process is writing the root; no event to wait on across processes
	}
	return fmt.Errorf("lab CA %s: %s exists but %s never appeared; remove the directory and retry", dir, RootKeyFile, RootCertFile)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

// Dir returns the directory the CA lives in.
func (ca *LabCA) Dir() string { return ca.dir }

// RootPath returns the path of the root certificate, for clients
// (curl --cacert, bench -cacert).
func (ca *LabCA) RootPath() string { return filepath.Join(ca.dir, RootCertFile) }

// RootPEM returns the root certificate in PEM form.
func (ca *LabCA) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.rootDER})
}

// Root returns the parsed root certificate.
func (ca *LabCA) Root() *x509.Certificate { return ca.root }

// RootPool returns a pool holding only the root, for clients of lab servers.
func (ca *LabCA) RootPool() *x509.CertPool { return ca.pool }

// Issue returns a leaf certificate with an ECDSA P-256 key for the given
// names. Each name is an IP address or a DNS name (wildcards allowed). The
// returned certificate's Leaf is set and its chain holds the leaf only: clients
// trust the root directly.
func (ca *LabCA) Issue(names ...string) (tls.Certificate, error) {
	if len(names) == 0 {
		return tls.Certificate{}, errors.New("lab CA: issue: no names, want at least one DNS name or IP address")
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"edgecdn lab"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if ip := net.ParseIP(strings.Trim(n, "[]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if err := checkDNSName(n); err != nil {
			return tls.Certificate{}, fmt.Errorf("lab CA: issue: %w", err)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, n)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("lab CA: generate leaf key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("lab CA: sign leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("lab CA: parse leaf: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func checkDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("name %q: want a DNS name of 1 to 253 characters or an IP address", n)
	}
	for i, label := range strings.Split(strings.TrimSuffix(n, "."), ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 {
			return fmt.Errorf("name %q: empty or overlong label, want a DNS name or an IP address", n)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("name %q: character %q, want a DNS name or an IP address", n, c)
			}
		}
	}
	return nil
}

// SPKIPin returns the base64 SHA-256 hash of a certificate's public key
// (SubjectPublicKeyInfo), the form Chromium's
// --ignore-certificate-errors-spki-list takes.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// WriteKeyPair writes a certificate chain and its key as PEM files, for tools
// that want files (the benchmark harness, nginx, curl).
func WriteKeyPair(cert tls.Certificate, certFile, keyFile string) error {
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// DefaultDir is where the programs keep certificate state when not told:
// DIR/edgecdn/sub under the user cache directory (~/.cache), or the temp
// directory when there is none. sub is "ca" for the lab CA, "acme" for the
// ACME cache.
func DefaultDir(sub string) string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "edgecdn", sub)
}
