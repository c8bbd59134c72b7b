package livestatus

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// supported returns the Supported condition of conds, failing when it is absent or does not
// carry generation.
func supported(t *testing.T, conds []metav1.Condition, generation int64) *metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(conds, ConditionSupported)
	if c == nil {
		t.Fatalf("no Supported condition in %+v", conds)
	}
	if c.ObservedGeneration != generation {
		t.Fatalf("Supported observedGeneration %d, want %d", c.ObservedGeneration, generation)
	}
	return c
}

func wantNames(t *testing.T, c *metav1.Condition, paths ...string) {
	t.Helper()
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonFieldsNotSupported {
		t.Fatalf("Supported = %s/%s, want False/%s: %s", c.Status, c.Reason, ReasonFieldsNotSupported, c.Message)
	}
	for _, p := range paths {
		if !strings.Contains(c.Message, p+" (") {
			t.Errorf("message does not name %s: %s", p, c.Message)
		}
	}
	if n := strings.Count(c.Message, "); ") + 1; n != len(paths) {
		t.Errorf("message names %d fields, want %d: %s", n, len(paths), c.Message)
	}
}

func TestEndpointsSupported(t *testing.T) {
	obj := endpointsObject()
	// externalTarget is where the proxy forwards (ports.Wanted), metadata the EDS host's
	// metadata: both take effect, nothing is listed.
	obj.Spec.Endpoints[0].ExternalTarget = "api.example.com:443"
	obj.Spec.Endpoints[2].Metadata = map[string]string{"team": "web"}
	if c := supported(t, Endpoints(obj, sources(), now).Conditions, 3); c.Status != metav1.ConditionTrue || c.Reason != ReasonAllFieldsSupported {
		t.Fatalf("externalTarget and metadata set: %+v", c)
	}
}

func TestServicesSupported(t *testing.T) {
	no := false
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Generation: 4},
		Spec: gateway.TailscaleServicesSpec{
			Selector:   &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			VIPService: &gateway.VIPServiceSpec{Name: "svc:web", Tags: []string{"tag:web"}},
			LoadBalancing: &gateway.LoadBalancingConfig{Strategy: gateway.StrategyFailover,
				FailoverConfig: &gateway.FailoverConfig{PrimaryEndpoints: []string{"east"}}},
			ServiceDiscovery: &gateway.ServiceDiscoverySpec{DiscoverVIPServices: true},
		},
	}
	if c := supported(t, Services(obj, sources(), fakeSelector{}, now).Conditions, 4); c.Status != metav1.ConditionTrue {
		t.Fatalf("nothing ignored set: %+v", c)
	}
	obj.Spec.VIPService.AutoApprove = &no
	// secondaryEndpoints takes effect (livestatus.FailoverTier): never listed.
	obj.Spec.LoadBalancing.FailoverConfig.SecondaryEndpoints = []string{"west"}
	// With discoverVIPServices, the Services the selector matches join as backends: not listed.
	obj.Spec.ServiceDiscovery.VIPServiceSelector = &gateway.VIPServiceSelector{ServiceNames: []string{"svc:other"}}
	if c := supported(t, Services(obj, sources(), fakeSelector{}, now).Conditions, 4); c.Status != metav1.ConditionTrue {
		t.Fatalf("autoApprove and a discovering selector take effect: %+v", c)
	}
	// Without it, the selector discovers nothing.
	obj.Spec.ServiceDiscovery.DiscoverVIPServices = false
	c := supported(t, Services(obj, sources(), fakeSelector{}, now).Conditions, 4)
	// autoApprove takes effect (pkg/controllers/vipservice approves the proxies hosting it).
	wantNames(t, c, "spec.serviceDiscovery.vipServiceSelector")
	if !strings.Contains(c.Message, "discoverVIPServices is false") {
		t.Errorf("message does not say why the selector has no effect: %s", c.Message)
	}
}
