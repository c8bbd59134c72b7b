package livestatus

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

func TestMatchesTagSelectors(t *testing.T) {
	sel := func(key string, op gateway.TagSelectorOperator, values ...string) gateway.TagSelector {
		return gateway.TagSelector{Key: key, Operator: op, Values: values}
	}
	for _, tc := range []struct {
		name string
		tags []string
		sels []gateway.TagSelector
		want bool
	}{
		{"key alone exists", []string{"tag:web"}, []gateway.TagSelector{sel("web", gateway.TagSelectorOpExists)}, true},
		{"key-value exists", []string{"tag:env-production"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpExists)}, true},
		{"key-value in", []string{"tag:env-production"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpIn, "production", "staging")}, true},
		{"key=value in", []string{"tag:env=staging"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpIn, "production", "staging")}, true},
		{"key:value in", []string{"tag:env:staging"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpIn, "staging")}, true},
		{"case-insensitive", []string{"tag:Env-Production"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpIn, "production")}, true},
		{"other value not in", []string{"tag:env-dev"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpIn, "production")}, false},
		{"key without value not in", []string{"tag:env"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpIn, "production")}, false},
		{"dashed key exists", []string{"tag:service-type"}, []gateway.TagSelector{sel("service-type", gateway.TagSelectorOpExists)}, true},
		{"prefix is not a key", []string{"tag:webserver"}, []gateway.TagSelector{sel("web", gateway.TagSelectorOpExists)}, false},
		{"not in without key", []string{"tag:web"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpNotIn, "dev")}, true},
		{"not in with value", []string{"tag:env-dev"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpNotIn, "dev")}, false},
		{"does not exist", []string{"tag:web"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpDoesNotExist)}, true},
		{"does not exist fails", []string{"tag:env-dev"}, []gateway.TagSelector{sel("env", gateway.TagSelectorOpDoesNotExist)}, false},
		{"all must match", []string{"tag:env-production", "tag:web"}, []gateway.TagSelector{
			sel("env", gateway.TagSelectorOpIn, "production"), sel("service-type", gateway.TagSelectorOpExists)}, false},
		{"spec example", []string{"tag:env-production", "tag:service-type-web"}, []gateway.TagSelector{
			sel("env", gateway.TagSelectorOpIn, "production", "staging"), sel("service-type", gateway.TagSelectorOpExists)}, true},
	} {
		if got := matchesTagSelectors(tc.tags, tc.sels); got != tc.want {
			t.Errorf("%s: %v against %v = %v, want %v", tc.name, tc.tags, tc.sels, got, tc.want)
		}
	}
}

