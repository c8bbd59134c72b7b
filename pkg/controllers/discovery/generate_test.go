package discovery

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"tailscale.com/tailcfg"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

func gatewayObj() *v1alpha1.TailscaleGateway {
	return &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "gw", UID: "gw-uid"},
		Spec: v1alpha1.TailscaleGatewaySpec{Tailnets: []v1alpha1.TailnetConfiguration{{Name: "prod",
			TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "prod-tailnet"},
			ServiceDiscovery:    &v1alpha1.TailnetServiceDiscovery{Enabled: true}}}}}
}

func kubeService(ns, name string, labels, annotations map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: ports}}
}

var exposed = map[string]string{LabelExpose: "true"}

func tcp(port int32) corev1.ServicePort {
	return corev1.ServicePort{Port: port, Protocol: corev1.ProtocolTCP}
}

func owned(operator string) map[string]string {
	return map[string]string{"tailscale.com/owner-references": `{"ownerRefs":[{"operatorID":"` + operator + `","resource":{"kind":"TailscaleServices","name":"x/y","uid":"1"}}]}`}
}

func input(svcs []*corev1.Service, snap *tailnet.Snapshot) Input {
	gw := gatewayObj()
	return Input{Gateway: gw, OperatorID: "ours", Services: svcs,
		Tailnets: []Tailnet{{Config: gw.Spec.Tailnets[0], Ref: "prod-tailnet", Snapshot: snap}}}
}

// valid checks that the generated objects pass the server's validation.
func valid(t *testing.T, out Output) {
	t.Helper()
	for _, s := range out.Services {
		var in gateway.TailscaleServices
		if err := v1alpha1.Convert_v1alpha1_TailscaleServices_To_gateway_TailscaleServices(s, &in, nil); err != nil {
			t.Fatal(err)
		}
		if errs := validation.ValidateTailscaleServices(&in); len(errs) > 0 {
			t.Errorf("TailscaleServices %s is invalid: %v", s.Name, errs.ToAggregate())
		}
		if s.Spec.VIPService == nil {
			continue
		}
		if err := tailcfg.ServiceName(s.Spec.VIPService.Name).Validate(); err != nil {
			t.Errorf("vipService name %s: %v", s.Spec.VIPService.Name, err)
		}
	}
	for _, e := range out.Endpoints {
		var in gateway.TailscaleEndpoints
		if err := v1alpha1.Convert_v1alpha1_TailscaleEndpoints_To_gateway_TailscaleEndpoints(e, &in, nil); err != nil {
			t.Fatal(err)
		}
		if errs := validation.ValidateTailscaleEndpoints(&in); len(errs) > 0 {
			t.Errorf("TailscaleEndpoints %s is invalid: %v", e.Name, errs.ToAggregate())
		}
	}
}

func TestGenerateLocalService(t *testing.T) {
	web := kubeService("apps", "web", exposed, nil, tcp(80), corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP}, tcp(443))
	out := Generate(input([]*corev1.Service{web}, nil))
	valid(t, out)
	if len(out.Services) != 1 || len(out.Endpoints) != 1 {
		t.Fatalf("got %d TailscaleServices, %d TailscaleEndpoints, want 1 and 1 (the host): %+v", len(out.Services), len(out.Endpoints), out)
	}
	s, host := out.Services[0], out.Endpoints[0]
	if s.Name != "gw-prod-local-apps-web" || s.Namespace != "apps" {
		t.Errorf("name %s/%s", s.Namespace, s.Name)
	}
	if got := s.Spec.VIPService; got.Name != "svc:local-apps-web" || !slices.Equal(got.Ports, []string{"tcp:80", "tcp:443"}) {
		t.Errorf("vipService %+v", got)
	}
	want := []v1alpha1.ExternalService{{Name: "tcp-80", Address: "10.96.0.10", Port: 80, Protocol: v1alpha1.ProtocolTCP},
		{Name: "tcp-443", Address: "10.96.0.10", Port: 443, Protocol: v1alpha1.ProtocolTCP}}
	if got := s.Spec.ServiceDiscovery.ExternalServices; !slices.EqualFunc(got, want, func(a, b v1alpha1.ExternalService) bool {
		return a.Name == b.Name && a.Address == b.Address && a.Port == b.Port && a.Protocol == b.Protocol
	}) {
		t.Errorf("externalServices %+v", got)
	}
	if !tenancy.GeneratedByGateway(s) || !tenancy.GeneratedByGateway(host) {
		t.Error("generated objects are not controlled by the TailscaleGateway")
	}
	for _, o := range []metav1.Object{s, host} {
		l := o.GetLabels()
		if l[LabelGateway] != "gw" || l[LabelTailnet] != "prod" || l[LabelManagedBy] != ManagedBy {
			t.Errorf("%s labels %v", o.GetName(), l)
		}
	}
	if s.Annotations[AnnotationService] != "apps/web" {
		t.Errorf("annotations %v", s.Annotations)
	}
	// The TailscaleServices selects the host, which names the tailnet and carries the proxy.
	sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(host.Labels)) {
		t.Errorf("selector %v does not select the host %v", s.Spec.Selector, host.Labels)
	}
	if host.Name != "gw-prod-local-host" || host.Spec.Tailnet != "prod-tailnet" || host.Spec.Proxy == nil || host.Spec.Proxy.ConnectionType != "ingress" {
		t.Errorf("host %s %+v", host.Name, host.Spec)
	}
	if c := out.Counts["prod"]; c.Local != 1 || c.Remote != 0 {
		t.Errorf("counts %+v", c)
	}
}

