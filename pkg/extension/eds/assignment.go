// Package eds serves the endpoints of Envoy Gateway clusters whose backends are TailscaleEndpoints
// and TailscaleServices: one ClusterLoadAssignment per cluster, computed from the registry's
// objects and their persisted health, over go-control-plane's EDS and ADS (SotW and delta).
// Health and membership changes reach Envoy without an Envoy Gateway re-translation.
package eds

import (
	"net"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// strictFailoverFactor is the overprovisioning factor of failover clusters: with it a priority
// level takes all traffic while any of its hosts is healthy (Envoy's default, 140, spills part of
// the traffic to the next priority as soon as one host of the level is unhealthy).
const strictFailoverFactor = 1 << 20

// Source reads the registry from memory.
type Source interface {
	TailscaleEndpoints(namespace, name string) (*v1alpha1.TailscaleEndpoints, bool)
	TailscaleServices(namespace, name string) (*v1alpha1.TailscaleServices, bool)
	// SelectEndpoints returns the TailscaleEndpoints of namespace that selector matches,
	// sorted by name: the selection a TailscaleServices' status shows.
	SelectEndpoints(namespace string, selector labels.Selector) []*v1alpha1.TailscaleEndpoints
	// AllowsExternal reports whether an externalServices address may be served
	// (--allow-external-services, --external-service-allowed-cidrs).
	AllowsExternal(address string) bool
}

// Addresser chooses the address Envoy dials for a tailnet endpoint.
type Addresser interface {
	Address(eps *v1alpha1.TailscaleEndpoints, ep endpointset.Endpoint) (host string, port uint32, ok bool)
}

// Direct makes Envoy dial the tailnet address itself: for Envoy nodes that route 100.64.0.0/10
// and fd7a:115c:a1e0::/48 through a subnet router or a Tailscale sidecar. An endpoint with an
// externalTarget is dialled there when it is an IP address; a hostname one has no address (EDS
// hosts are IP addresses), only the proxy's egress listener resolves it.
type Direct struct{}

// Address implements Addresser.
func (Direct) Address(_ *v1alpha1.TailscaleEndpoints, ep endpointset.Endpoint) (string, uint32, bool) {
	if ep.ExternalTarget != "" {
		host, port, err := net.SplitHostPort(ep.ExternalTarget)
		p, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || p == 0 || net.ParseIP(host) == nil {
			return "", 0, false
		}
		return host, uint32(p), true
	}
	if ep.IP == "" || ep.Port <= 0 {
		return "", 0, false
	}
	return ep.IP, uint32(ep.Port), true
}

// targetAllowed reports whether ep's traffic may go where it says: an externalTarget outside
// the tailnet only as the externalServices rule allows (always on objects a TailscaleGateway
// generates, as their externalServices).
func targetAllowed(src Source, eps *v1alpha1.TailscaleEndpoints, ep endpointset.Endpoint) bool {
	if ep.ExternalTarget == "" || tenancy.GeneratedByGateway(eps) {
		return true
	}
	host, _, err := net.SplitHostPort(ep.ExternalTarget)
	return err == nil && (endpointset.IsTailnetHost(host) || src.AllowsExternal(host))
}

// tlsName is the host name of ep, the SNI and certificate name of TLS to it (AutoHostSni): the
// externalTarget's host when that is a name (the target answers for itself), else tailscaleFQDN.
func tlsName(ep endpointset.Endpoint) string {
	if host, _, err := net.SplitHostPort(ep.ExternalTarget); err == nil && net.ParseIP(host) == nil {
		return strings.TrimSuffix(host, ".")
	}
	return strings.TrimSuffix(ep.FQDN, ".")
}

// locality is one group of hosts: the endpoints of one object reached through one backendRef.
type locality struct {
	name     string // sub-zone: "<Kind>/<namespace>/<name>"
	weight   uint32
	priority uint32
	hosts    []*endpointv3.LbEndpoint
}

// LoadAssignment computes the load assignment of cluster from the refs of its rule. Objects that
// do not exist (yet) contribute nothing. Each object reached through a ref is a locality (sub-zone
// "<Kind>/<namespace>/<name>") weighted by the ref's weight, times the object's weight under the
// weighted strategy; failover tiers are priorities, the active tier first.
func LoadAssignment(cluster string, refs []backends.Ref, src Source, addr Addresser) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	var locs []locality
	failover := false
	for _, ref := range refs {
		if ref.Weight == 0 {
			continue
		}
		switch ref.Kind {
		case backends.KindEndpoints:
			if eps, ok := src.TailscaleEndpoints(ref.Namespace, ref.Name); ok {
				locs = append(locs, endpointsLocality(eps, ref.Port, ref.Weight, 0, src, addr))
			}
		case backends.KindServices:
			if svc, ok := src.TailscaleServices(ref.Namespace, ref.Name); ok {
				l, fo := servicesLocalities(svc, ref, src, addr)
				locs = append(locs, l...)
				failover = failover || fo
			}
		}
	}
	// Priorities must be contiguous from 0: renumber the ones in use.
	var used []uint32
	for _, l := range locs {
		if len(l.hosts) > 0 && !slices.Contains(used, l.priority) {
			used = append(used, l.priority)
		}
	}
	slices.Sort(used)
	for _, l := range locs {
		if len(l.hosts) == 0 {
			continue
		}
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: "tailscale", SubZone: l.name},
			LbEndpoints:         l.hosts,
			LoadBalancingWeight: wrapperspb.UInt32(l.weight),
			Priority:            uint32(slices.Index(used, l.priority)),
		})
	}
	if failover {
		cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(strictFailoverFactor)}
	}
	return cla
}

