package publish

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// The controller creates an object's Backends, updates them when an endpoint's health changes,
// deletes those of ports that are gone and leaves a Backend of a taken name alone.
func TestApplyBackends(t *testing.T) {
	ctx := context.Background()
	foreign := &unstructured.Unstructured{}
	foreign.SetAPIVersion("gateway.envoyproxy.io/v1alpha1")
	foreign.SetKind("Backend")
	foreign.SetNamespace("ns")
	foreign.SetName("ts-ep-db-udp-53")
	foreign.SetLabels(map[string]string{LabelManagedBy: ManagedBy, LabelKind: KindEndpoints, LabelObject: "db"})
	_ = unstructured.SetNestedField(foreign.Object, "someone else's", "spec", "note")
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{BackendGVR: "BackendList"}, foreign)
	rec := record.NewFakeRecorder(10)
	c := &Controller{dyn: dyn, proxy: StaticAddress(netip.MustParseAddr("10.0.0.9")), recorder: rec}
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db", UID: "u"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "t", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "primary", TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "replica", TailscaleIP: "100.64.0.2", TailscaleFQDN: "b.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "dns", TailscaleIP: "100.64.0.3", TailscaleFQDN: "c.ts.net", Port: 53, Protocol: v1alpha1.ProtocolUDP},
		}}}
	egressalloc.New(egressalloc.Options{}).Allocate("shared", eps)
	owner := Owner{Kind: KindEndpoints, Namespace: "ns", Name: "db", UID: "u"}
	client := dyn.Resource(BackendGVR).Namespace("ns")
	endpointsOf := func(name string) int {
		t.Helper()
		b, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eps, _, _ := unstructured.NestedSlice(b.Object, "spec", "endpoints")
		return len(eps)
	}

	if err := c.applyBackends(ctx, owner, eps, []*v1alpha1.TailscaleEndpoints{eps}); err != nil {
		t.Fatal(err)
	}
	if n := endpointsOf("ts-ep-db-tcp-5432"); n != 2 {
		t.Fatalf("tcp-5432 has %d endpoints, want 2", n)
	}
	if note, _, _ := unstructured.NestedString(mustGet(t, client, "ts-ep-db-udp-53").Object, "spec", "note"); note != "someone else's" {
		t.Errorf("the foreign Backend was changed")
	}
	if ev := <-rec.Events; !strings.Contains(ev, EventBackendNameTaken) {
		t.Errorf("event %q", ev)
	}

	eps.Status.Endpoints = []v1alpha1.EndpointStatus{{Name: "replica", Status: livestatus.Unhealthy}}
	if err := c.applyBackends(ctx, owner, eps, []*v1alpha1.TailscaleEndpoints{eps}); err != nil {
		t.Fatal(err)
	}
	if n := endpointsOf("ts-ep-db-tcp-5432"); n != 1 {
		t.Fatalf("tcp-5432 has %d endpoints with the replica Unhealthy, want 1", n)
	}

	eps.Spec.Endpoints = eps.Spec.Endpoints[2:] // only dns: tcp-5432 goes
	if err := c.applyBackends(ctx, owner, eps, []*v1alpha1.TailscaleEndpoints{eps}); err != nil {
		t.Fatal(err)
	}
	list, err := client.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range list.Items {
		names = append(names, b.GetName())
	}
	if !slices.Equal(names, []string{"ts-ep-db-udp-53"}) {
		t.Errorf("Backends left: %v, want only the foreign one", names)
	}
}

func mustGet(t *testing.T, client dynamic.ResourceInterface, name string) *unstructured.Unstructured {
	t.Helper()
	b, err := client.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
