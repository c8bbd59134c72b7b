package framework

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	// The Gateway API module whose CRDs InstallGatewayAPICRDs applies: imported so go.mod pins it.
	_ "sigs.k8s.io/gateway-api/apis/v1"
)

const gatewayAPIModule = "sigs.k8s.io/gateway-api"

var gatewayAPIOnce struct {
	sync.Once
	err error
}

// InstallGatewayAPICRDs applies, once per environment, the Gateway API CRDs of the
// sigs.k8s.io/gateway-api version go.mod requires (from the Go module cache) and waits until
// kube-apiserver serves HTTPRoutes. It installs the experimental channel: it holds every kind of
// the standard channel (TCPRoute, TLSRoute and UDPRoute included, which Envoy Gateway watches) and
// the standard channel's ValidatingAdmissionPolicy safe-upgrades refuses experimental CRDs over
// standard ones, so the two cannot be stacked.
func (e *Environment) InstallGatewayAPICRDs() error {
	gatewayAPIOnce.Do(func() { gatewayAPIOnce.err = e.installGatewayAPICRDs() })
	return gatewayAPIOnce.err
}

// GatewayAPIDir returns the directory of the Gateway API module go.mod requires.
func (e *Environment) GatewayAPIDir() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	download := exec.CommandContext(ctx, "go", "mod", "download", gatewayAPIModule)
	download.Dir = e.Root
	if out, err := download.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go mod download %s: %w\n%s", gatewayAPIModule, err, out)
	}
	list := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", gatewayAPIModule)
	list.Dir = e.Root
	out, err := list.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", gatewayAPIModule, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: no module directory", gatewayAPIModule)
	}
	return dir, nil
}

func (e *Environment) installGatewayAPICRDs() error {
	dir, err := e.GatewayAPIDir()
	if err != nil {
		return err
	}
	crds := filepath.Join(dir, "config", "crd", "experimental")
	// Server-side: the CRDs are larger than the last-applied annotation allows.
	if out, err := e.Kubectl(e.AdminKubeconfig, "apply", "--server-side", "-k", crds); err != nil {
		return fmt.Errorf("kubectl apply -k %s: %w\n%s", crds, err, out)
	}
	var last string
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, startTimeout, true, func(context.Context) (bool, error) {
		list, err := e.Kube.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		var kinds []string
		for _, r := range list.APIResources {
			kinds = append(kinds, r.Kind)
		}
		last = strings.Join(kinds, ",")
		return slices.Contains(kinds, "HTTPRoute") && slices.Contains(kinds, "Gateway") && slices.Contains(kinds, "GatewayClass"), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for kube-apiserver to serve gateway.networking.k8s.io/v1 (last: %s): %w", last, err)
	}
	return nil
}
