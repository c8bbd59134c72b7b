package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	egressctl "github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
	gatewayv1alpha1 "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/typed/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// sameHashedPort returns n endpoint names of TailscaleEndpoints object, all on port port, to
// which the earlier derivation (ports.EgressPort) gives one port.
func sameHashedPort(object string, port int32, n int) []string {
	byPort := map[int32][]string{}
	for i := 0; ; i++ {
		name := fmt.Sprintf("ep-%d", i)
		p := ports.EgressPort(object, name, port)
		byPort[p] = append(byPort[p], name)
		if len(byPort[p]) == n {
			return byPort[p]
		}
	}
}

// TestEgressPortsAllocatedEndToEnd: two endpoints of one object whose hashed ports collide
// (before allocation one of them was not served) get two ports, recorded in status; the proxy
// Service, the published EndpointSlices and the EDS name both; the deployed proxy carries a
// request through each. The server then restarts: the allocation is unchanged, and a third
// endpoint hashing to the same port gets a port of its own. (That a restarted allocator loads
// the records before it reconciles is TestControllerRecordsKeepsAndRestoresAllocations's.)
func TestEgressPortsAllocatedEndToEnd(t *testing.T) {
	sim, admin := proxySim(t, "e2e-egressalloc")
	ns := newNamespace(t, "egressalloc")
	web, err := sim.Device("web-1")
	if err != nil {
		t.Fatal(err)
	}
	const name = "colliding"
	httpPort := int32(web.HTTPPort)
	names := sameHashedPort(name, httpPort, 3)
	endpoint := func(n string) v1alpha1.TailscaleEndpoint {
		return v1alpha1.TailscaleEndpoint{Name: n, TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN, Port: httpPort, Protocol: v1alpha1.ProtocolHTTP}
	}
	eps := viaKube(t).TailscaleEndpoints(ns)
	if _, err := eps.Create(ctx(t), &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-egressalloc",
			Proxy:     &v1alpha1.ProxyConfig{ConnectionType: proxydeploy.Egress},
			Endpoints: []v1alpha1.TailscaleEndpoint{endpoint(names[0]), endpoint(names[1])}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	allocated := func(c context.Context, want int) (map[string]int32, error) {
		cur, err := eps.Get(c, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, egressctl.ConditionAllocated)
		proxy, rec := ports.Recorded(cur)
		if len(rec) != want || cond == nil || cond.Status != metav1.ConditionTrue || proxy != ns+"/"+name+"-proxy" {
			return nil, nil
		}
		out := map[string]int32{}
		for k, p := range rec {
			out[k.Endpoint] = p
		}
		return out, nil
	}
	var got map[string]int32
	eventually(t, "two egress ports recorded", func(c context.Context) (bool, error) {
		got, err = allocated(c, 2)
		return got != nil, err
	})
	p0, p1 := got[names[0]], got[names[1]]
	if p0 == p1 || p0 != ports.EgressPort(name, names[0], httpPort) {
		t.Fatalf("ports %v: want two, the first on its earlier port %d", got, ports.EgressPort(name, names[0], httpPort))
	}
	t.Logf("%s and %s hash to %d; allocated %d and %d", names[0], names[1], ports.EgressPort(name, names[1], httpPort), p0, p1)

	// The proxy Service carries both.
	kube := env.Kube
	base := proxydeploy.NamesFor(ns, name).Base
	var svc *corev1.Service
	eventually(t, "the proxy Service with both egress ports", func(c context.Context) (bool, error) {
		svc, err = kube.CoreV1().Services(framework.Namespace).Get(c, base, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		has := func(p int32) bool {
			return slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == p && sp.TargetPort.IntVal == p })
		}
		return has(p0) && has(p1) && svc.Spec.ClusterIP != "", nil
	})

	// The published EndpointSlices point at the Service's cluster IP on both.
	eventually(t, "published EndpointSlices on both ports", func(c context.Context) (bool, error) {
		list, err := kube.DiscoveryV1().EndpointSlices(ns).List(c, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + publish.ServiceName(publish.KindEndpoints, name)})
		if err != nil {
			return false, err
		}
		seen := map[int32]bool{}
		for _, s := range list.Items {
			if len(s.Endpoints) == 1 && len(s.Ports) == 1 && slices.Contains(s.Endpoints[0].Addresses, svc.Spec.ClusterIP) {
				seen[*s.Ports[0].Port] = true
			}
		}
		return len(seen) == 2 && seen[p0] && seen[p1], nil
	})

	// The EDS sends Envoy to both.
	t.Run("eds", func(t *testing.T) { checkEDSNamesPorts(t, ns, name, svc.Spec.ClusterIP, httpPort, p0, p1) })

	// The deployed proxy serves both.
	sts, err := kube.AppsV1().StatefulSets(framework.Namespace).Get(ctx(t), base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var key *corev1.Secret
	eventually(t, "the auth key Secret of replica 0", func(c context.Context) (bool, error) {
		key, err = kube.CoreV1().Secrets(framework.Namespace).Get(c, proxydeploy.NamesFor(ns, name).AuthKeySecret(0), metav1.GetOptions{})
		return err == nil, nil
	})
	t.Run("proxy", func(t *testing.T) {
		runDeployedProxy(t, sim, admin, ns, sts, key.Annotations[proxydeploy.AuthKeyIDAnnotation], p0, p1)
	})

	// A server restart keeps the allocation, and the restarted allocator knows it.
	if err := env.Gateway.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	if err := env.Gateway.Start(); err != nil {
		t.Fatalf("restarting the server: %v", err)
	}
	if err := env.WaitForAPIService(ctx(t), apiregistrationv1.ConditionTrue); err != nil {
		t.Fatal(err)
	}
	cur, err := eps.Get(ctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Endpoints = append(cur.Spec.Endpoints, endpoint(names[2]))
	if _, err := eps.Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "three egress ports recorded after the restart", func(c context.Context) (bool, error) {
		got, err = allocated(c, 3)
		return got != nil, err
	})
	if got[names[0]] != p0 || got[names[1]] != p1 || got[names[2]] == p0 || got[names[2]] == p1 {
		t.Fatalf("after the restart %v; want %s:%d and %s:%d kept and a third port for %s (it hashes to %d too)",
			got, names[0], p0, names[1], p1, names[2], ports.EgressPort(name, names[2], httpPort))
	}
}

