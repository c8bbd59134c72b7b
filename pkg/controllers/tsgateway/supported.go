package tsgateway

import (
	"fmt"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// ConditionSupported says which set fields have no effect yet (reason FieldsNotSupported), so
// that none is silently ignored. loadBalancing.strategy and loadBalancing.circuitBreaker are
// applied by the extension hook (pkg/extension/hook) to the clusters of routes with our backends,
// routeGeneration by this controller (its ingress defaultBackend.healthCheck by the collector's
// prober, see DefaultBackendChecks), security.tlsMode and security.mtls by the
// ClientTrafficPolicy it generates (GenerateClientTLS), observability by the EnvoyProxy it
// generates (GenerateEnvoyProxy) and the proxy's connection log, security.accessControl by the proxy hosting the listeners'
// Tailscale Services (annotations of the listener TailscaleServices, pkg/accesscontrol),
// tailnets[].serviceDiscovery by pkg/controllers/discovery, and tailnets[].priority by the
// failover groups discovery makes of a remote service found on several tailnets (so it is
// listed where discovery does not run on two tailnets). The reasons are livestatus's, whose
// Supported condition of TailscaleEndpoints and TailscaleServices is computed on read.
const (
	ConditionSupported       = livestatus.ConditionSupported
	ReasonAllSupported       = livestatus.ReasonAllFieldsSupported
	ReasonFieldsNotSupported = livestatus.ReasonFieldsNotSupported
)

// Unsupported returns the paths of the fields of gw that are set but drive nothing.
func Unsupported(gw *v1alpha1.TailscaleGateway) []string {
	var out []string
	s := gw.Spec
	discovering := discovery.Enabled(gw)
	if s.ServiceCoordination != nil {
		out = append(out, "spec.serviceCoordination")
	}
	// healthChecking is the health check of the TailscaleEndpoints that discovery generates for
	// remote Tailscale Services (pkg/controllers/discovery); without discovery it drives nothing.
	if lb := s.LoadBalancing; lb != nil && lb.HealthChecking != nil && len(discovering) == 0 {
		out = append(out, "spec.loadBalancing.healthChecking")
	}
	// observability is the EnvoyProxy of envoyproxy.go (its ObservabilityReady condition says
	// what is attached), except a metrics port: Envoy Gateway v1.9 serves Prometheus on its
	// stats port only. security.tlsMode and security.mtls are the ClientTrafficPolicy of
	// clienttls.go and the listeners published.
	if o := s.Observability; o != nil && o.Metrics != nil && o.Metrics.Port != nil && *o.Metrics.Port != EnvoyStatsPort {
		out = append(out, fmt.Sprintf("spec.observability.metrics.port (Envoy Gateway v1.9 serves Prometheus on port %d only; EnvoyProxy has no field for another)", EnvoyStatsPort))
	}
	for i, t := range s.Tailnets {
		p := fmt.Sprintf("spec.tailnets[%d]", i)
		// Routes are generated only for an enabled direction: its other fields wait for enabled.
		if rg := t.RouteGeneration; rg != nil && rg.Ingress != nil && !rg.Ingress.Enabled &&
			(rg.Ingress.HostPattern != "" || rg.Ingress.PathPrefix != "" || rg.Ingress.DefaultBackend != nil || len(rg.Ingress.Filters) > 0) {
			out = append(out, p+".routeGeneration.ingress (enabled is false)")
		}
		if rg := t.RouteGeneration; rg != nil && rg.Egress != nil && !rg.Egress.Enabled &&
			(rg.Egress.HostPattern != "" || rg.Egress.PathPrefix != "" || len(rg.Egress.RewriteRules) > 0 || rg.Egress.Timeout != nil || rg.Egress.RetryPolicy != nil) {
			out = append(out, p+".routeGeneration.egress (enabled is false)")
		}
		// priority orders the tailnets of a failover group, which discovery makes of a remote
		// service found on several discovering tailnets: this one and at least one other.
		if t.Priority != nil && (t.ServiceDiscovery == nil || !t.ServiceDiscovery.Enabled || len(discovering) < 2) {
			out = append(out, p+".priority (only discovery's failover groups read it and discovery is not enabled on this and another tailnet)")
		}
	}
	return out
}