func TestEndpointsWithDiscoveredDevices(t *testing.T) {
	src := sources()
	tn := src.tailnets["company.ts.net"]
	tn.Devices = append(tn.Devices,
		Device{Name: "web-1.company.ts.net.", Addresses: []string{"100.64.0.21"}, Tags: []string{"tag:web"}, Online: true},
		Device{Name: "web-2.company.ts.net.", Addresses: []string{"100.64.0.22"}, Tags: []string{"tag:web"}, Online: false},
		Device{Name: "api.company.ts.net.", Addresses: []string{"100.64.0.30"}, Tags: []string{"tag:web"}, Online: true},
	)
	src.tailnets["company.ts.net"] = tn
	obj := endpointsObject()
	obj.Spec.TagSelectors = []gateway.TagSelector{{Key: "web", Operator: gateway.TagSelectorOpExists}}
	obj.Spec.ServiceDiscovery = &gateway.ServiceDiscoveryConfig{VIPServices: []gateway.VIPServiceConfig{{Name: "web", Port: 8080, TargetEndpoint: "web-1"}}}
	st := Endpoints(obj, src, now)
	declared := len(obj.Spec.Endpoints)
	// "api" is declared: the device of that name is not discovered again.
	if len(st.Endpoints) != declared+2 {
		t.Fatalf("endpoints: %+v", st.Endpoints)
	}
	w1, w2 := st.Endpoints[declared], st.Endpoints[declared+1]
	if w1.Name != "web-1" || w1.Address != "100.64.0.21:8080" || w1.Status != Healthy || w1.Online == nil || !*w1.Online {
		t.Fatalf("web-1: %+v", w1)
	}
	if w2.Name != "web-2" || w2.Address != "100.64.0.22:80" || w2.Status != Unhealthy {
		t.Fatalf("web-2: %+v", w2)
	}
	if st.TotalEndpoints != int32(declared+2) {
		t.Fatalf("total %d", st.TotalEndpoints)
	}
	healthy := st.HealthyEndpoints

	// Once the collector's TCP probe of a discovered endpoint has a result, it decides.
	src.probes["default/eps/web-1"] = Probe{Status: Unhealthy, LastChecked: now, Error: "connection refused"}
	st = Endpoints(obj, src, now)
	if w1 := st.Endpoints[declared]; w1.Status != Unhealthy || w1.Error == "" || w1.LastChecked == nil || st.HealthyEndpoints != healthy-1 {
		t.Fatalf("probed web-1: %+v (healthy %d)", w1, st.HealthyEndpoints)
	}
	src.probes["default/eps/web-1"] = Probe{Status: Unknown}
	if w1 := Endpoints(obj, src, now).Endpoints[declared]; w1.Status != Healthy {
		t.Fatalf("web-1 before its probe decides: %+v", w1)
	}
}

// discoveringServices is a TailscaleServices of namespace default on company.ts.net (its
// endpointTemplate's tailnet) discovering Services by sel.
func discoveringServices(sel *gateway.VIPServiceSelector) *gateway.TailscaleServices {
	return &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "front", Generation: 1},
		Spec: gateway.TailscaleServicesSpec{
			VIPService:       &gateway.VIPServiceSpec{Name: "svc:front", Ports: []string{"tcp:80"}},
			EndpointTemplate: &gateway.EndpointTemplate{Tailnet: "company.ts.net"},
			ServiceDiscovery: &gateway.ServiceDiscoverySpec{DiscoverVIPServices: true, VIPServiceSelector: sel},
		},
	}
}

// discoverySources has two tailnets holding Services of the same names and tags.
func discoverySources() fakeSources {
	src := sources()
	services := func(prefix string) []Service {
		return []Service{
			{Name: "svc:front", Addrs: []string{prefix + ".0.1"}, Ports: []string{"tcp:80"}, Tags: []string{"tag:shared"}},
			{Name: "svc:db", DNSName: "db.x.ts.net", Addrs: []string{prefix + ".0.2", "fd7a:115c:a1e0::2"}, Ports: []string{"tcp:5432"}},
			{Name: "svc:cache", Addrs: []string{prefix + ".0.3"}, Ports: []string{"tcp:6379"}, Tags: []string{"tag:shared"}},
			{Name: "svc:other", Addrs: []string{prefix + ".0.4"}, Ports: []string{"tcp:80"}, Tags: []string{"tag:else"}},
		}
	}
	a := src.tailnets["company.ts.net"]
	a.Services = services("100.100")
	src.tailnets["company.ts.net"] = a
	src.tailnets["other.ts.net"] = Tailnet{Name: "other.ts.net", Synced: true, LastSync: now, Services: services("100.101")}
	return src
}

func discoveredNames(st gateway.TailscaleServicesStatus) []string {
	var out []string
	for _, d := range st.DiscoveredVIPServices {
		out = append(out, d.Name+"="+strings.Join(d.Addresses, ",")+"/"+strings.Join(d.Ports, ","))
	}
	return out
}

