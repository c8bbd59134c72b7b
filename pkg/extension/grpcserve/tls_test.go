package grpcserve

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/test/grpctest"
	"github.com/tailscale-gateway/tailscale-gateway/test/pki"
)

// tlsFixture is a port with TLS files in a directory: a server certificate and client CA of
// CA "trusted", and clients of that CA and of another.
type tlsFixture struct {
	dir              string
	trusted, foreign *pki.CA
	files            TLSFiles
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir()}
	var err error
	if f.trusted, err = pki.NewCA(f.dir, "trusted"); err != nil {
		t.Fatal(err)
	}
	if f.foreign, err = pki.NewCA(f.dir, "foreign"); err != nil {
		t.Fatal(err)
	}
	serving, err := f.trusted.IssueServing("serving", "xds.example", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	f.files = TLSFiles{CertFile: filepath.Join(f.dir, "tls.crt"), KeyFile: filepath.Join(f.dir, "tls.key"), ClientCAFile: filepath.Join(f.dir, "ca.crt")}
	f.install(t, serving, f.trusted)
	return f
}

// install replaces the port's files, as the kubelet updates a Secret volume: new files renamed
// over the old ones.
func (f *tlsFixture) install(t *testing.T, serving pki.CertKey, clientCA *pki.CA) {
	t.Helper()
	for src, dst := range map[string]string{serving.CertFile: f.files.CertFile, serving.KeyFile: f.files.KeyFile, clientCA.CertFile: f.files.ClientCAFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			t.Fatal(err)
		}
	}
}

// serve serves gRPC health with creds on a loopback port until the test ends.
func serve(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(l, creds)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, l, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String()
}

// check calls gRPC health at addr as a client trusting serverCA and presenting client (none when
// its files are empty).
func check(addr string, serverCA *pki.CA, client pki.CertKey) error {
	cfg, err := serverCA.ClientTLS("xds.example", client)
	if err != nil {
		return err
	}
	return grpctest.Healthy(addr, credentials.NewTLS(cfg))
}

// A port with TLS files serves only clients with a certificate of its client CA that carries one
// of its client names; it follows its files without a restart.
func TestMutualTLSRefusesClientsWithoutATrustedCertificate(t *testing.T) {
	f := newTLSFixture(t)
	good, err := f.trusted.IssueClient("good", "envoy-gateway")
	if err != nil {
		t.Fatal(err)
	}
	otherName, err := f.trusted.IssueClient("other-name", "envoy")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := f.foreign.IssueClient("stranger", "envoy-gateway")
	if err != nil {
		t.Fatal(err)
	}
	f.files.ClientNames = []string{"envoy-gateway"}
	m, err := NewMutualTLS("test", f.files)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	addr := serve(t, m.Credentials())

	if err := check(addr, f.trusted, good); err != nil {
		t.Fatalf("client with a certificate of the client CA: %v", err)
	}
	for name, client := range map[string]pki.CertKey{"no certificate": {}, "a certificate of another CA": stranger,
		"a certificate without the client name": otherName} {
		if err := check(addr, f.trusted, client); err == nil {
			t.Errorf("client with %s was served", name)
		}
	}
	if err := grpctest.Healthy(addr, insecure.NewCredentials()); err == nil {
		t.Error("plaintext client was served")
	}

	// Rotation: a new CA signs the serving certificate and the clients; the files change under
	// the running server.
	rotated, err := pki.NewCA(f.dir, "rotated")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := rotated.IssueServing("serving-2", "xds.example")
	if err != nil {
		t.Fatal(err)
	}
	newClient, err := rotated.IssueClient("good-2", "envoy-gateway")
	if err != nil {
		t.Fatal(err)
	}
	f.install(t, serving, rotated)
	var last error
	// The files are watched (inotify) and, should a watch miss a change, re-read every minute.
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		last = check(addr, rotated, newClient)
		return last == nil, nil
	}); err != nil {
		t.Fatalf("the rotated certificates were not picked up: %v", last)
	}
	if err := check(addr, f.trusted, good); err == nil {
		t.Error("a client of the old CA is still served after rotation")
	}
	if m.Loads() < 2 {
		t.Errorf("Loads() = %d after a rotation", m.Loads())
	}
}

// NewServer refuses plaintext on an address other hosts can reach, and allows it on loopback.
func TestNewServerRefusesPlaintextBeyondLoopback(t *testing.T) {
	for addr, want := range map[net.Addr]bool{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5005}: true,
		&net.TCPAddr{IP: net.IPv6loopback, Port: 5005}:       true,
		&net.TCPAddr{IP: net.IPv4zero, Port: 5005}:           false,
		&net.TCPAddr{IP: net.IPv6unspecified, Port: 5005}:    false,
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 5005}:  false,
	} {
		_, err := NewServer(fakeListener{addr}, nil)
		if got := err == nil; got != want {
			t.Errorf("NewServer(%s, plaintext) error = %v, want allowed=%v", addr, err, want)
		}
		if err != nil && !errors.Is(err, ErrPlaintext) {
			t.Errorf("NewServer(%s) error %v is not ErrPlaintext", addr, err)
		}
	}
}

// fakeListener has an address and nothing else: the test binds no address beyond loopback.
type fakeListener struct{ addr net.Addr }

func (fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr          { return l.addr }
