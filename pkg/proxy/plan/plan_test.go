package plan

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/balance"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

func endpoints(name string, eps ...v1alpha1.TailscaleEndpoint) *v1alpha1.TailscaleEndpoints {
	return &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "t", Endpoints: eps}}
}

func ep(name, ip string, port int32, proto v1alpha1.Protocol) v1alpha1.TailscaleEndpoint {
	return v1alpha1.TailscaleEndpoint{Name: name, TailscaleIP: ip, TailscaleFQDN: name + ".example.ts.net", Port: port, Protocol: proto}
}

func TestEgressListensOnTheRecordedPortsOnly(t *testing.T) {
	obj := endpoints("backends", ep("web", "100.64.0.1", 80, v1alpha1.ProtocolHTTP), ep("dns", "100.64.0.2", 53, v1alpha1.ProtocolUDP))
	// Not allocated yet: no listener, and the plan says why.
	if got, problems, _ := EgressOf([]*v1alpha1.TailscaleEndpoints{obj}); len(got) != 0 || len(problems) != 2 ||
		!strings.Contains(problems[0], "no egress port is allocated") {
		t.Fatalf("EgressOf before allocation = %v, %v", got, problems)
	}
	alloc := egressalloc.New(egressalloc.Options{})
	alloc.Allocate("p", obj)
	before, problems, _ := EgressOf([]*v1alpha1.TailscaleEndpoints{obj})
	if len(problems) != 0 || len(before) != 2 {
		t.Fatalf("EgressOf = %v, %v", before, problems)
	}
	_, recorded := ports.Recorded(obj)
	want := map[string]Egress{
		"ns/backends/web": {Key: "ns/backends/web", Network: "tcp", Port: recorded[ports.Key{Endpoint: "web", Port: 80}], Target: "100.64.0.1:80"},
		"ns/backends/dns": {Key: "ns/backends/dns", Network: "udp", Port: recorded[ports.Key{Endpoint: "dns", Port: 53, UDP: true}], Target: "100.64.0.2:53"},
	}
	for _, e := range before {
		if want[e.Key] != e || e.Port == 0 {
			t.Errorf("egress %v, want %v", e, want[e.Key])
		}
	}
	// Reordered, with a new endpoint in front and a discovered one in status.
	obj.Spec.Endpoints = append([]v1alpha1.TailscaleEndpoint{ep("api", "100.64.0.3", 8080, v1alpha1.ProtocolTCP)}, obj.Spec.Endpoints[1], obj.Spec.Endpoints[0])
	obj.Status.Endpoints = []v1alpha1.EndpointStatus{{Name: "found", Address: "100.64.0.9:22", Status: "Healthy"}}
	alloc.Allocate("p", obj)
	after, _, _ := EgressOf([]*v1alpha1.TailscaleEndpoints{obj})
	if len(after) != 4 {
		t.Fatalf("EgressOf after = %v", after)
	}
	for _, e := range after {
		if w, ok := want[e.Key]; ok && w != e {
			t.Errorf("egress %s moved: %v -> %v", e.Key, w, e)
		}
		if e.Key == "ns/backends/found" && e.Target != "100.64.0.9:22" {
			t.Errorf("discovered endpoint: %v", e)
		}
	}
}

// A proxy serving objects allocated on different proxies (moved, or a hand-edited status) can
// meet one port twice: one endpoint keeps it, the other is reported.
func TestEgressReportsPortConflicts(t *testing.T) {
	a := endpoints("a", ep("x", "100.64.0.1", 80, v1alpha1.ProtocolTCP))
	b := endpoints("b", ep("x", "100.64.0.2", 80, v1alpha1.ProtocolTCP))
	// Ranges of one port: both get it.
	egressalloc.New(egressalloc.Options{Base: 20000, Span: 1}).Allocate("one", a)
	egressalloc.New(egressalloc.Options{Base: 20000, Span: 1}).Allocate("other", b)
	objs := []*v1alpha1.TailscaleEndpoints{b, a}
	got, problems, conflicts := EgressOf(objs)
	if len(got) != 1 || got[0].Key != "ns/a/x" || len(problems) != 1 || conflicts != 1 {
		t.Fatalf("EgressOf = %v, %v, %d; want ns/a/x and one problem", got, problems, conflicts)
	}
	if !strings.Contains(problems[0], "ns/b/x ") {
		t.Errorf("problem %q should name ns/b/x", problems[0])
	}
	if p := Build(objs, nil, nil, tenancy.ExternalServices{}); p.PortConflicts != 1 || len(p.Egress) != 1 {
		t.Errorf("Build: %d conflicts, %d listeners; want 1 and 1", p.PortConflicts, len(p.Egress))
	}
}

