// Package ports reads the egress ports of TailscaleEndpoints: the local port on which
// tailscale-gateway-proxy serves each endpoint's egress. The controllers' allocator
// (pkg/egressalloc, run by pkg/controllers/egressalloc) assigns them and records them in the
// object's status.egress; the proxy's plan, the extension's EDS (proxy address mode), the proxy
// Service's ports and the published EndpointSlices all read them here, and none derives one. An
// endpoint with no recorded port is not served for egress yet.
package ports

import (
	"hash/fnv"
	"slices"
	"strconv"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
)

// Range of egress ports: [EgressBase, EgressBase+EgressSpan). It stays below Linux's default
// ephemeral range (32768-60999), so a listener never races the proxy's own outgoing
// connections for a port, and above the ports services usually take.
const (
	EgressBase = 10000
	EgressSpan = 22768
)

// EgressPort is the port earlier versions derived for an endpoint (EgressBase +
// FNV-1a-32("<objectName>/<endpointName>/<port>") mod EgressSpan). The allocator offers it
// first to an endpoint without a recorded port, so that an upgrade keeps the addresses that did
// not collide; it is never read as an allocation.
func EgressPort(objectName, endpointName string, port int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(objectName))
	h.Write([]byte{'/'})
	h.Write([]byte(endpointName))
	h.Write([]byte{'/'})
	h.Write([]byte(strconv.Itoa(int(port))))
	return EgressBase + int32(h.Sum32()%EgressSpan)
}

// Key names one egress listener of an object: an endpoint, its port and protocol.
type Key struct {
	Endpoint string
	Port     int32
	// UDP endpoints listen on UDP, the others on TCP.
	UDP bool
}

// Protocol is the key's protocol as recorded, TCP or UDP.
func (k Key) Protocol() v1alpha1.Protocol {
	if k.UDP {
		return v1alpha1.ProtocolUDP
	}
	return v1alpha1.ProtocolTCP
}

// Want is an egress listener an object's endpoint needs: its key and the address dialled
// through the node, host:port (endpointset.Endpoint.Target: the externalTarget when set).
type Want struct {
	Key
	Target string
}

// Wanted lists the egress listeners obj needs: one per endpoint (declared or discovered) with
// an address and a port, in endpoint order, duplicates left out.
func Wanted(obj *v1alpha1.TailscaleEndpoints) []Want {
	var out []Want
	seen := map[Key]bool{}
	for _, ep := range endpointset.Of(obj) {
		target := ep.Target()
		if target == "" || ep.Port <= 0 {
			continue
		}
		k := Key{Endpoint: ep.Name, Port: ep.Port, UDP: ep.Protocol == v1alpha1.ProtocolUDP}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, Want{Key: k, Target: target})
	}
	return out
}

// Recorded is the allocation recorded in obj's status: the listener port by key, and the proxy
// (allocation scope) it belongs to. It is empty before the allocator has written one; ports
// outside the range are left out.
func Recorded(obj *v1alpha1.TailscaleEndpoints) (proxy string, byKey map[Key]int32) {
	eg := obj.Status.Egress
	if eg == nil {
		return "", nil
	}
	byKey = make(map[Key]int32, len(eg.Ports))
	for _, p := range eg.Ports {
		if p.ListenerPort < EgressBase || p.ListenerPort >= EgressBase+EgressSpan {
			continue
		}
		byKey[Key{Endpoint: p.Endpoint, Port: p.Port, UDP: p.Protocol == v1alpha1.ProtocolUDP}] = p.ListenerPort
	}
	return eg.Proxy, byKey
}

// Endpoint names one endpoint served for egress by a proxy serving several objects.
type Endpoint struct {
	Object string
	Key
}

// Assign returns the recorded port of each endpoint of eps (recorded gives it), and the
// endpoints left out: pending, without a recorded port, and conflicts, whose recorded port
// another endpoint of eps holds. The allocator never records one port twice within a proxy; a
// proxy that serves objects allocated on different proxies can still meet a conflict, and of
// the endpoints on one port (and protocol) the one whose "<Object>/<Endpoint>" sorts first
// keeps it. The result does not depend on the order of eps.
func Assign(eps []Endpoint, recorded func(Endpoint) (int32, bool)) (assigned map[Endpoint]int32, pending, conflicts []Endpoint) {
	type slot struct {
		port int32
		udp  bool
	}
	winner := make(map[slot]Endpoint, len(eps))
	ports := make(map[Endpoint]int32, len(eps))
	for _, ep := range eps {
		p, ok := recorded(ep)
		if !ok {
			pending = append(pending, ep)
			continue
		}
		ports[ep] = p
		s := slot{p, ep.UDP}
		if w, ok := winner[s]; !ok || less(ep, w) {
			winner[s] = ep
		}
	}
	assigned = make(map[Endpoint]int32, len(ports))
	for ep, p := range ports {
		if winner[slot{p, ep.UDP}] == ep {
			assigned[ep] = p
		} else {
			conflicts = append(conflicts, ep)
		}
	}
	slices.SortFunc(pending, compare)
	slices.SortFunc(conflicts, compare)
	return assigned, pending, conflicts
}

func compare(a, b Endpoint) int {
	switch {
	case less(a, b):
		return -1
	case less(b, a):
		return 1
	}
	return 0
}

func less(a, b Endpoint) bool {
	if a.Object != b.Object {
		return a.Object < b.Object
	}
	if a.Endpoint != b.Endpoint {
		return a.Endpoint < b.Endpoint
	}
	if a.Port != b.Port {
		return a.Port < b.Port
	}
	return !a.UDP && b.UDP
}
