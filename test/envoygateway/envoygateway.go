// Package envoygateway runs the real Envoy Gateway v1.9.1 (built by hack/build-tools.sh into
// _output/bin/envoy-gateway) in standalone mode for tests: the file provider watches a resources
// directory of Gateway API YAML and our objects, the Host infrastructure writes its state under a
// temporary directory, the extension manager calls an extension server the test runs on loopback,
// and the translated xDS is read back over mTLS on 127.0.0.1:18000 with test/xdsclient.
//
// Envoy Gateway hard-codes some listeners, so only one instance can run on a machine at a time:
// the xDS server on 0.0.0.0:18000, the file provider's health probe on :8081 and the Wasm cache on
// :18002 (the admin server, 19000, moves to a loopback port the harness picks; the Prometheus
// endpoint, 0.0.0.0:19001, is disabled). Start serialises instances across test processes with a lock file in os.TempDir().
// Envoy Gateway also tries to download and start an Envoy binary for each Gateway (Host
// infrastructure); with no network that fails with a logged error, which is expected: translation
// and the xDS server do not depend on it.
package envoygateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// Fixed addresses of Envoy Gateway v1.9 in standalone mode (internal/xds/runner, internal/provider/file).
const (
	// XDSAddr is where the harness dials Envoy Gateway's xDS server (which listens on 0.0.0.0:18000).
	XDSAddr = "127.0.0.1:18000"
	// XDSServerName is the name the xDS server's certificate is valid for. `certgen --local` issues
	// it for the Kubernetes service names (envoy-gateway, envoy-gateway.envoy-gateway-system, ...),
	// not for localhost, whatever the provider of the server later started.
	XDSServerName = "envoy-gateway"
	// readyzURL is the file provider's readiness probe (listening on :8081).
	readyzURL = "http://127.0.0.1:8081/readyz"
	// ControllerName is the GatewayClass controller the harness configures.
	ControllerName = "gateway.envoyproxy.io/gatewayclass-controller"
)

// Bounds of the waits of the harness on a loaded two-core machine.
const (
	lockTimeout  = 10 * time.Minute
	startTimeout = 2 * time.Minute
	stopTimeout  = 30 * time.Second
	portsTimeout = 30 * time.Second
)

// Hook names of extensionManager.hooks.xdsTranslator.post.
const (
	HookRoute        = "Route"
	HookVirtualHost  = "VirtualHost"
	HookHTTPListener = "HTTPListener"
	HookCluster      = "Cluster"
	HookTranslation  = "Translation"
)

// GVK is a group, version and kind of extensionManager.backendResources.
type GVK struct{ Group, Version, Kind string }

// Our kinds, as the extension manager must list them.
var (
	TailscaleEndpointsGVK = GVK{"gateway.tailscale.com", "v1alpha1", "TailscaleEndpoints"}
	TailscaleServicesGVK  = GVK{"gateway.tailscale.com", "v1alpha1", "TailscaleServices"}
)

// Options configure Start.
type Options struct {
	// ExtensionAddr is the extension server's loopback host:port (plaintext gRPC). Required.
	ExtensionAddr string
	// Hooks are the post xdsTranslator hooks; default Cluster and Translation.
	Hooks []string
	// BackendResources are the custom backendRef kinds; default TailscaleEndpoints and
	// TailscaleServices at v1alpha1.
	BackendResources []GVK
	// FailOpen is extensionManager.failOpen (default false: a hook error keeps the previous snapshot).
	FailOpen bool
	// MaxMessageSize is extensionManager.maxMessageSize; default 16Mi.
	MaxMessageSize string
	// ExtensionManager, when set, is the extensionManager block to use (e.g. parsed from
	// artifacts/envoy-gateway); its service is replaced by ExtensionAddr, and Hooks,
	// BackendResources, FailOpen and MaxMessageSize are ignored.
	ExtensionManager map[string]any
	// Resources are the files (name → YAML) the resources directory holds when Envoy Gateway starts.
	Resources map[string]string
	// Bin is the envoy-gateway binary; default _output/bin/envoy-gateway of the repository.
	Bin string
	// JSONLogs makes envoy-gateway log JSON lines (logging.encoder JSON), which Statuses reads.
	JSONLogs bool
}

// Instance is a running Envoy Gateway.
type Instance struct {
	// Dir holds everything of the instance; it is removed when the test passes and kept (and
	// named in the test log) when it fails.
	Dir string
	// ConfigHome holds the certificates of `certgen --local` (certs/envoy-gateway, certs/envoy).
	ConfigHome string
	// ResourcesDir is the directory the file provider watches.
	ResourcesDir string
	// ConfigPath is the EnvoyGateway configuration; LogPath is envoy-gateway's output.
	ConfigPath, LogPath string
	// AdminAddr is Envoy Gateway's admin server (config dump at /api/config_dump).
	AdminAddr string

	proc  *framework.Process
	nodes atomic.Int64
}

