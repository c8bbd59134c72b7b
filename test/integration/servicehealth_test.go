package integration

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// A TailscaleServices' loadBalancing.healthCheck probes the endpoints it selects in place of their
// own checks: it turns an endpoint Unhealthy that its own check (GET /, still answering) keeps
// Healthy, and the endpoint's own check decides again once the TailscaleServices is gone.
func TestServiceHealthCheckTakesPrecedence(t *testing.T) {
	env := startSimEnv(t)
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	fast := func(path string) *v1alpha1.HealthCheckConfig {
		return &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Type: v1alpha1.ProtocolHTTP, Path: path,
			Interval: &metav1.Duration{Duration: 100 * time.Millisecond}, Timeout: &metav1.Duration{Duration: 80 * time.Millisecond},
			HealthyThreshold: ptr.To[int32](1), UnhealthyThreshold: ptr.To[int32](2)}
	}
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "backends", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "web",
			TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN, Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP,
			HealthCheck: fast("/")}}}}
	if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web := statusOf("web")
	env.waitFor(t, "web healthy by its own check", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Healthy })

	// The device's health path fails; "/" still answers: the endpoint's own check keeps it Healthy.
	if err := env.sim.SetHTTPStatus("api-server", 500); err != nil {
		t.Fatal(err)
	}
	svcs := env.client.GatewayV1alpha1().TailscaleServices("sim")
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{HealthCheck: fast(api.HealthPath)}}}
	if _, err := svcs.Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web unhealthy by the service's check", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Unhealthy })

	// Without the service, the endpoint's own check decides again.
	if err := svcs.Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web healthy by its own check again", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Healthy })
}