func TestGenerateLocalSelection(t *testing.T) {
	headless := kubeService("apps", "headless", exposed, nil, tcp(80))
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	external := kubeService("apps", "ext", exposed, nil, tcp(80))
	external.Spec.Type = corev1.ServiceTypeExternalName
	svcs := []*corev1.Service{
		kubeService("apps", "unlabelled", nil, nil, tcp(80)),
		kubeService("apps", "false", map[string]string{LabelExpose: "false"}, nil, tcp(80)),
		kubeService("other", "no-annotation", exposed, nil, tcp(80)),
		kubeService("other", "named", exposed, map[string]string{AnnotationGateway: "apps/gw"}, tcp(80)),
		kubeService("apps", "short-name", exposed, map[string]string{AnnotationGateway: "gw"}, tcp(80)),
		kubeService("apps", "another-gateway", exposed, map[string]string{AnnotationGateway: "apps/other"}, tcp(80)),
		kubeService("refused", "named", exposed, map[string]string{AnnotationGateway: "apps/gw"}, tcp(80)),
		kubeService("apps", "udp-only", exposed, nil, corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP}),
		headless, external,
	}
	in := input(svcs, nil)
	in.Allowed = func(ns, ref string) bool { return ns != "refused" }
	out := Generate(in)
	valid(t, out)
	var got []string
	for _, s := range out.Services {
		got = append(got, s.Annotations[AnnotationService])
	}
	if want := []string{"apps/short-name", "other/named"}; !slices.Equal(got, want) {
		t.Errorf("exposed %v, want %v", got, want)
	}
	skipped := strings.Join(out.Skipped, "\n")
	for _, s := range []string{"refused/named", "apps/udp-only", "apps/headless", "apps/ext"} {
		if !strings.Contains(skipped, s) {
			t.Errorf("skipped does not explain %s:\n%s", s, skipped)
		}
	}
	// A tailnet not admitting the gateway's namespace exposes nothing.
	in.Allowed = func(ns, ref string) bool { return ns != "apps" }
	if out := Generate(in); len(out.Services)+len(out.Endpoints) != 0 {
		t.Errorf("generated for a tailnet refusing the gateway's namespace: %+v", out)
	}
	// Discovery enabled, nothing labelled: no host either.
	if out := Generate(input(nil, nil)); len(out.Endpoints) != 0 {
		t.Errorf("a host without local Services: %+v", out.Endpoints)
	}
}

func TestGenerateLongNames(t *testing.T) {
	long := strings.Repeat("a", 60)
	out := Generate(input([]*corev1.Service{kubeService(long, long, exposed, map[string]string{AnnotationGateway: "apps/gw"}, tcp(80))}, nil))
	valid(t, out)
	vip := out.Services[0].Spec.VIPService.Name
	label := strings.TrimPrefix(vip, "svc:")
	if len(label) > 63 || len(utilvalidation.IsDNS1123Label(label)) > 0 {
		t.Errorf("vipService label %q is not a DNS label", label)
	}
	if other := LocalVIPName(long, long+"b"); other == vip {
		t.Errorf("two long names share %s", vip)
	}
	if n := ObjectName(strings.Repeat("x", 300)); len(n) != 253 {
		t.Errorf("object name of %d characters", len(n))
	}
}

