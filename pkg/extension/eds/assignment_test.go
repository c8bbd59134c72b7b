package eds

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/internal/golden"
)

// objects is a Source over fixed objects; externalServices are served unless noExternal.
type objects struct {
	endpoints  []*v1alpha1.TailscaleEndpoints
	services   []*v1alpha1.TailscaleServices
	noExternal bool
}

func (o objects) AllowsExternal(string) bool { return !o.noExternal }

func (o objects) TailscaleEndpoints(ns, name string) (*v1alpha1.TailscaleEndpoints, bool) {
	i := slices.IndexFunc(o.endpoints, func(e *v1alpha1.TailscaleEndpoints) bool { return e.Namespace == ns && e.Name == name })
	if i < 0 {
		return nil, false
	}
	return o.endpoints[i], true
}

func (o objects) TailscaleServices(ns, name string) (*v1alpha1.TailscaleServices, bool) {
	i := slices.IndexFunc(o.services, func(e *v1alpha1.TailscaleServices) bool { return e.Namespace == ns && e.Name == name })
	if i < 0 {
		return nil, false
	}
	return o.services[i], true
}

func (o objects) SelectEndpoints(ns string, sel labels.Selector) []*v1alpha1.TailscaleEndpoints {
	var out []*v1alpha1.TailscaleEndpoints
	for _, e := range o.endpoints {
		if e.Namespace == ns && sel.Matches(labels.Set(e.Labels)) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *v1alpha1.TailscaleEndpoints) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// endpoints builds a TailscaleEndpoints; each spec is "name ip port protocol health".
func endpoints(name string, lbls map[string]string, specs ...string) *v1alpha1.TailscaleEndpoints {
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, Labels: lbls},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main"}}
	for _, s := range specs {
		f := strings.Fields(s)
		port := map[string]int32{"80": 80, "8080": 8080, "53": 53, "443": 443}[f[2]]
		obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: f[0], TailscaleIP: f[1],
			TailscaleFQDN: f[0] + ".tail1234.ts.net.", Port: port, Protocol: v1alpha1.Protocol(f[3])})
		obj.Status.Endpoints = append(obj.Status.Endpoints, v1alpha1.EndpointStatus{Name: f[0], Status: f[4]})
	}
	return obj
}

func services(name string, lb *v1alpha1.LoadBalancingConfig, activeTier string, ext ...v1alpha1.ExternalService) *v1alpha1.TailscaleServices {
	obj := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, LoadBalancing: lb}}
	if len(ext) > 0 {
		obj.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{ExternalServices: ext}
	}
	if activeTier != "" {
		obj.Status.LoadBalancingStatus = &v1alpha1.LoadBalancingStatus{FailoverStatus: &v1alpha1.FailoverStatus{ActiveTier: activeTier}}
	}
	return obj
}

