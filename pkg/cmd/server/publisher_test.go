package server

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
)

// A deployed proxy's Service is the only address of its object (none until it has a cluster
// IP); other objects get --backend-proxy-address.
func TestPublishedAddressPrecedence(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	static := netip.MustParseAddr("192.0.2.10")
	a := deployedOrStatic{deployed: &proxydeploy.ServiceAddresser{Services: corelisters.NewServiceLister(idx), Namespace: "tsgw"}, static: publish.StaticAddress(static)}
	withProxy := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "u1"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Proxy: &v1alpha1.ProxyConfig{ConnectionType: proxydeploy.Egress}}}
	if ip, ok := a.ProxyAddress(withProxy); ok {
		t.Fatalf("before its Service exists, a deployed object got %s", ip)
	}
	svc := proxydeploy.Service("tsgw", withProxy)
	svc.Spec.ClusterIP = "10.96.0.7"
	if err := idx.Add(svc); err != nil {
		t.Fatal(err)
	}
	if ip, ok := a.ProxyAddress(withProxy); !ok || ip.String() != "10.96.0.7" {
		t.Fatalf("deployed object: %s %v, want its Service's 10.96.0.7", ip, ok)
	}
	without := withProxy.DeepCopy()
	without.Spec.Proxy = nil
	if ip, ok := a.ProxyAddress(without); !ok || ip != static {
		t.Fatalf("object without a proxy: %s %v, want the flag's %s", ip, ok, static)
	}
	ingress := withProxy.DeepCopy()
	ingress.Spec.Proxy.ConnectionType = proxydeploy.Ingress
	if ip, ok := a.ProxyAddress(ingress); !ok || ip != static {
		t.Fatalf("ingress-only proxy: %s %v, want the flag's %s", ip, ok, static)
	}
	if ip, ok := (deployedOrStatic{deployed: a.deployed}).ProxyAddress(without); ok {
		t.Fatalf("without the flag an object without a proxy got %s", ip)
	}
}
