package envoygateway_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// proxyIP is the egress proxy's address the published Backends point at.
const proxyIP = "10.96.0.50"

// l4Endpoints is the spec's backend-services TailscaleEndpoints (its TCPRoute example), with an
// endpoint per route kind, each with the health given and its egress port allocated as the
// server's allocator records it.
func l4Endpoints(health map[string]string) *v1alpha1.TailscaleEndpoints {
	e := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backend-services", UID: "uid-backend-services"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "primary", TailscaleIP: "100.64.0.31", TailscaleFQDN: "db-1.tail1234.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "replica", TailscaleIP: "100.64.0.32", TailscaleFQDN: "db-2.tail1234.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "api", TailscaleIP: "100.64.0.33", TailscaleFQDN: "api.tail1234.ts.net", Port: 443, Protocol: v1alpha1.ProtocolTLS},
			{Name: "dns", TailscaleIP: "100.64.0.34", TailscaleFQDN: "dns.tail1234.ts.net", Port: 53, Protocol: v1alpha1.ProtocolUDP},
			{Name: "rpc", TailscaleIP: "100.64.0.35", TailscaleFQDN: "rpc.tail1234.ts.net", Port: 50051, Protocol: v1alpha1.ProtocolGRPC},
		}}}
	for _, ep := range e.Spec.Endpoints {
		e.Status.Endpoints = append(e.Status.Endpoints, v1alpha1.EndpointStatus{Name: ep.Name, Status: health[ep.Name]})
	}
	egressalloc.New(egressalloc.Options{}).Allocate("shared", e)
	return e
}

// backendsYAML is what pkg/controllers/publish writes for obj at proxyIP.
func backendsYAML(t *testing.T, obj *v1alpha1.TailscaleEndpoints) string {
	t.Helper()
	bs, err := publish.DesiredBackends(publish.Owner{Kind: publish.KindEndpoints, Namespace: obj.Namespace, Name: obj.Name, UID: string(obj.UID)},
		[]*v1alpha1.TailscaleEndpoints{obj}, publish.StaticAddress(netip.MustParseAddr(proxyIP)))
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, b := range bs {
		y, err := yaml.Marshal(b.Object)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(y))
	}
	return envoygateway.JoinYAML(docs...)
}

// l4Route is a route of kind (TCPRoute, TLSRoute, UDPRoute, GRPCRoute) on listener of the
// Gateway, to the Backend published for port of backend-services.
// hostnames are the route's (a TLSRoute needs them).
func l4Route(kind, name, listener, port string, hostnames ...string) string {
	spec := map[string]any{
		"parentRefs": []any{map[string]any{"name": gatewayName, "sectionName": listener}},
		"rules": []any{map[string]any{"backendRefs": []any{map[string]any{
			"group": "gateway.envoyproxy.io", "kind": "Backend", "name": publish.BackendName(publish.KindEndpoints, "backend-services", port)}}}},
	}
	if len(hostnames) > 0 {
		spec["hostnames"] = hostnames
	}
	return mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     spec,
	})
}

func mustYAML(v any) string {
	out, err := yaml.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(out)
}

