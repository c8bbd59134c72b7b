package tsgateway

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func assertGolden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (run with -update to create it): %v", path, err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs from %s (run with -update to accept):\n%s", name, path, got)
	}
}

func ptr[T any](v T) *T { return &v }

// advancedGateway is the spec's "Advanced Routing Configuration" example.
func advancedGateway() *v1alpha1.TailscaleGateway {
	return &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "advanced", UID: "uid-1"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: "envoy-gateway", Namespace: "envoy-gateway-system"},
			Tailnets: []v1alpha1.TailnetConfiguration{{
				Name:                "main-tailnet",
				TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "main-tailnet"},
				RouteGeneration: &v1alpha1.RouteGenerationConfig{
					Ingress: &v1alpha1.IngressRouteConfig{Enabled: true, HostPattern: "{service}.company.ts.net", PathPrefix: "/",
						DefaultBackend: &v1alpha1.BackendConfig{Weight: ptr(int32(100))},
						Filters: []v1alpha1.HTTPRouteFilter{{Type: "RequestHeaderModifier", RequestHeaderModifier: &v1alpha1.HTTPHeaderFilter{
							Add: []v1alpha1.HTTPHeader{{Name: "X-Gateway-Version", Value: "v1.0.0"}}}}}},
					Egress: &v1alpha1.EgressRouteConfig{Enabled: true, HostPattern: "{service}.internal.company.com", PathPrefix: "/api/{service}/",
						RewriteRules: []v1alpha1.RewriteRule{{From: "/api/{service}/", To: "/"}, {From: "/legacy/{service}/", To: "/v1/"}},
						Timeout:      &metav1.Duration{Duration: 30 * time.Second},
						RetryPolicy: &v1alpha1.RetryPolicy{NumRetries: ptr(int32(3)), PerTryTimeout: &metav1.Duration{Duration: 10 * time.Second},
							BackoffBaseInterval: &metav1.Duration{Duration: time.Second}, BackoffMaxInterval: &metav1.Duration{Duration: 10 * time.Second}}},
				},
			}},
		},
	}
}

func input(gw *v1alpha1.TailscaleGateway) Input {
	return Input{
		Gateway: gw,
		Tailnets: map[string]*v1alpha1.TailscaleTailnet{
			"main-tailnet": {ObjectMeta: metav1.ObjectMeta{Name: "main-tailnet"}, Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "company.ts.net"}},
		},
		Endpoints: []*v1alpha1.TailscaleEndpoints{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "web", Labels: map[string]string{"app": "web"}}, Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main-tailnet"}},
			// By tailnet domain.
			{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "db"}, Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "company.ts.net"}},
			// Another tailnet: no route.
			{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "elsewhere", Labels: map[string]string{"app": "web"}}, Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "other"}},
		},
		Services: []*v1alpha1.TailscaleServices{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "web"}, Spec: v1alpha1.TailscaleServicesSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "nothing"}, Spec: v1alpha1.TailscaleServicesSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "none"}}}},
		},
	}
}

func TestGenerateAdvanced(t *testing.T) {
	out := Generate(input(advancedGateway()))
	if len(out.Problems) != 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
	var names []string
	for _, r := range out.Routes {
		names = append(names, r.Name)
	}
	want := "advanced-main-tailnet-ingress-ep-db advanced-main-tailnet-egress-ep-db advanced-main-tailnet-ingress-ep-web " +
		"advanced-main-tailnet-egress-ep-web advanced-main-tailnet-ingress-svc-web advanced-main-tailnet-egress-svc-web"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("routes:\n got %s\nwant %s", got, want)
	}
	if out.RoutesPerTailnet["main-tailnet"] != 6 || len(out.Backends) != 3 || len(out.Policies) != 3 {
		t.Fatalf("counts: %v %v %d", out.RoutesPerTailnet, out.Backends, len(out.Policies))
	}
	assertGolden(t, "advanced-ingress-ep-web", out.Routes[2])
	assertGolden(t, "advanced-egress-ep-web", out.Routes[3])
	assertGolden(t, "advanced-egress-ep-web-policy", out.Policies[1].Object)
}

