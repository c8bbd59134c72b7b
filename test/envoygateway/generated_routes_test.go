package envoygateway_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// The spec's "Advanced Routing Configuration" TailscaleGateway (spec/tailscale-gateway.md),
// whose Gateway is envoy-gateway in envoy-gateway-system.
const (
	routesNS  = "production"
	egNS      = "envoy-gateway-system"
	egGateway = "envoy-gateway"
)

func advancedTailscaleGateway() *v1alpha1.TailscaleGateway {
	return &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: routesNS, Name: "advanced", UID: "uid-advanced"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: egGateway, Namespace: egNS},
			Tailnets: []v1alpha1.TailnetConfiguration{{
				Name:                "main-tailnet",
				TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "main-tailnet"},
				RouteGeneration: &v1alpha1.RouteGenerationConfig{
					Ingress: &v1alpha1.IngressRouteConfig{Enabled: true, HostPattern: "{service}.company.ts.net", PathPrefix: "/",
						DefaultBackend: &v1alpha1.BackendConfig{Weight: ptr.To(int32(100))},
						Filters: []v1alpha1.HTTPRouteFilter{{Type: "RequestHeaderModifier", RequestHeaderModifier: &v1alpha1.HTTPHeaderFilter{
							Add: []v1alpha1.HTTPHeader{{Name: "X-Gateway-Version", Value: "v1.0.0"}}}}}},
					Egress: &v1alpha1.EgressRouteConfig{Enabled: true, HostPattern: "{service}.internal.company.com", PathPrefix: "/api/{service}/",
						RewriteRules: []v1alpha1.RewriteRule{{From: "/api/{service}/", To: "/"}, {From: "/legacy/{service}/", To: "/v1/"}},
						Timeout:      &metav1.Duration{Duration: 30 * time.Second},
						RetryPolicy: &v1alpha1.RetryPolicy{NumRetries: ptr.To(int32(3)), PerTryTimeout: &metav1.Duration{Duration: 10 * time.Second},
							BackoffBaseInterval: &metav1.Duration{Duration: time.Second}, BackoffMaxInterval: &metav1.Duration{Duration: 10 * time.Second}}},
				},
			}},
		},
	}
}

