package hook

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwlistersv1b1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
)

// Finding 4 (issue 20): a TailscaleGateway of namespace attacker naming the Gateway web/eg does not
// shape web's clusters (its circuitBreaker of maxConnections 0 would stop web's traffic), even
// when it is the oldest, unless a ReferenceGrant in web permits it; among permitted ones the
// oldest is bound, not the lister's order.
func TestCrossNamespaceTailscaleGatewayDoesNotShapeClusters(t *testing.T) {
	f := newFixture(t)
	grants := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	f.server.opts.Grants = &refgrant.Grants{Lister: gwlistersv1b1.NewReferenceGrantLister(grants)}
	if err := f.routes.Add(route(1)); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tsgw := func(ns, name string, age int, maxConnections int32) *v1alpha1.TailscaleGateway {
		return &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(base.Add(time.Duration(-age) * time.Hour))},
			Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "eg", Namespace: "web"},
				LoadBalancing: &v1alpha1.GatewayLoadBalancingConfig{CircuitBreaker: &v1alpha1.CircuitBreakerConfig{Enabled: true, MaxConnections: ptr.To(maxConnections)}}}}
	}
	maxConns := func() (uint32, bool) {
		c := f.modify(t, endpointsJSON(t, "web-east"))
		th := c.GetCircuitBreakers().GetThresholds()
		if len(th) == 0 || th[0].GetMaxConnections() == nil {
			return 0, false
		}
		return th[0].GetMaxConnections().GetValue(), true
	}
	if err := f.gateways.Add(tsgw("attacker", "steal", 10, 0)); err != nil {
		t.Fatal(err)
	}
	if n, ok := maxConns(); ok {
		t.Fatalf("without a ReferenceGrant the attacker's TailscaleGateway shaped web's cluster: maxConnections %d", n)
	}
	if err := f.gateways.Add(tsgw("web", "own", 1, 500)); err != nil {
		t.Fatal(err)
	}
	if err := f.gateways.Add(tsgw("web", "later", 0, 7)); err != nil {
		t.Fatal(err)
	}
	if n, ok := maxConns(); !ok || n != 500 {
		t.Fatalf("maxConnections %d (%v), want the oldest permitted TailscaleGateway's 500", n, ok)
	}
	if err := grants.Add(&gwapiv1b1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "let-attacker"}, Spec: gwapiv1b1.ReferenceGrantSpec{
		From: []gwapiv1b1.ReferenceGrantFrom{{Group: v1alpha1.GroupName, Kind: "TailscaleGateway", Namespace: "attacker"}},
		To:   []gwapiv1b1.ReferenceGrantTo{{Group: gwapiv1.GroupName, Kind: "Gateway", Name: ptr.To[gwapiv1.ObjectName]("eg")}}}}); err != nil {
		t.Fatal(err)
	}
	if n, ok := maxConns(); !ok || n != 0 {
		t.Fatalf("with a ReferenceGrant: maxConnections %d (%v), want the oldest (attacker's) 0", n, ok)
	}
}
