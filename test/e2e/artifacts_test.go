package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestOverlays renders the overlays of artifacts/overlays and has kube-apiserver validate the
// external-etcd one in a server-side dry run (cert-manager's kinds are not installed here).
func TestOverlays(t *testing.T) {
	overlays := filepath.Join(env.Root, "artifacts", "overlays")
	out := kubectl(t, "kustomize", filepath.Join(overlays, "cert-manager"))
	for _, want := range []string{"cert-manager.io/inject-ca-from: tailscale-gateway-system/tailscale-gateway-apiserver",
		"secretName: tailscale-gateway-apiserver-tls", "tailscale-gateway-apiserver.tailscale-gateway-system.svc"} {
		if !strings.Contains(out, want) {
			t.Errorf("cert-manager overlay lacks %q", want)
		}
	}
	out = kubectl(t, "apply", "--dry-run=server", "-k", filepath.Join(overlays, "external-etcd"))
	for _, want := range []string{"deployment.apps/tailscale-gateway-apiserver", "poddisruptionbudget.policy/tailscale-gateway-apiserver"} {
		if !strings.Contains(out, want) {
			t.Errorf("external-etcd dry run lacks %s:\n%s", want, out)
		}
	}
	out = kubectl(t, "kustomize", filepath.Join(overlays, "external-etcd"))
	if strings.Contains(out, "name: etcd\n") || strings.Contains(out, "PersistentVolumeClaim") || !strings.Contains(out, "replicas: 2") {
		t.Errorf("external-etcd overlay still has the etcd sidecar or volume, or not 2 replicas:\n%s", out)
	}
}
