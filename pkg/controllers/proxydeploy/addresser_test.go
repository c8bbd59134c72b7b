package proxydeploy

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

func TestServiceAddresser(t *testing.T) {
	obj := testEndpoints(Bidirectional, 1)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	a := &ServiceAddresser{Services: corelisters.NewServiceLister(idx), Namespace: installNS, Direct: eds.Direct{}}
	ep := endpointset.Of(obj)[0] // api, TCP 8080

	// No Service yet: the tailnet address.
	if host, port, ok := a.Address(obj, ep); !ok || host != "100.64.0.7" || port != 8080 {
		t.Fatalf("without a Service: %s:%d %v", host, port, ok)
	}
	svc := Service(installNS, obj)
	svc.Spec.ClusterIP = "10.96.0.12"
	if err := idx.Add(svc); err != nil {
		t.Fatal(err)
	}
	_, recorded := ports.Recorded(obj)
	want := uint32(recorded[ports.Key{Endpoint: "api", Port: 8080}])
	if host, port, ok := a.Address(obj, ep); !ok || host != "10.96.0.12" || port != want || want == 0 {
		t.Fatalf("with the Service: %s:%d %v, want 10.96.0.12:%d", host, port, ok, want)
	}
	// Not allocated yet: no address at all (not the tailnet's, not a port nothing listens on).
	pending := obj.DeepCopy()
	pending.Status.Egress, pending.ResourceVersion = nil, "pending"
	if host, port, ok := a.Address(pending, ep); ok {
		t.Fatalf("an endpoint without an egress port has the address %s:%d", host, port)
	}
	// The Service of that name in the tenant's namespace (where earlier versions kept it, or
	// one of the tenant's own) is not used.
	tenant := Service(obj.Namespace, obj)
	tenant.Name = LegacyNamesOf(obj.Name).Base
	tenant.Spec.ClusterIP = "10.96.0.66"
	if err := idx.Add(tenant); err != nil {
		t.Fatal(err)
	}
	if host, port, _ := a.Address(obj, ep); host != "10.96.0.12" || port != want {
		t.Fatalf("a Service in the tenant's namespace was used: %s:%d", host, port)
	}
	// A Service of that name kept for another object (an earlier one of the same name) is not used.
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

// TestMetricsTargets is also the regression test of the security review's finding 7: a pod
// labelled like a proxy, in another namespace or in the installation's, is not scraped unless
// the StatefulSet kept for its TailscaleEndpoints controls it; its counts reach only the
// TailscaleServices its proxy hosts, in the TailscaleEndpoints' namespace.
func TestMetricsTargets(t *testing.T) {
	index := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	pods, eps, svcs, sets := index(), index(), index(), index()
	obj := testEndpoints(Egress, 1)
	sts := StatefulSet(Config{Image: "proxy", Namespace: installNS}, Input{Endpoints: obj})
	sts.UID = "5e75"
	hosted := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: obj.Labels}, VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:web"}}}
	for _, add := range []func() error{func() error { return eps.Add(obj) }, func() error { return sets.Add(sts) }, func() error { return svcs.Add(hosted) }} {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(ns, name, ip string, phase corev1.PodPhase, lbls map[string]string, owner *appsv1.StatefulSet) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
		if owner != nil {
			p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}
		}
		return p
	}
	ours := selectorOf(obj)
	impostor := sts.DeepCopy()
	impostor.UID = "1mp0"
	for _, p := range []*corev1.Pod{
		pod(installNS, sts.Name+"-0", "10.0.0.5", corev1.PodRunning, ours, sts),
		pod(installNS, sts.Name+"-1", "", corev1.PodPending, ours, sts),
		pod(installNS, sts.Name+"-2", "10.0.0.6", corev1.PodFailed, ours, sts),
		pod(installNS, "unrelated", "10.0.0.7", corev1.PodRunning, map[string]string{"app": "x"}, nil),
		// Forged: the proxy's labels without its owner, or with another owner of the same name.
		pod(installNS, "forged-labels", "10.0.0.8", corev1.PodRunning, ours, nil),
		pod(installNS, "forged-owner", "10.0.0.9", corev1.PodRunning, ours, impostor),
		pod("web", sts.Name+"-0", "10.0.1.5", corev1.PodRunning, ours, nil),
		pod("attacker", sts.Name+"-0", "10.0.1.6", corev1.PodRunning, ours, nil),
	} {
		if err := pods.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	got := MetricsTargets(corelisters.NewPodLister(pods), Ownership{Endpoints: listers.NewTailscaleEndpointsLister(eps),
		Services: listers.NewTailscaleServicesLister(svcs), StatefulSets: appslisters.NewStatefulSetLister(sets)})
	if len(got) != 1 || got[0].Key != installNS+"/"+sts.Name+"-0" || got[0].URL != "http://10.0.0.5:9090/metrics" ||
		got[0].Namespace != "web" || len(got[0].Serves) != 1 || got[0].Serves[0] != "web" {
		t.Fatalf("targets %+v", got)
	}
}

func TestServiceAddresserProxyAddress(t *testing.T) {
	obj := testEndpoints(Egress, 1)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	a := &ServiceAddresser{Services: corelisters.NewServiceLister(idx), Namespace: installNS}
	if ip, ok := a.ProxyAddress(obj); ok {
		t.Fatalf("without a Service: %s", ip)
	}
	svc := Service(installNS, obj)
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
