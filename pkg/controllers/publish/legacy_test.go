package publish

import (
	"context"
	"net/netip"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
)

// An EndpointSlice published by an earlier version (LegacySliceManager) is still ours: updated
// and relabelled in place rather than left stale beside a create that fails on its name.
func TestLegacySliceManagerStillRecognised(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db", UID: "u"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "t", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "primary", TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP}}}}
	egressalloc.New(egressalloc.Options{}).Allocate("shared", eps)
	svc, want := Desired(Owner{Kind: KindEndpoints, Namespace: "ns", Name: "db", UID: "u"}, []*v1alpha1.TailscaleEndpoints{eps},
		StaticAddress(netip.MustParseAddr("10.0.0.9")))
	svc.UID = "svc-uid"
	if len(want) != 1 {
		t.Fatalf("%d slices", len(want))
	}
	old := want[0].DeepCopy()
	old.Labels[discoveryv1.LabelManagedBy] = LegacySliceManager
	old.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}} // stale
	foreign := want[0].DeepCopy()
	foreign.Name += "-foreign"
	foreign.Labels[discoveryv1.LabelManagedBy] = "someone-else"
	kube := kubefake.NewSimpleClientset(svc, old, foreign)
	kubeFactory := NewKubeFactory(kube, 0)
	c := &Controller{kube: kube, kslices: kubeFactory.Discovery().V1().EndpointSlices().Lister()}
	kubeFactory.Discovery().V1().EndpointSlices().Informer()
	kubeFactory.Start(ctx.Done())
	kubeFactory.WaitForCacheSync(ctx.Done())

	if err := c.applySlices(ctx, svc, []*discoveryv1.EndpointSlice{want[0].DeepCopy()}); err != nil {
		t.Fatal(err)
	}
	got, err := kube.DiscoveryV1().EndpointSlices("ns").Get(ctx, old.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels[discoveryv1.LabelManagedBy] != SliceManager || len(got.Endpoints) != 1 || got.Endpoints[0].Addresses[0] != "10.0.0.9" {
		t.Fatalf("legacy slice not taken over: labels %v endpoints %+v", got.Labels, got.Endpoints)
	}
	if _, err := kube.DiscoveryV1().EndpointSlices("ns").Get(ctx, foreign.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("a slice another manager owns was touched: %v", err)
	}
}
