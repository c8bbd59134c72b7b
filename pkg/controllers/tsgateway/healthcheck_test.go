package tsgateway

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

func TestDefaultBackendChecks(t *testing.T) {
	gw := advancedGateway()
	ing := gw.Spec.Tailnets[0].RouteGeneration.Ingress
	names := func(m map[string]*v1alpha1.HealthCheckConfig) string {
		return strings.Join(slices.Sorted(maps.Keys(m)), " ")
	}
	if got := DefaultBackendChecks(input(gw)); len(got) != 0 {
		t.Fatalf("without a health check: %v", got)
	}
	ing.DefaultBackend.HealthCheck = &v1alpha1.HealthCheckConfig{Path: "/healthz"}
	if got := DefaultBackendChecks(input(gw)); len(got) != 0 {
		t.Fatalf("check not enabled: %v", got)
	}
	ing.DefaultBackend.HealthCheck.Enabled = ptr(true)
	// db and web have ingress routes; elsewhere (another tailnet) is reached through the route of
	// TailscaleServices web, which selects it; nothing selects no endpoints.
	got := DefaultBackendChecks(input(gw))
	if n := names(got); n != "db elsewhere web" {
		t.Fatalf("reached: %s, want db elsewhere web", n)
	}
	if got["web"].Path != "/healthz" {
		t.Fatalf("web's check: %+v", got["web"])
	}
	// A second configuration of the same tailnet does not override the first.
	second := *gw.Spec.Tailnets[0].DeepCopy()
	second.Name = "second"
	second.RouteGeneration.Ingress.DefaultBackend.HealthCheck = &v1alpha1.HealthCheckConfig{Enabled: ptr(true), Path: "/other"}
	gw.Spec.Tailnets = append(gw.Spec.Tailnets, second)
	if got := DefaultBackendChecks(input(gw)); got["db"].Path != "/healthz" {
		t.Fatalf("first configuration should win: %+v", got["db"])
	}
	// Ingress not enabled: no routes, so the check applies to nothing.
	gw.Spec.Tailnets = gw.Spec.Tailnets[:1]
	ing.Enabled = false
	if got := DefaultBackendChecks(input(gw)); len(got) != 0 {
		t.Fatalf("ingress disabled: %v", got)
	}
	if u := strings.Join(Unsupported(gw), " "); !strings.Contains(u, "ingress (enabled is false)") {
		t.Fatalf("ingress disabled: Unsupported = %s", u)
	}
	// Enabled, the check takes effect: Supported does not list it.
	ing.Enabled = true
	if u := Unsupported(gw); len(u) != 0 {
		t.Fatalf("Unsupported = %v, want nothing", u)
	}
}