func TestLoadAssignment(t *testing.T) {
	web := map[string]string{"app": "web"}
	east := endpoints("web-east", web, "a 100.64.0.1 80 HTTP Healthy", "b 100.64.0.2 80 HTTP Unhealthy", "m 100.64.0.1 8080 HTTP Healthy")
	west := endpoints("web-west", web, "c 100.64.0.3 80 HTTP Unknown", "dns 100.64.0.3 53 UDP Healthy")
	other := endpoints("other", map[string]string{"app": "other"}, "d 100.64.0.9 80 HTTP Healthy")
	discovered := endpoints("tagged", nil, "x 100.64.0.5 80 TCP Healthy")
	discovered.Status.Endpoints = append(discovered.Status.Endpoints,
		v1alpha1.EndpointStatus{Name: "tag-db-1", Address: "100.64.0.6:80", Status: "Unhealthy"},
		v1alpha1.EndpointStatus{Name: "tag-db-2", Address: "[fd7a:115c:a1e0::7]:80", Status: "Healthy"},
		v1alpha1.EndpointStatus{Name: "tag-bad", Address: "no-port", Status: "Healthy"})
	// Hosts carry how Envoy connects to them: TLS with the endpoint's CA, with the system CAs, or cleartext.
	upstream := endpoints("upstream", nil, "secure 100.64.0.11 443 HTTPS Healthy", "tls 100.64.0.12 443 TLS Healthy", "grpc 100.64.0.13 443 gRPC Healthy")
	upstream.Spec.Endpoints[0].TLS = &v1alpha1.UpstreamTLSConfig{CACertificate: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"}
	// spec.endpoints[].metadata is the host's gateway.tailscale.com/metadata filter metadata.
	upstream.Spec.Endpoints[1].Metadata = map[string]string{"team": "payments", "tier": "gold"}
	all := []*v1alpha1.TailscaleEndpoints{east, west, other, discovered, upstream}
	failover := &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover,
		FailoverConfig: &v1alpha1.FailoverConfig{PrimaryEndpoints: []string{"web-east"}, SecondaryEndpoints: []string{"web-west"}}}
	externals := []v1alpha1.ExternalService{
		{Name: "cdn", Address: "192.0.2.10", Port: 443, Protocol: v1alpha1.ProtocolHTTPS, Weight: ptr.To[int32](5)},
		{Name: "by-name", Address: "api.example.com", Port: 443}, // EDS cannot carry hostnames: left out
	}
	svcs := []*v1alpha1.TailscaleServices{
		services("rr", nil, ""),
		services("weighted", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyWeighted,
			Weights: map[string]int32{"web-east": 70, "web-west": 30, "cdn": 10}}, "", externals...),
		services("zero-weight", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyWeighted,
			Weights: map[string]int32{"web-east": 0}}, ""),
		services("failover-primary", failover, "primary"),
		services("failover-secondary", failover, "secondary"),
		services("failover-external", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover,
			FailoverConfig: &v1alpha1.FailoverConfig{PrimaryEndpoints: []string{"web-east"}, SecondaryEndpoints: []string{"web-west", "cdn"}}},
			"primary", externals[0]),
		// secondaryEndpoints names cdn only: web-west, selected but in neither tier, is left out.
		services("failover-unnamed", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover,
			FailoverConfig: &v1alpha1.FailoverConfig{PrimaryEndpoints: []string{"web-east"}, SecondaryEndpoints: []string{"cdn"}}},
			"primary", externals[0]),
	}
	src := objects{endpoints: all, services: svcs}
	ep := func(name string, port int32) backends.Ref {
		return backends.Ref{Kind: backends.KindEndpoints, Namespace: "web", Name: name, Port: port, Weight: 1}
	}
	svc := func(name string, weight uint32) backends.Ref {
		return backends.Ref{Kind: backends.KindServices, Namespace: "web", Name: name, Port: 80, Weight: weight}
	}
	for _, tc := range []struct {
		name string
		refs []backends.Ref
	}{
		{"endpoints-port-match", []backends.Ref{ep("web-east", 8080)}},
		{"endpoints-no-port-match", []backends.Ref{ep("web-east", 9999)}},
		{"endpoints-no-port", []backends.Ref{ep("web-west", 0)}},
		{"endpoints-discovered", []backends.Ref{ep("tagged", 80)}},
		{"endpoints-upstream-protocols", []backends.Ref{ep("upstream", 0)}},
		{"services-round-robin", []backends.Ref{svc("rr", 1)}},
		{"services-weighted", []backends.Ref{svc("weighted", 1)}},
		{"services-zero-weight", []backends.Ref{svc("zero-weight", 1)}},
		{"services-failover-primary", []backends.Ref{svc("failover-primary", 1)}},
		{"services-failover-secondary", []backends.Ref{svc("failover-secondary", 1)}},
		{"services-failover-external", []backends.Ref{svc("failover-external", 1)}},
		{"services-failover-unnamed", []backends.Ref{svc("failover-unnamed", 1)}},
		{"mixed-kinds", []backends.Ref{ep("other", 80), svc("rr", 3)}},
		{"zero-ref-weight", []backends.Ref{ep("other", 80), svc("rr", 0)}},
		{"missing-objects", []backends.Ref{ep("absent", 80), svc("absent", 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden.Assert(t, "cla-"+tc.name, LoadAssignment("httproute/web/route/rule/0", tc.refs, src, Direct{}))
		})
	}
}

// A failover flip changes only the priorities: the active tier is always priority 0.
func TestFailoverTierFlipSwapsPriorities(t *testing.T) {
	web := map[string]string{"app": "web"}
	src := objects{endpoints: []*v1alpha1.TailscaleEndpoints{
		endpoints("web-east", web, "a 100.64.0.1 80 HTTP Unhealthy"),
		endpoints("web-west", web, "c 100.64.0.3 80 HTTP Healthy"),
	}}
	lb := &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover,
		FailoverConfig: &v1alpha1.FailoverConfig{PrimaryEndpoints: []string{"web-east"}}}
	ref := []backends.Ref{{Kind: backends.KindServices, Namespace: "web", Name: "s", Port: 80, Weight: 1}}
	priorities := func(tier string) map[string]uint32 {
		src.services = []*v1alpha1.TailscaleServices{services("s", lb, tier)}
		out := map[string]uint32{}
		for _, l := range LoadAssignment("c", ref, src, Direct{}).Endpoints {
			out[l.Locality.SubZone] = l.Priority
		}
		return out
	}
	if got := priorities("primary"); got["TailscaleEndpoints/web/web-east"] != 0 || got["TailscaleEndpoints/web/web-west"] != 1 {
		t.Errorf("primary tier active: priorities %v, want web-east 0, web-west 1", got)
	}
	if got := priorities("secondary"); got["TailscaleEndpoints/web/web-east"] != 1 || got["TailscaleEndpoints/web/web-west"] != 0 {
		t.Errorf("secondary tier active: priorities %v, want web-west 0, web-east 1", got)
	}
}

