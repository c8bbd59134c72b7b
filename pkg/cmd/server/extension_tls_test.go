package server

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apiserver"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/grpcserve"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/test/grpctest"
	"github.com/tailscale-gateway/tailscale-gateway/test/pki"
)

// extensionPKI is what an install provisions: a CA of the extension's serving certificates
// (cert-manager's tailscale-gateway-ca), Envoy Gateway's CA that signs its own client certificate
// and Envoy's (certgen), and a stranger's CA.
type extensionPKI struct {
	ours, eg, stranger            *pkiCA
	hookServing, xdsServing       certKey
	egClient, envoyClient, forged certKey
}

func newExtensionPKI(t *testing.T) *extensionPKI {
	t.Helper()
	dir := t.TempDir()
	p := &extensionPKI{ours: newCA(t, dir, "tailscale-gateway-ca"), eg: newCA(t, dir, "envoy-gateway-ca"), stranger: newCA(t, dir, "stranger")}
	p.hookServing = issue(t)(p.ours.IssueServing("hook", "tailscale-gateway-apiserver.tailscale-gateway-system.svc", "127.0.0.1"))
	p.xdsServing = issue(t)(p.ours.IssueServing("xds", "tailscale-gateway-apiserver.tailscale-gateway-system.svc", "127.0.0.1"))
	p.egClient = issue(t)(p.eg.IssueClient("envoy-gateway", "envoy-gateway"))
	p.envoyClient = issue(t)(p.eg.IssueClient("envoy", "envoy"))
	p.forged = issue(t)(p.stranger.IssueClient("forged", "envoy-gateway"))
	return p
}

// options are cluster-mode extension options with both ports' TLS.
func (p *extensionPKI) options(t *testing.T) *ExtensionOptions {
	t.Helper()
	o := NewExtensionOptions()
	o.HookTLS = grpcserve.TLSFiles{CertFile: p.hookServing.CertFile, KeyFile: p.hookServing.KeyFile, ClientCAFile: p.eg.CertFile,
		ClientNames: []string{"envoy-gateway"}}
	o.XDSTLS = grpcserve.TLSFiles{CertFile: p.xdsServing.CertFile, KeyFile: p.xdsServing.KeyFile, ClientCAFile: p.eg.CertFile,
		ClientNames: []string{"envoy"}}
	o.XDSServerCAFile = p.ours.CertFile
	o.XDSAdvertiseAddress = "tailscale-gateway-apiserver.tailscale-gateway-system.svc:18001"
	if errs := o.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	return o
}

// healthy reports whether the gRPC health service at addr answers SERVING to a client trusting
// serverCA and presenting client (plaintext when serverCA is nil, no certificate when client
// has no files).
func healthy(addr string, serverCA *pkiCA, client certKey) error {
	if serverCA == nil {
		return grpctest.Healthy(addr, insecure.NewCredentials())
	}
	cfg, err := serverCA.ClientTLS("tailscale-gateway-apiserver.tailscale-gateway-system.svc", client)
	if err != nil {
		return err
	}
	return grpctest.Healthy(addr, credentials.NewTLS(cfg))
}

// Finding 1 (issue 20): the hook port serves Envoy Gateway's client certificate only and the xDS
// port Envoy's; no certificate, a certificate of another CA, plaintext, or the other component's
// certificate is refused.
func TestExtensionPortsRequireClientCertificates(t *testing.T) {
	p := newExtensionPKI(t)
	o := p.options(t)
	o.HookListener, o.XDSListener = listenLoopback(t), listenLoopback(t)
	hookAddr, xdsAddr := o.HookListener.Addr().String(), o.XDSListener.Addr().String()
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0)
	e, err := o.newExtension(factory, nil, apiserver.Scheme, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	factory.Start(ctx.Done())
	go func() { done <- e.run(ctx) }()
	defer func() { cancel(); <-done }()

	for _, port := range []struct {
		name, addr    string
		client, other certKey
	}{{"hook", hookAddr, p.egClient, p.envoyClient}, {"xds", xdsAddr, p.envoyClient, p.egClient}} {
		if err := healthy(port.addr, p.ours, port.client); err != nil {
			t.Errorf("%s port refused its client: %v", port.name, err)
		}
		for what, try := range map[string]func() error{
			"plaintext":                   func() error { return healthy(port.addr, nil, certKey{}) },
			"no client certificate":       func() error { return healthy(port.addr, p.ours, certKey{}) },
			"a certificate of another CA": func() error { return healthy(port.addr, p.ours, p.forged) },
			"the other port's client":     func() error { return healthy(port.addr, p.ours, port.other) },
		} {
			if err := try(); err == nil {
				t.Errorf("%s port served a client with %s", port.name, what)
			}
		}
	}
}

// Finding 1 (issue 20): without TLS files a port on an address other hosts reach refuses to
// start; on loopback (make run, Envoy Gateway standalone) it serves plaintext.
func TestExtensionRefusesPlaintextBeyondLoopback(t *testing.T) {
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0)
	for _, tc := range []struct {
		name      string
		hook, xds net.Addr
		tls       bool
		wantErr   bool
	}{
		{name: "loopback plaintext", hook: loopbackAddr, xds: loopbackAddr},
		{name: "hook on every address", hook: anyAddr, xds: loopbackAddr, wantErr: true},
		{name: "xds on a pod address", hook: loopbackAddr, xds: &net.TCPAddr{IP: net.IPv4(10, 244, 0, 7), Port: 18001}, wantErr: true},
		{name: "every address with TLS", hook: anyAddr, xds: anyAddr, tls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewExtensionOptions()
			if tc.tls {
				o = newExtensionPKI(t).options(t)
			}
			o.HookListener, o.XDSListener = addrListener{tc.hook}, addrListener{tc.xds}
			e, err := o.newExtension(factory, nil, apiserver.Scheme, nil, nil)
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, grpcserve.ErrPlaintext)) {
				t.Fatalf("newExtension() error = %v, want an error: %v", err, tc.wantErr)
			}
			if e != nil {
				e.close()
			}
		})
	}
}

var (
	loopbackAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5005}
	anyAddr      = &net.TCPAddr{IP: net.IPv4zero, Port: 5005}
)

// addrListener has an address and nothing else: the test binds nothing beyond loopback.
type addrListener struct{ addr net.Addr }

func (addrListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (addrListener) Close() error              { return nil }
func (l addrListener) Addr() net.Addr          { return l.addr }

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type (
	pkiCA   = pki.CA
	certKey = pki.CertKey
)

func newCA(t *testing.T, dir, name string) *pkiCA {
	t.Helper()
	ca, err := pki.NewCA(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue fails the test on an error of an issuing call.
func issue(t *testing.T) func(certKey, error) certKey {
	return func(c certKey, err error) certKey {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}
