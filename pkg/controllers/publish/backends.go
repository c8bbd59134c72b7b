package publish

import (
	"cmp"
	"slices"
	"strings"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// BackendGVR is Envoy Gateway's Backend, published beside the Service when its CRD is served.
var BackendGVR = schema.GroupVersionResource{Group: egv1a1.GroupName, Version: "v1alpha1", Resource: "backends"}

// BackendName is the Backend published for one port of the Service of an object of kind named
// name: "<service>-<port name>", e.g. "ts-ep-db-tcp-5432".
func BackendName(kind, name, portName string) string {
	return cut(ServiceName(kind, name)+"-"+portName, 63)
}

// DesiredBackends returns Envoy Gateway Backends equivalent to what Desired publishes: one per
// port of the Service (a Backend has no ports of its own, so a route names the port by the
// Backend), with an IP endpoint at the proxy's egress listener of every endpoint on that port
// whose live status is not Unhealthy. A Backend needs at least one endpoint: when every
// endpoint of a port is Unhealthy, all of them are listed (connections then fail at the
// devices, as through a Service whose endpoints are all draining). A port whose endpoints are
// all gRPC gets appProtocol gateway.envoyproxy.io/h2c, so an HTTPRoute to it speaks HTTP/2 too.
func DesiredBackends(owner Owner, members []*v1alpha1.TailscaleEndpoints, proxies ProxyAddresser) ([]*unstructured.Unstructured, error) {
	byPort := map[string][]entry{}
	var order []string
	for _, e := range entriesOf(members, proxies) {
		if _, ok := byPort[e.portName]; !ok {
			order = append(order, e.portName)
		}
		byPort[e.portName] = append(byPort[e.portName], e)
	}
	slices.Sort(order)
	controller := true
	var out []*unstructured.Unstructured
	for _, portName := range order {
		all := byPort[portName]
		serving := slices.DeleteFunc(slices.Clone(all), func(e entry) bool { return !e.ready })
		if len(serving) == 0 {
			serving = all
		}
		b := &egv1a1.Backend{
			TypeMeta: metav1.TypeMeta{APIVersion: egv1a1.GroupVersion.String(), Kind: egv1a1.KindBackend},
			ObjectMeta: metav1.ObjectMeta{Name: BackendName(owner.Kind, owner.Name, portName), Namespace: owner.Namespace,
				Labels: map[string]string{LabelManagedBy: ManagedBy, LabelKind: owner.Kind, LabelObject: owner.Name},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: owner.Kind,
					Name: owner.Name, UID: types.UID(owner.UID), Controller: &controller}}},
		}
		b.Spec.Type = new(egv1a1.BackendTypeEndpoints) // the CRD's default, so that specs compare equal
		for _, e := range serving {
			b.Spec.Endpoints = append(b.Spec.Endpoints, egv1a1.BackendEndpoint{IP: &egv1a1.IPEndpoint{Address: e.proxy.String(), Port: e.egressPort}})
		}
		slices.SortFunc(b.Spec.Endpoints, func(x, y egv1a1.BackendEndpoint) int {
			return cmp.Or(strings.Compare(x.IP.Address, y.IP.Address), cmp.Compare(x.IP.Port, y.IP.Port))
		})
		if !slices.ContainsFunc(all, func(e entry) bool { return !e.grpc }) {
			b.Spec.AppProtocols = []egv1a1.AppProtocolType{egv1a1.AppProtocolTypeH2C}
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(b)
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{Object: obj}
		unstructured.RemoveNestedField(u.Object, "status")
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		out = append(out, u)
	}
	return out, nil
}