// endpointsLocality is the locality of eps: its TCP endpoints on port, or all when none listens
// on it (or port is zero).
func endpointsLocality(eps *v1alpha1.TailscaleEndpoints, port int32, weight, priority uint32, src Source, addr Addresser) locality {
	matching := endpointset.OnPort(endpointset.Of(eps), port)
	l := locality{name: backends.KindEndpoints + "/" + eps.Namespace + "/" + eps.Name, weight: weight, priority: priority}
	for _, ep := range matching {
		if ep.Protocol == v1alpha1.ProtocolUDP || !targetAllowed(src, eps, ep) {
			continue // HTTPRoute traffic is TCP
		}
		host, p, ok := addr.Address(eps, ep)
		if !ok {
			continue
		}
		h := lbEndpoint(host, p, tlsName(ep), ep.Health)
		h.Metadata = backends.UpstreamMetadata(backends.UpstreamMatch(eps.Namespace, eps.Name, ep))
		backends.AddEndpointMetadata(h.Metadata, ep.Metadata)
		l.hosts = append(l.hosts, h)
	}
	return l
}

// servicesLocalities are the localities of the TailscaleEndpoints svc selects and of its
// external services; failover reports whether svc uses the failover strategy.
func servicesLocalities(svc *v1alpha1.TailscaleServices, ref backends.Ref, src Source, addr Addresser) (locs []locality, failover bool) {
	lb := svc.Spec.LoadBalancing
	strategy := v1alpha1.StrategyRoundRobin
	if lb != nil && lb.Strategy != "" {
		strategy = lb.Strategy
	}
	weightOf := func(name string, own *int32) uint32 {
		w := uint32(1)
		if own != nil {
			w = uint32(max(*own, 0))
		}
		if strategy == v1alpha1.StrategyWeighted && lb != nil {
			if v, ok := lb.Weights[name]; ok {
				w = uint32(max(v, 0))
			}
		}
		return w * ref.Weight
	}
	priorityOf := tierPriorities(svc, strategy)
	failover = strategy == v1alpha1.StrategyFailover

	if sel, err := metav1.LabelSelectorAsSelector(svc.Spec.Selector); err == nil && svc.Spec.Selector != nil {
		for _, eps := range src.SelectEndpoints(svc.Namespace, sel) {
			w := weightOf(eps.Name, nil)
			prio, inTier := priorityOf(eps.Name)
			if w == 0 || !inTier {
				continue
			}
			locs = append(locs, endpointsLocality(eps, ref.Port, w, prio, src, addr))
		}
	}
	if sd := svc.Spec.ServiceDiscovery; sd != nil {
		for _, ext := range sd.ExternalServices {
			w := weightOf(ext.Name, ext.Weight)
			prio, inTier := priorityOf(ext.Name)
			// EDS hosts are IP addresses: Envoy rejects a load assignment holding a hostname.
			if w == 0 || !inTier || ext.Protocol == v1alpha1.ProtocolUDP || net.ParseIP(ext.Address) == nil || !(tenancy.GeneratedByGateway(svc) || src.AllowsExternal(ext.Address)) {
				continue
			}
			locs = append(locs, locality{
				name: "ExternalService/" + svc.Namespace + "/" + svc.Name + "/" + ext.Name, weight: w, priority: prio,
				// External services are not probed: Envoy treats UNKNOWN as healthy.
				hosts: []*endpointv3.LbEndpoint{externalEndpoint(ext)},
			})
		}
	}
	// Tailscale Services discovered by vipServiceSelector: their VIPs are tailnet addresses, which
	// only an Envoy that routes the tailnet itself (Direct) reaches. Through proxies they are
	// backends of the object's own Service (the proxy hosting it dials them), not of EDS.
	if _, direct := addr.(Direct); direct {
		for _, d := range svc.Status.DiscoveredVIPServices {
			name := strings.TrimPrefix(d.Name, "svc:") // weights and tiers name it by its label
			w := weightOf(name, nil)
			prio, inTier := priorityOf(name)
			if w == 0 || !inTier {
				continue
			}
			l := locality{name: "VIPService/" + svc.Namespace + "/" + svc.Name + "/" + d.Name, weight: w, priority: prio}
			for _, p := range endpointset.ServicePorts(d.Ports, ref.Port) {
				for _, a := range d.Addresses {
					if net.ParseIP(a) != nil && endpointset.IsTailnetHost(a) {
						l.hosts = append(l.hosts, lbEndpoint(a, uint32(p), strings.TrimSuffix(d.DNSName, "."), livestatus.Unknown))
					}
				}
			}
			locs = append(locs, l)
		}
	}
	return locs, failover
}

