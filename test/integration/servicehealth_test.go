package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	gatewayclient "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/typed/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// A TailscaleServices' loadBalancing.healthCheck probes the endpoints it selects in place of their
// own checks: it turns an endpoint Unhealthy that its own check (GET /, still answering) keeps
// Healthy, and the endpoint's own check decides again once the TailscaleServices is gone.
func TestServiceHealthCheckTakesPrecedence(t *testing.T) {
	env, api := healthPathFails(t)
	web := statusOf("web")
	svcs := env.client.GatewayV1alpha1().TailscaleServices("sim")
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{HealthCheck: fastCheck(api.HealthPath)}}}
	if _, err := svcs.Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web unhealthy by the service's check", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Unhealthy })
	waitLastHealthCheckAdvances(t, env.server, svcs, "sim", "web")

	// Without the service, the endpoint's own check decides again.
	if err := svcs.Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web healthy by its own check again", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Healthy })
}

// waitLastHealthCheckAdvances waits until the TailscaleServices name, read through the API, says
// when its first selected TailscaleEndpoints was last probed, and until a later read says a later
// time (the prober keeps probing); the stored object never carries it (computed on read only).
func waitLastHealthCheckAdvances(t *testing.T, s *framework.Server, svcs gatewayclient.TailscaleServicesInterface, namespace, name string) {
	t.Helper()
	var first, last *metav1.Time
	err := wait.PollUntilContextTimeout(ctx(t), 100*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := svcs.Get(c, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if len(o.Status.SelectedEndpoints) == 0 || o.Status.SelectedEndpoints[0].HealthStatus == nil {
			return false, nil
		}
		last = o.Status.SelectedEndpoints[0].HealthStatus.LastHealthCheck
		if first == nil {
			first = last
		}
		return last != nil && last.After(first.Time), nil
	})
	if err != nil {
		t.Fatalf("waiting for healthStatus.lastHealthCheck to advance: %v (first %v, last %v)", err, first, last)
	}
	if d := time.Since(last.Time); d > time.Minute || d < -time.Second {
		t.Fatalf("lastHealthCheck %v is not a recent probe (%v ago)", last, d)
	}
	// The status writer persists the selection (with healthStatus), never the probe time.
	var raw string
	err = wait.PollUntilContextTimeout(ctx(t), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		raw, _ = storedJSON(t, s, "/registry/gateway.tailscale.com/gateway.tailscale.com/tailscaleservices/"+namespace+"/"+name)
		return strings.Contains(raw, `"healthStatus"`), nil
	})
	if err != nil || strings.Contains(raw, "lastHealthCheck") {
		t.Fatalf("stored object (%v): %s, want healthStatus without lastHealthCheck", err, raw)
	}
}

// A TailscaleGateway's routeGeneration.ingress.defaultBackend.healthCheck probes the endpoints its
// generated ingress routes reach in place of their own checks; a TailscaleServices' check takes
// precedence over it; without the TailscaleGateway the endpoint's own check decides again.
func TestGatewayDefaultBackendHealthCheck(t *testing.T) {
	env, api := healthPathFails(t)
	web := statusOf("web")

	gws := env.client.GatewayV1alpha1().TailscaleGateways("sim")
	gw := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "edge"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: "eg"},
			Tailnets: []v1alpha1.TailnetConfiguration{{Name: "main", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Kind: "TailscaleTailnet", Name: "sim"},
				RouteGeneration: &v1alpha1.RouteGenerationConfig{Ingress: &v1alpha1.IngressRouteConfig{Enabled: true,
					DefaultBackend: &v1alpha1.BackendConfig{HealthCheck: fastCheck(api.HealthPath)}}}}},
		}}
	if _, err := gws.Create(ctx(t), gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web unhealthy by the gateway's check", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Unhealthy })

	// A TailscaleServices selecting it checks "/": its check takes precedence over the gateway's.
	svcs := env.client.GatewayV1alpha1().TailscaleServices("sim")
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{HealthCheck: fastCheck("/")}}}
	if _, err := svcs.Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web healthy by the service's check", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Healthy })
	if err := svcs.Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web unhealthy by the gateway's check again", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Unhealthy })

	if err := gws.Delete(ctx(t), "edge", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "web healthy by its own check again", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Healthy })
}

// fastCheck is an HTTP check of path every 100ms that turns after one success or two failures.
func fastCheck(path string) *v1alpha1.HealthCheckConfig {
	return &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Type: v1alpha1.ProtocolHTTP, Path: path,
		Interval: &metav1.Duration{Duration: 100 * time.Millisecond}, Timeout: &metav1.Duration{Duration: 80 * time.Millisecond},
		HealthyThreshold: ptr.To[int32](1), UnhealthyThreshold: ptr.To[int32](2)}
}

// healthPathFails starts a server with TailscaleEndpoints sim/backends (label app=web) whose
// endpoint "web", on device api-server, checks "/" and is Healthy by it; then the device's health
// path starts failing while "/" still answers.
func healthPathFails(t *testing.T) (*simEnv, tailnetsim.Device) {
	t.Helper()
	env := startSimEnv(t)
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "backends", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "web",
			TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN, Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP,
			HealthCheck: fastCheck("/")}}}}
	if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web := statusOf("web")
	env.waitFor(t, "web healthy by its own check", func(o *v1alpha1.TailscaleEndpoints) bool { return web(o) == livestatus.Healthy })
	if err := env.sim.SetHTTPStatus("api-server", 500); err != nil {
		t.Fatal(err)
	}
	return env, api
}