// TestEnvoyGatewayTranslatesGeneratedRoutes feeds the HTTPRoutes and BackendTrafficPolicies
// pkg/controllers/tsgateway generates for the spec's advanced TailscaleGateway (two
// TailscaleEndpoints and a TailscaleServices of its tailnet) to the real Envoy Gateway, calling
// our extension server as artifacts/envoy-gateway configures it, and checks that Envoy Gateway
// accepts them all (route status Accepted and ResolvedRefs, policy status Accepted), that its
// xDS has every rule's cluster as an EDS cluster of ours and the routes with the generated
// hostnames, rewrites, header filter, timeout and retries, and that our EDS answers those
// clusters with the objects' endpoints.
func TestEnvoyGatewayTranslatesGeneratedRoutes(t *testing.T) {
	web := objects.Endpoints(routesNS, "web")
	db := objects.Endpoints(routesNS, "db")
	db.Labels = map[string]string{"service-type": "db"}
	svc := objects.Services(routesNS, "web-svc")
	tsgw := advancedTailscaleGateway()
	out := tsgateway.Generate(tsgateway.Input{
		Gateway: tsgw,
		Tailnets: map[string]*v1alpha1.TailscaleTailnet{"main-tailnet": {ObjectMeta: metav1.ObjectMeta{Name: "main-tailnet"},
			Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "company.ts.net"}}},
		Endpoints: []*v1alpha1.TailscaleEndpoints{web, db},
		Services:  []*v1alpha1.TailscaleServices{svc},
	})
	if len(out.Problems) != 0 || len(out.Routes) != 6 || len(out.Policies) != 3 {
		t.Fatalf("generated %d routes, %d policies, problems %v", len(out.Routes), len(out.Policies), out.Problems)
	}

	// Our server, holding the same objects (the EDS answers from them).
	s, hookL, xdsL := startServer(t, &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}})
	ctx := bounded(t)
	c := s.Clientset(t).GatewayV1alpha1()
	for _, o := range []*v1alpha1.TailscaleEndpoints{web, db} {
		if _, err := c.TailscaleEndpoints(routesNS).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.TailscaleServices(routesNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TailscaleGateways(routesNS).Create(ctx, &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: routesNS, Name: tsgw.Name}, Spec: tsgw.Spec}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Envoy Gateway's resources: the Gateway (routes of other namespaces allowed), the generated
	// routes and policies as the controller writes them, our objects.
	gateway := map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": egGateway, "namespace": egNS},
		"spec": map[string]any{"gatewayClassName": "eg", "listeners": []any{map[string]any{
			"name": "http", "protocol": "HTTP", "port": 8080, "allowedRoutes": map[string]any{"namespaces": map[string]any{"from": "All"}}}}},
	}
	gwYAML, err := yaml.Marshal(gateway)
	if err != nil {
		t.Fatal(err)
	}
	var routeDocs, policyDocs []string
	for _, r := range out.Routes {
		y, err := envoygateway.ObjectYAML(gwapiv1.GroupVersion.String(), "HTTPRoute", r)
		if err != nil {
			t.Fatal(err)
		}
		routeDocs = append(routeDocs, y)
	}
	for _, p := range out.Policies {
		y, err := yaml.Marshal(p.Object)
		if err != nil {
			t.Fatal(err)
		}
		policyDocs = append(policyDocs, string(y))
	}
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: hookL.Addr().String(), ExtensionManager: artifactExtensionManager(t),
		JSONLogs: true, Resources: map[string]string{
			"gateway.yaml":  envoygateway.JoinYAML(envoygateway.GatewayClassYAML("eg"), string(gwYAML)),
			"routes.yaml":   envoygateway.JoinYAML(routeDocs...),
			"policies.yaml": envoygateway.JoinYAML(policyDocs...),
			"objects.yaml":  envoygateway.JoinYAML(objectYAML(t, "TailscaleEndpoints", web), objectYAML(t, "TailscaleEndpoints", db), objectYAML(t, "TailscaleServices", svc)),
		}})

	// Every rule's cluster, shaped by our Cluster hook into an EDS cluster of our xDS server.
	var clusters []string
	for _, r := range out.Routes {
		for i := range r.Spec.Rules {
			clusters = append(clusters, envoygateway.ClusterName(routesNS, r.Name, i))
		}
	}
	ours := func(cl *clusterv3.Cluster) bool {
		src := cl.GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource()
		return cl != nil && cl.GetType() == clusterv3.Cluster_EDS && cl.GetEdsClusterConfig().GetServiceName() == cl.GetName() &&
			len(src.GetGrpcServices()) == 1 && src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() == eds.ClusterName
	}
	xc := eg.XDS(t, egNS, egGateway)
	var missing []string
	if _, err := xc.FetchClusters(ctx, func(r *xdsclient.Response) bool {
		missing = missing[:0]
		for _, name := range clusters {
			if !ours(r.Cluster(name)) {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0 && r.Cluster(eds.ClusterName) != nil
	}); err != nil {
		t.Fatalf("Envoy Gateway's CDS lacks our EDS clusters %v: %v", missing, err)
	}

	// The statuses Envoy Gateway computed: every route accepted with its references resolved,
	// every policy accepted.
	check := func(kind string, names []string, types ...string) {
		t.Helper()
		var last string
		if err := waitUntil(ctx, func() bool {
			st, err := eg.Statuses(kind)
			if err != nil {
				last = err.Error()
				return false
			}
			last = ""
			for _, name := range names {
				for _, typ := range types {
					cond := st[routesNS+"/"+name].Condition(0, typ)
					if cond == nil || cond.Status != metav1.ConditionTrue {
						last += fmt.Sprintf("%s %s: %+v; ", name, typ, cond)
					}
				}
			}
			return last == ""
		}); err != nil {
			t.Fatalf("%s statuses: %s (%v)", kind, last, err)
		}
	}
	var routeNames, policyNames []string
	for _, r := range out.Routes {
		routeNames = append(routeNames, r.Name)
	}
	for _, p := range out.Policies {
		policyNames = append(policyNames, p.GetName())
	}
	check("HTTPRoute", routeNames, string(gwapiv1.RouteConditionAccepted), string(gwapiv1.RouteConditionResolvedRefs))
	check("BackendTrafficPolicy", policyNames, "Accepted")

	// The routes: hostnames, prefixes, rewrites, the header filter, the timeout and the retries.
	egressWeb := tsgateway.RouteName(tsgw.Name, "main-tailnet", tsgateway.DirectionEgress, "ep", "web")
	ingressWeb := tsgateway.RouteName(tsgw.Name, "main-tailnet", tsgateway.DirectionIngress, "ep", "web")
	rds, err := xc.Fetch(ctx, xdsclient.RouteType, func(r *xdsclient.Response) bool {
		e, _ := findRoute(r, envoygateway.ClusterName(routesNS, egressWeb, 0))
		i, _ := findRoute(r, envoygateway.ClusterName(routesNS, ingressWeb, 0))
		return e != nil && i != nil
	})
	if err != nil {
		t.Fatalf("Envoy Gateway's RDS lacks the generated routes: %v", err)
	}
	eRoute, eHost := findRoute(rds, envoygateway.ClusterName(routesNS, egressWeb, 0))
	a := eRoute.GetRoute()
	if !slices.Contains(eHost.GetDomains(), "web.internal.company.com") || eRoute.GetMatch().GetPathSeparatedPrefix()+eRoute.GetMatch().GetPrefix() == "" ||
		a.GetTimeout().AsDuration() != 30*time.Second || a.GetRetryPolicy().GetNumRetries().GetValue() != 3 ||
		a.GetRetryPolicy().GetPerTryTimeout().AsDuration() != 10*time.Second || a.GetRegexRewrite() == nil && a.GetPrefixRewrite() == "" {
		t.Errorf("egress route of web (domains %v):\n%s", eHost.GetDomains(), dump(t, eRoute))
	}
	if !strings.Contains(a.GetRetryPolicy().GetRetryOn(), "connect-failure") || !slices.Contains(a.GetRetryPolicy().GetRetriableStatusCodes(), 503) {
		t.Errorf("egress route of web: retry policy %s", dump(t, a.GetRetryPolicy()))
	}
	// The backend sees the path without the prefix, with or without the prefix's trailing "/".
	for path, want := range map[string]string{"/api/web": "/", "/api/web/": "/", "/api/web/x/y": "/x/y"} {
		if got := rewrite(t, a, "/api/web", path); got != want {
			t.Errorf("egress route of web rewrites %q to %q, want %q", path, got, want)
		}
	}
	if legacy, _ := findRoute(rds, envoygateway.ClusterName(routesNS, egressWeb, 1)); legacy == nil {
		t.Errorf("the /legacy/web/ rewrite rule has no route")
	} else if got := rewrite(t, legacy.GetRoute(), "/legacy/web", "/legacy/web/x"); got != "/v1/x" {
		t.Errorf("the /legacy/web/ rule rewrites /legacy/web/x to %q, want /v1/x", got)
	}
	iRoute, iHost := findRoute(rds, envoygateway.ClusterName(routesNS, ingressWeb, 0))
	if !slices.Contains(iHost.GetDomains(), "web.company.ts.net") || len(iRoute.GetRequestHeadersToAdd()) != 1 ||
		iRoute.GetRequestHeadersToAdd()[0].GetHeader().GetKey() != "X-Gateway-Version" || iRoute.GetRoute().GetTimeout().AsDuration() != 0 {
		t.Errorf("ingress route of web (domains %v):\n%s", iHost.GetDomains(), dump(t, iRoute))
	}

	// Our EDS answers the clusters Envoy Gateway published with the objects' endpoints.
	ec, err := xdsclient.Dial(xdsL.Addr().String(), xdsclient.Options{NodeCluster: egNS + "/" + egGateway})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	w, err := ec.EndpointsWatch(ctx, clusters...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	has := func(r *xdsclient.Response, cluster, addr string) bool {
		for _, l := range r.LoadAssignment(cluster).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				if net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())) == addr {
					return true
				}
			}
		}
		return false
	}
	ingressDB := tsgateway.RouteName(tsgw.Name, "main-tailnet", tsgateway.DirectionIngress, "ep", "db")
	ingressSvc := tsgateway.RouteName(tsgw.Name, "main-tailnet", tsgateway.DirectionIngress, "svc", "web-svc")
	if _, err := w.WaitFor(ctx, func(r *xdsclient.Response) bool {
		return has(r, envoygateway.ClusterName(routesNS, ingressWeb, 0), "100.64.0.10:8080") &&
			has(r, envoygateway.ClusterName(routesNS, egressWeb, 0), "100.64.0.10:8080") &&
			has(r, envoygateway.ClusterName(routesNS, ingressDB, 0), "100.64.0.10:8080") &&
			has(r, envoygateway.ClusterName(routesNS, ingressSvc, 0), "100.64.0.10:8080")
	}); err != nil {
		t.Fatalf("our EDS does not answer the generated routes' clusters with the endpoints: %v; last %s", err, dump(t, w.Latest().LoadAssignment(envoygateway.ClusterName(routesNS, ingressWeb, 0))))
	}
}

// findRoute returns the route whose action is cluster, and its virtual host.
func findRoute(r *xdsclient.Response, cluster string) (*routev3.Route, *routev3.VirtualHost) {
	for _, rc := range r.RouteConfigurations() {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if rt.GetRoute().GetCluster() == cluster {
					return rt, vh
				}
			}
		}
	}
	return nil, nil
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
