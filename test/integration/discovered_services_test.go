package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// TestVIPServiceSelectorDiscoversServicesOfItsOwnTailnet: a TailscaleServices on tailnet "sim"
// (through the TailscaleEndpoints it selects) with discoverVIPServices and a vipServiceSelector
// lists in status.discoveredVIPServices the Tailscale Services of that tailnet, read from its
// Tailscale API, that the selector names or tags: never those of another tailnet the server also
// polls, whatever their names and tags. A Service deleted in the tailnet leaves the list; the
// server deletes nothing in either tailnet.
func TestVIPServiceSelectorDiscoversServicesOfItsOwnTailnet(t *testing.T) {
	env := startSimEnv(t)
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	other, err := tailnetsim.Start(sctx, tailnetsim.Options{TailnetName: "other.example.com", MagicDNSSuffix: "other.ts.net",
		OAuthClientID: env.sim.OAuthClientID(), OAuthClientSecret: env.sim.OAuthClientSecret()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	if _, err := env.client.GatewayV1alpha1().TailscaleTailnets().Create(ctx(t), &v1alpha1.TailscaleTailnet{
		ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Spec:       v1alpha1.TailscaleTailnetSpec{Tailnet: other.TailnetName(), OAuthSecretName: "ts-oauth", APIBaseURL: other.APIURL()},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mine, theirs := adminClient(t, env.sim), adminClient(t, other)
	for _, s := range []tailnet.Service{
		{Name: "svc:db", Ports: []string{"tcp:5432"}},
		{Name: "svc:cache", Ports: []string{"tcp:6379"}, Tags: []string{"tag:shared"}},
		{Name: "svc:unrelated", Ports: []string{"tcp:80"}, Tags: []string{"tag:else"}},
	} {
		if err := mine.CreateOrUpdateService(ctx(t), s); err != nil {
			t.Fatal(err)
		}
	}
	// The other tailnet holds Services of the same names and tags, and one more.
	for _, s := range []tailnet.Service{
		{Name: "svc:db", Ports: []string{"tcp:5433"}},
		{Name: "svc:cache", Ports: []string{"tcp:6380"}, Tags: []string{"tag:shared"}},
		{Name: "svc:only-theirs", Ports: []string{"tcp:80"}, Tags: []string{"tag:shared"}},
	} {
		if err := theirs.CreateOrUpdateService(ctx(t), s); err != nil {
			t.Fatal(err)
		}
	}

	eps := simEndpoints(t, env.sim)
	eps.Labels = map[string]string{"app": "discovering"}
	if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "discovering"},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "discovering"}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{DiscoverVIPServices: true,
				VIPServiceSelector: &v1alpha1.VIPServiceSelector{ServiceNames: []string{"svc:db"}, Tags: []string{"tag:shared"}}},
		},
	}
	if _, err := env.client.GatewayV1alpha1().TailscaleServices("sim").Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// want is "<name> <ports>" of each discovered Service, each checked against the addresses
	// sim's API gave it.
	waitDiscovered := func(what string, want ...string) {
		t.Helper()
		var last []v1alpha1.DiscoveredVIPService
		err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, 2*time.Minute, true, func(c context.Context) (bool, error) {
			o, err := env.client.GatewayV1alpha1().TailscaleServices("sim").Get(c, "discovering", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			last = o.Status.DiscoveredVIPServices
			var got []string
			for _, d := range last {
				got = append(got, d.Name+" "+strings.Join(d.Ports, ","))
			}
			return slices.Equal(got, want), nil
		})
		if err != nil {
			t.Fatalf("%s: discovered %+v, want %v", what, last, want)
		}
		for _, d := range last {
			s, err := mine.Service(ctx(t), d.Name)
			if err != nil || len(s.Addrs) == 0 || !slices.Equal(d.Addresses, s.Addrs) {
				t.Errorf("%s: %s has addresses %v, sim's API says %v (%v)", what, d.Name, d.Addresses, s.Addrs, err)
			}
			if !strings.HasSuffix(strings.TrimSuffix(d.DNSName, "."), env.sim.MagicDNSSuffix()) {
				t.Errorf("%s: %s has DNS name %q, not in %s", what, d.Name, d.DNSName, env.sim.MagicDNSSuffix())
			}
		}
	}
	// The other tailnet is polled (its Services are in the server's cache) before the check.
	if err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, 2*time.Minute, true, func(c context.Context) (bool, error) {
		o, err := env.client.GatewayV1alpha1().TailscaleTailnets().Get(c, "other", metav1.GetOptions{})
		return err == nil && meta.IsStatusConditionTrue(o.Status.Conditions, "Ready"), nil
	}); err != nil {
		t.Fatalf("tailnet other never became Ready: %v", err)
	}
	waitDiscovered("by name and tag", "svc:cache tcp:6379", "svc:db tcp:5432")

	// Deleted in the tailnet: it leaves the backends.
	if err := mine.DeleteService(ctx(t), "svc:db"); err != nil {
		t.Fatal(err)
	}
	waitDiscovered("after svc:db was deleted", "svc:cache tcp:6379")

	// Nothing was deleted in either tailnet by the server.
	for sim, c := range map[string]*tailnet.Client{"sim": mine, "other": theirs} {
		list, err := c.Services(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range list {
			names = append(names, s.Name)
		}
		slices.Sort(names)
		want := []string{"svc:cache", "svc:unrelated"}
		if sim == "other" {
			want = []string{"svc:cache", "svc:db", "svc:only-theirs"}
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s's Services %v, want %v", sim, names, want)
		}
	}
}