func TestGenerateDefaults(t *testing.T) {
	gw := advancedGateway()
	gw.Spec.GatewayRef.Namespace = ""
	rg := gw.Spec.Tailnets[0].RouteGeneration
	rg.Ingress = &v1alpha1.IngressRouteConfig{Enabled: true}
	rg.Egress = &v1alpha1.EgressRouteConfig{Enabled: true}
	in := input(gw)
	in.Services = nil
	in.Endpoints = in.Endpoints[:1]
	out := Generate(in)
	if len(out.Routes) != 2 || len(out.Policies) != 0 {
		t.Fatalf("%d routes, %d policies", len(out.Routes), len(out.Policies))
	}
	assertGolden(t, "defaults-ingress", out.Routes[0].Spec)
	assertGolden(t, "defaults-egress", out.Routes[1].Spec)

	// Disabled directions and missing tailnets generate nothing.
	rg.Ingress.Enabled, rg.Egress.Enabled = false, false
	if out := Generate(in); len(out.Routes) != 0 {
		t.Fatalf("disabled: %d routes", len(out.Routes))
	}
	rg.Ingress.Enabled = true
	in.Tailnets = nil
	if out := Generate(in); len(out.Routes) != 0 {
		t.Fatalf("missing tailnet: %d routes", len(out.Routes))
	}
}

