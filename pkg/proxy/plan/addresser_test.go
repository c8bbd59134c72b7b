package plan

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

// The extension's proxy mode points Envoy at the same port the proxy listens on.
func TestEgressAddresserMatchesTheProxysListeners(t *testing.T) {
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "backends", ResourceVersion: "7"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "web", TailscaleIP: "100.64.0.1", Port: 80, Protocol: v1alpha1.ProtocolHTTP},
			{Name: "dns", TailscaleIP: "100.64.0.2", Port: 53, Protocol: v1alpha1.ProtocolUDP},
		}},
		Status: v1alpha1.TailscaleEndpointsStatus{Endpoints: []v1alpha1.EndpointStatus{{Name: "found", Address: "100.64.0.9:22"}}},
	}
	a := &EgressAddresser{Host: "10.96.0.20"}
	if _, _, ok := a.Address(obj, endpointset.Of(obj)[0]); ok {
		t.Fatal("an endpoint without an allocated port has an address")
	}
	egressalloc.New(egressalloc.Options{}).Allocate("p", obj)
	obj.ResourceVersion = "8"
	_, recorded := ports.Recorded(obj)
	listeners, _, _ := EgressOf([]*v1alpha1.TailscaleEndpoints{obj})
	for _, ep := range endpointset.Of(obj) {
		host, port, ok := a.Address(obj, ep)
		if ep.Protocol == v1alpha1.ProtocolUDP {
			if ok {
				t.Errorf("%s: a UDP endpoint has no TCP listener for Envoy, got %s:%d", ep.Name, host, port)
			}
			continue
		}
		want := recorded[ports.Key{Endpoint: ep.Name, Port: ep.Port}]
		if !ok || host != "10.96.0.20" || int32(port) != want {
			t.Errorf("%s: Address = %s:%d %v, want 10.96.0.20:%d", ep.Name, host, port, ok, want)
		}
		found := false
		for _, l := range listeners {
			found = found || (l.Key == "ns/backends/"+ep.Name && l.Port == int32(port) && l.Network == "tcp")
		}
		if !found {
			t.Errorf("%s: no proxy listener on port %d: %v", ep.Name, port, listeners)
		}
	}
}
