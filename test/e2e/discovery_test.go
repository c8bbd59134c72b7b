package e2e

import (
	"strings"
	"testing"
)

// TestDiscovery checks what kubectl api-resources shows for the group through kube-apiserver:
// kinds, short names, scope and the tailscale category.
func TestDiscovery(t *testing.T) {
	out, err := env.Kubectl(env.AdminKubeconfig, "api-resources", "--api-group=gateway.tailscale.com", "-o", "wide", "--no-headers")
	if err != nil {
		t.Fatalf("kubectl api-resources: %v\n%s", err, out)
	}
	want := map[string][]string{
		"tailscaleendpoints": {"tsep", "gateway.tailscale.com/v1alpha1", "true", "TailscaleEndpoints", "tailscale"},
		"tailscalegateways":  {"tsgw", "gateway.tailscale.com/v1alpha1", "true", "TailscaleGateway", "tailscale"},
		"tailscaleservices":  {"tssvc", "gateway.tailscale.com/v1alpha1", "true", "TailscaleServices", "tailscale"},
		"tailscaletailnets":  {"tstn", "gateway.tailscale.com/v1alpha1", "false", "TailscaleTailnet", "tailscale"},
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		w, ok := want[fields[0]]
		if !ok {
			t.Errorf("unexpected resource %q", line)
			continue
		}
		seen[fields[0]] = true
		for _, f := range w {
			if !strings.Contains(line, f) {
				t.Errorf("resource %s: %q lacks %q", fields[0], line, f)
			}
		}
		if !strings.Contains(line, "create,delete,deletecollection,get,list,patch,update,watch") {
			t.Errorf("resource %s: verbs in %q", fields[0], line)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("kubectl api-resources does not show %s:\n%s", name, out)
		}
	}
}
