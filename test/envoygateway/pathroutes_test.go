package envoygateway_test

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// routeOf returns the first xDS route Envoy Gateway made of rule i of HTTPRoute ns/name, and
// its virtual host.
func routeOf(r *xdsclient.Response, ns, name string, i int) (*routev3.Route, *routev3.VirtualHost) {
	prefix := envoygateway.ClusterName(ns, name, i) + "/"
	for _, rc := range r.RouteConfigurations() {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if strings.HasPrefix(rt.GetName(), prefix) {
					return rt, vh
				}
			}
		}
	}
	return nil, nil
}

// rewrite applies Envoy's path rewrite of route a to path as Envoy does: the regex substitution
// (RE2, which Go's regexp implements) or the prefix replacement of the matched prefix.
func rewrite(t *testing.T, a *routev3.RouteAction, matched, path string) string {
	t.Helper()
	if rr := a.GetRegexRewrite(); rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			t.Fatalf("rewrite regex %q: %v", rr.GetPattern().GetRegex(), err)
		}
		return re.ReplaceAllLiteralString(path, rr.GetSubstitution())
	}
	if p := a.GetPrefixRewrite(); p != "" {
		return p + strings.TrimPrefix(path, matched)
	}
	t.Fatalf("route has no path rewrite: %s", dump(t, a))
	return ""
}

