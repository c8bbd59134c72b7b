package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1a2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// slicesReady returns the ready condition of each published EndpointSlice of service by port,
// when each has the proxy's address.
func slicesReady(c context.Context, ns, service string) (map[int32]bool, error) {
	list, err := env.Kube.DiscoveryV1().EndpointSlices(ns).List(c, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return nil, err
	}
	out := map[int32]bool{}
	for _, s := range list.Items {
		if len(s.Ports) != 1 || len(s.Endpoints) != 1 || s.Endpoints[0].Addresses[0] != "192.0.2.10" || s.Endpoints[0].Conditions.Ready == nil {
			continue
		}
		out[*s.Ports[0].Port] = *s.Endpoints[0].Conditions.Ready
	}
	return out, nil
}

// TestPublishedBackendsFollowHealth publishes a TailscaleEndpoints as a Service and
// EndpointSlices at the egress proxy's derived ports, which a TCPRoute (the spec's example)
// names, and follows a device going offline and back.
func TestPublishedBackendsFollowHealth(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	installEnvoyGatewayCRD(t, "backends")
	sim, _ := startSimWith(t, "e2e-publish", tailnetsim.Options{})
	primary, err := sim.AddVirtualDevice("db-primary")
	if err != nil {
		t.Fatal(err)
	}
	replica, err := sim.AddVirtualDevice("db-replica")
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "publish")
	api := viaKube(t)
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backend-services", Labels: map[string]string{"tier": "db"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-publish", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "primary", TailscaleIP: primary.IPv4.String(), TailscaleFQDN: primary.FQDN, Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "replica", TailscaleIP: replica.IPv4.String(), TailscaleFQDN: replica.FQDN, Port: 5432, Protocol: v1alpha1.ProtocolTCP},
		}}}
	if _, err := api.TailscaleEndpoints(ns).Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcs := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}}}}
	if _, err := api.TailscaleServices(ns).Create(ctx(t), svcs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The spec's TCPRoute example, with its backendRef rewritten to the published Service.
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	port := gwapiv1.PortNumber(5432)
	route := &gwapiv1a2.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "database-route"}, Spec: gwapiv1a2.TCPRouteSpec{
		CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "envoy-gateway"}}},
		Rules: []gwapiv1a2.TCPRouteRule{{BackendRefs: []gwapiv1.BackendRef{{BackendObjectReference: gwapiv1.BackendObjectReference{
			Name: gwapiv1.ObjectName(publish.ServiceName(publish.KindEndpoints, "backend-services")), Port: &port}}}}}}}
	if _, err := gwc.GatewayV1alpha2().TCPRoutes(ns).Create(ctx(t), route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The route's backendRef resolves: a Service with port 5432 and the proxy's listeners behind it.
	primaryPort, replicaPort := recordedPort(t, api, ns, "backend-services", "primary", 5432), recordedPort(t, api, ns, "backend-services", "replica", 5432)
	eventually(t, "the published Service", func(c context.Context) (bool, error) {
		s, err := env.Kube.CoreV1().Services(ns).Get(c, "ts-ep-backend-services", metav1.GetOptions{})
		return err == nil && len(s.Spec.Ports) == 1 && s.Spec.Ports[0].Port == 5432 && s.Spec.Ports[0].Name == "tcp-5432" &&
			s.Spec.Selector == nil && s.Spec.ClusterIP != "", nil
	})
	for _, svc := range []string{"ts-ep-backend-services", "ts-svc-db"} {
		eventually(t, svc+"'s EndpointSlices, ready", func(c context.Context) (bool, error) {
			got, err := slicesReady(c, ns, svc)
			return err == nil && len(got) == 2 && got[primaryPort] && got[replicaPort], err
		})
	}
	// Envoy Gateway's Backend CRD is served: a Backend per port too, admitted by its schema.
	both := []int32{primaryPort, replicaPort}
	slices.Sort(both)
	for _, name := range []string{"ts-ep-backend-services-tcp-5432", "ts-svc-db-tcp-5432"} {
		eventually(t, "Backend "+name+" at both endpoints", func(c context.Context) (bool, error) {
			got, err := backendPorts(c, ns, name)
			return err == nil && slices.Equal(got, both), nil
		})
	}

	// The replica's device goes offline: its EndpointSlices turn not ready, and back.
	sim.SetAPIOnline("db-replica", false)
	for _, svc := range []string{"ts-ep-backend-services", "ts-svc-db"} {
		eventually(t, svc+": the replica not ready", func(c context.Context) (bool, error) {
			got, err := slicesReady(c, ns, svc)
			return err == nil && len(got) == 2 && got[primaryPort] && !got[replicaPort], err
		})
	}
	eventually(t, "the replica out of the Backend", func(c context.Context) (bool, error) {
		got, err := backendPorts(c, ns, "ts-ep-backend-services-tcp-5432")
		return err == nil && slices.Equal(got, []int32{primaryPort}), nil
	})
	sim.ClearAPIOnline("db-replica")
	eventually(t, "the replica ready again", func(c context.Context) (bool, error) {
		got, err := slicesReady(c, ns, "ts-ep-backend-services")
		return err == nil && len(got) == 2 && got[replicaPort], err
	})
	eventually(t, "the replica back in the Backend", func(c context.Context) (bool, error) {
		got, err := backendPorts(c, ns, "ts-ep-backend-services-tcp-5432")
		return err == nil && slices.Equal(got, both), nil
	})

	// An endpoint removed: its EndpointSlice goes.
	cur, err := api.TailscaleEndpoints(ns).Get(ctx(t), eps.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Endpoints = cur.Spec.Endpoints[:1]
	if _, err := api.TailscaleEndpoints(ns).Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one EndpointSlice", func(c context.Context) (bool, error) {
		got, err := slicesReady(c, ns, "ts-ep-backend-services")
		return err == nil && len(got) == 1 && got[primaryPort], err
	})

	// Deleted with the TailscaleEndpoints (garbage collector).
	if err := api.TailscaleEndpoints(ns).Delete(ctx(t), eps.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the published Service and its EndpointSlices to be deleted", func(c context.Context) (bool, error) {
		_, err := env.Kube.CoreV1().Services(ns).Get(c, "ts-ep-backend-services", metav1.GetOptions{})
		got, lerr := slicesReady(c, ns, "ts-ep-backend-services")
		return err != nil && lerr == nil && len(got) == 0, nil
	})
}

