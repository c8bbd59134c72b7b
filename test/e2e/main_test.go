// Package e2e runs tailscale-gateway-apiserver in cluster mode behind a real kube-apiserver
// (v1.36, built by hack/build-tools.sh) and drives it through the aggregation layer with kubectl and
// the generated clientset.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
)

// env is the control plane every test of the package shares; each test works in its own namespace.
var env *framework.Environment

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tsgw-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log := filepath.Join(dir, "test-process.log")
	if err := framework.LogToFile(log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// examples/ (applied through kube-apiserver) have externalServices; the integration suite
	// checks the default, which refuses them. Published backends (pkg/controllers/publish) point
	// at an egress proxy address (TEST-NET-1, never dialled: kube-apiserver refuses loopback
	// addresses in EndpointSlices). Deployed proxies' auth keys are looked up every second
	// (TestProxyDeployment expires and revokes one).
	env, err = framework.Setup(dir, "--allow-external-services", "--backend-proxy-address=192.0.2.10",
		"--proxy-auth-key-check-interval=1s")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: setting up kube-apiserver and tailscale-gateway-apiserver: %v\nlogs in %s\n", err, dir)
		return 1
	}
	code := m.Run()
	env.Close()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", dir)
	}
	return code
}
