package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/pki"
)

// The node's network namespace and its address (hack/cluster-up.sh): pods and the node's own
// processes reach it, nothing off the machine does.
const (
	nodeNetns = "/run/netns/tsgw-node"
	nodeIP    = "10.250.0.2"
)

// simTailnet is cmd/tailnet-sim running in the node's network namespace on nodeIP: its control
// server, DERP and STUN (which the proxy pods use) and its Tailscale API (which the server pods
// use, over TLS with a certificate of caFile) are reachable from the pods; its admin API
// listens on the namespace's loopback. The test reaches both APIs with curl in the namespace.
type simTailnet struct {
	APIURL            string `json:"apiURL"`
	Tailnet           string `json:"tailnet"`
	OAuthClientID     string `json:"oauthClientID"`
	OAuthClientSecret string `json:"oauthClientSecret"`
	APIKey            string `json:"apiKey"`
	ControlURL        string `json:"controlURL"`
	MagicDNSSuffix    string `json:"magicDNSSuffix"`
	AdminURL          string `json:"adminURL"`
	Devices           []struct {
		Hostname string `json:"hostname"`
		FQDN     string `json:"fqdn"`
		IPv4     string `json:"ipv4"`
		HTTPPort int    `json:"httpPort"`
	} `json:"devices"`

	caPEM  []byte
	caFile string
}

// startSim starts the simulated tailnet (the tailnet-sim binary hack/images.sh test built) and
// stops it when t ends. Control admits a new node only with a valid minted key, and a known node
// restarting from its state without one, as Tailscale's does.
func startSim(t *testing.T) *simTailnet {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA(dir, "tailnet-sim-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServing("tailnet-sim-api", nodeIP)
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "tailnet-sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	info := filepath.Join(dir, "info.json")
	bin := filepath.Join(root, "_output", "images", "bin", "linux-"+runtime.GOARCH, "tailnet-sim")
	cmd := exec.Command("nsenter", "--net="+nodeNetns, bin, "-listen-addr", nodeIP,
		"-api-tls-cert-file", cert.CertFile, "-api-tls-key-file", cert.KeyFile,
		"-info-file", info, "-dir", dir,
		// A dead node keeps its Services routed for the up to ~15 s Tailscale's control plane takes
		// to declare it offline (tailscale.com/kb/1115): a VIP host's failover in less is ours.
		"-offline-after", "15s")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting tailnet-sim: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("tailnet-sim log (last 4 KiB):\n%s", b[max(0, len(b)-4096):])
			}
		}
	})
	sim := &simTailnet{caPEM: ca.CertPEM, caFile: ca.CertFile}
	waitFor(t, 5*time.Minute, "tailnet-sim's info file", func() (bool, string) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("tailnet-sim exited: %v", err)
		default:
		}
		b, err := os.ReadFile(info)
		if err != nil {
			return false, err.Error()
		}
		return json.Unmarshal(b, sim) == nil, string(b)
	})
	return sim
}

// device returns the address and HTTP port of a simulated device.
func (s *simTailnet) device(t *testing.T, hostname string) (fqdn, ipv4 string, httpPort int) {
	t.Helper()
	for _, d := range s.Devices {
		if d.Hostname == hostname {
			return strings.TrimSuffix(d.FQDN, "."), d.IPv4, d.HTTPPort
		}
	}
	t.Fatalf("tailnet-sim has no device %s", hostname)
	return "", "", 0
}

// curl runs curl in the node's network namespace and returns its output.
func (s *simTailnet) curl(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"--net=" + nodeNetns, "curl", "-sS", "--max-time", "30", "--fail-with-body"}, args...)
	return run(ctx, time.Minute, "nsenter", args...)
}

// api calls the simulated Tailscale API with its API key and decodes the JSON answer into out.
func (s *simTailnet) api(ctx context.Context, method, path string, body, out any) error {
	args := []string{"--cacert", s.caFile, "-u", s.APIKey + ":", "-X", method}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", string(b))
	}
	got, err := s.curl(ctx, append(args, s.APIURL+path)...)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", method, path, err, got)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal([]byte(got), out); err != nil {
		return fmt.Errorf("%s %s: %w: %s", method, path, err, got)
	}
	return nil
}

// simDevice is a device as the simulated API lists it.
type simDevice struct {
	ID       string `json:"id"`
	NodeID   string `json:"nodeId"`
	Hostname string `json:"hostname"`
	NodeKey  string `json:"nodeKey"`
}

// devices lists the tailnet's devices named hostname.
func (s *simTailnet) devices(ctx context.Context, hostname string) ([]simDevice, error) {
	var body struct {
		Devices []simDevice `json:"devices"`
	}
	if err := s.api(ctx, "GET", "/api/v2/tailnet/-/devices", nil, &body); err != nil {
		return nil, err
	}
	var out []simDevice
	for _, d := range body.Devices {
		if d.Hostname == hostname {
			out = append(out, d)
		}
	}
	return out, nil
}

// keys lists the auth keys minted in the tailnet as "id description".
func (s *simTailnet) keys(ctx context.Context) ([]string, error) {
	var body struct {
		Keys []struct {
			ID          string `json:"id"`
			Description string `json:"description"`
		} `json:"keys"`
	}
	if err := s.api(ctx, "GET", "/api/v2/tailnet/-/keys", nil, &body); err != nil {
		return nil, err
	}
	var out []string
	for _, k := range body.Keys {
		out = append(out, k.ID+" "+k.Description)
	}
	return out, nil
}

// fetch GETs rawURL from the simulated device hostname (over the tailnet, names resolved with
// its MagicDNS) and returns the status and body it got.
func (s *simTailnet) fetch(ctx context.Context, hostname, rawURL string) (int, string, error) {
	got, err := s.curl(ctx, s.AdminURL+"/devices/"+hostname+"/fetch?url="+url.QueryEscape(rawURL))
	if err != nil {
		return 0, "", fmt.Errorf("%w: %s", err, got)
	}
	var res struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	if err := json.Unmarshal([]byte(got), &res); err != nil {
		return 0, "", fmt.Errorf("%w: %s", err, got)
	}
	return res.Status, res.Body, nil
}

// kubectlApply applies the objects of manifest (JSON or YAML).
func kubectlApply(ctx context.Context, manifest string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}
