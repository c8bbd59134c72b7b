package ports

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

func TestEgressPortIsTheEarlierDerivation(t *testing.T) {
	// Golden values: the ports earlier versions listened on, which the allocator offers first.
	golden := []struct {
		object, endpoint string
		port             int32
		want             int32
	}{
		{"backends", "web", 80, 14438},
		{"backends", "db", 5432, 16116},
		{"simulated-devices", "api-http", 80, 14664},
	}
	for _, g := range golden {
		if got := EgressPort(g.object, g.endpoint, g.port); got != g.want {
			t.Errorf("EgressPort(%q, %q, %d) = %d, want %d", g.object, g.endpoint, g.port, got, g.want)
		}
	}
}

func TestRecordedReadsTheStatusOnly(t *testing.T) {
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "web", TailscaleIP: "100.64.0.1", Port: 80},
			{Name: "dns", TailscaleIP: "100.64.0.2", Port: 53, Protocol: v1alpha1.ProtocolUDP},
			{Name: "noaddr", Port: 81},
		}}}
	if proxy, got := Recorded(obj); proxy != "" || len(got) != 0 {
		t.Fatalf("before any allocation: %q %v", proxy, got)
	}
	want := []Want{{Key{"web", 80, false}, "100.64.0.1:80"}, {Key{"dns", 53, true}, "100.64.0.2:53"}}
	if got := Wanted(obj); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Wanted = %v, want %v", got, want)
	}
	obj.Status.Egress = &v1alpha1.EgressAllocation{Proxy: "p", Ports: []v1alpha1.EgressPort{
		{Endpoint: "web", Protocol: v1alpha1.ProtocolTCP, Port: 80, ListenerPort: 20000},
		{Endpoint: "dns", Protocol: v1alpha1.ProtocolUDP, Port: 53, ListenerPort: 20000},
		{Endpoint: "bad", Protocol: v1alpha1.ProtocolTCP, Port: 1, ListenerPort: 80}, // outside the range
	}}
	proxy, got := Recorded(obj)
	if proxy != "p" || len(got) != 2 || got[Key{"web", 80, false}] != 20000 || got[Key{"dns", 53, true}] != 20000 {
		t.Errorf("Recorded = %q %v", proxy, got)
	}
}

func TestAssignLeavesOutPendingAndConflictsIndependentlyOfOrder(t *testing.T) {
	a := Endpoint{Object: "ns/a", Key: Key{Endpoint: "x", Port: 80}}
	b := Endpoint{Object: "ns/b", Key: Key{Endpoint: "x", Port: 80}}
	udp := Endpoint{Object: "ns/b", Key: Key{Endpoint: "u", Port: 53, UDP: true}}
	none := Endpoint{Object: "ns/c", Key: Key{Endpoint: "x", Port: 80}}
	recorded := map[Endpoint]int32{a: 20000, b: 20000, udp: 20000}
	lookup := func(e Endpoint) (int32, bool) { p, ok := recorded[e]; return p, ok }
	for _, order := range [][]Endpoint{{a, b, udp, none}, {none, udp, b, a}} {
		got, pending, conflicts := Assign(order, lookup)
		if len(got) != 2 || got[a] != 20000 || got[udp] != 20000 {
			t.Errorf("Assign(%v) = %v", order, got)
		}
		if len(pending) != 1 || pending[0] != none || len(conflicts) != 1 || conflicts[0] != b {
			t.Errorf("Assign(%v): pending %v, conflicts %v", order, pending, conflicts)
		}
	}
}
