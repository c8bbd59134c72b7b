package tsgateway

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// pathsGateway is the workflow's TailscaleGateway: Gateway main-gateway, two tailnet entries
// with discovery, ingress and egress routes on "prod" (priority 100) and egress only on "backup"
// (priority 50).
func pathsGateway() *v1alpha1.TailscaleGateway {
	routes := func(ingress bool) *v1alpha1.RouteGenerationConfig {
		return &v1alpha1.RouteGenerationConfig{Ingress: &v1alpha1.IngressRouteConfig{Enabled: ingress},
			Egress: &v1alpha1.EgressRouteConfig{Enabled: true}}
	}
	return &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "main-tailscale-gateway", UID: "uid-main"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: "main-gateway"},
			Tailnets: []v1alpha1.TailnetConfiguration{
				{Name: "prod", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "production-tailnet"}, Priority: ptr(int32(100)),
					ServiceDiscovery: &v1alpha1.TailnetServiceDiscovery{Enabled: true}, RouteGeneration: routes(true)},
				{Name: "backup", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "backup-tailnet"}, Priority: ptr(int32(50)),
					ServiceDiscovery: &v1alpha1.TailnetServiceDiscovery{Enabled: true}, RouteGeneration: routes(false)},
			},
		}}
}

// pathsInput gives pathsGateway the Gateway's listeners as GenerateListeners publishes them and
// the remote objects discovery generates for Tailscale Services of another cluster: webapp-cluster2
// on prod only, billing on both tailnets (a failover group).
func pathsInput(t *testing.T) PathInput {
	gw := pathsGateway()
	host := gwapiv1.Hostname("api.example.com")
	wild := gwapiv1.Hostname("*.example.com")
	listeners := []gwapiv1.Listener{
		{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType, Hostname: &host},
		{Name: "admin", Port: 8080, Protocol: gwapiv1.HTTPProtocolType, Hostname: &wild},
		{Name: "https", Port: 443, Protocol: gwapiv1.HTTPSProtocolType},
		{Name: "db", Port: 5432, Protocol: gwapiv1.TCPProtocolType},
	}
	tailnets := map[string]*v1alpha1.TailscaleTailnet{}
	din := discovery.Input{Gateway: gw, OperatorID: "cluster-a"}
	owned := map[string]string{"tailscale.com/owner-references": `{"ownerRefs":[{"operatorID":"cluster-b"}]}`}
	for i, c := range gw.Spec.Tailnets {
		ref := c.TailscaleTailnetRef.Name
		tailnets[ref] = &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: ref}}
		snap := &tailnet.Snapshot{Services: []tailnet.Service{
			{Name: "svc:billing", Addrs: []string{"100.64.3." + string(rune('1'+i))}, Ports: []string{"tcp:80"}, Annotations: owned}}}
		if c.Name == "prod" {
			snap.Services = append(snap.Services, tailnet.Service{Name: "svc:webapp-cluster2", Addrs: []string{"100.64.2.10"}, Ports: []string{"tcp:80"}, Annotations: owned})
		}
		din.Tailnets = append(din.Tailnets, discovery.Tailnet{Config: c, Ref: ref, Snapshot: snap})
	}
	found := discovery.Generate(din)
	envoy := envoyService(corev1.ServicePort{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80},
		corev1.ServicePort{Name: "http-8080", Protocol: corev1.ProtocolTCP, Port: 8080},
		corev1.ServicePort{Name: "https-443", Protocol: corev1.ProtocolTCP, Port: 443},
		corev1.ServicePort{Name: "tcp-5432", Protocol: corev1.ProtocolTCP, Port: 5432})
	envoy.Labels[EnvoyOwningGatewayName], envoy.Labels[EnvoyOwningGatewayNamespace] = "main-gateway", "default"
	lout := GenerateListeners(ListenerInput{Gateway: gw, Tailnets: tailnets, Listeners: listeners, Envoy: envoy})
	if len(lout.Problems) != 0 || len(found.Services) != 1 {
		t.Fatalf("listener problems %v; discovery's groups %d", lout.Problems, len(found.Services))
	}
	return PathInput{Gateway: gw, Listeners: listeners, Published: lout.Listeners,
		Endpoints: found.Endpoints, Services: append(found.Services, lout.Services...)}
}

