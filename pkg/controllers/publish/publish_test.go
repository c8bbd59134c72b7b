package publish

import (
	"fmt"
	"maps"
	"net/netip"
	slices0 "slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

func TestDesired(t *testing.T) {
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "t", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "primary", TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "replica", TailscaleIP: "100.64.0.2", TailscaleFQDN: "b.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "dns", TailscaleIP: "100.64.0.3", TailscaleFQDN: "c.ts.net", Port: 53, Protocol: v1alpha1.ProtocolUDP},
		}},
		Status: v1alpha1.TailscaleEndpointsStatus{Endpoints: []v1alpha1.EndpointStatus{{Name: "replica", Status: livestatus.Unhealthy}}}}
	owner := Owner{Kind: KindEndpoints, Namespace: "ns", Name: "db", UID: "u"}
	// Not allocated yet: nothing published.
	if svc, slices := Desired(owner, []*v1alpha1.TailscaleEndpoints{eps}, StaticAddress(netip.MustParseAddr("10.0.0.9"))); len(svc.Spec.Ports) != 0 || len(slices) != 0 {
		t.Fatalf("published before allocation: %v, %d slices", svc.Spec.Ports, len(slices))
	}
	egressalloc.New(egressalloc.Options{}).Allocate("shared", eps)
	_, recorded := ports.Recorded(eps)
	svc, slices := Desired(owner, []*v1alpha1.TailscaleEndpoints{eps}, StaticAddress(netip.MustParseAddr("10.0.0.9")))
	if svc.Name != "ts-ep-db" || len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Name != "tcp-5432" || svc.Spec.Ports[1].Name != "udp-53" ||
		svc.Spec.Selector != nil || svc.OwnerReferences[0].Kind != KindEndpoints {
		t.Fatalf("service: %+v", svc)
	}
	if len(slices) != 3 {
		t.Fatalf("%d slices", len(slices))
	}
	for _, s := range slices {
		ep := s.Name[strings.LastIndex(s.Name, "-")+1:]
		want := map[string]int32{"primary": 5432, "replica": 5432, "dns": 53}[ep]
		wantPort := recorded[ports.Key{Endpoint: ep, Port: want, UDP: ep == "dns"}]
		if got := *s.Ports[0].Port; got != wantPort || got == 0 {
			t.Errorf("%s: port %d, want the recorded %d", s.Name, got, wantPort)
		}
		if s.Endpoints[0].Addresses[0] != "10.0.0.9" || *s.Endpoints[0].Conditions.Ready != (ep != "replica") {
			t.Errorf("%s: %+v", s.Name, s.Endpoints[0])
		}
		if s.Labels["kubernetes.io/service-name"] != "ts-ep-db" || s.Labels["endpointslice.kubernetes.io/managed-by"] != SliceManager {
			t.Errorf("%s labels %v", s.Name, s.Labels)
		}
	}
	if n := ServiceName(KindServices, strings.Repeat("x", 80)); len(n) > 63 || !strings.HasPrefix(n, "ts-svc-") {
		t.Fatalf("long name %q", n)
	}
	// Nothing to publish: no ports.
	svc, slices = Desired(Owner{Kind: KindServices, Namespace: "ns", Name: "none"}, nil, StaticAddress(netip.MustParseAddr("::1")))
	if len(svc.Spec.Ports) != 0 || len(slices) != 0 {
		t.Fatalf("empty: %+v %d", svc.Spec.Ports, len(slices))
	}
}

// byName addresses the TailscaleEndpoints it names.
type byName map[string]netip.Addr

func (b byName) ProxyAddress(obj *v1alpha1.TailscaleEndpoints) (netip.Addr, bool) {
	a, ok := b[obj.Name]
	return a, ok
}