func services(strategy v1alpha1.LoadBalancingStrategy) *v1alpha1.TailscaleServices {
	return &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector:      &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			VIPService:    &v1alpha1.VIPServiceSpec{Name: "svc:web", Ports: []string{"tcp:80", "udp:53", "bogus"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: strategy},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{
				{Name: "legacy", Address: "192.0.2.10", Port: 8080, Weight: ptr.To[int32](2)}}},
		}}
}

func TestServicesOfBackendsWeightsAndTiers(t *testing.T) {
	east := endpoints("east", ep("http", "100.64.0.1", 80, v1alpha1.ProtocolHTTP), ep("grpc", "100.64.0.1", 50051, v1alpha1.ProtocolGRPC))
	east.Status.Endpoints = []v1alpha1.EndpointStatus{{Name: "http", Status: "Unhealthy"}}
	west := endpoints("west", ep("alt", "100.64.0.2", 8080, v1alpha1.ProtocolHTTP), ep("dns", "100.64.0.2", 53, v1alpha1.ProtocolUDP))

	svc := services(v1alpha1.StrategyWeighted)
	svc.Spec.LoadBalancing.Weights = map[string]int32{"east": 5, "west": 0}
	got, problems := ServicesOf(svc, []*v1alpha1.TailscaleEndpoints{east, west})
	if len(got) != 1 || len(problems) != 2 {
		t.Fatalf("ServicesOf = %v, problems %v; want port 80 only and two problems", got, problems)
	}
	s := got[0]
	if s.Name != "svc:web" || s.Port != 80 || s.Listener() != "svc:web/tcp/80" || s.Policy.Strategy != v1alpha1.StrategyWeighted {
		t.Errorf("service %+v", s)
	}
	want := []balance.Backend{
		// east listens on 80: only that endpoint; its health comes from status.
		{Key: "ns/east/http", Group: "east", Network: "tcp", Address: "100.64.0.1:80", Tailnet: true, Weight: 5, Unhealthy: true},
		// west has nothing on 80: its TCP endpoints all count.
		{Key: "ns/west/alt", Group: "west", Network: "tcp", Address: "100.64.0.2:8080", Tailnet: true, Weight: 0},
		{Key: "ns/web/external/legacy", Group: "legacy", Network: "tcp", Address: "192.0.2.10:8080", Weight: 2},
	}
	if fmt.Sprint(s.Backends) != fmt.Sprint(want) {
		t.Errorf("backends\n got %v\nwant %v", s.Backends, want)
	}

	svc = services(v1alpha1.StrategyFailover)
	svc.Spec.LoadBalancing.FailoverConfig = &v1alpha1.FailoverConfig{PrimaryEndpoints: []string{"east"}, SecondaryEndpoints: []string{"west"}}
	svc.Status.LoadBalancingStatus = &v1alpha1.LoadBalancingStatus{FailoverStatus: &v1alpha1.FailoverStatus{ActiveTier: "secondary"}}
	got, _ = ServicesOf(svc, []*v1alpha1.TailscaleEndpoints{east, west})
	if got[0].Policy.ActiveTier != balance.TierSecondary {
		t.Errorf("active tier %q, want the persisted secondary", got[0].Policy.ActiveTier)
	}
	for _, be := range got[0].Backends {
		if be.Secondary != (be.Group != "east") {
			t.Errorf("backend %s secondary=%v", be.Key, be.Secondary)
		}
		if be.Weight != 1 && be.Group != "legacy" {
			t.Errorf("weights apply to the weighted strategy only: %v", be)
		}
	}
	groups := func(bes []balance.Backend) string {
		var out []string
		for _, be := range bes {
			out = append(out, fmt.Sprintf("%s:%v", be.Group, be.Secondary))
		}
		return strings.Join(out, " ")
	}
	// secondaryEndpoints names west only: legacy, in neither tier, is left out.
	if g := groups(got[0].Backends); g != "east:false west:true" {
		t.Errorf("tiers with secondaryEndpoints [west]: %s, want east primary, west secondary, legacy absent", g)
	}
	// Without secondaryEndpoints every backend not named primary is secondary.
	svc.Spec.LoadBalancing.FailoverConfig.SecondaryEndpoints = nil
	got, _ = ServicesOf(svc, []*v1alpha1.TailscaleEndpoints{east, west})
	if g := groups(got[0].Backends); g != "east:false west:true legacy:true" {
		t.Errorf("tiers without secondaryEndpoints: %s", g)
	}
}