func TestDiscoveredVIPServicesByNameAndTag(t *testing.T) {
	src := discoverySources()
	// By name ("svc:" optional) and by tag; never the object's own svc:front, though it carries
	// the tag; only company.ts.net's, though other.ts.net has Services of the same names.
	obj := discoveringServices(&gateway.VIPServiceSelector{ServiceNames: []string{"svc:db"}, Tags: []string{"tag:shared"}})
	st := Services(obj, src, fakeSelector{}, now)
	want := []string{"svc:cache=100.100.0.3/tcp:6379", "svc:db=100.100.0.2,fd7a:115c:a1e0::2/tcp:5432"}
	if got := discoveredNames(st); !slices.Equal(got, want) {
		t.Fatalf("discovered %v, want %v", got, want)
	}
	if st.VIPServiceStatus == nil || st.VIPServiceStatus.BackendCount != 2 {
		t.Errorf("backendCount %+v, want the 2 discovered Services", st.VIPServiceStatus)
	}

	// The same object on other.ts.net discovers other.ts.net's, and nothing of company.ts.net.
	obj.Spec.EndpointTemplate.Tailnet = "other.ts.net"
	if got := discoveredNames(Services(obj, src, fakeSelector{}, now)); !slices.Equal(got, []string{"svc:cache=100.101.0.3/tcp:6379", "svc:db=100.101.0.2,fd7a:115c:a1e0::2/tcp:5432"}) {
		t.Fatalf("on other.ts.net: discovered %v", got)
	}

	// Without discoverVIPServices the selector discovers nothing.
	obj.Spec.ServiceDiscovery.DiscoverVIPServices = false
	if got := discoveredNames(Services(obj, src, fakeSelector{}, now)); got != nil {
		t.Fatalf("without discoverVIPServices: discovered %v", got)
	}
}

func TestDiscoveredVIPServiceThatDisappearsLeaves(t *testing.T) {
	src := discoverySources()
	obj := discoveringServices(&gateway.VIPServiceSelector{Tags: []string{"tag:shared"}})
	obj.Status = Services(obj, src, fakeSelector{}, now)
	if got := discoveredNames(obj.Status); len(got) != 1 {
		t.Fatalf("discovered %v, want svc:cache", got)
	}
	// A failed poll keeps what was discovered: an API outage never drops backends.
	a := src.tailnets["company.ts.net"]
	a.Synced, a.Services = false, nil
	src.tailnets["company.ts.net"] = a
	if got := discoveredNames(Services(obj, src, fakeSelector{}, now)); !slices.Equal(got, []string{"svc:cache=100.100.0.3/tcp:6379"}) {
		t.Fatalf("tailnet not synced: discovered %v, want the stored svc:cache", got)
	}
	// A synced tailnet without it: the Service is gone, so is the backend.
	a.Synced = true
	src.tailnets["company.ts.net"] = a
	if got := discoveredNames(Services(obj, src, fakeSelector{}, now)); got != nil {
		t.Fatalf("Service gone: discovered %v, want none", got)
	}
}

func TestDiscoveredVIPServicesOnlyOfAnAdmittingTailnet(t *testing.T) {
	src := discoverySources()
	src.policy = refusingPolicy(t, "company.ts.net")
	obj := discoveringServices(&gateway.VIPServiceSelector{Tags: []string{"tag:shared"}})
	obj.Status.DiscoveredVIPServices = []gateway.DiscoveredVIPService{{Name: "svc:cache", Addresses: []string{"100.100.0.3"}, Ports: []string{"tcp:6379"}}}
	if got := discoveredNames(Services(obj, src, fakeSelector{}, now)); got != nil {
		t.Fatalf("a tailnet refusing the namespace: discovered %v, want none (the stored one dropped)", got)
	}
}

// refusingPolicy is a tenancy policy whose TailscaleTailnet for domain admits namespace "team-a"
// only.
func refusingPolicy(t *testing.T, domain string) *tenancy.Policy {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := idx.Add(&v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "company"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: domain,
			AllowedNamespaces: &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"team-a"}}}}); err != nil {
		t.Fatal(err)
	}
	return tenancy.New(listers.NewTailscaleTailnetLister(idx), nil, tenancy.ExternalServices{})
}
