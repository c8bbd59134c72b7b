package livestatus

import (
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// DefaultDiscoveredPort is the port of a discovered endpoint when neither a
// serviceDiscovery.vipServices entry targeting it nor spec.proxy.ports gives one.
const DefaultDiscoveredPort = 80

// tagValues returns the values a device tag carries for key, and whether the tag has that key
// at all. Tailscale tag names are letters, digits and dashes, so a key and a value are joined in
// one tag: "tag:<key>" has the key without a value, "tag:<key>-<value>" (or "tag:<key>=<value>"
// and "tag:<key>:<value>", which policy files cannot hold but other sources may report) has it
// with the value. Every split is tried, so "tag:service-type" matches key "service-type" (no
// value) and key "service" (value "type"). Keys and values compare case-insensitively, as tags do.
func tagValue(tag, key string) (value string, hasValue, ok bool) {
	name, found := strings.CutPrefix(strings.ToLower(tag), "tag:")
	if !found {
		return "", false, false
	}
	key = strings.ToLower(key)
	if name == key {
		return "", false, true
	}
	rest, found := strings.CutPrefix(name, key)
	if !found || rest == "" {
		return "", false, false
	}
	switch rest[0] {
	case '-', '=', ':':
		return rest[1:], true, true
	}
	return "", false, false
}

// matchesTagSelectors reports whether a device with tags matches every selector (the
// semantics of Kubernetes label selectors over the key/value view of tagValue).
func matchesTagSelectors(tags []string, sels []gateway.TagSelector) bool {
	for _, s := range sels {
		exists, in := false, false
		for _, t := range tags {
			v, hasValue, ok := tagValue(t, s.Key)
			if !ok {
				continue
			}
			exists = true
			if hasValue && slices.ContainsFunc(s.Values, func(x string) bool { return strings.EqualFold(x, v) }) {
				in = true
			}
		}
		switch s.Operator {
		case gateway.TagSelectorOpExists:
			if !exists {
				return false
			}
		case gateway.TagSelectorOpDoesNotExist:
			if exists {
				return false
			}
		case gateway.TagSelectorOpIn:
			if !in {
				return false
			}
		case gateway.TagSelectorOpNotIn:
			if in {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// DiscoveredEndpoint is a tailnet device selected by spec.tagSelectors.
type DiscoveredEndpoint struct {
	// Name is the device's hostname (the first label of its MagicDNS name).
	Name    string
	Address string // host:port
	IP      string
	Port    int32
	FQDN    string
	Online  bool
}

// DiscoverEndpoints returns the devices of tn matching obj's tag selectors, sorted by name,
// leaving out names that spec.endpoints declares. Without tag selectors it returns nothing.
func DiscoverEndpoints(obj *gateway.TailscaleEndpoints, tn Tailnet) []DiscoveredEndpoint {
	if len(obj.Spec.TagSelectors) == 0 {
		return nil
	}
	var out []DiscoveredEndpoint
	for _, d := range tn.Devices {
		if len(d.Addresses) == 0 || !matchesTagSelectors(d.Tags, obj.Spec.TagSelectors) {
			continue
		}
		name, _, _ := strings.Cut(trimDot(d.Name), ".")
		if name == "" || slices.ContainsFunc(obj.Spec.Endpoints, func(e gateway.TailscaleEndpoint) bool { return e.Name == name }) {
			continue
		}
		port := discoveredPort(obj, name)
		out = append(out, DiscoveredEndpoint{Name: name, IP: d.Addresses[0], Port: port, FQDN: trimDot(d.Name), Online: d.Online,
			Address: net.JoinHostPort(d.Addresses[0], strconv.Itoa(int(port)))})
	}
	slices.SortFunc(out, func(a, b DiscoveredEndpoint) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(out, func(a, b DiscoveredEndpoint) bool { return a.Name == b.Name })
}

// discoveredPort is the port of a discovered endpoint: that of a vipServices entry targeting
// it, else the first of spec.proxy.ports, else DefaultDiscoveredPort.
func discoveredPort(obj *gateway.TailscaleEndpoints, name string) int32 {
	if sd := obj.Spec.ServiceDiscovery; sd != nil {
		for _, v := range sd.VIPServices {
			if v.TargetEndpoint == name && v.Port > 0 {
				return v.Port
			}
		}
	}
	if p := obj.Spec.Proxy; p != nil && len(p.Ports) > 0 && p.Ports[0].Port > 0 {
		return p.Ports[0].Port
	}
	return DefaultDiscoveredPort
}

// DiscoverVIPServices returns the Tailscale Services of tn that spec's
// serviceDiscovery.vipServiceSelector matches, sorted by name: with discoverVIPServices set, a
// Service named in serviceNames or carrying one of tags, other than spec.vipService.name (the
// object's own Service is never its own backend). Names compare with or without "svc:".
func DiscoverVIPServices(spec *gateway.TailscaleServicesSpec, tn Tailnet) []gateway.DiscoveredVIPService {
	sd := spec.ServiceDiscovery
	if sd == nil || !sd.DiscoverVIPServices || sd.VIPServiceSelector == nil {
		return nil
	}
	sel := sd.VIPServiceSelector
	label := func(name string) string { return strings.TrimPrefix(name, "svc:") }
	own := ""
	if spec.VIPService != nil {
		own = label(spec.VIPService.Name)
	}
	var out []gateway.DiscoveredVIPService
	for _, s := range tn.Services {
		if label(s.Name) == own {
			continue
		}
		named := slices.ContainsFunc(sel.ServiceNames, func(n string) bool { return label(n) == label(s.Name) })
		tagged := slices.ContainsFunc(s.Tags, func(t string) bool { return slices.Contains(sel.Tags, t) })
		if !named && !tagged {
			continue
		}
		out = append(out, gateway.DiscoveredVIPService{Name: "svc:" + label(s.Name), DNSName: s.DNSName,
			Addresses: slices.Clone(s.Addrs), Ports: slices.Clone(s.Ports), Tags: slices.Clone(s.Tags)})
	}
	slices.SortFunc(out, func(a, b gateway.DiscoveredVIPService) int { return strings.Compare(a.Name, b.Name) })
	return out
}
