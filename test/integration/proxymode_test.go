package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
)

// In proxy mode the EDS gives Envoy the egress listener of tailscale-gateway-proxy for each
// tailnet endpoint; dialling that address as Envoy would reaches the simulated device through
// the proxy's tsnet node. The proxy reads its TailscaleEndpoints from the server's API.
func TestProxyModeCarriesTrafficToTheTailnet(t *testing.T) {
	// A loopback address of its own: the ports are the allocator's, the address is chosen here.
	bind := fmt.Sprintf("127.%d.%d.%d", 10+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	env := startExtensionEnv(t, func(o *server.Options) {
		o.Extension.EndpointMode, o.Extension.ProxyAddress = server.EndpointModeProxy, bind
	})
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "web",
			TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN, Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}}}
	if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := node.Start(sctx, node.Options{Dir: t.TempDir(), Hostname: "proxy", ControlURL: env.sim.ControlURL(),
		AuthKey: env.sim.AuthKey(), Tags: []string{"tag:proxy"}})
	if err != nil {
		t.Fatal(err)
	}
	pn, err := node.Wrap(n)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	defer pn.Close()
	p, err := proxy.New(proxy.Options{Client: env.client, Node: pn, EgressBindAddress: bind,
		Metrics: forward.NewMetrics(prometheus.NewRegistry()), Selection: proxy.Selection{Namespace: "sim", Endpoints: []string{"backends"}}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(context.Background())
	defer stop()
	go p.Run(pctx)

	const cluster = "httproute/sim/web/rule/0"
	env.shape(t, cluster, env.backendJSON(t, "tailscaleendpoints", "sim", "backends"))
	var addr string
	env.subscribe(t, false, cluster).waitFor("the proxy's egress listener", func(cla *endpointv3.ClusterLoadAssignment) bool {
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				if sa.GetAddress() == bind {
					addr = net.JoinHostPort(bind, fmt.Sprint(sa.GetPortValue()))
					return true
				}
			}
		}
		return false
	})

	// As Envoy would: an HTTP request to the EDS address, answered by the tailnet device.
	client := &http.Client{Timeout: 10 * time.Second}
	var body string
	err = wait.PollUntilContextTimeout(ctx(t), 100*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://"+addr+"/", nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil // the listener opens once the proxy has synced
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("GET http://%s/ through the proxy: %v (last body %q)", addr, err, body)
	}
	t.Logf("GET http://%s/ → %q", addr, body)
}
