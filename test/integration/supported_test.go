package integration

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// checkSupported fails unless conds hold Supported with status want at generation, its message
// naming every path of names.
func checkSupported(t *testing.T, what string, conds []metav1.Condition, generation int64, want metav1.ConditionStatus, names ...string) {
	t.Helper()
	c := meta.FindStatusCondition(conds, livestatus.ConditionSupported)
	if c == nil || c.Status != want || c.ObservedGeneration != generation {
		t.Fatalf("%s: Supported %+v, want %s at generation %d", what, c, want, generation)
	}
	for _, n := range names {
		if !strings.Contains(c.Message, n) {
			t.Errorf("%s: Supported message does not name %s: %s", what, n, c.Message)
		}
	}
}

// TestSupportedConditionThroughTheAPI: a TailscaleEndpoints and a TailscaleServices read through
// the API say which of their set fields have no effect (Supported=False, FieldsNotSupported), and
// Supported=True at the new generation once those fields are cleared. externalTarget and
// metadata take effect: never listed. An externalTarget outside the tailnet is refused (422)
// while externalServices are off, as here.
func TestSupportedConditionThroughTheAPI(t *testing.T) {
	s := framework.Start(t, "", func(o *server.Options) {
		o.Collector = &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}
	})
	api := s.Clientset(t).GatewayV1alpha1()

	eps := objects.Endpoints("web", "eps")
	eps.Spec.Endpoints[1].ExternalTarget = "db.internal.example.com:5432"
	_, err := api.TailscaleEndpoints("web").Create(ctx(t), eps, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.endpoints[1].externalTarget") {
		t.Fatalf("externalTarget outside the tailnet with externalServices off: err = %v, want 422 naming it", err)
	}
	eps.Spec.Endpoints[1].ExternalTarget = "db.company.ts.net:5432"
	eps.Spec.Endpoints[0].Metadata = map[string]string{"team": "data"}
	created, err := api.TailscaleEndpoints("web").Create(ctx(t), eps, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := api.TailscaleEndpoints("web").Get(ctx(t), "eps", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSupported(t, "endpoints with externalTarget and metadata", got.Status.Conditions, created.Generation, metav1.ConditionTrue)

	// failoverConfig.secondaryEndpoints and vipService.autoApprove take effect: not listed.
	svc := objects.Services("web", "svc")
	svc.Spec.VIPService.AutoApprove = ptrTo(true)
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{VIPServiceSelector: &v1alpha1.VIPServiceSelector{Tags: []string{"tag:shared"}}}
	createdSvc, err := api.TailscaleServices("web").Create(ctx(t), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gotSvc, err := api.TailscaleServices("web").Get(ctx(t), "svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSupported(t, "services", gotSvc.Status.Conditions, createdSvc.Generation, metav1.ConditionFalse,
		"spec.serviceDiscovery.vipServiceSelector (discoverVIPServices is false")
	if c := meta.FindStatusCondition(gotSvc.Status.Conditions, livestatus.ConditionSupported); strings.Contains(c.Message, "autoApprove") {
		t.Errorf("Supported lists vipService.autoApprove, which takes effect: %s", c.Message)
	}
	gotSvc.Spec.ServiceDiscovery.DiscoverVIPServices = true // the selector now discovers
	updatedSvc, err := api.TailscaleServices("web").Update(ctx(t), gotSvc, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotSvc, err = api.TailscaleServices("web").Get(ctx(t), "svc", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	checkSupported(t, "services discovering", gotSvc.Status.Conditions, updatedSvc.Generation, metav1.ConditionTrue)
}
