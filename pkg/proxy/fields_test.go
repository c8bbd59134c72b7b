package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
)

// An endpoint's externalTarget is where its egress listener forwards: a tailnet name other than
// the endpoint's own device (resolved by the node's MagicDNS), and an address outside the tailnet
// (dialled from the proxy's host, allowed by the env's externalServices rule).
func TestEgressForwardsToTheExternalTarget(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	a, b := e.devices["dev-a"], e.devices["dev-b"]
	outside := loopbackHTTP(t, "outside")
	ep := func(name, target string) v1alpha1.TailscaleEndpoint {
		return v1alpha1.TailscaleEndpoint{Name: name, TailscaleIP: a.IPv4.String(), TailscaleFQDN: a.FQDN, Port: int32(a.HTTPPort),
			Protocol: v1alpha1.ProtocolHTTP, ExternalTarget: target}
	}
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "external-target", Labels: map[string]string{"egress": "true"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			ep("own", ""), ep("tailnet", fmt.Sprintf("%s:%d", b.FQDN, b.HTTPPort)), ep("outside", outside),
		}},
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitServed(t, func(s proxy.Served) bool { return s.Egress[namespace+"/external-target/outside"] != "" })
	for endpoint, want := range map[string]string{"own": "dev-a", "tailnet": "dev-b", "outside": "outside"} {
		body := pollGet(t, "http://"+e.egressAddr(t, "external-target", endpoint, a.HTTPPort)+"/")
		if body != "hello from "+want+"\n" {
			t.Errorf("endpoint %s: body %q, want hello from %s", endpoint, body, want)
		}
	}
}

// A Tailscale Service in status.discoveredVIPServices (what live status writes from the
// tailnet's API for spec.serviceDiscovery.vipServiceSelector) is a backend of the object's own
// Service: the proxy dials its VIP through the node. Once it leaves the status (the Service is
// gone), it takes no more connections.
func TestServiceForwardsToADiscoveredVIPService(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	// Another node hosts svc:discovered at its own VIP, answering "hello from discovered".
	srv, err := e.sim.NewNode(ctx, "discovered-host", e.sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	host, err := node.Wrap(srv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := host.ServiceConns("svc:discovered", 80)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "hello from discovered") }),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	const discoveredVIP = "100.99.1.2" // unique in the package: the simulator keeps manual routes (drain_test.go routes 100.99.1.1)
	if err := e.sim.RouteService(ctx, "svc:discovered", discoveredVIP, srv, e.node); err != nil {
		t.Fatal(err)
	}
	// Advertised as the proxy does (openService): the node then takes the VIP's connections.
	adv, err := srv.ListenService("svc:discovered", tsnet.ServiceModeTCP{Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adv.Close() })

	svc := servicesObject("discovering", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyRoundRobin})
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{
		DiscoverVIPServices: true, VIPServiceSelector: &v1alpha1.VIPServiceSelector{ServiceNames: []string{"svc:discovered"}},
		ExternalServices: []v1alpha1.ExternalService{external("ext", loopbackHTTP(t, "ext"), nil)}}
	svc.Status.DiscoveredVIPServices = []v1alpha1.DiscoveredVIPService{{Name: "svc:discovered", Addresses: []string{discoveredVIP}, Ports: []string{"tcp:80"}}}
	vip := e.serve(t, svc)

	poll(t, "the discovered Service to answer through "+vip, func() bool { return e.distribution(t, vip, 2)["discovered"] > 0 })
	if got := e.distribution(t, vip, 20); got["discovered"] != 10 || got["ext"] != 10 {
		t.Errorf("round-robin over 20 connections: %v, want 10 each of discovered and ext", got)
	}

	e.updateServicesStatus(t, "discovering", func(o *v1alpha1.TailscaleServices) { o.Status.DiscoveredVIPServices = nil })
	poll(t, "the gone Service to leave the backends", func() bool { return e.distribution(t, vip, 2)["discovered"] == 0 })
	if got := e.distribution(t, vip, 10); got["ext"] != 10 {
		t.Errorf("after the Service left: %v, want ext only", got)
	}
}

// pollGet returns the body of the first 200 answer to GET url, polling until one comes.
func pollGet(t *testing.T, url string) string {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	var body string
	poll(t, "HTTP GET "+url, func() bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	return body
}
