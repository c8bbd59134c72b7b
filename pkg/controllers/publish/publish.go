// Package publish gives every TailscaleEndpoints and TailscaleServices a backend that Envoy
// Gateway accepts from any route kind: a Service without a selector and EndpointSlices pointing
// at tailscale-gateway-proxy's egress listener of each endpoint. Envoy Gateway v1.9 passes
// custom backendRefs to the extension from HTTPRoutes only (it drops them from GRPCRoute and
// refuses them in TCPRoute, TLSRoute and UDPRoute), so those routes name the published Service.
//
// Names: TailscaleEndpoints <name> publishes Service "ts-ep-<name>", TailscaleServices <name>
// "ts-svc-<name>", in the object's namespace (cut to 63 characters with a hash when longer).
// The Service has one port per distinct (protocol, port) of the endpoints, named
// "<tcp|udp>-<port>" with that port number, so a route's backendRef port is the endpoint's own
// port. Each endpoint is one EndpointSlice (its egress port differs from the others'): address
// the proxy's, port the endpoint's egress port recorded in the object's status (pkg/proxy/ports;
// an endpoint without one is not published yet), conditions.ready false while its live status
// is Unhealthy.
package publish

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
)

// Labels and the managed-by value of published objects.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "tailscale-gateway"
	// SliceManager is the EndpointSlices' endpointslice.kubernetes.io/managed-by: not the
	// endpointslice controller's, which leaves them alone. LegacySliceManager, the value of
	// earlier versions, still marks slices as ours; the controller relabels them.
	SliceManager       = "publish.gateway.tailscale.com"
	LegacySliceManager = "publish.tailscale-gateway.com"
	// LabelKind and LabelObject name the published object.
	LabelKind   = "gateway.tailscale.com/backend-kind"
	LabelObject = "gateway.tailscale.com/backend-name"
)

// ProxyAddresser answers at which IP address the egress listeners of obj's endpoints are
// reachable from Envoy: a fixed address (a proxy run by hand, a flag) or the cluster IP of the
// proxy Service a deploying controller created for obj (proxydeploy.ServiceAddresser). ok is
// false when obj's endpoints are reachable through no proxy known to it.
type ProxyAddresser interface {
	ProxyAddress(obj *v1alpha1.TailscaleEndpoints) (addr netip.Addr, ok bool)
}

// StaticAddress is one proxy address for every TailscaleEndpoints.
type StaticAddress netip.Addr

// ProxyAddress returns the address.
func (s StaticAddress) ProxyAddress(*v1alpha1.TailscaleEndpoints) (netip.Addr, bool) {
	a := netip.Addr(s)
	return a, a.IsValid()
}

// ServiceName is the published Service of an object of kind (TailscaleEndpoints or
// TailscaleServices) named name.
func ServiceName(kind, name string) string {
	prefix := "ts-ep-"
	if kind == "TailscaleServices" {
		prefix = "ts-svc-"
	}
	return cut(prefix+name, 63)
}

func cut(name string, n int) string {
	if len(name) <= n {
		return name
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return strings.TrimRight(name[:n-9], "-.") + "-" + strconv.FormatUint(uint64(h.Sum32()), 16)
}

// Owner is the object a Service is published for.
type Owner struct {
	Kind      string
	Namespace string
	Name      string
	UID       string
}

// Desired returns the Service and EndpointSlices of owner, whose endpoints are those of members
// (the TailscaleEndpoints itself, or those a TailscaleServices selects), each member's reached
// at the address proxy gives for it. A member proxy has no address for contributes nothing.
func Desired(owner Owner, members []*v1alpha1.TailscaleEndpoints, proxies ProxyAddresser) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	name := ServiceName(owner.Kind, owner.Name)
	controller := true
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: owner.Namespace,
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelKind: owner.Kind, LabelObject: owner.Name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: owner.Kind,
				Name: owner.Name, UID: types.UID(owner.UID), Controller: &controller}}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	seenPort := map[string]bool{}
	var published []*discoveryv1.EndpointSlice
	for _, e := range entriesOf(members, proxies) {
		if !seenPort[e.portName] {
			seenPort[e.portName] = true
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: e.portName, Protocol: e.protocol,
				Port: e.port, TargetPort: intstr.FromInt32(e.port)})
		}
		addrType := discoveryv1.AddressTypeIPv4
		if e.proxy.Is6() {
			addrType = discoveryv1.AddressTypeIPv6
		}
		ready := e.ready
		pn, pp, egressPort := e.portName, e.protocol, e.egressPort
		published = append(published, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: cut(name+"-"+e.member+"-"+e.endpoint, 253), Namespace: owner.Namespace,
				Labels: map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: SliceManager,
					LabelManagedBy: ManagedBy}},
			AddressType: addrType,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{e.proxy.String()},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready}}},
			Ports: []discoveryv1.EndpointPort{{Name: &pn, Protocol: &pp, Port: &egressPort}},
		})
	}
	slices.SortFunc(svc.Spec.Ports, func(a, b corev1.ServicePort) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(published, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return svc, published
}

// entry is one endpoint of a member as published: the proxy's egress listener for it.
type entry struct {
	member, endpoint string
	portName         string // "<tcp|udp>-<endpoint port>"
	protocol         corev1.Protocol
	port             int32 // the endpoint's own port
	proxy            netip.Addr
	egressPort       int32
	ready            bool // its live status is not Unhealthy
	grpc             bool
}

// entriesOf returns the published endpoints of members, in the order of plan.EgressOf per member.
func entriesOf(members []*v1alpha1.TailscaleEndpoints, proxies ProxyAddresser) []entry {
	var out []entry
	for _, m := range members {
		proxy, ok := proxies.ProxyAddress(m)
		if !ok {
			continue
		}
		eps := map[string]endpointset.Endpoint{}
		for _, ep := range endpointset.Of(m) {
			eps[ep.Name] = ep
		}
		egress, _, _ := plan.EgressOf([]*v1alpha1.TailscaleEndpoints{m})
		for _, e := range egress {
			ep := eps[strings.TrimPrefix(e.Key, m.Namespace+"/"+m.Name+"/")]
			protocol := corev1.ProtocolTCP
			if e.Network == "udp" {
				protocol = corev1.ProtocolUDP
			}
			out = append(out, entry{member: m.Name, endpoint: ep.Name,
				portName: strings.ToLower(string(protocol)) + "-" + strconv.Itoa(int(ep.Port)), protocol: protocol, port: ep.Port,
				proxy: proxy, egressPort: e.Port, ready: ep.Health != livestatus.Unhealthy, grpc: ep.Protocol == v1alpha1.ProtocolGRPC})
		}
	}
	return out
}
