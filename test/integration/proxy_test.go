package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// TestProxyFollowsTheServersHealthAndFailback runs the proxy against the whole server: its
// prober's health and its failover tier (with failbackDelay), persisted by the status writer,
// decide where the proxy sends a tailnet client's connections to a Tailscale Service.
func TestProxyFollowsTheServersHealthAndFailback(t *testing.T) {
	env := startSimEnv(t)
	c := ctx(t)
	// east on api-server, probed on its health path every 100 ms; west on postgres, unprobed
	// (Healthy while online), so that a probe timing out on a loaded machine cannot take the
	// secondary tier away: the proxy would then rightly use the primary.
	web := map[string]string{"app": "web"}
	for name, device := range map[string]string{"east": "api-server", "west": "postgres"} {
		d, err := env.sim.Device(device)
		if err != nil {
			t.Fatal(err)
		}
		var probe *v1alpha1.HealthCheckConfig
		if name == "east" {
			probe = &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Type: v1alpha1.ProtocolHTTP, Path: d.HealthPath,
				HealthyThreshold: ptr.To[int32](1), UnhealthyThreshold: ptr.To[int32](2),
				Interval: &metav1.Duration{Duration: 100 * time.Millisecond}, Timeout: &metav1.Duration{Duration: 80 * time.Millisecond}}
		}
		ep := v1alpha1.TailscaleEndpoint{Name: "http", TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN, Port: int32(d.HTTPPort),
			Protocol: v1alpha1.ProtocolHTTP, HealthCheck: probe}
		obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: name, Labels: web},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{ep}}}
		if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(c, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const failback = 10 * time.Second // room for a stalled request (3 s) inside the window
	_, err := env.client.GatewayV1alpha1().TailscaleServices("sim").Create(c, &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: web},
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:web", Ports: []string{"tcp:80"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover, FailoverConfig: &v1alpha1.FailoverConfig{
				PrimaryEndpoints: []string{"east"}, SecondaryEndpoints: []string{"west"}, FailbackDelay: &metav1.Duration{Duration: failback}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The proxy's node, a tailnet client, and the VIP made routable to the proxy.
	const vip = "100.99.1.1"
	_, gwNode, client := proxyNode(t, env, "svc:web", vip)
	runProxy(t, env, gwNode, "web")

	// One connection per request: each answer names the device the proxy chose. Now and then
	// (about one connection in 100-500 here) a new connection to the VIP stalls inside tsnet
	// before it reaches the proxy's listener; such a request is retried, at most twice, since it
	// says nothing about the proxy's choice.
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: client.Dial, DisableKeepAlives: true}}
	who := func() string {
		var last string
		for attempt := range 3 {
			resp, err := hc.Get("http://" + vip + "/")
			if err != nil {
				last = "error: " + err.Error()
				t.Logf("request %d through the VIP: %v", attempt+1, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return strings.TrimPrefix(strings.TrimSpace(string(b)), "hello from ")
		}
		return last
	}
	waitWho := func(what, want string) {
		t.Helper()
		last := ""
		err := wait.PollUntilContextTimeout(c, 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			last = who()
			return last == want, nil
		})
		if err != nil {
			t.Fatalf("waiting for %s: last answer %q", what, last)
		}
	}
	allFrom := func(what, want string) {
		t.Helper()
		for range 10 {
			if got := who(); got != want {
				t.Fatalf("%s: answer from %q, want %s", what, got, want)
			}
		}
	}
	waitWho("the primary to serve", "api-server")
	allFrom("primary tier", "api-server")

	// The prober fails api-server's health path (its "/" still answers): the server marks east
	// Unhealthy and moves the tier; the proxy follows.
	if err := env.sim.SetHTTPStatus("api-server", 500); err != nil {
		t.Fatal(err)
	}
	waitWho("failover to the secondary tier", "postgres")
	allFrom("secondary tier", "postgres")

	// Recovery: east is Healthy again at once, but traffic stays on the secondary tier until
	// the server fails back after failbackDelay.
	if err := env.sim.SetHTTPStatus("api-server", 200); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(c, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		o, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Get(ctx, "east", metav1.GetOptions{})
		return err == nil && len(o.Status.Endpoints) == 1 && o.Status.Endpoints[0].Status == livestatus.Healthy, nil
	})
	if err != nil {
		t.Fatalf("waiting for east to be healthy again: %v", err)
	}
	recovered := time.Now()
	allFrom("primary healthy again, within failbackDelay", "postgres")
	waitWho("failback to the primary tier", "api-server")
	// The condition's transition time has a resolution of one second.
	if waited := time.Since(recovered); waited < failback-time.Second {
		svc, _ := env.client.GatewayV1alpha1().TailscaleServices("sim").Get(c, "web", metav1.GetOptions{})
		t.Errorf("traffic returned to the primary after %v, before failbackDelay %v; the server's status: %+v, conditions %+v",
			waited, failback, svc.Status.LoadBalancingStatus.FailoverStatus, svc.Status.Conditions)
	}
	allFrom("after failback", "api-server")
}
