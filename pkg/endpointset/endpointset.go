// Package endpointset lists the endpoints of a TailscaleEndpoints as its consumers (the
// extension's EDS, the proxy) serve them: those of its spec and those its status reports as
// discovered, each with its persisted health.
package endpointset

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

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
	// ExternalTarget is the spec's externalTarget, host:port: where the endpoint's traffic is
	// forwarded instead of its tailnet address ("" when none).
	ExternalTarget string
}

// Target is where ep's traffic goes, host:port: its externalTarget when set, else its tailnet
// address (tailscaleIP, or tailscaleFQDN without one) and port; "" when it has neither.
func (ep Endpoint) Target() string {
	if ep.ExternalTarget != "" {
		return ep.ExternalTarget
	}
	host := ep.IP
	if host == "" {
		host = strings.TrimSuffix(ep.FQDN, ".")
	}
	if host == "" || ep.Port <= 0 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(int(ep.Port)))
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
			Protocol: ep.Protocol, Health: healthOr(health[ep.Name]), TLS: ep.TLS, Metadata: ep.Metadata, ExternalTarget: ep.ExternalTarget})
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

var (
	cgnat   = netip.MustParsePrefix("100.64.0.0/10")
	tsULA   = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	tsnetTL = ".ts.net"
)

// IsTailnetHost reports whether host is reached through the tailnet: an address in
// 100.64.0.0/10 or fd7a:115c:a1e0::/48, or a MagicDNS name under ts.net.
func IsTailnetHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		return cgnat.Contains(ip) || tsULA.Contains(ip)
	}
	return strings.HasSuffix(strings.TrimSuffix(host, "."), tsnetTL)
}

// ServicePorts returns the "tcp:N" ports of a Tailscale Service (as the Tailscale API lists
// them) that are port, or all of them when none is (or port is zero): the ports a backend on that
// port reaches, as OnPort for endpoints.
func ServicePorts(ports []string, port int32) []int32 {
	var all []int32
	for _, p := range ports {
		proto, num, ok := strings.Cut(p, ":")
		n, err := strconv.ParseUint(num, 10, 16)
		if !ok || proto != "tcp" || err != nil || n == 0 {
			continue
		}
		if int32(n) == port {
			return []int32{port}
		}
		all = append(all, int32(n))
	}
	return all
}

func healthOr(s string) string {
	if s == livestatus.Healthy || s == livestatus.Unhealthy {
		return s
	}
	return livestatus.Unknown
}