func TestBuildRefusesASecondClaimOfAServicePort(t *testing.T) {
	a, b := services(v1alpha1.StrategyRoundRobin), services(v1alpha1.StrategyRoundRobin)
	b.Name = "web-copy"
	p := Build(nil, []*v1alpha1.TailscaleServices{a, b}, func(*v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints { return nil }, tenancy.ExternalServices{Allowed: true})
	if len(p.Services) != 1 || p.Services[0].Object != "ns/web" {
		t.Errorf("services %v", p.Services)
	}
	if !strings.Contains(strings.Join(p.Problems, "\n"), "ns/web-copy: svc:web/tcp/80 is already served for ns/web") {
		t.Errorf("problems %q", p.Problems)
	}
}

func TestIsTailnetAddress(t *testing.T) {
	for host, want := range map[string]bool{"100.64.0.1": true, "100.127.255.255": true, "100.128.0.1": false, "fd7a:115c:a1e0::1": true,
		"192.0.2.1": false, "db.tail1234.ts.net": true, "db.tail1234.ts.net.": true, "example.com": false} {
		if got := IsTailnetAddress(host); got != want {
			t.Errorf("IsTailnetAddress(%q) = %v", host, got)
		}
	}
}

// Objects refused by their tailnet are not served, nor externalServices the rule refuses.
func TestBuildTenancy(t *testing.T) {
	refused := []metav1.Condition{{Type: tenancy.ConditionAccepted, Status: metav1.ConditionFalse, Reason: tenancy.ReasonNotAllowedByTailnet}}
	ok := endpoints("ok", v1alpha1.TailscaleEndpoint{Name: "a", TailscaleIP: "100.64.0.1", Port: 80})
	no := endpoints("no", v1alpha1.TailscaleEndpoint{Name: "b", TailscaleIP: "100.64.0.2", Port: 80})
	no.Status.Conditions = refused
	egressalloc.New(egressalloc.Options{}).Allocate("p", ok, no)
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}, Spec: v1alpha1.TailscaleServicesSpec{
		VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:s", Ports: []string{"tcp:80"}},
		ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{
			{Name: "in", Address: "192.0.2.1", Port: 443}, {Name: "out", Address: "198.51.100.1", Port: 443}}}}}
	refusedSvc := svc.DeepCopy()
	refusedSvc.Name, refusedSvc.Spec.VIPService.Name, refusedSvc.Status.Conditions = "r", "svc:r", refused
	selectOf := func(*v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints {
		return []*v1alpha1.TailscaleEndpoints{ok, no}
	}
	cidrs, _ := tenancy.ParseCIDRs([]string{"192.0.2.0/24"})
	p := Build([]*v1alpha1.TailscaleEndpoints{ok, no}, []*v1alpha1.TailscaleServices{svc, refusedSvc}, selectOf,
		tenancy.ExternalServices{Allowed: true, CIDRs: cidrs})
	if len(p.Egress) != 1 || p.Egress[0].Key != "ns/ok/a" {
		t.Errorf("egress %+v, want ns/ok/a only", p.Egress)
	}
	if len(p.Services) != 1 || p.Services[0].Name != "svc:s" {
		t.Fatalf("services %+v, want svc:s only", p.Services)
	}
	var keys []string
	for _, b := range p.Services[0].Backends {
		keys = append(keys, b.Key)
	}
	if strings.Join(keys, ",") != "ns/ok/a,ns/s/external/in" {
		t.Errorf("backends %v, want ns/ok/a and the external service inside the CIDRs", keys)
	}
	if len(p.Problems) != 3 {
		t.Errorf("problems %q, want the refused endpoints, the refused services and the external service outside the CIDRs", p.Problems)
	}
	if off := Build(nil, []*v1alpha1.TailscaleServices{svc}, selectOf, tenancy.ExternalServices{}); len(off.Services[0].Backends) != 1 {
		t.Errorf("externalServices off: backends %+v", off.Services[0].Backends)
	}
}

