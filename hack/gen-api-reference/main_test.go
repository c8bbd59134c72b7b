package main

import (
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/registry"
)

// TestRenderStatesDefaultsTypesAndRules checks rows of the reference whose default comes from
// running the defaulters (not from a comment), a conditional default left out of the column, a
// required field, an enum, and the kinds' scope.
func TestRenderStatesDefaultsTypesAndRules(t *testing.T) {
	doc, err := render([]kind{kindOf(registry.TailscaleTailnets), kindOf(registry.TailscaleEndpoints),
		kindOf(registry.TailscaleServices), kindOf(registry.TailscaleGateways)})
	if err != nil {
		t.Fatal(err)
	}
	out := string(doc)
	for _, want := range []string{
		"| [TailscaleTailnet](#tailscaletailnet) | `tailscaletailnets` | Cluster | `tstn` | `metadata.name`, `spec.tailnet` |",
		"| `tailnet` | `string` |  | `\"-\"` |",
		"| `interval` | `metav1.Duration` |  | `\"30s\"` | Interval between probes; must be positive.",
		"| `oauthSecretNamespace` | `string` |  |  |", // defaulted only when oauthSecretName is set
		"| `tailnet` | `string` | yes |  | Tailnet is the tailnet the endpoints live in",
		"| `strategy` | `string`: `failover`, `least-connections`, `round-robin`, `weighted` |  | `\"round-robin\"` |",
		"| `priority` | `int32` |  | `100` |",
		"\n### HealthCheckConfig\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the reference lacks %q", want)
		}
	}
	if n := strings.Count(out, "\n### HealthCheckConfig\n"); n != 1 {
		t.Errorf("HealthCheckConfig documented %d times, want once", n)
	}
}
