package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// getFrom sends one GET through vip:80 from node and returns the answering backend, or an error
// when the connection is closed without an answer (refused).
func getFrom(ctx context.Context, node *tsnet.Server, vip string) (string, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := node.Dial(dctx, "tcp", net.JoinHostPort(vip, "80"))
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

// A listener Service as pkg/controllers/tsgateway generates it (controlled by a TailscaleGateway,
// an external service standing in for the Envoy Service, the access rule in annotations):
// callers are admitted by their tags, as WhoIs on the proxy's node reports them.
func TestServiceAccessControlByCallerTags(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	envoy := loopbackHTTP(t, "envoy")
	yes := true
	svc := servicesObject("guarded", nil)
	svc.OwnerReferences = []metav1.OwnerReference{{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "gw", UID: "gw-uid", Controller: &yes}}
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{external("envoy", envoy, nil)}}
	svc.Spec.VIPService = &v1alpha1.VIPServiceSpec{Name: "svc:guarded", Ports: []string{"tcp:80"}}
	// No rule yet: the untagged client is served (serve's first connection).
	vip := e.serve(t, svc)

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
	if err := e.sim.RouteService(ctx, "svc:guarded", vip, e.node, prod, dev); err != nil {
		t.Fatal(err)
	}
	setRule := func(r accesscontrol.Rule) {
		t.Helper()
		cur, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Get(ctx, "guarded", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Annotations = r.Annotations()
		if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	setRule(accesscontrol.Rule{Allowed: []string{"tag:prod"}, Denied: []string{"dev"}})
	notAllowed := `tailscale_gateway_proxy_refused_total{listener="svc:guarded/tcp/80",reason="not_allowed"}`
	poll(t, "the untagged client to be refused", func() bool {
		_, err := getFrom(ctx, e.peer, vip)
		return err != nil && metricValue(e.metricsText(t), notAllowed) != ""
	})
	if who, err := getFrom(ctx, prod, vip); err != nil || who != "envoy" {
		t.Fatalf("allowed caller (tag:prod): %q, %v; want served by the Envoy stand-in", who, err)
	}
	if who, err := getFrom(ctx, dev, vip); err == nil {
		t.Fatalf("denied caller (tag:prod, tag:dev) was served by %q", who)
	}
	text := e.metricsText(t)
	for _, reason := range []string{accesscontrol.ReasonDeniedTag, accesscontrol.ReasonNotAllowed} {
		m := fmt.Sprintf(`tailscale_gateway_proxy_refused_total{listener="svc:guarded/tcp/80",reason=%q}`, reason)
		if v := metricValue(text, m); v == "" || v == "0" {
			t.Errorf("%s = %q, want counted", m, v)
		}
	}

	// Denied tags only: untagged devices pass, the denied one still does not.
	setRule(accesscontrol.Rule{Denied: []string{"tag:dev"}})
	poll(t, "the untagged client to be served again", func() bool { who, err := getFrom(ctx, e.peer, vip); return err == nil && who == "envoy" })
	if who, err := getFrom(ctx, dev, vip); err == nil {
		t.Fatalf("denied caller served by %q under a denied-only rule", who)
	}
	if who, err := getFrom(ctx, prod, vip); err != nil || who != "envoy" {
		t.Fatalf("caller without a denied tag: %q, %v", who, err)
	}
}
