package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
)

// getFrom sends one GET through vip:port from node and returns the answering backend, or an error
// when the connection is closed without an answer (refused).
func getFrom(ctx context.Context, node *tsnet.Server, vip string, port int32) (string, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := node.Dial(dctx, "tcp", net.JoinHostPort(vip, fmt.Sprint(port)))
	if err != nil {
		return "", err
	}
	defer c.Close()
	hc := &httpConn{Conn: c, r: bufio.NewReader(c)}
	return hc.get()
}

func metricValue(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix+" ") {
			return strings.TrimPrefix(l, prefix+" ")
		}
	}
	return ""
}

// A listener TailscaleServices as pkg/controllers/tsgateway generates it for a Gateway listener
// (controlled by the TailscaleGateway, its one external service the Envoy Service — here a
// loopback stand-in whose port is the listener's — and security.accessControl as annotations):
// tailnet callers are admitted by their tags, as WhoIs on the proxy's node reports them.
func TestServiceAccessControlByCallerTags(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	host, portText, _ := net.SplitHostPort(loopbackHTTP(t, "envoy"))
	var port int32
	fmt.Sscan(portText, &port)
	tg := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "gw", UID: "gw-uid"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "edge"},
			Tailnets: []v1alpha1.TailnetConfiguration{{Name: "sim", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "sim"}}},
			Security: &v1alpha1.SecurityConfig{AccessControl: &v1alpha1.AccessControlConfig{
				AllowedTags: []string{"tag:prod"}, DeniedTags: []string{"dev"}}}}}
	gen := tsgateway.GenerateListeners(tsgateway.ListenerInput{Gateway: tg,
		Tailnets:  map[string]*v1alpha1.TailscaleTailnet{"sim": {ObjectMeta: metav1.ObjectMeta{Name: "sim"}}},
		Listeners: []gwapiv1.Listener{{Name: "web", Port: gwapiv1.PortNumber(port), Protocol: gwapiv1.HTTPProtocolType}},
		Envoy: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "envoy-gateway-system", Name: "envoy-edge"},
			Spec: corev1.ServiceSpec{ClusterIP: host, Ports: []corev1.ServicePort{{Port: port, Protocol: corev1.ProtocolTCP}}}}})
	if len(gen.Services) != 1 {
		t.Fatalf("generated %+v", gen)
	}
	svc := gen.Services[0]
	svc.Labels["proxy"] = "test" // the shared proxy's --services-selector
	name := svc.Spec.VIPService.Name

	prod, err := e.sim.NewNode(ctx, "caller-prod", e.sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	dev, err := e.sim.NewNode(ctx, "caller-dev", e.sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sim.TagNode(ctx, prod, []string{"tag:prod"}, e.node); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.TagNode(ctx, dev, []string{"tag:prod", "tag:dev"}, e.node); err != nil {
		t.Fatal(err)
	}
	e.vips++
	vip := fmt.Sprintf("100.99.0.%d", e.vips)
	if err := e.sim.RouteService(ctx, name, vip, e.node, e.peer, prod, dev); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	listener := fmt.Sprintf("%s/tcp/%d", name, port)
	e.waitServed(t, func(s proxy.Served) bool { return slices.Contains(s.Services, listener) })

	// The first connection waits for the route to the proxy; the allowed caller makes it.
	poll(t, "the allowed caller (tag:prod) served through "+vip, func() bool {
		who, err := getFrom(ctx, prod, vip, port)
		return err == nil && who == "envoy"
	})
	if who, err := getFrom(ctx, dev, vip, port); err == nil {
		t.Fatalf("denied caller (tag:prod, tag:dev) was served by %q", who)
	}
	if who, err := getFrom(ctx, e.peer, vip, port); err == nil {
		t.Fatalf("untagged caller was served by %q although allowedTags is set", who)
	}
	text := e.metricsText(t)
	for _, reason := range []string{accesscontrol.ReasonDeniedTag, accesscontrol.ReasonNotAllowed} {
		m := fmt.Sprintf(`tailscale_gateway_proxy_refused_total{listener=%q,reason=%q}`, listener, reason)
		if v := metricValue(text, m); v != "1" {
			t.Errorf("%s = %q, want 1", m, v)
		}
	}

	// Denied tags only: untagged devices pass, the denied one still does not.
	cur, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Annotations = accesscontrol.Rule{Denied: []string{"tag:dev"}}.Annotations()
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the untagged client served under a denied-only rule", func() bool {
		who, err := getFrom(ctx, e.peer, vip, port)
		return err == nil && who == "envoy"
	})
	if who, err := getFrom(ctx, dev, vip, port); err == nil {
		t.Fatalf("denied caller served by %q under a denied-only rule", who)
	}
	if who, err := getFrom(ctx, prod, vip, port); err != nil || who != "envoy" {
		t.Fatalf("caller without a denied tag: %q, %v", who, err)
	}
}
