package integration

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Finding 5 of the security review: a TailscaleServices whose tailnet comes from the endpoints
// it selects keeps its Tailscale Service, and the Service its VIP addresses, while those
// endpoints are deleted and created again (a GitOps prune, a rename): only an explicit spec
// change or the object's deletion releases it. The gap shows as Degraded, not as a deletion.
func TestSecurityVIPServiceSurvivesEndpointsRecreate(t *testing.T) {
	env := startVIPEnv(t, nil, "op-a")
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("vip")
	backends := func() *v1alpha1.TailscaleEndpoints {
		return &v1alpha1.TailscaleEndpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "backends", Labels: map[string]string{"app": "web"}},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "web",
				TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN, Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}},
		}
	}
	if _, err := eps.Create(ctx(t), backends(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	obj := vipServices("web", "svc:web")
	obj.Spec.EndpointTemplate = nil // the tailnet is the selected endpoints'
	if _, err := env.client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := env.service(t, "svc:web", "created", func(s tailnet.Service, ok bool) bool { return ok && len(s.Addrs) > 0 })
	env.object(t, "web", "registered", func(o *v1alpha1.TailscaleServices) bool { return o.Status.ServiceInfo != nil })

	if err := eps.Delete(ctx(t), "backends", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.object(t, "web", "Degraded while no endpoints name the tailnet", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Degraded")
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == "TailnetNotFound"
	})
	waitPolls(t, env.sim, 3)
	if _, _, del := calls(env.sim); del != 0 {
		t.Fatalf("%d DELETE of the Service while its endpoints were absent", del)
	}
	env.service(t, "svc:web", "kept", func(s tailnet.Service, ok bool) bool { return ok })

	if _, err := eps.Create(ctx(t), backends(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.object(t, "web", "reconciled again", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Degraded")
		return c != nil && c.Status == metav1.ConditionFalse && o.Status.ServiceInfo != nil
	})
	after := env.service(t, "svc:web", "same addresses", func(s tailnet.Service, ok bool) bool { return ok })
	if !slices.Equal(after.Addrs, before.Addrs) {
		t.Fatalf("addresses %v, were %v", after.Addrs, before.Addrs)
	}
	if _, _, del := calls(env.sim); del != 0 {
		t.Fatalf("%d DELETE of the Service", del)
	}
}