// Start runs certgen and envoy-gateway for t, waits until the file provider has loaded the
// initial resources, and stops everything when t ends.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	if opts.ExtensionAddr == "" {
		t.Fatal("envoygateway: Options.ExtensionAddr is required")
	}
	bin := opts.Bin
	if bin == "" {
		root, err := framework.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		if bin, err = framework.ToolPath(root, "envoy-gateway"); err != nil {
			t.Fatal(err)
		}
	}
	unlock, err := lock(lockTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	if err := checkPortsFree(); err != nil {
		t.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "tsgw-envoy-gateway-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("envoygateway: files and logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	in := &Instance{
		Dir:          dir,
		ConfigHome:   filepath.Join(dir, "config"),
		ResourcesDir: filepath.Join(dir, "resources"),
		ConfigPath:   filepath.Join(dir, "envoy-gateway.yaml"),
		LogPath:      filepath.Join(dir, "envoy-gateway.log"),
	}
	if err := os.MkdirAll(in.ResourcesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runBounded(bin, "certgen", "--local", "--config-home", in.ConfigHome); err != nil {
		t.Fatalf("envoy-gateway certgen --local: %v\n%s", err, out)
	}
	adminPort, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	in.AdminAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	config, err := in.config(opts, adminPort)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.ConfigPath, config, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, content := range opts.Resources {
		if err := in.WriteResource(name, content); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.start(bin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.stop(); err != nil {
			t.Errorf("envoygateway: %v", err)
		}
	})
	if err := in.waitReady(); err != nil {
		t.Fatal(err)
	}
	return in
}

// config renders the EnvoyGateway configuration.
func (in *Instance) config(opts Options, adminPort int) ([]byte, error) {
	host, portText, err := net.SplitHostPort(opts.ExtensionAddr)
	if err != nil {
		return nil, fmt.Errorf("envoygateway: ExtensionAddr %q: %w", opts.ExtensionAddr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("envoygateway: ExtensionAddr %q: %w", opts.ExtensionAddr, err)
	}
	hooks := opts.Hooks
	if hooks == nil {
		hooks = []string{HookCluster, HookTranslation}
	}
	kinds := opts.BackendResources
	if kinds == nil {
		kinds = []GVK{TailscaleEndpointsGVK, TailscaleServicesGVK}
	}
	size := opts.MaxMessageSize
	if size == "" {
		size = "16Mi"
	}
	var backends []map[string]string
	for _, k := range kinds {
		backends = append(backends, map[string]string{"group": k.Group, "version": k.Version, "kind": k.Kind})
	}
	cfg := map[string]any{
		"apiVersion": "gateway.envoyproxy.io/v1alpha1",
		"kind":       "EnvoyGateway",
		"gateway":    map[string]any{"controllerName": ControllerName},
		"provider": map[string]any{
			"type": "Custom",
			"custom": map[string]any{
				"resource": map[string]any{"type": "File", "file": map[string]any{"paths": []string{in.ResourcesDir}}},
				"infrastructure": map[string]any{"type": "Host", "host": map[string]any{
					"configHome": in.ConfigHome,
					"dataHome":   filepath.Join(in.Dir, "data"),
					"stateHome":  filepath.Join(in.Dir, "state"),
					"runtimeDir": filepath.Join(in.Dir, "run"),
				}},
			},
		},
		"admin": map[string]any{"address": map[string]any{"host": "127.0.0.1", "port": adminPort}},
		"telemetry": map[string]any{"metrics": map[string]any{
			"prometheus": map[string]any{"disable": true},
		}},
		"logging": logging(opts.JSONLogs),
		// Envoy Gateway's Backend kind: a native backend (static IP endpoints) the file provider
		// can load, for tests mixing native and custom backends on one Gateway.
		"extensionApis": map[string]any{"enableBackend": true},
		"extensionManager": map[string]any{
			"backendResources": backends,
			"hooks":            map[string]any{"xdsTranslator": map[string]any{"post": hooks}},
			"failOpen":         opts.FailOpen,
			"maxMessageSize":   size,
		},
	}
	if opts.ExtensionManager != nil {
		em := make(map[string]any, len(opts.ExtensionManager))
		for k, v := range opts.ExtensionManager {
			em[k] = v
		}
		cfg["extensionManager"] = em
	}
	// Plaintext gRPC on loopback: no tls (which would name Kubernetes Secrets).
	cfg["extensionManager"].(map[string]any)["service"] = map[string]any{"fqdn": map[string]any{"hostname": host, "port": port}}
	return yaml.Marshal(cfg)
}

func logging(json bool) map[string]any {
	l := map[string]any{"level": map[string]any{"default": "info"}}
	if json {
		l["encoder"] = "JSON"
	}
	return l
}

func (in *Instance) start(bin string) error {
	proc, err := framework.StartProcess("envoy-gateway", in.LogPath, bin, "server", "--config-path", in.ConfigPath)
	if err != nil {
		return err
	}
	in.proc = proc
	return nil
}

// Exited returns an error describing the exit when envoy-gateway has exited, else nil.
func (in *Instance) Exited() error { return in.proc.Exited() }

// waitReady waits until the file provider reports ready (initial resources loaded and the
// directory watched) and the xDS port accepts connections.
func (in *Instance) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		if err := in.Exited(); err != nil {
			return err
		}
		if ok, why := probe(ctx, client); ok {
			conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", XDSAddr)
			if err == nil {
				conn.Close()
				return nil
			}
			last = err.Error()
		} else {
			last = why
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envoy-gateway not ready within %s (last: %s); the end of %s:\n%s", startTimeout, last, in.LogPath, in.proc.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, client *http.Client) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyzURL, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, resp.Status
}

func (in *Instance) stop() error {
	if in.proc == nil {
		return nil
	}
	return in.proc.Stop(stopTimeout)
}

// WriteResource writes (or replaces) a file of the resources directory atomically: it is written
// under a hidden name, which the file provider ignores, and renamed into place.
func (in *Instance) WriteResource(name, content string) error {
	tmp := filepath.Join(in.ResourcesDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(in.ResourcesDir, name))
}

// RemoveResource removes a file of the resources directory.
func (in *Instance) RemoveResource(name string) error {
	return os.Remove(filepath.Join(in.ResourcesDir, name))
}

// ClientTLS is the TLS configuration of an Envoy of Envoy Gateway: the `envoy` certificate of
// certgen and the CA, verifying the server as XDSServerName.
func (in *Instance) ClientTLS() (*tls.Config, error) {
	dir := filepath.Join(in.ConfigHome, "certs", "envoy")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return nil, fmt.Errorf("loading the envoy client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in " + filepath.Join(dir, "ca.crt"))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: XDSServerName, MinVersion: tls.VersionTLS12}, nil
}

// XDS connects to the xDS server as an Envoy of the Gateway gatewayNamespace/gatewayName: Envoy
// Gateway keys its snapshots by node.cluster "<namespace>/<name>" (the IR key of the Gateway);
// each client gets a node id of its own. The client is closed when t ends.
func (in *Instance) XDS(t testing.TB, gatewayNamespace, gatewayName string) *xdsclient.Client {
	t.Helper()
	cfg, err := in.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c, err := xdsclient.Dial(XDSAddr, xdsclient.Options{
		TLS:         cfg,
		NodeCluster: gatewayNamespace + "/" + gatewayName,
		NodeID:      fmt.Sprintf("envoy-%s-%s-%d", gatewayNamespace, gatewayName, in.nodes.Add(1)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Log returns envoy-gateway's output so far.
func (in *Instance) Log() string {
	data, err := os.ReadFile(in.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// WaitForLog waits until envoy-gateway's output contains substr (from the byte offset from on,
// see LogSize), envoy-gateway exits, or ctx ends.
func (in *Instance) WaitForLog(ctx context.Context, from int, substr string) error {
	for {
		data, _ := os.ReadFile(in.LogPath)
		if from <= len(data) && bytes.Contains(data[from:], []byte(substr)) {
			return nil
		}
		if err := in.Exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q in %s: %w; its end:\n%s", substr, in.LogPath, ctx.Err(), in.proc.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LogSize is the length of envoy-gateway's output so far, an offset for WaitForLog.
func (in *Instance) LogSize() int {
	info, err := os.Stat(in.LogPath)
	if err != nil {
		return 0
	}
	return int(info.Size())
}

// runBounded runs a short command with a deadline.
func runBounded(bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	return cmd.CombinedOutput()
}

// checkPortsFree waits (at most portsTimeout: an instance of another test may be exiting) until
// the fixed ports of Envoy Gateway are free, and fails with a clear message when something else
// keeps one (an envoy-gateway not started by this harness, for instance).
func checkPortsFree() error {
	deadline := time.Now().Add(portsTimeout)
	for {
		var busy error
		for _, port := range []string{"18000", "18002", "8081"} {
			l, err := net.Listen("tcp", ":"+port)
			if err != nil {
				busy = fmt.Errorf("envoygateway: port %s, which Envoy Gateway hard-codes, is in use: %w", port, err)
				break
			}
			l.Close()
		}
		if busy == nil || time.Now().After(deadline) {
			return busy
		}
		time.Sleep(200 * time.Millisecond)
	}
}