// TestDesiredPerMember publishes the members of a TailscaleServices each at its own proxy, and
// leaves out a member no proxy serves.
func TestDesiredPerMember(t *testing.T) {
	member := func(name, ip string, port int32) *v1alpha1.TailscaleEndpoints {
		return &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "t", Endpoints: []v1alpha1.TailscaleEndpoint{
				{Name: "e", TailscaleIP: ip, TailscaleFQDN: name + ".ts.net", Port: port, Protocol: v1alpha1.ProtocolTCP}}}}
	}
	members := []*v1alpha1.TailscaleEndpoints{member("a", "100.64.0.1", 80), member("b", "100.64.0.2", 80), member("c", "100.64.0.3", 8080)}
	egressalloc.New(egressalloc.Options{}).Allocate("shared", members...)
	proxies := byName{"a": netip.MustParseAddr("10.96.0.1"), "b": netip.MustParseAddr("fd00::2")}
	svc, slices := Desired(Owner{Kind: KindServices, Namespace: "ns", Name: "web", UID: "u"}, members, proxies)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "tcp-80" {
		t.Fatalf("ports %+v: want only tcp-80 (c has no proxy)", svc.Spec.Ports)
	}
	got := map[string]string{}
	for _, s := range slices {
		got[s.Endpoints[0].Addresses[0]] = string(s.AddressType)
		m := members[slices0.IndexFunc(members, func(m *v1alpha1.TailscaleEndpoints) bool { return m.Name == strings.Split(s.Name, "-")[3] })]
		if _, recorded := ports.Recorded(m); *s.Ports[0].Port != recorded[ports.Key{Endpoint: "e", Port: 80}] {
			t.Errorf("%s: port %d", s.Name, *s.Ports[0].Port)
		}
	}
	if len(slices) != 2 || got["10.96.0.1"] != "IPv4" || got["fd00::2"] != "IPv6" {
		t.Fatalf("slices at %v, want a at 10.96.0.1 and b at fd00::2", got)
	}
}

func TestDesiredBackends(t *testing.T) {
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db", UID: "u"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "t", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "primary", TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "replica", TailscaleIP: "100.64.0.2", TailscaleFQDN: "b.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "dns", TailscaleIP: "100.64.0.3", TailscaleFQDN: "c.ts.net", Port: 53, Protocol: v1alpha1.ProtocolUDP},
			{Name: "rpc", TailscaleIP: "100.64.0.4", TailscaleFQDN: "d.ts.net", Port: 50051, Protocol: v1alpha1.ProtocolGRPC},
		}},
		Status: v1alpha1.TailscaleEndpointsStatus{Endpoints: []v1alpha1.EndpointStatus{
			{Name: "replica", Status: livestatus.Unhealthy}, {Name: "dns", Status: livestatus.Unhealthy}}}}
	owner := Owner{Kind: KindEndpoints, Namespace: "ns", Name: "db", UID: "u"}
	egressalloc.New(egressalloc.Options{}).Allocate("shared", eps)
	_, recorded := ports.Recorded(eps)
	bs, err := DesiredBackends(owner, []*v1alpha1.TailscaleEndpoints{eps}, StaticAddress(netip.MustParseAddr("10.0.0.9")))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range bs {
		if b.GetKind() != "Backend" || b.GetAPIVersion() != "gateway.envoyproxy.io/v1alpha1" || b.GetOwnerReferences()[0].UID != "u" ||
			b.GetLabels()[LabelObject] != "db" {
			t.Errorf("%s: %v", b.GetName(), b.Object)
		}
		eps, _, _ := unstructured.NestedSlice(b.Object, "spec", "endpoints")
		protos, _, _ := unstructured.NestedStringSlice(b.Object, "spec", "appProtocols")
		got[b.GetName()] = fmt.Sprint(eps, protos)
	}
	at := func(ep string, port int32) string {
		return fmt.Sprintf("map[ip:map[address:10.0.0.9 port:%d]]", recorded[ports.Key{Endpoint: ep, Port: port, UDP: ep == "dns"}])
	}
	want := map[string]string{
		// The replica is Unhealthy: left out.
		"ts-ep-db-tcp-5432": "[" + at("primary", 5432) + "] []",
		// Every endpoint of the port Unhealthy: all listed (a Backend needs one).
		"ts-ep-db-udp-53": "[" + at("dns", 53) + "] []",
		// gRPC only: HTTP/2 without TLS.
		"ts-ep-db-tcp-50051": "[" + at("rpc", 50051) + "] [gateway.envoyproxy.io/h2c]",
	}
	if !maps.Equal(got, want) {
		t.Errorf("Backends:\n got %v\nwant %v", got, want)
	}
	if n := BackendName(KindServices, strings.Repeat("x", 80), "tcp-5432"); len(n) > 63 || !strings.HasPrefix(n, "ts-svc-") {
		t.Errorf("long name %q", n)
	}
}