// checkEDSNamesPorts routes an HTTPRoute to the TailscaleEndpoints name and waits for a load
// assignment of clusterIP at exactly egressPorts.
func checkEDSNamesPorts(t *testing.T, ns, name, clusterIP string, port int32, egressPorts ...int32) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	routes, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	group, kind := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Kind("TailscaleEndpoints")
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwapiv1.HTTPRouteSpec{
		CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "eg"}}},
		Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Group: &group, Kind: &kind, Name: gwapiv1.ObjectName(name), Port: ptr.To(gwapiv1.PortNumber(port))}}}}}}}}
	if _, err := routes.GatewayV1().HTTPRoutes(ns).Create(ctx(t), route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster := "httproute/" + ns + "/" + name + "/rule/0"
	w := watchLoadAssignment(t, env.Gateway.XDSAddr, cluster)
	want := fmt.Sprint(slices.Sorted(slices.Values(egressPorts)))
	var last string
	_, err = w.WaitFor(ctx(t), func(r *xdsclient.Response) bool {
		cla := r.LoadAssignment(cluster)
		if cla == nil || len(cla.Endpoints) == 0 {
			return false
		}
		var got []int32
		for _, le := range cla.Endpoints {
			for _, lb := range le.LbEndpoints {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if sa.GetAddress() != clusterIP {
					return false
				}
				got = append(got, int32(sa.GetPortValue()))
			}
		}
		slices.Sort(got)
		last = fmt.Sprint(got)
		return last == want
	})
	if err != nil {
		t.Fatalf("the load assignment does not name %s at %s (last %s): %v", clusterIP, want, last, err)
	}
}

// recordedPort waits for the egress port the allocator records for endpoint (port port) of the
// TailscaleEndpoints ns/object and returns it.
func recordedPort(t *testing.T, api gatewayv1alpha1.GatewayV1alpha1Interface, ns, object, endpoint string, port int32) int32 {
	t.Helper()
	var got int32
	eventually(t, "the egress port of "+object+"/"+endpoint, func(c context.Context) (bool, error) {
		obj, err := api.TailscaleEndpoints(ns).Get(c, object, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		_, rec := ports.Recorded(obj)
		for k, p := range rec {
			if k.Endpoint == endpoint && k.Port == port {
				got = p
			}
		}
		return got != 0, nil
	})
	return got
}
