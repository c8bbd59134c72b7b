package grpcserve

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"

	"google.golang.org/grpc/credentials"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/util/cert"
)

// TLSFiles name the files of a port that requires client certificates: its serving certificate
// and key, and the CA bundle its clients' certificates must chain to. The files are watched and
// re-read when they change (a Secret volume's update), so certificates rotate without a restart.
type TLSFiles struct {
	CertFile, KeyFile, ClientCAFile string
	// ClientNames, when not empty, are the names a client certificate must carry (its common
	// name or one of its DNS names): one CA may sign clients that must not use this port.
	ClientNames []string
}

// Enabled reports whether any file is named.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.ClientCAFile != "" }

// Validate checks that the files are named together.
func (f TLSFiles) Validate(flagPrefix string) error {
	if f.Enabled() && (f.CertFile == "" || f.KeyFile == "" || f.ClientCAFile == "") {
		return fmt.Errorf("--%s-tls-cert-file, --%s-tls-key-file and --%s-client-ca-file go together", flagPrefix, flagPrefix, flagPrefix)
	}
	return nil
}

// MutualTLS is a port's TLS configuration that follows its files.
type MutualTLS struct {
	files   TLSFiles
	serving *dynamiccertificates.DynamicCertKeyPairContent
	ca      *dynamiccertificates.DynamicFileCAContent

	mu          sync.Mutex
	cert, key   []byte // what config was built from
	caBundle    []byte
	config      *tls.Config
	loadedCount int
}

// NewMutualTLS loads files (an error when one cannot be read or parsed); Run keeps them current.
func NewMutualTLS(purpose string, files TLSFiles) (*MutualTLS, error) {
	serving, err := dynamiccertificates.NewDynamicServingContentFromFiles(purpose+"-serving", files.CertFile, files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the %s serving certificate: %w", purpose, err)
	}
	ca, err := dynamiccertificates.NewDynamicCAContentFromFile(purpose+"-client-ca", files.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("loading the %s client CA: %w", purpose, err)
	}
	m := &MutualTLS{files: files, serving: serving, ca: ca}
	if _, err := m.current(); err != nil {
		return nil, fmt.Errorf("%s TLS: %w", purpose, err)
	}
	return m, nil
}

// Run watches the files until ctx is done.
func (m *MutualTLS) Run(ctx context.Context) {
	go m.serving.Run(ctx, 1)
	m.ca.Run(ctx, 1)
}

// Credentials are the gRPC server credentials: TLS 1.2 or later, a verified client certificate
// required, the files' current content on every handshake.
func (m *MutualTLS) Credentials() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return m.current()
		},
	})
}

// Loads returns how many distinct contents the configuration was built from (1 after New).
func (m *MutualTLS) Loads() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loadedCount
}

// current returns the configuration of the files' current content, rebuilt when it changed.
func (m *MutualTLS) current() (*tls.Config, error) {
	certPEM, keyPEM := m.serving.CurrentCertKeyContent()
	caPEM := m.ca.CurrentCABundleContent()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.config != nil && bytes.Equal(certPEM, m.cert) && bytes.Equal(keyPEM, m.key) && bytes.Equal(caPEM, m.caBundle) {
		return m.config, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	pool, err := cert.NewPoolFromBytes(caPEM)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	m.config = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"h2"},
	}
	if names := m.files.ClientNames; len(names) > 0 {
		m.config.VerifyConnection = func(cs tls.ConnectionState) error { return checkClientName(cs, names) }
	}
	m.cert, m.key, m.caBundle = certPEM, keyPEM, caPEM
	m.loadedCount++
	return m.config, nil
}

// checkClientName requires the verified client certificate to carry one of names.
func checkClientName(cs tls.ConnectionState, names []string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	if certHasName(cs.PeerCertificates[0], names) {
		return nil
	}
	return fmt.Errorf("client certificate %q carries none of the names %v", cs.PeerCertificates[0].Subject.CommonName, names)
}

func certHasName(c *x509.Certificate, names []string) bool {
	if slices.Contains(names, c.Subject.CommonName) {
		return true
	}
	for _, n := range c.DNSNames {
		if slices.Contains(names, n) {
			return true
		}
	}
	return false
}

// IsLoopback reports whether a listener at addr accepts loopback connections only: its IP is in
// 127.0.0.0/8 or is ::1. An unspecified address ("[::]:5005", "0.0.0.0:5005") is every address.
func IsLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true // reachable only through the file system
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
