package tsgateway

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
)

// DefaultBackendChecks returns, by name, the TailscaleEndpoints of in.Gateway's namespace that its
// generated ingress routes reach — the TailscaleEndpoints a route points at and those the
// TailscaleServices it points at select — with the enabled
// spec.tailnets[].routeGeneration.ingress.defaultBackend.healthCheck of the tailnet configuration
// generating the route. Where several configurations reach one, the first in spec order wins.
// The collector (pkg/controllers/collector) probes them with it, unless a TailscaleServices
// selecting them has a loadBalancing.healthCheck of its own.
func DefaultBackendChecks(in Input) map[string]*v1alpha1.HealthCheckConfig {
	out := map[string]*v1alpha1.HealthCheckConfig{}
	gw := in.Gateway
	for _, t := range gw.Spec.Tailnets {
		rg := t.RouteGeneration
		if rg == nil || !enabledIngress(rg) || rg.Ingress.DefaultBackend == nil {
			continue
		}
		hc := rg.Ingress.DefaultBackend.HealthCheck
		if hc == nil || hc.Enabled == nil || !*hc.Enabled {
			continue
		}
		tn, ok := in.Tailnets[t.TailscaleTailnetRef.Name]
		if !ok {
			continue
		}
		for _, b := range backendsOf(gw, t, tn, in.Endpoints, in.Services) {
			if _, err := ingressRoute(gw, t, b); err != nil {
				continue // no route: the check applies to nothing
			}
			for _, name := range endpointsReached(b, in) {
				if _, seen := out[name]; !seen {
					out[name] = hc
				}
			}
		}
	}
	return out
}

// endpointsReached returns the names of the TailscaleEndpoints a route to b reaches: b itself, or
// those the TailscaleServices b selects in its namespace.
func endpointsReached(b backend, in Input) []string {
	if b.kind == backends.KindEndpoints {
		return []string{b.name}
	}
	var out []string
	for _, s := range in.Services {
		if s.Name != b.name || s.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
		if err != nil || sel.Empty() {
			continue
		}
		for _, e := range in.Endpoints {
			if e.Namespace == s.Namespace && sel.Matches(labels.Set(e.Labels)) {
				out = append(out, e.Name)
			}
		}
	}
	return out
}