// A listener object of a TailscaleGateway keeps its externalServices with externalServices off
// (admission lets only the server write them), and carries its access rule.
func TestBuildGatewayListener(t *testing.T) {
	yes := true
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "l",
		Annotations:     map[string]string{accesscontrol.AnnotationAllowedTags: "tag:prod", accesscontrol.AnnotationDeniedTags: "tag:dev"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "gw", UID: "u", Controller: &yes}}},
		Spec: v1alpha1.TailscaleServicesSpec{
			VIPService:       &v1alpha1.VIPServiceSpec{Name: "svc:gateway-eg-http-80", Ports: []string{"tcp:80"}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{{Name: "envoy", Address: "10.96.0.10", Port: 80}}}}}
	none := func(*v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints { return nil }
	p := Build(nil, []*v1alpha1.TailscaleServices{svc}, none, tenancy.ExternalServices{})
	if len(p.Problems) != 0 || len(p.Services) != 1 || len(p.Services[0].Backends) != 1 || p.Services[0].Backends[0].Address != "10.96.0.10:80" {
		t.Fatalf("plan %+v, want the Envoy Service as the one backend", p)
	}
	if got := p.Services[0].Access; !got.Equal(accesscontrol.Rule{Allowed: []string{"tag:prod"}, Denied: []string{"tag:dev"}}) {
		t.Errorf("access rule %+v", got)
	}
	// The same object without the TailscaleGateway controller: refused as any other.
	plain := svc.DeepCopy()
	plain.OwnerReferences = nil
	if p := Build(nil, []*v1alpha1.TailscaleServices{plain}, none, tenancy.ExternalServices{}); len(p.Problems) != 1 || len(p.Services[0].Backends) != 0 {
		t.Errorf("not controlled by a TailscaleGateway: %+v, want the external service refused", p)
	}
}

// External services follow the endpoints' port rule (those on the Service port when any is,
// else all), and those of an object controlled by a TailscaleGateway (generated by the
// discovery controller) are served with externalServices off.
func TestBuildExternalServicesPortsAndGeneratedObjects(t *testing.T) {
	yes := true
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "local", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "gw", UID: "u", Controller: &yes}}},
		Spec: v1alpha1.TailscaleServicesSpec{
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:local-ns-web", Ports: []string{"tcp:80", "tcp:443", "tcp:8080"}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{
				{Name: "tcp-80", Address: "10.96.0.10", Port: 80}, {Name: "tcp-443", Address: "10.96.0.10", Port: 443}}}}}
	none := func(*v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints { return nil }
	p := Build(nil, []*v1alpha1.TailscaleServices{svc}, none, tenancy.ExternalServices{})
	got := map[uint16][]string{}
	for _, s := range p.Services {
		for _, b := range s.Backends {
			got[s.Port] = append(got[s.Port], b.Address)
		}
	}
	if strings.Join(got[80], ",") != "10.96.0.10:80" || strings.Join(got[443], ",") != "10.96.0.10:443" ||
		strings.Join(got[8080], ",") != "10.96.0.10:80,10.96.0.10:443" {
		t.Errorf("backends by port %v", got)
	}
	if len(p.Problems) != 0 {
		t.Errorf("problems %q", p.Problems)
	}
	svc.OwnerReferences = nil
	if p := Build(nil, []*v1alpha1.TailscaleServices{svc}, none, tenancy.ExternalServices{}); len(p.Services[0].Backends) != 0 {
		t.Errorf("a hand-written object's externalServices are served while off: %+v", p.Services[0].Backends)
	}
}

