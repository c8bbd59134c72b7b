package integration

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// unselectedWarning is the admission warning of a TailscaleServices whose endpointTemplate
// labels its selector does not match, as kubectl prints it.
var unselectedWarning = regexp.MustCompile(`(?m)^Warning: spec\.endpointTemplate\.labels \(.*\) do not match spec\.selector`)

// Every example (each a YAML block of the API contract) applies with kubectl; the two
// TailscaleServices of the contract whose template labels their selector does not match are
// accepted with a warning kubectl prints, and their status says so.
func TestKubectlAppliesEveryExample(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v, %v", files, err)
	}
	// A server of its own with live status (the shared one serves stored status only).
	s := framework.Start(t, "", func(o *server.Options) {
		o.Collector = &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}
		o.Tenancy.External.Allow = true
	})
	warned := map[string]bool{}
	for _, f := range files {
		// Namespaces of the examples exist on a standalone server without being created.
		out, err := s.Kubectl("apply", "-f", f)
		if err != nil {
			t.Fatalf("kubectl apply -f %s: %v\n%s", f, err, out)
		}
		if unselectedWarning.MatchString(out) {
			warned[filepath.Base(f)] = true
		}
		if strings.Contains(out, "Warning:") && !unselectedWarning.MatchString(out) {
			t.Errorf("kubectl apply -f %s: unexpected warning:\n%s", f, out)
		}
	}
	if len(warned) != 2 || !warned["services-complete.yaml"] || !warned["services-core-fields.yaml"] {
		t.Errorf("warned on %v, want services-complete.yaml and services-core-fields.yaml", warned)
	}
	svc, err := s.Clientset(t).GatewayV1alpha1().TailscaleServices("production").Get(ctx(t), "production-web-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cond *metav1.Condition
	for i := range svc.Status.Conditions {
		if svc.Status.Conditions[i].Type == livestatus.ConditionEndpointTemplateSelected {
			cond = &svc.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "region=auto") || cond.ObservedGeneration != svc.Generation {
		t.Errorf("production-web-service: condition %s = %+v, want False naming region=auto at generation %d",
			livestatus.ConditionEndpointTemplateSelected, cond, svc.Generation)
	}
}

// On a standalone server no TailscaleGateway controller runs: a TailscaleGateway says so on read
// (Ready and Programmed False, reason Standalone) instead of showing nothing.
func TestStandaloneTailscaleGatewaySaysNothingIsGenerated(t *testing.T) {
	s := framework.Start(t, "", func(o *server.Options) {
		o.Collector = &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}
	})
	c := s.Clientset(t).GatewayV1alpha1().TailscaleGateways("web")
	if _, err := c.Create(ctx(t), objects.Gateway("web", "gw"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx(t), "gw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ty := range []string{livestatus.ConditionGatewayReady, livestatus.ConditionGatewayProgrammed} {
		cond := meta.FindStatusCondition(got.Status.Conditions, ty)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != livestatus.ReasonStandalone ||
			!strings.Contains(cond.Message, "standalone") || cond.ObservedGeneration != got.Generation {
			t.Errorf("%s: %+v, want False %s at generation %d", ty, cond, livestatus.ReasonStandalone, got.Generation)
		}
	}
}
