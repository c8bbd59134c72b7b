package proxy_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/tailcfg"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
)

// A local process (anything sharing the proxy's network namespace) that connects to tsnet's
// forwarding socket of a hosted Service and sends a PROXY protocol header naming a tailnet caller
// of its choosing is refused and counted: the proxy takes Service connections from its node's
// network stack, so nothing legitimate ever arrives on that socket.
func TestForgedPROXYHeaderFromALocalClientIsRefused(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	vip := e.serve(t, servicesObject("forge", nil), e.backendObject("forge-c", "dev-c", map[string]string{"app": "forge"}))
	lc, err := e.node.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := lc.GetServeConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svc := sc.Services[tailcfg.ServiceName("svc:forge")]
	if svc == nil || svc.TCP[80] == nil || svc.TCP[80].TCPForward == "" {
		t.Fatalf("no forwarding socket for svc:forge port 80 in the serve configuration: %+v", sc.Services)
	}
	forwarding := svc.TCP[80].TCPForward

	c, err := net.DialTimeout("tcp", forwarding, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	caller := e.peer.TailscaleIPs
	v4, _ := caller()
	forged := fmt.Sprintf("PROXY TCP4 %s %s 40000 80\r\nGET / HTTP/1.1\r\nHost: vip\r\n\r\n", v4, vip)
	if _, err := io.WriteString(c, forged); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(c); len(got) > 0 {
		t.Fatalf("a local client with a forged PROXY header was answered: %q (%v)", got, err)
	}
	m := `tailscale_gateway_proxy_refused_total{listener="svc:forge/tcp/80",reason="local_connection"}`
	poll(t, m+" = 1", func() bool { return metricValue(e.metricsText(t), m) == "1" })
	// The tailnet caller that header named is still served through the VIP.
	if who, err := getFrom(ctx, e.peer, vip, 80); err != nil || who != "dev-c" {
		t.Fatalf("the real caller through %s: %q, %v", vip, who, err)
	}
}

// A listener refuses the connections beyond MaxConnections open through it, counting each, and
// takes new ones again once some close.
func TestConnectionsBeyondTheCapAreRefused(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	const limit = 3
	d := e.devices["dev-c"]
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "capped"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "echo", TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN, Port: int32(d.TCPPort), Protocol: v1alpha1.ProtocolTCP}}},
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics := forward.NewMetrics(reg)
	bind := fmt.Sprintf("127.%d.%d.%d", 10+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	p, err := proxy.New(proxy.Options{Client: e.client, Node: e.wrapped, Metrics: metrics, EgressBindAddress: bind,
		MaxConnections: limit, DrainGrace: -1, Selection: proxy.Selection{Namespace: namespace, Endpoints: []string{"capped"}}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = p.Run(runCtx) }()
	defer func() { stop(); <-stopped }()
	var addr string
	poll(t, "the capped egress listener", func() bool {
		addr = strings.TrimPrefix(p.Served().Egress[namespace+"/capped/echo"], "tcp://")
		return addr != ""
	})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range limit {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if err := echoRoundTrip(c); err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, limit, err)
		}
	}
	over, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoRoundTrip(over); err == nil {
		t.Fatalf("connection %d was served beyond the cap of %d", limit+1, limit)
	}
	over.Close()
	m := fmt.Sprintf(`tailscale_gateway_proxy_refused_total{listener="egress/tcp/%s",reason=%q}`, addr[strings.LastIndex(addr, ":")+1:], proxy.ReasonConnectionLimit)
	if v := metricValue(gatheredText(t, reg), m); v != "1" {
		t.Errorf("%s = %q, want 1", m, v)
	}
	held[0].Close()
	poll(t, "a connection served again once one closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return false
		}
		if echoRoundTrip(c) != nil {
			c.Close()
			return false
		}
		held[0] = c
		return true
	})
}
