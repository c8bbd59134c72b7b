// Package embeddedetcd runs a single-member etcd server inside the process, listening on
// loopback with TLS, and serving only clients and peers that present a certificate of its own
// CA (generated under <dir>-pki, mode 0700): another local user reaches the ports but reads
// nothing.
package embeddedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/localpki"
)

// startTimeout bounds how long Start waits for the member to serve.
const startTimeout = 2 * time.Minute

// Server is a running embedded etcd member.
type Server struct {
	etcd               *embed.Etcd
	dir                string
	clientURL, peerURL *url.URL
	tls                ClientTLS
}

// ClientTLS are the files a client needs: the CA to trust and the certificate to present.
type ClientTLS struct {
	CAFile, CertFile, KeyFile string
}

// bindAttempts bounds how often Start picks new ports when another process took the ones it
// reserved between reserving and binding them.
const bindAttempts = 3

// Start runs an etcd member storing its data under dir. It listens for clients on a free loopback
// port; the data, not the port, survives a restart.
func Start(dir string) (*Server, error) {
	var err error
	for i := 0; i < bindAttempts; i++ {
		var s *Server
		if s, err = start(dir); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return s, err
		}
		klog.InfoS("Embedded etcd ports were taken, retrying with new ones", "err", err)
	}
	return nil, err
}

func start(dir string) (*Server, error) {
	tls, err := ensurePKI(dir + "-pki")
	if err != nil {
		return nil, err
	}
	clientURL, err := freeLoopbackURL()
	if err != nil {
		return nil, err
	}
	peerURL, err := freeLoopbackURL()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, clientURL: clientURL, peerURL: peerURL, tls: tls}
	if s.etcd, err = run(dir, clientURL, peerURL, tls); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart stops the member and starts it again from its data on the same URLs, as an etcd
// member restarts: clients reconnect to the address they know.
func (s *Server) Restart() error {
	s.etcd.Close()
	e, err := run(s.dir, s.clientURL, s.peerURL, s.tls)
	if err != nil {
		return err
	}
	s.etcd = e
	return nil
}

// run starts a member on dir and the given URLs and waits until it serves.
func run(dir string, clientURL, peerURL *url.URL, tls ClientTLS) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	// One certificate serves and authenticates; only certificates of the member's CA get in.
	info := transport.TLSInfo{CertFile: tls.CertFile, KeyFile: tls.KeyFile, ClientCertFile: tls.CertFile,
		ClientKeyFile: tls.KeyFile, TrustedCAFile: tls.CAFile, ClientCertAuth: true}
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = info, info
	cfg.Name = "tailscale-gateway"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(startTimeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after %s", dir, startTimeout)
	}
	klog.InfoS("Embedded etcd is serving", "dir", dir, "url", clientURL.String())
	return e, nil
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.clientURL.String() }

// ClientTLS is what a client presents and trusts.
func (s *Server) ClientTLS() ClientTLS { return s.tls }

// Transport points a k8s.io/apiserver storage transport at the member, with its certificates.
func (s *Server) Transport(t *storagebackend.TransportConfig) {
	t.ServerList = []string{s.ClientURL()}
	t.TrustedCAFile, t.CertFile, t.KeyFile = s.tls.CAFile, s.tls.CertFile, s.tls.KeyFile
}

// Flags are the etcd flags of kube-apiserver (and of any k8s.io/apiserver server) for the member.
func (s *Server) Flags() []string {
	return []string{"--etcd-servers=" + s.ClientURL(), "--etcd-cafile=" + s.tls.CAFile,
		"--etcd-certfile=" + s.tls.CertFile, "--etcd-keyfile=" + s.tls.KeyFile}
}

// ensurePKI keeps a CA and the member's certificate under dir.
func ensurePKI(dir string) (ClientTLS, error) {
	f, err := localpki.Ensure(dir)
	if err != nil {
		return ClientTLS{}, fmt.Errorf("embedded etcd certificates: %w", err)
	}
	t := ClientTLS{CAFile: f.CACert, CertFile: filepath.Join(dir, "etcd.crt"), KeyFile: filepath.Join(dir, "etcd.key")}
	if err := f.IssueNode(t.CertFile, t.KeyFile, "tailscale-gateway-etcd"); err != nil {
		return ClientTLS{}, fmt.Errorf("embedded etcd certificates: %w", err)
	}
	return t, nil
}

// Close stops the member.
func (s *Server) Close() {
	s.etcd.Close()
}

// freeLoopbackURL reserves a free port on 127.0.0.1 and returns an https URL for it. The port is
// released before etcd binds it, which is safe in practice because the kernel does not hand out the
// same ephemeral port again at once.
func freeLoopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("reserving a loopback port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return nil, fmt.Errorf("releasing %s: %w", addr, err)
	}
	return &url.URL{Scheme: "https", Host: addr}, nil
}
