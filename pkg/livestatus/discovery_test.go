package livestatus

import (
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
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
}