func pathSummary(routes []*gwapiv1.HTTPRoute) []string {
	var out []string
	for _, r := range routes {
		rule := r.Spec.Rules[len(r.Spec.Rules)-1]
		ref := rule.BackendRefs[0]
		out = append(out, r.Name+" "+*rule.Matches[0].Path.Value+" -> "+string(*ref.Kind)+"/"+string(ref.Name))
	}
	return out
}

// The workflow's routes: /gateway/main-gateway-<listener>/ for the two HTTP listeners, to the
// listener TailscaleServices of prod (the entry with ingress routes); /cross-cluster/<label>/ to
// the remote TailscaleEndpoints of webapp-cluster2 and to billing's failover group, never to the
// group's members. The golden files hold the whole routes (rewrite, Host, hop header and guard).
func TestGeneratePathsWorkflow(t *testing.T) {
	out := GeneratePaths(pathsInput(t))
	if len(out.Conflicts)+len(out.Problems) != 0 {
		t.Fatalf("conflicts %v, problems %v", out.Conflicts, out.Problems)
	}
	want := []string{
		"main-tailscale-gateway-path-gateway-http /gateway/main-gateway-http -> TailscaleServices/main-tailscale-gateway-prod-listener-http",
		"main-tailscale-gateway-path-gateway-admin /gateway/main-gateway-admin -> TailscaleServices/main-tailscale-gateway-prod-listener-admin",
		"main-tailscale-gateway-path-cross-cluster-billing /cross-cluster/billing -> TailscaleServices/main-tailscale-gateway-remote-billing",
		"main-tailscale-gateway-path-cross-cluster-webapp-cluster2 /cross-cluster/webapp-cluster2 -> TailscaleEndpoints/main-tailscale-gateway-prod-remote-webapp-cluster2",
	}
	if got := pathSummary(out.Routes); !slices.Equal(got, want) {
		t.Fatalf("routes\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	assertGolden(t, "paths-gateway-http", out.Routes[0])
	assertGolden(t, "paths-gateway-admin", out.Routes[1])
	assertGolden(t, "paths-cross-cluster-webapp", out.Routes[3])
	for _, r := range out.Routes {
		if !controlledBy(r, pathsGateway()) || r.Labels[LabelGateway] != "main-tailscale-gateway" || r.Labels[LabelManagedBy] != ManagedBy || r.Labels[LabelPathRoute] == "" {
			t.Errorf("%s: owner %v, labels %v", r.Name, r.OwnerReferences, r.Labels)
		}
	}
}

// Each switch and each owner decides: without ingress routes no /gateway/, without egress routes
// no /cross-cluster/; remote objects the TailscaleGateway does not control, and listeners it
// does not publish, get nothing.
func TestGeneratePathsNeedTheirSwitchAndOwner(t *testing.T) {
	in := pathsInput(t)
	in.Gateway.Spec.Tailnets[0].RouteGeneration.Ingress.Enabled = false
	if got := pathSummary(GeneratePaths(in).Routes); len(got) != 2 || !strings.Contains(got[0], "/cross-cluster/billing ->") {
		t.Errorf("without ingress routes: %v", got)
	}

	in = pathsInput(t)
	for i := range in.Gateway.Spec.Tailnets {
		in.Gateway.Spec.Tailnets[i].RouteGeneration.Egress.Enabled = false
	}
	if got := pathSummary(GeneratePaths(in).Routes); len(got) != 2 || !strings.Contains(got[1], "/gateway/main-gateway-admin ->") {
		t.Errorf("without egress routes: %v", got)
	}

	in = pathsInput(t)
	in.Gateway.UID = "another-uid" // same name, another object: it controls no remote object
	if got := pathSummary(GeneratePaths(in).Routes); len(got) != 2 || strings.Contains(strings.Join(got, ","), "/cross-cluster/") {
		t.Errorf("remote objects of another TailscaleGateway routed: %v", got)
	}

	in = pathsInput(t)
	in.Published = slices.DeleteFunc(in.Published, func(l Listener) bool { return l.Listener == "http" })
	if got := pathSummary(GeneratePaths(in).Routes); len(got) != 3 || strings.Contains(strings.Join(got, ","), "main-gateway-http ->") {
		t.Errorf("an unpublished listener routed: %v", got)
	}
}

// A route of someone else on the same Gateway, without hostnames, matching the same PathPrefix
// (with or without the trailing "/") keeps it: the path route is left out and named. One with
// hostnames, on another Gateway, or matching a longer prefix does not; nor do the routes the
// TailscaleGateway controls (its path routes of the last pass).
func TestGeneratePathsGiveWayToOtherRoutes(t *testing.T) {
	in := pathsInput(t)
	user := func(ns, name, gateway, prefix string, hosts ...gwapiv1.Hostname) *gwapiv1.HTTPRoute {
		r := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: gwapiv1.ObjectName(gateway)}}
		if ns != "default" {
			gns := gwapiv1.Namespace("default")
			r.Spec.ParentRefs[0].Namespace = &gns
		}
		r.Spec.Hostnames = hosts
		r.Spec.Rules = []gwapiv1.HTTPRouteRule{{Matches: pathMatch(prefix)}}
		return r
	}
	in.Routes = []*gwapiv1.HTTPRoute{
		user("apps", "mine", "main-gateway", "/cross-cluster/webapp-cluster2"),
		user("default", "hosted", "main-gateway", "/gateway/main-gateway-http/", "api.example.com"),
		user("default", "other-gateway", "other", "/gateway/main-gateway-admin/"),
		user("default", "deeper", "main-gateway", "/cross-cluster/billing/v2/"),
	}
	prev := GeneratePaths(pathsInput(t)).Routes
	in.Routes = append(in.Routes, prev...) // ours, as they stand
	out := GeneratePaths(in)
	if want := []string{"path /cross-cluster/webapp-cluster2 (HTTPRoute apps/mine)"}; !slices.Equal(out.Conflicts, want) {
		t.Errorf("conflicts %v, want %v", out.Conflicts, want)
	}
	if len(out.Routes) != 3 {
		t.Errorf("routes %v", pathSummary(out.Routes))
	}

	// A routeGeneration route's prefix wins the same way.
	in = pathsInput(t)
	gen := user("default", "main-tailscale-gateway-prod-egress-ep-x", "main-gateway", "/gateway/main-gateway-admin")
	in.Generated = []*gwapiv1.HTTPRoute{gen}
	if out := GeneratePaths(in); len(out.Conflicts) != 1 || !strings.Contains(out.Conflicts[0], "/gateway/main-gateway-admin (") {
		t.Errorf("conflicts with a generated route %v", out.Conflicts)
	}
}