func TestGenerateRemoteServices(t *testing.T) {
	snap := &tailnet.Snapshot{Name: "prod-tailnet", MagicDNSSuffix: "tail1234.ts.net", Services: []tailnet.Service{
		{Name: "svc:billing", Addrs: []string{"fd7a:115c:a1e0::5", "100.100.0.5"}, Ports: []string{"tcp:80", "udp:53", "tcp:8443"}, Annotations: owned("cluster-b")},
		{Name: "svc:mine", Addrs: []string{"100.100.0.6"}, Ports: []string{"tcp:80"}, Annotations: owned("ours")},
		{Name: "svc:hand-made", Addrs: []string{"100.100.0.7"}, Ports: []string{"tcp:80"}},
		{Name: "svc:pending", Ports: []string{"tcp:80"}, Annotations: owned("cluster-b")},
		{Name: "svc:shared", Addrs: []string{"100.100.0.8"}, Ports: []string{"tcp:80"}, Annotations: map[string]string{
			"tailscale.com/owner-references": `{"ownerRefs":[{"operatorID":"cluster-b"},{"operatorID":"ours"}]}`}},
	}}
	out := Generate(input(nil, snap))
	valid(t, out)
	if len(out.Endpoints) != 1 || len(out.Services) != 0 {
		t.Fatalf("got %+v, want one TailscaleEndpoints for svc:billing", out)
	}
	e := out.Endpoints[0]
	if e.Name != "gw-prod-remote-billing" || e.Spec.Tailnet != "prod-tailnet" || e.Annotations[AnnotationService] != "svc:billing" || e.Annotations[AnnotationOwner] != "cluster-b" {
		t.Errorf("endpoints %s %+v %v", e.Name, e.Spec, e.Annotations)
	}
	if e.Labels[LabelRole] != RoleRemote || !tenancy.GeneratedByGateway(e) {
		t.Errorf("labels %v, controller %v", e.Labels, metav1.GetControllerOf(e))
	}
	var got []string
	for _, ep := range e.Spec.Endpoints {
		got = append(got, ep.Name+" "+ep.TailscaleIP+" "+ep.TailscaleFQDN+" "+string(ep.Protocol))
		if ep.HealthCheck == nil || ep.HealthCheck.Enabled == nil || !*ep.HealthCheck.Enabled || ep.HealthCheck.Type != v1alpha1.ProtocolTCP {
			t.Errorf("endpoint %s health check %+v", ep.Name, ep.HealthCheck)
		}
	}
	if want := []string{"tcp-80 100.100.0.5 billing.tail1234.ts.net TCP", "tcp-8443 100.100.0.5 billing.tail1234.ts.net TCP"}; !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	if !strings.Contains(strings.Join(out.Skipped, "\n"), "svc:pending") {
		t.Errorf("skipped %v does not explain svc:pending", out.Skipped)
	}
	if c := out.Counts["prod"]; c.Remote != 1 || c.Local != 0 {
		t.Errorf("counts %+v", c)
	}
}

// TestGenerateRemoteHealthCheckFromGateway: the TailscaleGateway's loadBalancing.healthChecking
// becomes the health check of every remote endpoint, as given (an HTTP check here); each endpoint
// has its own copy.
func TestGenerateRemoteHealthCheckFromGateway(t *testing.T) {
	snap := &tailnet.Snapshot{Name: "prod-tailnet", Services: []tailnet.Service{
		{Name: "svc:billing", Addrs: []string{"100.100.0.5"}, Ports: []string{"tcp:80", "tcp:8080"}, Annotations: owned("cluster-b")}}}
	in := input(nil, snap)
	check := &v1alpha1.HealthCheckConfig{Enabled: ptr(true), Type: v1alpha1.ProtocolHTTP, Path: "/ready",
		Interval: &metav1.Duration{Duration: 2 * time.Second}, UnhealthyThreshold: ptr(int32(1))}
	v1alpha1.SetDefaults_HealthCheckConfig(check)
	in.Gateway.Spec.LoadBalancing = &v1alpha1.GatewayLoadBalancingConfig{HealthChecking: check}
	out := Generate(in)
	valid(t, out)
	if len(out.Endpoints) != 1 || len(out.Endpoints[0].Spec.Endpoints) != 2 {
		t.Fatalf("got %+v, want one TailscaleEndpoints with two endpoints", out.Endpoints)
	}
	eps := out.Endpoints[0].Spec.Endpoints
	for _, ep := range eps {
		if !equality.Semantic.DeepEqual(ep.HealthCheck, check) {
			t.Errorf("endpoint %s health check %+v, want %+v", ep.Name, ep.HealthCheck, check)
		}
	}
	if eps[0].HealthCheck == eps[1].HealthCheck || eps[0].HealthCheck == check {
		t.Error("endpoints share a health check object")
	}
}

