// Package localpki makes the certificates and kubeconfig of a standalone server: a CA, a serving
// certificate for loopback names, and a client certificate for the admin identity.
package localpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/keyutil"
)

// Identity of the admin client certificate: the group system:masters is allowed everything.
const (
	AdminUser  = "tailscale-gateway-admin"
	AdminGroup = "system:masters"
)

const validity = 10 * 365 * 24 * time.Hour

// Files are the paths of the PEM files of a PKI directory.
type Files struct {
	CACert, CAKey           string
	ServingCert, ServingKey string
	AdminCert, AdminKey     string
}

// Ensure loads the PKI under dir, creating whatever is missing. The serving certificate is valid
// for localhost, 127.0.0.1 and ::1.
func Ensure(dir string) (*Files, error) {
	f := &Files{
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "serving.crt"), ServingKey: filepath.Join(dir, "serving.key"),
		AdminCert: filepath.Join(dir, "admin.crt"), AdminKey: filepath.Join(dir, "admin.key"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if !exists(f.CACert) || !exists(f.CAKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating CA key: %w", err)
		}
		tmpl := template(pkix.Name{CommonName: "tailscale-gateway-local-ca"})
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("creating CA certificate: %w", err)
		}
		if err := writePair(f.CACert, f.CAKey, der, key); err != nil {
			return nil, err
		}
		// A new CA invalidates every certificate it did not sign.
		for _, p := range []string{f.ServingCert, f.ServingKey, f.AdminCert, f.AdminKey} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("removing stale %s: %w", p, err)
			}
		}
	}
	ca, caKey, err := loadPair(f.CACert, f.CAKey)
	if err != nil {
		return nil, err
	}
	if !exists(f.ServingCert) || !exists(f.ServingKey) {
		tmpl := template(pkix.Name{CommonName: "tailscale-gateway-apiserver"})
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		if err := issue(f.ServingCert, f.ServingKey, tmpl, ca, caKey); err != nil {
			return nil, err
		}
	}
	if !exists(f.AdminCert) || !exists(f.AdminKey) {
		tmpl := template(pkix.Name{CommonName: AdminUser, Organization: []string{AdminGroup}})
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if err := issue(f.AdminCert, f.AdminKey, tmpl, ca, caKey); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// IssueClient signs a client certificate for user in groups and returns it and its key as PEM.
func (f *Files) IssueClient(user string, groups ...string) (certPEM, keyPEM []byte, err error) {
	ca, caKey, err := loadPair(f.CACert, f.CAKey)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating client key: %w", err)
	}
	tmpl := template(pkix.Name{CommonName: user, Organization: groups})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing client certificate for %s: %w", user, err)
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding client key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// WriteKubeconfig writes a kubeconfig for the admin identity that trusts the CA and talks to server.
func (f *Files) WriteKubeconfig(path, server string) error {
	caPEM, err := os.ReadFile(f.CACert)
	if err != nil {
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	certPEM, err := os.ReadFile(f.AdminCert)
	if err != nil {
		return fmt.Errorf("reading admin certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.AdminKey)
	if err != nil {
		return fmt.Errorf("reading admin key: %w", err)
	}
	const name = "tailscale-gateway"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

func template(subject pkix.Name) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

func issue(certPath, keyPath string, tmpl, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating key for %s: %w", certPath, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("signing %s: %w", certPath, err)
	}
	return writePair(certPath, keyPath, der, key)
}

func writePair(certPath, keyPath string, der []byte, key crypto.Signer) error {
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", keyPath, err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", certPath, err)
	}
	return nil
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", certPath, err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", certPath, err)
	}
	key, err := keyutil.PrivateKeyFromFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", keyPath, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s is not a signing key", keyPath)
	}
	return cert, signer, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// IssueNode writes, unless both exist, a certificate and key for name valid as both server and
// client on localhost, 127.0.0.1 and ::1: an embedded etcd member presents it to clients and
// peers, and its clients present it back.
func (f *Files) IssueNode(certPath, keyPath, name string) error {
	if exists(certPath) && exists(keyPath) {
		return nil
	}
	ca, caKey, err := loadPair(f.CACert, f.CAKey)
	if err != nil {
		return err
	}
	tmpl := template(pkix.Name{CommonName: name})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	return issue(certPath, keyPath, tmpl, ca, caKey)
}
