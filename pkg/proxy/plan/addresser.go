package plan

import (
	"strings"
	"sync"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
)

// EgressAddresser makes Envoy dial tailscale-gateway-proxy's egress listener of an endpoint
// (the extension's `proxy` endpoint mode) instead of its tailnet address: Host, the address of a
// proxy serving the endpoint's TailscaleEndpoints, and the endpoint's egress port recorded in
// the object's status (pkg/proxy/ports). An endpoint with none yet has no address (Address's
// ok is false), so Envoy is sent nowhere rather than to a port nothing listens on.
type EgressAddresser struct {
	// Host is an IP address Envoy can reach the proxy at: 127.0.0.1 for a local proxy, the
	// proxy Service's cluster IP in a cluster.
	Host string

	mu    sync.Mutex
	ports map[string]assignment // by namespace/name
}

type assignment struct {
	resourceVersion string
	ports           map[string]int32 // by endpoint name, TCP listeners only
}

// Address is the host and port Envoy dials for ep (the extension's eds.Addresser).
func (a *EgressAddresser) Address(obj *v1alpha1.TailscaleEndpoints, ep endpointset.Endpoint) (string, uint32, bool) {
	port, ok := a.portsOf(obj)[ep.Name]
	if !ok {
		return "", 0, false
	}
	return a.Host, uint32(port), true
}

// portsOf returns the TCP egress ports of obj's endpoints, computed once per resourceVersion.
func (a *EgressAddresser) portsOf(obj *v1alpha1.TailscaleEndpoints) map[string]int32 {
	key := obj.Namespace + "/" + obj.Name
	a.mu.Lock()
	defer a.mu.Unlock()
	if as, ok := a.ports[key]; ok && as.resourceVersion == obj.ResourceVersion && obj.ResourceVersion != "" {
		return as.ports
	}
	egress, _, _ := EgressOf([]*v1alpha1.TailscaleEndpoints{obj})
	ports := make(map[string]int32, len(egress))
	for _, e := range egress {
		if e.Network == "tcp" {
			ports[strings.TrimPrefix(e.Key, key+"/")] = e.Port
		}
	}
	if a.ports == nil {
		a.ports = map[string]assignment{}
	}
	a.ports[key] = assignment{resourceVersion: obj.ResourceVersion, ports: ports}
	return ports
}