func TestCondition(t *testing.T) {
	gw := gatewayObj()
	web := kubeService("apps", "web", exposed, nil, tcp(80))
	db := kubeService("apps", "db", exposed, nil, tcp(5432))
	snap := &tailnet.Snapshot{Services: []tailnet.Service{{Name: "svc:b", Addrs: []string{"100.100.0.9"}, Ports: []string{"tcp:80"}, Annotations: owned("b")}}}
	out := Generate(input([]*corev1.Service{web, db}, snap))
	c := condition(gw, result{out: out})
	if c.Status != metav1.ConditionTrue || c.Reason != ReasonDiscovered ||
		c.Message != "tailnet prod: 2 local Services exposed, 1 Tailscale Services of other installations discovered" {
		t.Errorf("condition %+v", c)
	}
	// A name taken by another object: reported, and not counted as exposed.
	res := result{out: out, conflicts: []string{"TailscaleServices " + out.Services[0].Name}}
	res.block(out.Services[0].Name)
	c = condition(gw, res)
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonConflict || !strings.Contains(c.Message, out.Services[0].Name) ||
		!strings.Contains(c.Message, "1 local Services exposed, 1 Tailscale Services") {
		t.Errorf("condition %+v", c)
	}
	// Before the first poll, remote objects are kept and the condition says so.
	res = result{out: out, unpolled: map[string]bool{"prod": true}}
	remote := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelRole: RoleRemote, LabelTailnet: "prod"}}}
	host := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelRole: RoleHost, LabelTailnet: "prod"}}}
	if !res.keep(remote) || res.keep(host) || (result{}).keep(remote) {
		t.Error("keep: remote objects of an unpolled tailnet only")
	}
	if c = condition(gw, res); !strings.Contains(c.Message, "tailnet prod not polled yet") {
		t.Errorf("condition %+v", c)
	}
	c = condition(gw, result{missing: []string{"prod-tailnet"}})
	if c.Reason != ReasonTailnetNotFound {
		t.Errorf("condition %+v", c)
	}
}

// multiTailnet is an input whose gateway has one tailnet configuration per priority (named
// "t0", "t1", ... on TailscaleTailnets "tn0", "tn1", ...), each tailnet offering the Tailscale
// Services of snaps[i].
func multiTailnet(priorities []*int32, snaps []*tailnet.Snapshot) Input {
	gw := gatewayObj()
	gw.Spec.Tailnets = nil
	in := Input{Gateway: gw, OperatorID: "ours"}
	for i, p := range priorities {
		n := strconv.Itoa(i)
		cfg := v1alpha1.TailnetConfiguration{Name: "t" + n, Priority: p,
			TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "tn" + n},
			ServiceDiscovery:    &v1alpha1.TailnetServiceDiscovery{Enabled: true}}
		gw.Spec.Tailnets = append(gw.Spec.Tailnets, cfg)
		in.Tailnets = append(in.Tailnets, Tailnet{Config: cfg, Ref: "tn" + n, Snapshot: snaps[i]})
	}
	return in
}

func offering(addr string, labels ...string) *tailnet.Snapshot {
	snap := &tailnet.Snapshot{}
	for _, l := range labels {
		snap.Services = append(snap.Services, tailnet.Service{Name: "svc:" + l, Addrs: []string{addr}, Ports: []string{"tcp:80"}, Annotations: owned("cluster-b")})
	}
	return snap
}

func groups(out Output) []*v1alpha1.TailscaleServices {
	var g []*v1alpha1.TailscaleServices
	for _, s := range out.Services {
		if s.Labels[LabelRole] == RoleRemoteGroup {
			g = append(g, s)
		}
	}
	return g
}

