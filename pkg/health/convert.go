package health

import (
	"maps"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// CheckFromAPI converts a (defaulted) API health check. It returns false when hc is nil or not
// enabled. Unset fields stay zero and take the defaults of Check. An HTTP check of the path
// "/grpc.health.v1.Health/Check" (as the API reference writes gRPC checks) becomes a gRPC check
// of the server's overall health, since a GET of that path cannot succeed against a gRPC server.
// ServerName is not part of the API; callers may set it, e.g. to the endpoint's FQDN.
func CheckFromAPI(hc *gateway.HealthCheckConfig) (Check, bool) {
	if hc == nil || hc.Enabled == nil || !*hc.Enabled {
		return Check{}, false
	}
	c := Check{
		Type:    Protocol(hc.Type),
		Path:    hc.Path,
		Headers: maps.Clone(hc.Headers),
	}
	if hc.Interval != nil {
		c.Interval = hc.Interval.Duration
	}
	if hc.Timeout != nil {
		c.Timeout = hc.Timeout.Duration
	}
	if hc.HealthyThreshold != nil {
		c.HealthyThreshold = int(*hc.HealthyThreshold)
	}
	if hc.UnhealthyThreshold != nil {
		c.UnhealthyThreshold = int(*hc.UnhealthyThreshold)
	}
	if hc.ExpectedStatus != nil {
		c.ExpectedStatus = int(*hc.ExpectedStatus)
	}
	if canonicalProtocol(c.Type) == ProtocolHTTP && c.Path == grpcHealthCheckMethod {
		c.Type = ProtocolGRPC
	}
	return c, true
}
