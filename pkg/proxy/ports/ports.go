// Package ports derives the local port on which tailscale-gateway-proxy serves the egress of one
// tailnet endpoint. The derivation is a pure function of names, so the proxy, the Service in
// front of it and the extension's EDS (proxy address mode) compute the same port without
// exchanging state, and a port never moves when other endpoints are added, removed or reordered.
package ports

import (
	"hash/fnv"
	"strconv"
)

// Range of egress ports: [EgressBase, EgressBase+EgressSpan). It stays below Linux's default
// ephemeral range (32768-60999), so a listener never races the proxy's own outgoing
// connections for a port, and above the ports services usually take.
const (
	EgressBase = 10000
	EgressSpan = 22768
)

// EgressPort is the port of the egress listener for endpoint endpointName (port port) of the
// TailscaleEndpoints objectName: EgressBase + FNV-1a-32("<objectName>/<endpointName>/<port>")
// mod EgressSpan. The same port serves TCP and, for UDP endpoints, UDP.
//
// Two endpoints served by one proxy can hash to the same port (with n endpoints the chance of
// any collision is about n²/45536: 2% for 30). The proxy then serves the one whose
// "<objectName>/<endpointName>" sorts first and reports the other (see Conflicts); renaming an
// endpoint resolves it.
func EgressPort(objectName, endpointName string, port int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(objectName))
	h.Write([]byte{'/'})
	h.Write([]byte(endpointName))
	h.Write([]byte{'/'})
	h.Write([]byte(strconv.Itoa(int(port))))
	return EgressBase + int32(h.Sum32()%EgressSpan)
}

// Endpoint names one endpoint served for egress.
type Endpoint struct {
	Object, Endpoint string
	Port             int32
	// UDP endpoints listen on UDP, the others on TCP: the two do not collide.
	UDP bool
}

// Assign returns the egress port of each endpoint of eps, leaving out the endpoints that lose a
// collision: of the endpoints hashing to one port (and network), the one whose
// "<Object>/<Endpoint>" sorts first keeps it. The result does not depend on the order of eps.
func Assign(eps []Endpoint) (assigned map[Endpoint]int32, conflicts []Endpoint) {
	type slot struct {
		port int32
		udp  bool
	}
	winner := make(map[slot]Endpoint, len(eps))
	for _, ep := range eps {
		s := slot{EgressPort(ep.Object, ep.Endpoint, ep.Port), ep.UDP}
		if w, ok := winner[s]; !ok || less(ep, w) {
			winner[s] = ep
		}
	}
	assigned = make(map[Endpoint]int32, len(eps))
	for _, ep := range eps {
		s := slot{EgressPort(ep.Object, ep.Endpoint, ep.Port), ep.UDP}
		if winner[s] == ep {
			assigned[ep] = s.port
		} else if _, dup := assigned[ep]; !dup {
			conflicts = append(conflicts, ep)
		}
	}
	return assigned, conflicts
}

func less(a, b Endpoint) bool {
	if a.Object != b.Object {
		return a.Object < b.Object
	}
	if a.Endpoint != b.Endpoint {
		return a.Endpoint < b.Endpoint
	}
	return a.Port < b.Port
}