// An endpoint's externalTarget is where its egress listener and the Service backends it makes
// forward; one outside the tailnet only as the externalServices rule allows, else the endpoint
// is not served at all (never sent to its tailnet address instead).
func TestExternalTargetIsForwardedTo(t *testing.T) {
	withTarget := func(e v1alpha1.TailscaleEndpoint, target string) v1alpha1.TailscaleEndpoint {
		e.ExternalTarget = target
		return e
	}
	obj := endpoints("web",
		withTarget(ep("api", "100.64.0.1", 8080, v1alpha1.ProtocolHTTP), "api.internal.example.com:9090"),
		withTarget(ep("db", "100.64.0.2", 5432, v1alpha1.ProtocolTCP), "db.corp.ts.net:5433"),
		ep("plain", "100.64.0.3", 80, v1alpha1.ProtocolHTTP))
	obj.Labels = map[string]string{"app": "web"}
	egressalloc.New(egressalloc.Options{}).Allocate("p", obj)
	// Port 7000: no endpoint listens on it, so all of them are its backends.
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}, Spec: v1alpha1.TailscaleServicesSpec{
		VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:s", Ports: []string{"tcp:7000"}}}}
	selectOf := func(*v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints {
		return []*v1alpha1.TailscaleEndpoints{obj}
	}
	targets := func(p Plan) (egress, backends []string) {
		for _, e := range p.Egress {
			egress = append(egress, e.Key+"="+e.Target)
		}
		for _, b := range p.Services[0].Backends {
			if !b.Tailnet {
				t.Errorf("backend %s is not dialled through the node", b.Key)
			}
			backends = append(backends, b.Key+"="+b.Address)
		}
		return egress, backends
	}

	allowed := Build([]*v1alpha1.TailscaleEndpoints{obj}, []*v1alpha1.TailscaleServices{svc}, selectOf, tenancy.ExternalServices{Allowed: true})
	egress, backends := targets(allowed)
	want := "ns/web/api=api.internal.example.com:9090,ns/web/db=db.corp.ts.net:5433,ns/web/plain=100.64.0.3:80"
	if got := strings.Join(sortedCopy(egress), ","); got != want || len(allowed.Problems) != 0 {
		t.Errorf("egress %s (problems %q), want %s", got, allowed.Problems, want)
	}
	if got := strings.Join(sortedCopy(backends), ","); got != want {
		t.Errorf("Service backends %s, want %s", got, want)
	}

	// externalServices off: the MagicDNS target stays, api's (outside the tailnet) is not served.
	off := Build([]*v1alpha1.TailscaleEndpoints{obj}, []*v1alpha1.TailscaleServices{svc}, selectOf, tenancy.ExternalServices{})
	egress, backends = targets(off)
	want = "ns/web/db=db.corp.ts.net:5433,ns/web/plain=100.64.0.3:80"
	if got := strings.Join(sortedCopy(egress), ","); got != want {
		t.Errorf("externalServices off: egress %s, want %s", got, want)
	}
	if got := strings.Join(sortedCopy(backends), ","); got != want {
		t.Errorf("externalServices off: backends %s, want %s", got, want)
	}
	if len(off.Problems) != 1 || !strings.Contains(off.Problems[0], "endpoint api is not served") {
		t.Errorf("externalServices off: problems %q, want api's once", off.Problems)
	}
	// A proxy hosting the Service only (no egress for the object) reports it too.
	svcOnly := Build(nil, []*v1alpha1.TailscaleServices{svc}, selectOf, tenancy.ExternalServices{})
	if len(svcOnly.Problems) != 1 || !strings.Contains(svcOnly.Problems[0], "endpoint api is not served") {
		t.Errorf("Service only, externalServices off: problems %q, want api's", svcOnly.Problems)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

// Tailscale Services in status.discoveredVIPServices are backends of the Service port: their
// first IPv4 VIP on that port (else on each TCP port), through the node; addresses outside the
// tailnet (a forged status) are never taken.
func TestDiscoveredVIPServicesAreBackends(t *testing.T) {
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}, Spec: v1alpha1.TailscaleServicesSpec{
		VIPService:    &v1alpha1.VIPServiceSpec{Name: "svc:s", Ports: []string{"tcp:80"}},
		LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyWeighted, Weights: map[string]int32{"db": 3}}}}
	svc.Status.DiscoveredVIPServices = []v1alpha1.DiscoveredVIPService{
		{Name: "svc:web2", Addresses: []string{"fd7a:115c:a1e0::7", "100.100.0.7"}, Ports: []string{"tcp:80", "tcp:443"}},
		{Name: "svc:db", Addresses: []string{"100.100.0.8"}, Ports: []string{"tcp:5432", "tcp:5433", "udp:53"}},
		{Name: "svc:forged", Addresses: []string{"10.0.0.1"}, Ports: []string{"tcp:80"}},
	}
	got, _ := ServicesOf(svc, nil)
	if len(got) != 1 {
		t.Fatalf("ServicesOf = %v", got)
	}
	var backends []string
	for _, b := range got[0].Backends {
		if !b.Tailnet {
			t.Errorf("backend %s is not dialled through the node", b.Key)
		}
		backends = append(backends, fmt.Sprintf("%s=%s*%d", b.Group, b.Address, b.Weight))
	}
	want := "web2=100.100.0.7:80*1,db=100.100.0.8:5432*3,db=100.100.0.8:5433*3"
	if strings.Join(backends, ",") != want {
		t.Errorf("backends %v, want %s", backends, want)
	}
}