// tierPriorities maps a backend name to its priority and whether it takes part: under the
// failover strategy the active tier (status.loadBalancingStatus.failoverStatus.activeTier, primary
// when unset) is priority 0 and the other tier 1, tiers as livestatus.FailoverTier places them (a
// backend in neither tier, when secondaryEndpoints is set, takes no part). Other strategies put
// everything at priority 0.
func tierPriorities(svc *v1alpha1.TailscaleServices, strategy v1alpha1.LoadBalancingStrategy) func(string) (uint32, bool) {
	lb := svc.Spec.LoadBalancing
	if strategy != v1alpha1.StrategyFailover || lb == nil || lb.FailoverConfig == nil || len(lb.FailoverConfig.PrimaryEndpoints) == 0 {
		return func(string) (uint32, bool) { return 0, true }
	}
	active := livestatus.TierPrimary
	if ls := svc.Status.LoadBalancingStatus; ls != nil && ls.FailoverStatus != nil && ls.FailoverStatus.ActiveTier == livestatus.TierSecondary {
		active = livestatus.TierSecondary
	}
	fc := lb.FailoverConfig
	return func(name string) (uint32, bool) {
		switch livestatus.FailoverTier(fc.PrimaryEndpoints, fc.SecondaryEndpoints, name) {
		case "":
			return 0, false
		case active:
			return 0, true
		}
		return 1, true
	}
}

// externalEndpoint is the host of an external service: verified against the system CAs when it
// speaks HTTPS or TLS (it has no tailnet name: its address is the SNI-less target).
func externalEndpoint(ext v1alpha1.ExternalService) *endpointv3.LbEndpoint {
	h := lbEndpoint(ext.Address, uint32(ext.Port), "", livestatus.Unknown)
	h.Metadata = backends.UpstreamMetadata(backends.UpstreamMatch("", "", endpointset.Endpoint{Protocol: ext.Protocol}))
	return h
}

func lbEndpoint(host string, port uint32, hostname, health string) *endpointv3.LbEndpoint {
	status := corev3.HealthStatus_UNKNOWN
	switch health {
	case livestatus.Healthy:
		status = corev3.HealthStatus_HEALTHY
	case livestatus.Unhealthy:
		status = corev3.HealthStatus_UNHEALTHY
	}
	return &endpointv3.LbEndpoint{
		HealthStatus: status,
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Hostname: hostname,
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       host,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
	}
}