// backendPorts returns the sorted ports of the endpoints of the published Backend name, when
// each is at the proxy's address.
func backendPorts(c context.Context, ns, name string) ([]int32, error) {
	dyn, err := dynamic.NewForConfig(env.Admin)
	if err != nil {
		return nil, err
	}
	b, err := dyn.Resource(publish.BackendGVR).Namespace(ns).Get(c, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	eps, _, _ := unstructured.NestedSlice(b.Object, "spec", "endpoints")
	var out []int32
	for _, e := range eps {
		addr, _, _ := unstructured.NestedString(e.(map[string]any), "ip", "address")
		port, _, _ := unstructured.NestedInt64(e.(map[string]any), "ip", "port")
		if addr != "192.0.2.10" {
			return nil, fmt.Errorf("Backend %s: endpoint at %s", name, addr)
		}
		out = append(out, int32(port))
	}
	slices.Sort(out)
	return out, nil
}

// publishedAt returns the address and port of each published EndpointSlice of service.
func publishedAt(c context.Context, ns, service string) ([]string, error) {
	list, err := env.Kube.DiscoveryV1().EndpointSlices(ns).List(c, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				for _, p := range s.Ports {
					out = append(out, fmt.Sprintf("%s:%d", a, *p.Port))
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// TestPublishedBackendsAtDeployedProxy publishes a TailscaleEndpoints whose proxy the server
// deploys at that proxy's Service (its cluster IP from kube-apiserver's service CIDR, the
// egress ports), for itself and for a TailscaleServices selecting it, ahead of
// --backend-proxy-address, which it falls back to when spec.proxy is removed.
func TestPublishedBackendsAtDeployedProxy(t *testing.T) {
	sim, _ := proxySim(t, "e2e-publish-deployed")
	web, err := sim.Device("web-1")
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "publish-deployed")
	api := viaKube(t)
	obj, err := api.TailscaleEndpoints(ns).Create(ctx(t), &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-publish-deployed",
			Proxy: &v1alpha1.ProxyConfig{ConnectionType: proxydeploy.Egress},
			Endpoints: []v1alpha1.TailscaleEndpoint{
				{Name: "http", TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN, Port: int32(web.HTTPPort), Protocol: v1alpha1.ProtocolHTTP},
				{Name: "dns", TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN, Port: 53, Protocol: v1alpha1.ProtocolUDP},
			}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.TailscaleServices(ns).Create(ctx(t), &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var clusterIP string
	eventually(t, "the proxy Service's cluster IP", func(c context.Context) (bool, error) {
		svc, err := env.Kube.CoreV1().Services(framework.Namespace).Get(c, proxydeploy.NamesFor(ns, "web").Base, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		clusterIP = svc.Spec.ClusterIP
		return err == nil && clusterIP != "" && clusterIP != corev1.ClusterIPNone, err
	})
	if ip := net.ParseIP(clusterIP); ip == nil || ip.IsLoopback() {
		t.Fatalf("cluster IP %q", clusterIP)
	}
	httpPort, dnsPort := recordedPort(t, api, ns, "web", "http", int32(web.HTTPPort)), recordedPort(t, api, ns, "web", "dns", 53)
	want := []string{fmt.Sprintf("%s:%d", clusterIP, httpPort), fmt.Sprintf("%s:%d", clusterIP, dnsPort)}
	slices.Sort(want)
	for _, svc := range []string{publish.ServiceName(publish.KindEndpoints, "web"), publish.ServiceName(publish.KindServices, "web")} {
		var last []string
		eventually(t, svc+" at the proxy Service", func(c context.Context) (bool, error) {
			got, err := publishedAt(c, ns, svc)
			last = got
			return err == nil && slices.Equal(got, want), err
		})
		t.Logf("%s: %v", svc, last)
	}
	// The proxy Service's ports are the published slices' ports: Envoy's connection to the
	// cluster IP reaches the listener.
	// Both follow the recorded allocation, each from its own controller: wait for the Service.
	eventually(t, "the proxy Service carrying the published ports", func(c context.Context) (bool, error) {
		psvc, err := env.Kube.CoreV1().Services(framework.Namespace).Get(c, proxydeploy.NamesFor(ns, "web").Base, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range []int32{httpPort, dnsPort} {
			if !slices.ContainsFunc(psvc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == p }) {
				return false, nil
			}
		}
		return true, nil
	})

	// Without spec.proxy the proxy Service goes and --backend-proxy-address (192.0.2.10 in
	// this suite) is used.
	cur, err := api.TailscaleEndpoints(ns).Get(ctx(t), obj.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Proxy = nil
	if _, err := api.TailscaleEndpoints(ns).Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	fallback := []string{fmt.Sprintf("192.0.2.10:%d", dnsPort), fmt.Sprintf("192.0.2.10:%d", httpPort)}
	slices.Sort(fallback)
	eventually(t, "the published slices at --backend-proxy-address", func(c context.Context) (bool, error) {
		got, err := publishedAt(c, ns, publish.ServiceName(publish.KindEndpoints, "web"))
		return err == nil && slices.Equal(got, fallback), err
	})
}