// TestEnvoyGatewayRoutesL4AndGRPCToPublishedBackends has Envoy Gateway v1.9.1 translate a
// TCPRoute (the spec's example), a TLSRoute (passthrough), a UDPRoute and a GRPCRoute to the
// Backends pkg/controllers/publish writes for a TailscaleEndpoints: every route Accepted with
// ResolvedRefs, a listener per Gateway listener, a cluster per route whose endpoints are the
// egress proxy's listeners of our endpoints (HTTP/2 for gRPC), and an endpoint turning
// Unhealthy leaving its cluster (and coming back when Healthy).
func TestEnvoyGatewayRoutesL4AndGRPCToPublishedBackends(t *testing.T) {
	healthy := map[string]string{"primary": livestatus.Healthy, "replica": livestatus.Healthy, "api": livestatus.Healthy,
		"dns": livestatus.Healthy, "rpc": livestatus.Healthy}
	obj := l4Endpoints(healthy)
	_, hookL, _ := startServer(t, &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}})
	ctx := bounded(t)

	gateway := mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": gatewayName, "namespace": ns},
		"spec": map[string]any{"gatewayClassName": "eg", "listeners": []any{
			map[string]any{"name": "db", "protocol": "TCP", "port": 15432},
			map[string]any{"name": "tls", "protocol": "TLS", "port": 18443, "hostname": "api.example.com", "tls": map[string]any{"mode": "Passthrough"}},
			map[string]any{"name": "dns", "protocol": "UDP", "port": 15353},
			map[string]any{"name": "grpc", "protocol": "HTTP", "port": 18080},
		}},
	})
	routes := envoygateway.JoinYAML(
		l4Route("TCPRoute", "database-route", "db", "tcp-5432"),
		l4Route("TLSRoute", "api-route", "tls", "tcp-443", "api.example.com"),
		l4Route("UDPRoute", "dns-route", "dns", "udp-53"),
		l4Route("GRPCRoute", "rpc-route", "grpc", "tcp-50051"),
	)
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: hookL.Addr().String(), ExtensionManager: artifactExtensionManager(t),
		JSONLogs: true, Resources: map[string]string{
			"gateway.yaml":  envoygateway.JoinYAML(envoygateway.GatewayClassYAML("eg"), gateway),
			"routes.yaml":   routes,
			"backends.yaml": backendsYAML(t, obj),
		}})

	// Envoy Gateway's statuses: every route Accepted with its Backend resolved.
	kinds := map[string]string{"TCPRoute": "database-route", "TLSRoute": "api-route", "UDPRoute": "dns-route", "GRPCRoute": "rpc-route"}
	var last string
	if err := waitUntil(ctx, func() bool {
		last = ""
		for kind, name := range kinds {
			st, err := eg.Statuses(kind)
			if err != nil {
				last = err.Error()
				return false
			}
			for _, typ := range []string{"Accepted", "ResolvedRefs"} {
				if c := st[ns+"/"+name].Condition(0, typ); c == nil || c.Status != metav1.ConditionTrue {
					last += fmt.Sprintf("%s %s %s: %+v; ", kind, name, typ, c)
				}
			}
		}
		return last == ""
	}); err != nil {
		t.Fatalf("route statuses: %s (%v)", last, err)
	}

	// A listener per Gateway listener.
	xc := eg.XDS(t, ns, gatewayName)
	lds, err := xc.Fetch(ctx, xdsclient.ListenerType, func(r *xdsclient.Response) bool { return len(r.Listeners()) >= 4 })
	if err != nil {
		t.Fatalf("Envoy Gateway's LDS: %v", err)
	}
	listening := map[uint32]bool{}
	for _, l := range lds.Listeners() {
		listening[l.GetAddress().GetSocketAddress().GetPortValue()] = true
	}
	for _, p := range []uint32{15432, 18443, 15353, 18080} {
		if !listening[p] {
			t.Errorf("no listener on port %d; listeners %v", p, lds.Names())
		}
	}

	// A cluster per route, at the proxy's egress listeners of the endpoints.
	_, recorded := ports.Recorded(l4Endpoints(nil))
	at := func(ep string, port int32) string {
		return fmt.Sprintf("%s:%d", proxyIP, recorded[ports.Key{Endpoint: ep, Port: port, UDP: ep == "dns"}])
	}
	clusterOf := map[string]string{
		"TCPRoute": "tcproute/" + ns + "/database-route/rule/-1", "TLSRoute": "tlsroute/" + ns + "/api-route/rule/-1",
		"UDPRoute": "udproute/" + ns + "/dns-route/rule/-1", "GRPCRoute": "grpcroute/" + ns + "/rpc-route/rule/0",
	}
	want := map[string][]string{
		"TCPRoute": {at("primary", 5432), at("replica", 5432)}, "TLSRoute": {at("api", 443)},
		"UDPRoute": {at("dns", 53)}, "GRPCRoute": {at("rpc", 50051)},
	}
	names := make([]string, 0, len(clusterOf))
	for _, c := range clusterOf {
		names = append(names, c)
	}
	cds, err := xc.FetchClusters(ctx, func(r *xdsclient.Response) bool {
		for _, c := range names {
			if r.Cluster(c) == nil {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("Envoy Gateway's CDS lacks the routes' clusters %v: %v", names, err)
	}
	// Envoy Gateway serves the endpoints of its clusters over EDS.
	eds, err := xc.EndpointsWatch(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	defer eds.Stop()
	waitEndpoints := func(want map[string][]string) {
		t.Helper()
		var got string
		if _, err := eds.WaitFor(ctx, func(r *xdsclient.Response) bool {
			got = ""
			for kind, addrs := range want {
				if have := lbEndpoints(r.LoadAssignment(clusterOf[kind])); !slices.Equal(have, sorted(addrs)) {
					got += fmt.Sprintf("%s (%s): %v, want %v; ", kind, clusterOf[kind], have, sorted(addrs))
				}
			}
			return got == ""
		}); err != nil {
			t.Fatalf("Envoy Gateway's EDS: %s (%v)", got, err)
		}
	}
	waitEndpoints(want)
	if !http2Of(t, cds.Cluster(clusterOf["GRPCRoute"])) {
		t.Errorf("the GRPCRoute's cluster does not speak HTTP/2")
	}
	if http2Of(t, cds.Cluster(clusterOf["TCPRoute"])) {
		t.Errorf("the TCPRoute's cluster has HTTP options")
	}

	// The replica turns Unhealthy: the controller drops it from the Backend, Envoy Gateway from
	// the cluster; the primary stays. Healthy again, it is back.
	flipped := map[string]string{}
	for k, v := range healthy {
		flipped[k] = v
	}
	flipped["replica"] = livestatus.Unhealthy
	if err := eg.WriteResource("backends.yaml", backendsYAML(t, l4Endpoints(flipped))); err != nil {
		t.Fatal(err)
	}
	want["TCPRoute"] = []string{at("primary", 5432)}
	waitEndpoints(want)
	if err := eg.WriteResource("backends.yaml", backendsYAML(t, l4Endpoints(healthy))); err != nil {
		t.Fatal(err)
	}
	want["TCPRoute"] = []string{at("primary", 5432), at("replica", 5432)}
	waitEndpoints(want)
}

// lbEndpoints returns the sorted host:port of a load assignment's endpoints.
func lbEndpoints(a *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range a.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.SortFunc(out, strings.Compare)
	return out
}