func TestGenerateRemoteGroupPriority(t *testing.T) {
	// billing on all three tailnets (priorities 50, 100, default 100); api only on t0.
	in := multiTailnet([]*int32{ptr(int32(50)), ptr(int32(100)), nil},
		[]*tailnet.Snapshot{offering("100.100.0.1", "billing", "api"), offering("100.100.0.2", "billing"), offering("100.100.0.3", "billing")})
	out := Generate(in)
	valid(t, out)
	g := groups(out)
	if len(g) != 1 || len(out.Services) != 1 {
		t.Fatalf("got TailscaleServices %v, want only the group of svc:billing", out.Services)
	}
	grp := g[0]
	if grp.Name != "gw-remote-billing" || grp.Labels[LabelTailnet] != "t1" || grp.Labels[LabelRemoteService] != "billing" ||
		grp.Labels[LabelGateway] != "gw" || !tenancy.GeneratedByGateway(grp) || grp.Spec.VIPService != nil {
		t.Errorf("group %s labels %v vipService %v", grp.Name, grp.Labels, grp.Spec.VIPService)
	}
	lb := grp.Spec.LoadBalancing
	if lb == nil || lb.Strategy != v1alpha1.StrategyFailover || lb.FailoverConfig == nil {
		t.Fatalf("loadBalancing %+v", lb)
	}
	if got, want := lb.FailoverConfig.PrimaryEndpoints, []string{"gw-t1-remote-billing", "gw-t2-remote-billing"}; !slices.Equal(got, want) {
		t.Errorf("primaries %v, want %v (priority 100 and the default, tied)", got, want)
	}
	if got, want := lb.FailoverConfig.SecondaryEndpoints, []string{"gw-t0-remote-billing"}; !slices.Equal(got, want) {
		t.Errorf("secondaries %v, want %v", got, want)
	}
	// The selector picks exactly the three billing objects.
	sel, err := metav1.LabelSelectorAsSelector(grp.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var selected []string
	for _, e := range out.Endpoints {
		if sel.Matches(labels.Set(e.Labels)) {
			selected = append(selected, e.Name)
		}
	}
	if want := []string{"gw-t0-remote-billing", "gw-t1-remote-billing", "gw-t2-remote-billing"}; !slices.Equal(selected, want) {
		t.Errorf("selected %v, want %v", selected, want)
	}
	if c := out.Counts["t0"]; c.Remote != 2 {
		t.Errorf("t0 counts %+v", c)
	}
	// The condition names the group and does not count it as a local Service.
	c := condition(in.Gateway, result{out: out})
	if !strings.Contains(c.Message, "grouped for failover by priority: gw-remote-billing (svc:billing, primary gw-t1-remote-billing, gw-t2-remote-billing)") ||
		!strings.Contains(c.Message, "tailnet t1: 0 local Services exposed, 1 Tailscale Services") {
		t.Errorf("condition %s", c.Message)
	}
	// While a tailnet is unpolled, an existing group stays.
	if !(result{unpolled: map[string]bool{"t2": true}}).keep(grp) || (result{}).keep(grp) {
		t.Error("keep: groups only while a tailnet is unpolled")
	}
}

func TestGenerateRemoteGroupTie(t *testing.T) {
	out := Generate(multiTailnet([]*int32{nil, ptr(int32(100))},
		[]*tailnet.Snapshot{offering("100.100.0.1", "billing"), offering("100.100.0.2", "billing")}))
	valid(t, out)
	g := groups(out)
	if len(g) != 1 {
		t.Fatalf("groups %v", g)
	}
	fc := g[0].Spec.LoadBalancing.FailoverConfig
	if want := []string{"gw-t0-remote-billing", "gw-t1-remote-billing"}; !slices.Equal(fc.PrimaryEndpoints, want) || len(fc.SecondaryEndpoints) != 0 {
		t.Errorf("tiers %+v, want all primary", fc)
	}
	if g[0].Labels[LabelTailnet] != "t0" {
		t.Errorf("routes go to %s, want the first of the tied t0", g[0].Labels[LabelTailnet])
	}
}

func TestGenerateRemoteNoGroup(t *testing.T) {
	// One tailnet, and two tailnets offering different labels: no group.
	for name, in := range map[string]Input{
		"single":   multiTailnet([]*int32{ptr(int32(100))}, []*tailnet.Snapshot{offering("100.100.0.1", "billing")}),
		"distinct": multiTailnet([]*int32{ptr(int32(100)), ptr(int32(50))}, []*tailnet.Snapshot{offering("100.100.0.1", "billing"), offering("100.100.0.2", "api")}),
	} {
		out := Generate(in)
		valid(t, out)
		if len(out.Services) != 0 {
			t.Errorf("%s: TailscaleServices %v, want none", name, out.Services)
		}
		for _, e := range out.Endpoints {
			if e.Labels[LabelRemoteService] == "" {
				t.Errorf("%s: %s has no %s label", name, e.Name, LabelRemoteService)
			}
		}
	}
}

func TestGenerateRemoteGroupLongNames(t *testing.T) {
	// Member names past 63 characters cannot be failover tier entries: no group, explained.
	label := strings.Repeat("b", 60)
	out := Generate(multiTailnet([]*int32{nil, nil}, []*tailnet.Snapshot{offering("100.100.0.1", label), offering("100.100.0.2", label)}))
	valid(t, out)
	if len(out.Services) != 0 || len(out.Endpoints) != 2 {
		t.Fatalf("got %d TailscaleServices, %d TailscaleEndpoints, want 0 and 2", len(out.Services), len(out.Endpoints))
	}
	if !strings.Contains(strings.Join(out.Skipped, "\n"), "failover group of Tailscale Service svc:"+label) {
		t.Errorf("skipped %v does not explain the group", out.Skipped)
	}
}