// proxyNode starts the proxy's node on env's tailnet and a tailnet client, "client", to which
// the proxy's Service svc at vip is routed.
func proxyNode(t *testing.T, env *simEnv, svc, vip string) (*tsnet.Server, *node.Node, *tsnet.Server) {
	t.Helper()
	c := ctx(t)
	gw, err := node.Start(c, node.Options{Dir: t.TempDir(), Hostname: "gw-proxy", ControlURL: env.sim.ControlURL(),
		AuthKey: env.sim.AuthKey(), Tags: []string{"tag:gateway"}})
	if err != nil {
		t.Fatal(err)
	}
	gwNode, err := node.Wrap(gw)
	if err != nil {
		t.Fatal(err)
	}
	client, err := env.sim.NewNode(c, "client", env.sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := env.sim.RouteService(c, svc, vip, gw, client); err != nil {
		t.Fatal(err)
	}
	return gw, gwNode, client
}

// runProxy runs a proxy on n hosting the TailscaleServices services of namespace sim, against
// env's server, until the test ends; then it closes n.
func runProxy(t *testing.T, env *simEnv, n *node.Node, services ...string) {
	t.Helper()
	p, err := proxy.New(proxy.Options{Client: env.client, Node: n, Metrics: forward.NewMetrics(prometheus.NewRegistry()),
		Retry: 200 * time.Millisecond, Selection: proxy.Selection{Namespace: "sim", Services: services}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = p.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-stopped
		n.Close()
	})
}

// adminClient is a Tailscale API client of sim with its API key: the tests' own changes to the
// tailnet, as an administrator makes them.
func adminClient(t *testing.T, sim *tailnetsim.Tailnet) *tailnet.Client {
	t.Helper()
	c, err := tailnet.NewClient(tailnet.ClientOptions{Tailnet: sim.TailnetName(), BaseURL: sim.APIURL(),
		Credentials: tailnet.Credentials{APIKey: sim.APIKey()}, Transport: tailnet.TransportOptions{RequestsPerSecond: -1}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDiscoveredVIPServiceTakesTrafficThroughTheProxy runs the whole chain: the server discovers
// a Tailscale Service by tag from sim's API and persists it in status.discoveredVIPServices, the
// proxy hosting the object's own Service reads that status through the API and sends a tailnet
// client's connections to the discovered Service's VIP, where another node serves it. Deleted in
// the tailnet, the Service leaves the status and takes no more connections.
func TestDiscoveredVIPServiceTakesTrafficThroughTheProxy(t *testing.T) {
	env := startSimEnv(t)
	c := ctx(t)
	admin := adminClient(t, env.sim)
	if err := admin.CreateOrUpdateService(c, tailnet.Service{Name: "svc:shared-api", Ports: []string{"tcp:80"}, Tags: []string{"tag:shared"}}); err != nil {
		t.Fatal(err)
	}
	shared, err := admin.Service(c, "svc:shared-api")
	if err != nil || len(shared.Addrs) == 0 {
		t.Fatalf("svc:shared-api: %+v, %v", shared, err)
	}

	// The proxy's node, a tailnet client routed to svc:front on the proxy, and a node serving
	// svc:shared-api at the address sim's API gave it, routed from the proxy's node.
	const vip = "100.99.1.1"
	gw, gwNode, client := proxyNode(t, env, "svc:front", vip)
	hostSrv, err := env.sim.NewNode(c, "shared-api-host", env.sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	host, err := node.Wrap(hostSrv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := host.ServiceConns("svc:shared-api", 80)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "hello from shared-api") }),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	if err := env.sim.RouteService(c, "svc:shared-api", shared.Addrs[0], hostSrv, gw); err != nil {
		t.Fatal(err)
	}
	adv, err := hostSrv.ListenService("svc:shared-api", tsnet.ServiceModeTCP{Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adv.Close() })

	// svc:front's object: its tailnet is sim's (the TailscaleEndpoints it selects, weighted 0:
	// no traffic), and it discovers Services tagged tag:shared (weighted by their label).
	eps := simEndpoints(t, env.sim)
	eps.Labels = map[string]string{"app": "front"}
	if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(c, eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.client.GatewayV1alpha1().TailscaleServices("sim").Create(c, &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "front"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "front"}},
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:front", Ports: []string{"tcp:80"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyWeighted,
				Weights: map[string]int32{eps.Name: 0, "shared-api": 1}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{DiscoverVIPServices: true,
				VIPServiceSelector: &v1alpha1.VIPServiceSelector{Tags: []string{"tag:shared"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	runProxy(t, env, gwNode, "front")

	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: client.Dial, DisableKeepAlives: true}}
	who := func() string {
		resp, err := hc.Get("http://" + vip + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimPrefix(strings.TrimSpace(string(b)), "hello from ")
	}
	waitWho := func(what string, cond func(string) bool) {
		t.Helper()
		last := ""
		if err := wait.PollUntilContextTimeout(c, 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			last = who()
			return cond(last), nil
		}); err != nil {
			t.Fatalf("waiting for %s: last answer %q", what, last)
		}
	}
	waitWho("the discovered Service to answer through svc:front", func(s string) bool { return s == "shared-api" })

	if err := admin.DeleteService(c, "svc:shared-api"); err != nil {
		t.Fatal(err)
	}
	waitWho("the deleted Service to leave the backends", func(s string) bool { return strings.HasPrefix(s, "error: ") })
	if o, err := env.client.GatewayV1alpha1().TailscaleServices("sim").Get(c, "front", metav1.GetOptions{}); err != nil || len(o.Status.DiscoveredVIPServices) != 0 {
		t.Fatalf("after the delete: discovered %+v, %v", o.Status.DiscoveredVIPServices, err)
	}
}
