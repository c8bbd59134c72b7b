// Package framework runs the whole standalone server in-process for integration tests and
// benchmarks: embedded etcd, HTTPS on 127.0.0.1, client-certificate authentication.
package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
)

// readyTimeout bounds how long a server may take to become ready on a loaded machine.
const readyTimeout = 3 * time.Minute

// Server is a running in-process standalone server.
type Server struct {
	// DataDir holds etcd data, the PKI and the admin kubeconfig.
	DataDir string
	// Kubeconfig is the admin kubeconfig path.
	Kubeconfig string
	// Config is the admin client configuration.
	Config *rest.Config
	// Etcd is how the server reaches the etcd it stores objects in (URL and certificates).
	Etcd storagebackend.TransportConfig

	cancel context.CancelFunc
	done   chan error
}

// Start runs a standalone server on dataDir (a new temporary directory when empty) and waits
// until it is ready. The server stops when the test ends.
func Start(tb testing.TB, dataDir string, configure ...func(*server.Options)) *Server {
	tb.Helper()
	if dataDir == "" {
		dataDir = tb.TempDir()
	}
	s, err := StartServer(dataDir, configure...)
	if err != nil {
		tb.Fatalf("starting server: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartServer runs a standalone server on dataDir and waits until it is ready; Stop ends it.
// configure, when given, adjusts the options before they are completed.
func StartServer(dataDir string, configure ...func(*server.Options)) (*Server, error) {
	o := server.NewOptions()
	o.Standalone = true
	o.DataDir = dataDir
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o.RecommendedOptions.SecureServing.Listener = l
	o.RecommendedOptions.SecureServing.BindPort = l.Addr().(*net.TCPAddr).Port
	// Servers of one test process run side by side: the extension's ports are chosen by the kernel.
	o.Extension.BindAddress, o.Extension.XDSBindAddress = "127.0.0.1:0", "127.0.0.1:0"
	// Health checks every 100ms keep the tests short; TestSecurityProbeLimits checks the defaults.
	o.Tenancy.Limits.MinInterval, o.Tenancy.Limits.MinTimeout = 50*time.Millisecond, 20*time.Millisecond
	for _, c := range configure {
		c(o)
	}
	if err := o.Complete(); err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{DataDir: dataDir, Kubeconfig: o.KubeconfigPath(), cancel: cancel, done: make(chan error, 1),
		Etcd: o.RecommendedOptions.Etcd.StorageConfig.Transport}
	go func() { s.done <- o.Run(ctx) }()

	// Run writes the kubeconfig once it listens; wait for that, then for /readyz.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, readyTimeout, true, func(context.Context) (bool, error) {
		select {
		case err := <-s.done:
			return false, fmt.Errorf("server exited: %w", err)
		default:
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
		if err != nil || !strings.HasSuffix(cfg.Host, l.Addr().String()) {
			return false, nil
		}
		// Tests and benchmarks measure the server, not client-side throttling.
		cfg.QPS, cfg.Burst = -1, 0
		s.Config = cfg
		client, err := rest.HTTPClientFor(cfg)
		if err != nil {
			return false, err
		}
		resp, err := client.Get(cfg.Host + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("waiting for the server at %s: %w", l.Addr(), err)
	}
	return s, nil
}

// Stop shuts the server down and waits for it to exit; calling it again does nothing.
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case <-s.done:
	case <-time.After(readyTimeout):
	}
}

// Clientset returns a typed client for the admin identity.
func (s *Server) Clientset(tb testing.TB) *versioned.Clientset {
	tb.Helper()
	c, err := versioned.NewForConfig(s.Config)
	if err != nil {
		tb.Fatalf("creating clientset: %v", err)
	}
	return c
}

// Kubectl runs kubectl with the admin kubeconfig and returns its combined output.
func (s *Server) Kubectl(args ...string) (string, error) {
	path, err := exec.LookPath("kubectl")
	if err != nil {
		return "", errors.New("kubectl is not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(s.DataDir, "kubectl-cache"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// CredentialsDir writes OAuth client credentials where --tailnet-credentials-dir expects the
// Secret tailscale-gateway-system/ts-oauth (<dir>/<namespace>/<name>/{client_id,client_secret})
// and returns the directory.
func CredentialsDir(tb testing.TB, clientID, clientSecret string) string {
	tb.Helper()
	dir := tb.TempDir()
	secretDir := filepath.Join(dir, "tailscale-gateway-system", "ts-oauth")
	if err := os.MkdirAll(secretDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	for file, value := range map[string]string{"client_id": clientID, "client_secret": clientSecret} {
		if err := os.WriteFile(filepath.Join(secretDir, file), []byte(value), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// EtcdClient connects to the server's etcd with its certificates.
func (s *Server) EtcdClient() (*clientv3.Client, error) {
	tlsCfg, err := (transport.TLSInfo{CertFile: s.Etcd.CertFile, KeyFile: s.Etcd.KeyFile, TrustedCAFile: s.Etcd.TrustedCAFile}).ClientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: s.Etcd.ServerList, TLS: tlsCfg, DialTimeout: 10 * time.Second})
}
