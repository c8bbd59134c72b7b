// Package endpointset lists the endpoints of a TailscaleEndpoints as its consumers (the
// extension's EDS, the proxy) serve them: those of its spec and those its status reports as
// discovered, each with its persisted health.
package endpointset

import (
	"net"
	"strconv"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// Endpoint is one endpoint of a TailscaleEndpoints with its persisted health.
type Endpoint struct {
	Name     string
	IP       string
	FQDN     string
	Port     int32
	Protocol v1alpha1.Protocol
	// Health is livestatus.Healthy, Unhealthy or Unknown.
	Health string
	// Discovered is true for endpoints found through tagSelectors (status only, not spec).
	Discovered bool
	// TLS is the spec's upstream TLS settings of the endpoint (nil when none).
	TLS *v1alpha1.UpstreamTLSConfig
	// Metadata is the spec's metadata of the endpoint (nil when none).
	Metadata map[string]string
}

// Of returns the endpoints of obj: those of its spec, then those of its status that its
// spec does not declare (discovered through tagSelectors), with the health its status records.
func Of(obj *v1alpha1.TailscaleEndpoints) []Endpoint {
	health := make(map[string]string, len(obj.Status.Endpoints))
	for _, s := range obj.Status.Endpoints {
		health[s.Name] = s.Status
	}
	out := make([]Endpoint, 0, len(obj.Spec.Endpoints))
	declared := make(map[string]bool, len(obj.Spec.Endpoints))
	for _, ep := range obj.Spec.Endpoints {
		declared[ep.Name] = true
		out = append(out, Endpoint{Name: ep.Name, IP: ep.TailscaleIP, FQDN: ep.TailscaleFQDN, Port: ep.Port,
			Protocol: ep.Protocol, Health: healthOr(health[ep.Name]), TLS: ep.TLS, Metadata: ep.Metadata})
	}
	for _, s := range obj.Status.Endpoints {
		if declared[s.Name] {
			continue
		}
		host, portStr, err := net.SplitHostPort(s.Address)
		port, perr := strconv.Atoi(portStr)
		if err != nil || perr != nil {
			continue
		}
		out = append(out, Endpoint{Name: s.Name, IP: host, Port: int32(port), Health: healthOr(s.Status), Discovered: true})
	}
	return out
}

// OnPort returns the endpoints of all listening on port, or all when none does (or port is 0):
// the endpoints a backendRef with that port reaches.
func OnPort(all []Endpoint, port int32) []Endpoint {
	var matching []Endpoint
	for _, ep := range all {
		if ep.Port == port {
			matching = append(matching, ep)
		}
	}
	if len(matching) == 0 {
		return all
	}
	return matching
}

func healthOr(s string) string {
	if s == livestatus.Healthy || s == livestatus.Unhealthy {
		return s
	}
	return livestatus.Unknown
}