// Two objects for one label (discovery could not group them) collide on /cross-cluster/<label>/:
// the one of the highest-priority tailnet entry wins and the other is named.
func TestGeneratePathsCollisionByPriority(t *testing.T) {
	in := pathsInput(t)
	in.Services = slices.DeleteFunc(in.Services, func(s *v1alpha1.TailscaleServices) bool {
		return s.Labels[discovery.LabelRole] == discovery.RoleRemoteGroup
	})
	out := GeneratePaths(in)
	got := pathSummary(out.Routes)
	if !slices.Contains(got, "main-tailscale-gateway-path-cross-cluster-billing /cross-cluster/billing -> TailscaleEndpoints/main-tailscale-gateway-prod-remote-billing") {
		t.Errorf("routes %v", got)
	}
	if len(out.Problems) != 1 || !strings.Contains(out.Problems[0], "main-tailscale-gateway-backup-remote-billing (tailnet backup) left out") {
		t.Errorf("problems %v", out.Problems)
	}
	// Priorities swapped, backup wins.
	in.Gateway.Spec.Tailnets[1].Priority = ptr(int32(200))
	if got := pathSummary(GeneratePaths(in).Routes); !slices.Contains(got,
		"main-tailscale-gateway-path-cross-cluster-billing /cross-cluster/billing -> TailscaleEndpoints/main-tailscale-gateway-backup-remote-billing") {
		t.Errorf("with backup first: %v", got)
	}
}

// The stored route names are valid object names and the prefixes single path segments.
func TestPathRouteNames(t *testing.T) {
	long := strings.Repeat("a", 250)
	if n := PathRouteName(long, PathRouteCrossCluster, "x"); len(n) > 253 {
		t.Errorf("name of %d characters", len(n))
	}
	if n := PathRouteName("gw", PathRouteGateway, "http"); n != "gw-path-gateway-http" {
		t.Errorf("name %s", n)
	}
}
