package proxydeploy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

func TestServiceAddresser(t *testing.T) {
	obj := testEndpoints(Bidirectional, 1)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	a := &ServiceAddresser{Services: corelisters.NewServiceLister(idx), Direct: eds.Direct{}}
	ep := endpointset.Of(obj)[0] // api, TCP 8080

	// No Service yet: the tailnet address.
	if host, port, ok := a.Address(obj, ep); !ok || host != "100.64.0.7" || port != 8080 {
		t.Fatalf("without a Service: %s:%d %v", host, port, ok)
	}
	svc := Service(obj)
	svc.Spec.ClusterIP = "10.96.0.12"
	if err := idx.Add(svc); err != nil {
		t.Fatal(err)
	}
	want := uint32(ports.EgressPort("backends", "api", 8080))
	if host, port, ok := a.Address(obj, ep); !ok || host != "10.96.0.12" || port != want {
		t.Fatalf("with the Service: %s:%d %v, want 10.96.0.12:%d", host, port, ok, want)
	}
	// A Service of that name owned by another object (an earlier one of the same name) is not used.
	other := obj.DeepCopy()
	other.UID = "another"
	if host, _, _ := a.Address(other, ep); host != "100.64.0.7" {
		t.Fatalf("a Service owned by another object was used: %s", host)
	}
	// An ingress-only proxy has no egress listeners.
	ingress := testEndpoints(Ingress, 1)
	if host, _, _ := a.Address(ingress, ep); host != "100.64.0.7" {
		t.Fatalf("an ingress-only proxy's Service was used: %s", host)
	}
	// The UDP endpoint has its own port; both are on the Service.
	udp := endpointset.Of(obj)[1]
	if _, port, ok := a.Address(obj, udp); ok {
		t.Fatalf("a UDP endpoint got an EDS address %d (Envoy's clusters here are TCP)", port)
	}
}

func TestMetricsTargets(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	pod := func(name, ip string, phase corev1.PodPhase, lbls map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, Labels: lbls},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
	}
	ours := selectorOf(testEndpoints(Egress, 1))
	for _, p := range []*corev1.Pod{
		pod("backends-proxy-0", "10.0.0.5", corev1.PodRunning, ours),
		pod("backends-proxy-1", "", corev1.PodPending, ours),
		pod("backends-proxy-2", "10.0.0.6", corev1.PodFailed, ours),
		pod("unrelated", "10.0.0.7", corev1.PodRunning, map[string]string{"app": "x"}),
	} {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	got := MetricsTargets(corelisters.NewPodLister(idx))
	if len(got) != 1 || got[0].Key != "web/backends-proxy-0" || got[0].URL != "http://10.0.0.5:9090/metrics" {
		t.Fatalf("targets %v", got)
	}
}

func TestServiceAddresserProxyAddress(t *testing.T) {
	obj := testEndpoints(Egress, 1)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	a := &ServiceAddresser{Services: corelisters.NewServiceLister(idx)}
	if ip, ok := a.ProxyAddress(obj); ok {
		t.Fatalf("without a Service: %s", ip)
	}
	svc := Service(obj)
	svc.Spec.ClusterIP = "10.96.0.12"
	if err := idx.Add(svc); err != nil {
		t.Fatal(err)
	}
	if ip, ok := a.ProxyAddress(obj); !ok || ip.String() != "10.96.0.12" {
		t.Fatalf("with the Service: %s %v", ip, ok)
	}
	other := obj.DeepCopy()
	other.UID = "another"
	if ip, ok := a.ProxyAddress(other); ok {
		t.Fatalf("a Service owned by another object was used: %s", ip)
	}
	noProxy := obj.DeepCopy()
	noProxy.Spec.Proxy = nil
	if ip, ok := a.ProxyAddress(noProxy); ok {
		t.Fatalf("an object without spec.proxy got its old Service's address %s", ip)
	}
}