// TestEnvoyGatewayTranslatesPathRoutes feeds the path routes of the workflow's step 7 that
// pkg/controllers/tsgateway generates — /gateway/<gateway>-<listener>/ for two HTTP listeners and
// /cross-cluster/webapp-cluster2/ for a Tailscale Service of another cluster found by discovery —
// to the real Envoy Gateway with our extension, and checks: each route Accepted with ResolvedRefs;
// in its xDS the prefix match, the rewrite to "/" (applied to sample paths: the backend sees the
// path without the prefix), the listener's Host, the hop header, the hop guard answered 500, and
// every rule's cluster an EDS cluster of ours that our EDS answers with the Envoy Service's
// listener port and the remote VIP.
func TestEnvoyGatewayTranslatesPathRoutes(t *testing.T) {
	tsgw := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: routesNS, Name: "main", UID: "uid-main"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: egGateway, Namespace: egNS},
			Tailnets: []v1alpha1.TailnetConfiguration{{Name: "prod", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "prod-tailnet"},
				ServiceDiscovery: &v1alpha1.TailnetServiceDiscovery{Enabled: true},
				RouteGeneration: &v1alpha1.RouteGenerationConfig{Ingress: &v1alpha1.IngressRouteConfig{Enabled: true},
					Egress: &v1alpha1.EgressRouteConfig{Enabled: true}}}},
		}}
	tailnets := map[string]*v1alpha1.TailscaleTailnet{"prod-tailnet": {ObjectMeta: metav1.ObjectMeta{Name: "prod-tailnet"}}}
	adminHost := gwapiv1.Hostname("admin.company.ts.net")
	all := gwapiv1.NamespacesFromAll
	allowed := &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{From: &all}}
	listeners := []gwapiv1.Listener{
		{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType, AllowedRoutes: allowed},
		{Name: "admin", Port: 8081, Protocol: gwapiv1.HTTPProtocolType, Hostname: &adminHost, AllowedRoutes: allowed},
	}
	envoySvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: egNS, Name: "envoy-" + egNS + "-" + egGateway,
		Labels: map[string]string{tsgateway.EnvoyOwningGatewayName: egGateway, tsgateway.EnvoyOwningGatewayNamespace: egNS}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.12.34", Ports: []corev1.ServicePort{
			{Name: "http-8080", Protocol: corev1.ProtocolTCP, Port: 8080}, {Name: "http-8081", Protocol: corev1.ProtocolTCP, Port: 8081}}}}
	lout := tsgateway.GenerateListeners(tsgateway.ListenerInput{Gateway: tsgw, Tailnets: tailnets, Listeners: listeners, Envoy: envoySvc})
	found := discovery.Generate(discovery.Input{Gateway: tsgw, OperatorID: "cluster-a", Tailnets: []discovery.Tailnet{{
		Config: tsgw.Spec.Tailnets[0], Ref: "prod-tailnet", Snapshot: &tailnet.Snapshot{Services: []tailnet.Service{{
			Name: "svc:webapp-cluster2", Addrs: []string{"100.64.2.10"}, Ports: []string{"tcp:80"},
			Annotations: map[string]string{"tailscale.com/owner-references": `{"ownerRefs":[{"operatorID":"cluster-b"}]}`}}}}}}})
	out := tsgateway.GeneratePaths(tsgateway.PathInput{Gateway: tsgw, Listeners: listeners, Published: lout.Listeners,
		Endpoints: append(found.Endpoints, lout.Proxies...), Services: lout.Services})
	if len(out.Routes) != 3 || len(out.Problems)+len(out.Conflicts) != 0 || len(found.Endpoints) != 1 {
		t.Fatalf("generated %d path routes (problems %v, conflicts %v) from %d remote objects", len(out.Routes), out.Problems, out.Conflicts, len(found.Endpoints))
	}
	gwHTTP := tsgateway.PathRouteName(tsgw.Name, tsgateway.PathRouteGateway, "http")
	gwAdmin := tsgateway.PathRouteName(tsgw.Name, tsgateway.PathRouteGateway, "admin")
	cross := tsgateway.PathRouteName(tsgw.Name, tsgateway.PathRouteCrossCluster, "webapp-cluster2")

	// Our server holds the objects the routes point at (the EDS answers from them). Only the
	// server's own TailscaleGateway controller may write externalServices on an object a
	// TailscaleGateway controls, and none runs here: the listener TailscaleServices are written
	// without their owner, with the Envoy Service's address allowed instead; Envoy Gateway gets
	// them exactly as generated.
	s, hookL, xdsL := startServer(t, &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}, func(o *server.Options) {
		o.Tenancy.External = tenancy.ExternalFlags{Allow: true, CIDRs: []string{envoySvc.Spec.ClusterIP + "/32"}}
	})
	ctx := bounded(t)
	c := s.Clientset(t).GatewayV1alpha1()
	objects := []string{}
	for _, o := range append(lout.Proxies, found.Endpoints...) {
		if _, err := c.TailscaleEndpoints(routesNS).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		objects = append(objects, objectYAML(t, "TailscaleEndpoints", o))
	}
	for _, o := range lout.Services {
		unowned := o.DeepCopy()
		unowned.OwnerReferences = nil
		if _, err := c.TailscaleServices(routesNS).Create(ctx, unowned, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		objects = append(objects, objectYAML(t, "TailscaleServices", o))
	}

	gateway := map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": egGateway, "namespace": egNS},
		"spec":     map[string]any{"gatewayClassName": "eg", "listeners": listeners},
	}
	gwYAML, err := yaml.Marshal(gateway)
	if err != nil {
		t.Fatal(err)
	}
	var routeDocs []string
	for _, r := range out.Routes {
		y, err := envoygateway.ObjectYAML(gwapiv1.GroupVersion.String(), "HTTPRoute", r)
		if err != nil {
			t.Fatal(err)
		}
		routeDocs = append(routeDocs, y)
	}
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: hookL.Addr().String(), ExtensionManager: artifactExtensionManager(t),
		JSONLogs: true, Resources: map[string]string{
			"gateway.yaml": envoygateway.JoinYAML(envoygateway.GatewayClassYAML("eg"), string(gwYAML)),
			"routes.yaml":  envoygateway.JoinYAML(routeDocs...),
			"objects.yaml": envoygateway.JoinYAML(objects...),
		}})

	// Every route Accepted with its references resolved (on both listeners).
	var last string
	if err := waitUntil(ctx, func() bool {
		st, err := eg.Statuses("HTTPRoute")
		if err != nil {
			last = err.Error()
			return false
		}
		last = ""
		for _, name := range []string{gwHTTP, gwAdmin, cross} {
			for _, typ := range []gwapiv1.RouteConditionType{gwapiv1.RouteConditionAccepted, gwapiv1.RouteConditionResolvedRefs} {
				if cond := st[routesNS+"/"+name].Condition(0, string(typ)); cond == nil || cond.Status != metav1.ConditionTrue {
					last += fmt.Sprintf("%s %s: %+v; ", name, typ, cond)
				}
			}
		}
		return last == ""
	}); err != nil {
		t.Fatalf("HTTPRoute statuses: %s (%v)", last, err)
	}

	xc := eg.XDS(t, egNS, egGateway)
	rds, err := xc.Fetch(ctx, xdsclient.RouteType, func(r *xdsclient.Response) bool {
		a, _ := routeOf(r, routesNS, cross, 0)
		g, _ := routeOf(r, routesNS, gwAdmin, 1)
		h, _ := routeOf(r, routesNS, gwHTTP, 0)
		return a != nil && g != nil && h != nil
	})
	if err != nil {
		t.Fatalf("Envoy Gateway's RDS lacks the path routes: %v", err)
	}

	// /cross-cluster/webapp-cluster2/: the prefix match, our cluster, the rewrite to "/".
	rt, _ := routeOf(rds, routesNS, cross, 0)
	if got := rt.GetMatch().GetPathSeparatedPrefix(); got != "/cross-cluster/webapp-cluster2" {
		t.Errorf("cross-cluster match %q:\n%s", got, dump(t, rt))
	}
	if got := rt.GetRoute().GetCluster(); got != envoygateway.ClusterName(routesNS, cross, 0) {
		t.Errorf("cross-cluster cluster %q", got)
	}
	for in, want := range map[string]string{
		"/cross-cluster/webapp-cluster2/status/200": "/status/200",
		"/cross-cluster/webapp-cluster2/":           "/",
		"/cross-cluster/webapp-cluster2":            "/",
		"/cross-cluster/webapp-cluster2//a?b=c":     "/a?b=c",
	} {
		if got := rewrite(t, rt.GetRoute(), "/cross-cluster/webapp-cluster2", in); got != want {
			t.Errorf("the backend sees %s as %q, want %q", in, got, want)
		}
	}

	// /gateway/envoy-gateway-admin/: the rewrite, the listener's Host, the hop header set; the
	// guard before it (a hop header already present) answered 500 without a cluster.
	rt, vh := routeOf(rds, routesNS, gwAdmin, 1)
	a := rt.GetRoute()
	if rt.GetMatch().GetPathSeparatedPrefix() != "/gateway/"+egGateway+"-admin" || a.GetHostRewriteLiteral() != "admin.company.ts.net" ||
		a.GetCluster() != envoygateway.ClusterName(routesNS, gwAdmin, 1) || len(rt.GetRequestHeadersToAdd()) != 1 ||
		rt.GetRequestHeadersToAdd()[0].GetHeader().GetKey() != tsgateway.HopHeader {
		t.Errorf("gateway route of admin (domains %v):\n%s", vh.GetDomains(), dump(t, rt))
	}
	if got := rewrite(t, a, "/gateway/"+egGateway+"-admin", "/gateway/"+egGateway+"-admin/healthz"); got != "/healthz" {
		t.Errorf("the admin listener sees %q", got)
	}
	guard, _ := routeOf(rds, routesNS, gwAdmin, 0)
	if guard.GetDirectResponse().GetStatus() != 500 || len(guard.GetMatch().GetHeaders()) != 1 ||
		!strings.EqualFold(guard.GetMatch().GetHeaders()[0].GetName(), tsgateway.HopHeader) {
		t.Errorf("hop guard of admin:\n%s", dump(t, guard))
	}
	// Envoy takes the first matching route of a virtual host: the guard must come first.
	for _, host := range rds.RouteConfigurations() {
		for _, v := range host.GetVirtualHosts() {
			gi, ri := -1, -1
			for i, r := range v.GetRoutes() {
				switch {
				case strings.HasPrefix(r.GetName(), envoygateway.ClusterName(routesNS, gwHTTP, 0)+"/"):
					gi = i
				case strings.HasPrefix(r.GetName(), envoygateway.ClusterName(routesNS, gwHTTP, 1)+"/"):
					ri = i
				}
			}
			if ri >= 0 && (gi < 0 || gi > ri) {
				t.Errorf("virtual host %s: the hop guard of http (index %d) does not precede its route (index %d)", v.GetName(), gi, ri)
			}
		}
	}

	// Our EDS answers: the Envoy Service on the listener's port; the remote Service's VIP.
	ec, err := xdsclient.Dial(xdsL.Addr().String(), xdsclient.Options{NodeCluster: egNS + "/" + egGateway})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	want := map[string]string{
		envoygateway.ClusterName(routesNS, gwHTTP, 1):  "10.96.12.34:8080",
		envoygateway.ClusterName(routesNS, gwAdmin, 1): "10.96.12.34:8081",
		envoygateway.ClusterName(routesNS, cross, 0):   "100.64.2.10:80",
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	w, err := ec.EndpointsWatch(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	hosts := func(r *xdsclient.Response, cluster string) []string {
		var out []string
		for _, l := range r.LoadAssignment(cluster).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())))
			}
		}
		return out
	}
	if _, err := w.WaitFor(ctx, func(r *xdsclient.Response) bool {
		for cl, addr := range want {
			if h := hosts(r, cl); len(h) != 1 || h[0] != addr {
				return false
			}
		}
		return true
	}); err != nil {
		got := map[string][]string{}
		for cl := range want {
			got[cl] = hosts(w.Latest(), cl)
		}
		t.Fatalf("our EDS answers %v, want %v: %v", got, want, err)
	}
}