// With externalServices off, a TailscaleServices' external backends leave its load assignment.
func TestLoadAssignmentWithoutExternalServices(t *testing.T) {
	ext := v1alpha1.ExternalService{Name: "cdn", Address: "192.0.2.10", Port: 443}
	svcs := []*v1alpha1.TailscaleServices{services("s", nil, "", ext)}
	ref := []backends.Ref{{Kind: backends.KindServices, Namespace: "web", Name: "s", Port: 80, Weight: 1}}
	zones := func(src objects) (out []string) {
		for _, l := range LoadAssignment("c", ref, src, Direct{}).Endpoints {
			out = append(out, l.Locality.SubZone)
		}
		return out
	}
	if got := zones(objects{services: svcs}); !slices.Equal(got, []string{"ExternalService/web/s/cdn"}) {
		t.Errorf("allowed: localities %v", got)
	}
	if got := zones(objects{services: svcs, noExternal: true}); len(got) != 0 {
		t.Errorf("not allowed: localities %v, want none", got)
	}
}

// hostsOf lists the hosts of a load assignment as "<sub-zone> <address>:<port>".
func hostsOf(t *testing.T, refs []backends.Ref, src objects, addr Addresser) []string {
	t.Helper()
	var out []string
	for _, l := range LoadAssignment("c", refs, src, addr).Endpoints {
		for _, h := range l.LbEndpoints {
			sa := h.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s %s:%d", l.Locality.SubZone, sa.GetAddress(), sa.GetPortValue()))
		}
	}
	return out
}

// Direct: an endpoint's externalTarget is its host when it is an IP address; a hostname one has
// none (only the proxy resolves it); one outside the tailnet only as externalServices allow.
func TestExternalTargetDirect(t *testing.T) {
	obj := endpoints("e", nil, "ip 100.64.0.1 80 HTTP Healthy", "name 100.64.0.2 80 HTTP Healthy", "vip 100.64.0.3 80 HTTP Healthy", "plain 100.64.0.4 80 HTTP Healthy")
	obj.Spec.Endpoints[0].ExternalTarget = "192.0.2.7:8080"
	obj.Spec.Endpoints[1].ExternalTarget = "api.internal.example.com:8080"
	obj.Spec.Endpoints[2].ExternalTarget = "100.100.0.9:9000"
	ref := []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "web", Name: "e", Port: 80, Weight: 1}}
	got := hostsOf(t, ref, objects{endpoints: []*v1alpha1.TailscaleEndpoints{obj}}, Direct{})
	want := []string{"TailscaleEndpoints/web/e 192.0.2.7:8080", "TailscaleEndpoints/web/e 100.100.0.9:9000", "TailscaleEndpoints/web/e 100.64.0.4:80"}
	if !slices.Equal(got, want) {
		t.Errorf("hosts %v, want %v", got, want)
	}
	got = hostsOf(t, ref, objects{endpoints: []*v1alpha1.TailscaleEndpoints{obj}, noExternal: true}, Direct{})
	if want := want[1:]; !slices.Equal(got, want) {
		t.Errorf("externalServices refused: hosts %v, want %v", got, want)
	}
	// TLS to the host names the target when it is a name (the proxy's egress listener dials it),
	// else the endpoint's tailscaleFQDN.
	var names []string
	for _, l := range LoadAssignment("c", ref, objects{endpoints: []*v1alpha1.TailscaleEndpoints{obj}}, proxyAddresser{}).Endpoints {
		for _, h := range l.LbEndpoints {
			names = append(names, h.GetEndpoint().GetHostname())
		}
	}
	if want := []string{"ip.tail1234.ts.net", "api.internal.example.com", "vip.tail1234.ts.net", "plain.tail1234.ts.net"}; !slices.Equal(names, want) {
		t.Errorf("host names %v, want %v", names, want)
	}
}

// Direct: Tailscale Services in status.discoveredVIPServices are a locality each, their VIPs on
// the ref's port; through a proxy (another Addresser) they are not EDS hosts.
func TestDiscoveredVIPServicesDirect(t *testing.T) {
	svc := services("s", nil, "")
	svc.Status.DiscoveredVIPServices = []v1alpha1.DiscoveredVIPService{
		{Name: "svc:db", Addresses: []string{"100.100.0.8", "fd7a:115c:a1e0::8"}, Ports: []string{"tcp:5432", "tcp:80"}},
		{Name: "svc:forged", Addresses: []string{"10.0.0.1"}, Ports: []string{"tcp:80"}},
	}
	ref := []backends.Ref{{Kind: backends.KindServices, Namespace: "web", Name: "s", Port: 80, Weight: 1}}
	got := hostsOf(t, ref, objects{services: []*v1alpha1.TailscaleServices{svc}}, Direct{})
	want := []string{"VIPService/web/s/svc:db 100.100.0.8:80", "VIPService/web/s/svc:db fd7a:115c:a1e0::8:80"}
	if !slices.Equal(got, want) {
		t.Errorf("hosts %v, want %v", got, want)
	}
	if got := hostsOf(t, ref, objects{services: []*v1alpha1.TailscaleServices{svc}}, proxyAddresser{}); len(got) != 0 {
		t.Errorf("through a proxy: hosts %v, want none", got)
	}
}

type proxyAddresser struct{}

func (proxyAddresser) Address(*v1alpha1.TailscaleEndpoints, endpointset.Endpoint) (string, uint32, bool) {
	return "127.0.0.1", 10000, true
}
