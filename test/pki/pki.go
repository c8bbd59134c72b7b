// Package pki writes test certificate authorities and the certificates they issue to files.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/util/keyutil"
)

const certValidity = 24 * time.Hour

// CA is a certificate authority whose certificate and key are written to files.
type CA struct {
	// CertFile is the PEM certificate; CertPEM its content.
	CertFile string
	CertPEM  []byte

	cert *x509.Certificate
	key  crypto.Signer
	dir  string
}

// CertKey is the paths of a PEM certificate and its key.
type CertKey struct {
	CertFile, KeyFile string
}

// NewCA creates a CA named name, writing name.crt and name.key to dir.
func NewCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the key of CA %s: %w", name, err)
	}
	tmpl, err := template(pkix.Name{CommonName: name})
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA %s: %w", name, err)
	}
	files, err := writePair(dir, name, der, key)
	if err != nil {
		return nil, err
	}
	return &CA{CertFile: files.CertFile, CertPEM: pemCert(der), cert: cert, key: key, dir: dir}, nil
}

// IssueServing writes name.crt and name.key: a serving certificate for the DNS names and IP
// addresses in hosts.
func (ca *CA) IssueServing(name string, hosts ...string) (CertKey, error) {
	tmpl, err := template(pkix.Name{CommonName: hosts[0]})
	if err != nil {
		return CertKey{}, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(name, tmpl)
}

// IssueClient writes name.crt and name.key: a client certificate for user in groups.
func (ca *CA) IssueClient(name, user string, groups ...string) (CertKey, error) {
	tmpl, err := template(pkix.Name{CommonName: user, Organization: groups})
	if err != nil {
		return CertKey{}, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(name, tmpl)
}

func (ca *CA) issue(name string, tmpl *x509.Certificate) (CertKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertKey{}, fmt.Errorf("generating the key of %s: %w", name, err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return CertKey{}, fmt.Errorf("signing %s: %w", name, err)
	}
	return writePair(ca.dir, name, der, key)
}

// NewSigningKey writes name.key and name.pub, a key pair for signing service account tokens.
func NewSigningKey(dir, name string) (CertKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertKey{}, fmt.Errorf("generating %s: %w", name, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return CertKey{}, fmt.Errorf("encoding %s: %w", name, err)
	}
	files := CertKey{CertFile: filepath.Join(dir, name+".pub"), KeyFile: filepath.Join(dir, name+".key")}
	if err := writeKey(files.KeyFile, key); err != nil {
		return CertKey{}, err
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	if err := os.WriteFile(files.CertFile, pubPEM, 0o600); err != nil {
		return CertKey{}, fmt.Errorf("writing %s: %w", files.CertFile, err)
	}
	return files, nil
}

func template(subject pkix.Name) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
	}, nil
}

func writePair(dir, name string, der []byte, key crypto.Signer) (CertKey, error) {
	files := CertKey{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	if err := os.WriteFile(files.CertFile, pemCert(der), 0o600); err != nil {
		return CertKey{}, fmt.Errorf("writing %s: %w", files.CertFile, err)
	}
	return files, writeKey(files.KeyFile, key)
}

func writeKey(path string, key crypto.Signer) error {
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.WriteFile(path, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ClientTLS is the TLS configuration of a client that trusts ca, expects serverName and presents
// client (nothing when its files are empty).
func (ca *CA) ClientTLS(serverName string, client CertKey) (*tls.Config, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if client.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", client.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