func TestGenerateHostnameTooLong(t *testing.T) {
	gw := advancedGateway()
	gw.Spec.Tailnets[0].RouteGeneration.Egress = nil
	in := input(gw)
	long := strings.Repeat("a", 70)
	in.Endpoints = []*v1alpha1.TailscaleEndpoints{{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: long + "-x"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main-tailnet"}}}
	in.Services = nil
	out := Generate(in)
	if len(out.Routes) != 0 || len(out.Problems) != 1 || !strings.Contains(out.Problems[0], "longer than 63") {
		t.Fatalf("routes %d, problems %v", len(out.Routes), out.Problems)
	}
}

func TestRouteName(t *testing.T) {
	if got := RouteName("gw", "main", DirectionIngress, "ep", "web"); got != "gw-main-ingress-ep-web" {
		t.Fatal(got)
	}
	long := strings.Repeat("x", 250)
	a, b := RouteName("gw", "main", DirectionIngress, "ep", long+"a"), RouteName("gw", "main", DirectionIngress, "ep", long+"b")
	if len(a) > 253 || len(b) > 253 || a == b {
		t.Fatalf("long names: %d %d equal=%v", len(a), len(b), a == b)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 30 * time.Second: "30s", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1s500ms",
		time.Hour + time.Millisecond: "1h1ms", 400 * time.Microsecond: "0s", 600 * time.Microsecond: "1ms",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestUnsupported(t *testing.T) {
	gw := advancedGateway()
	if u := Unsupported(gw); len(u) != 0 {
		t.Fatalf("route generation is supported: %v", u)
	}
	gw.Spec.LoadBalancing = &v1alpha1.GatewayLoadBalancingConfig{Strategy: "least_request",
		CircuitBreaker: &v1alpha1.CircuitBreakerConfig{Enabled: true}, HealthChecking: &v1alpha1.HealthCheckConfig{}}
	gw.Spec.Security = &v1alpha1.SecurityConfig{AccessControl: &v1alpha1.AccessControlConfig{DeniedTags: []string{"tag:dev"}}}
	// The EnvoyProxy carries observability, except a metrics port other than Envoy Gateway's.
	gw.Spec.Observability = &v1alpha1.ObservabilityConfig{Metrics: &v1alpha1.MetricsConfig{Enabled: true, Port: ptr(int32(EnvoyStatsPort))},
		Tracing: &v1alpha1.TracingConfig{Enabled: true, JaegerEndpoint: "http://jaeger:9411/api/v2/spans"},
		Logging: &v1alpha1.LoggingConfig{Level: "info", AccessLogs: true}}
	if u := strings.Join(Unsupported(gw), " "); strings.Contains(u, "observability") {
		t.Fatalf("observability is supported: %v", u)
	}
	gw.Spec.Observability.Metrics.Port = ptr(int32(9090))
	const metricsPort = "spec.observability.metrics.port (Envoy Gateway v1.9 serves Prometheus on port 19001 only; EnvoyProxy has no field for another)"
	gw.Spec.Tailnets[0].Priority = ptr(int32(50))
	got := strings.Join(Unsupported(gw), " ")
	// accessControl: the proxy enforces it; priority: only discovery's failover groups read it.
	const noDiscovery = " (only discovery's failover groups read it and discovery is not enabled on this and another tailnet)"
	want := "spec.loadBalancing.healthChecking " + metricsPort + " spec.tailnets[0].priority" + noDiscovery
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	second := *gw.Spec.Tailnets[0].DeepCopy()
	second.Name = "other"
	gw.Spec.Tailnets = append(gw.Spec.Tailnets, second)
	want += " spec.tailnets[1].priority" + noDiscovery
	if got := strings.Join(Unsupported(gw), " "); got != want {
		t.Fatalf("two tailnets: got %s\nwant %s", got, want)
	}
	// With discovery, healthChecking is the health check of discovered remote services; priority
	// orders the tailnets once discovery runs on both.
	gw.Spec.Tailnets[1].ServiceDiscovery = &v1alpha1.TailnetServiceDiscovery{Enabled: true}
	want = metricsPort + " spec.tailnets[0].priority" + noDiscovery + " spec.tailnets[1].priority" + noDiscovery
	if got := strings.Join(Unsupported(gw), " "); got != want {
		t.Fatalf("with discovery on one tailnet: got %s\nwant %s", got, want)
	}
	gw.Spec.Tailnets[0].ServiceDiscovery = &v1alpha1.TailnetServiceDiscovery{Enabled: true}
	if got, want := strings.Join(Unsupported(gw), " "), metricsPort; got != want {
		t.Fatalf("with discovery on both: got %s\nwant %s", got, want)
	}
	// A direction not enabled generates nothing: its fields are listed.
	gw.Spec.Tailnets[1].RouteGeneration.Ingress.Enabled = false
	gw.Spec.Tailnets[1].RouteGeneration.Egress = &v1alpha1.EgressRouteConfig{PathPrefix: "/out/"}
	want = metricsPort + " spec.tailnets[1].routeGeneration.ingress (enabled is false) spec.tailnets[1].routeGeneration.egress (enabled is false)"
	if got := strings.Join(Unsupported(gw), " "); got != want {
		t.Fatalf("directions not enabled: got %s\nwant %s", got, want)
	}
}

// TestGenerateRoutesToRemoteGroup: a Tailscale Service found on two tailnets (priorities 50 and
// 100) is routed once, through discovery's failover group in the priority-100 tailnet's routes;
// its remote TailscaleEndpoints get no routes; a service on one tailnet keeps its own route.
func TestGenerateRoutesToRemoteGroup(t *testing.T) {
	gw := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "gw", UID: "gw-uid"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: "eg"}}}
	owned := map[string]string{"tailscale.com/owner-references": `{"ownerRefs":[{"operatorID":"cluster-b"}]}`}
	in := discovery.Input{Gateway: gw, OperatorID: "ours"}
	tailnets := map[string]*v1alpha1.TailscaleTailnet{}
	for i, c := range []struct {
		prio   int32
		labels []string
	}{{50, []string{"billing", "api"}}, {100, []string{"billing"}}} {
		n := strconv.Itoa(i)
		cfg := v1alpha1.TailnetConfiguration{Name: "t" + n, Priority: ptr(c.prio),
			TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "tn" + n},
			ServiceDiscovery:    &v1alpha1.TailnetServiceDiscovery{Enabled: true},
			RouteGeneration:     &v1alpha1.RouteGenerationConfig{Egress: &v1alpha1.EgressRouteConfig{Enabled: true}}}
		gw.Spec.Tailnets = append(gw.Spec.Tailnets, cfg)
		snap := &tailnet.Snapshot{}
		for _, l := range c.labels {
			snap.Services = append(snap.Services, tailnet.Service{Name: "svc:" + l, Addrs: []string{"100.100.0." + n}, Ports: []string{"tcp:80"}, Annotations: owned})
		}
		in.Tailnets = append(in.Tailnets, discovery.Tailnet{Config: cfg, Ref: "tn" + n, Snapshot: snap})
		tailnets["tn"+n] = &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "tn" + n}}
	}
	found := discovery.Generate(in)
	if len(found.Services) != 1 {
		t.Fatalf("discovery generated TailscaleServices %v, want the billing group", found.Services)
	}
	out := Generate(Input{Gateway: gw, Tailnets: tailnets, Endpoints: found.Endpoints, Services: found.Services})
	if len(out.Problems) != 0 {
		t.Fatalf("problems %v", out.Problems)
	}
	var got []string
	for _, r := range out.Routes {
		ref := r.Spec.Rules[0].BackendRefs[0]
		got = append(got, r.Name+" -> "+string(*ref.Kind)+"/"+string(ref.Name))
	}
	want := []string{
		"gw-t0-egress-ep-gw-t0-remote-api -> TailscaleEndpoints/gw-t0-remote-api",
		"gw-t1-egress-svc-gw-remote-billing -> TailscaleServices/gw-remote-billing",
	}
	if !slices.Equal(got, want) {
		t.Errorf("routes\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out.RoutesPerTailnet["t0"] != 1 || out.RoutesPerTailnet["t1"] != 1 {
		t.Errorf("routes per tailnet %v", out.RoutesPerTailnet)
	}
	if out.Backends["TailscaleEndpoints/gw-t0-remote-billing"] || out.Backends["TailscaleEndpoints/gw-t1-remote-billing"] {
		t.Errorf("group members counted as backends: %v", out.Backends)
	}
}
