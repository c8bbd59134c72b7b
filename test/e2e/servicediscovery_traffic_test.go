package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// clusterIPDialer stands in for kube-proxy: connections to a Service's cluster address go to a
// loopback server (the e2e environment has no kube-proxy and no pods).
type clusterIPDialer map[string]string

func (d clusterIPDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	to, ok := d[address]
	if !ok {
		return nil, fmt.Errorf("no route to %s in the test", address)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, to)
}

// getVia sends GET / through dial and returns the body; tsnet occasionally stalls a new
// connection (docs/operations/known-issues.md), so callers retry.
func getVia(dial func(ctx context.Context, network, addr string) (net.Conn, error), url string) (string, error) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestDiscoveryTraffic runs two installations on one simulated tailnet: this one (cluster A,
// through kube-apiserver) exposes a labelled Service and discovers cluster B's Tailscale Service;
// cluster B (a tsnet node hosting svc:billing with B's owner reference) reaches A's Service
// through its VIP and A's proxy, and A reaches B's Service through the egress listener of the
// discovered TailscaleEndpoints. A's proxy is pkg/proxy in-process, reading the generated objects
// through kube-apiserver, hosting every TailscaleServices of the TailscaleGateway. A's prober
// probes B's Service through its VIP: it turns Unhealthy when B stops serving and Healthy again
// when B serves again.
func TestDiscoveryTraffic(t *testing.T) {
	sim, admin := startSimWith(t, "e2e-disc-traffic", tailnetsim.Options{}, "tag:k8s-proxy")
	// This installation's prober node joins the simulator's control server, so that it probes
	// the discovered service through B's VIP.
	replaceSuiteReplica(t, "--tailnet-control-url="+sim.ControlURL(), "--tailnet-poll-interval=1s", "--tsnet-state-dir="+t.TempDir())
	c := ctx(t)
	ns := newNamespace(t, "disc-t")
	api := viaKube(t)
	backendA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from cluster A") }))
	t.Cleanup(backendA.Close)
	web := exposedService(t, ns, "web", 80)
	// Discovered services are probed every second (a TCP connect to their VIP), so that their
	// health follows their hosts within the test's patience.
	discoveryGateway(t, ns, "e2e-disc-traffic", func(gw *v1alpha1.TailscaleGateway) {
		gw.Spec.LoadBalancing = &v1alpha1.GatewayLoadBalancingConfig{HealthChecking: &v1alpha1.HealthCheckConfig{
			Enabled: ptrTo(true), Type: v1alpha1.ProtocolTCP, Interval: &metav1.Duration{Duration: time.Second},
			HealthyThreshold: ptrTo(int32(1)), UnhealthyThreshold: ptrTo(int32(1))}}
	})

	vipA := discovery.LocalVIPName(ns, "web")
	var addrA string
	eventually(t, "A's Tailscale Service and its address", func(c context.Context) (bool, error) {
		s, ok, err := tailscaleService(c, admin, vipA)
		if ok && len(s.Addrs) > 0 {
			addrA = s.Addrs[0]
		}
		return addrA != "", err
	})

	// Cluster B: its proxy's stand-in, hosting svc:billing, and the Service with B's reference.
	bNode, err := sim.NewNode(c, "cluster-b", sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	billing := tailnet.Service{Name: "svc:billing", Ports: []string{"tcp:80"},
		Annotations: map[string]string{vipservice.OwnerAnnotation: `{"ownerRefs":[{"operatorID":"cluster-b"}]}`}}
	if err := admin.CreateOrUpdateService(c, billing); err != nil {
		t.Fatal(err)
	}
	s, err := admin.Service(c, "svc:billing")
	if err != nil || len(s.Addrs) == 0 {
		t.Fatalf("svc:billing: %+v %v", s, err)
	}
	addrB := s.Addrs[0]

	// Cluster A's proxy node; each VIP routed to its host, the other cluster as client.
	aNode, err := node.Start(c, node.Options{Dir: t.TempDir(), Hostname: "cluster-a-proxy", ControlURL: sim.ControlURL(),
		AuthKey: sim.AuthKey(), Tags: []string{"tag:k8s-proxy"}})
	if err != nil {
		t.Fatal(err)
	}
	aProxyNode, err := node.Wrap(aNode)
	if err != nil {
		aNode.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { aProxyNode.Close() })
	if err := sim.RouteService(c, vipA, addrA, aNode, bNode); err != nil {
		t.Fatal(err)
	}
	if err := sim.RouteService(c, "svc:billing", addrB, bNode, aNode); err != nil {
		t.Fatal(err)
	}
	// serveB hosts svc:billing on cluster B's node until the returned function stops it.
	serveB := func() (stop func()) {
		var ln *tsnet.ServiceListener
		eventually(t, "cluster B listening on svc:billing", func(context.Context) (bool, error) {
			var err error
			ln, err = bNode.ListenService("svc:billing", tsnet.ServiceModeTCP{Port: 80})
			return err == nil, nil
		})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from cluster B") })}
		go func() { _ = srv.Serve(ln) }()
		return func() { _ = srv.Close() }
	}
	stopB := serveB()
	t.Cleanup(func() { stopB() })

	remote := discovery.ObjectName("gw", "prod", "remote", "billing")
	eventually(t, "the discovered TailscaleEndpoints "+remote, func(c context.Context) (bool, error) {
		_, err := api.TailscaleEndpoints(ns).Get(c, remote, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})

	client, err := versioned.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{Client: client, Node: aProxyNode, Metrics: forward.NewMetrics(prometheus.NewRegistry()),
		Retry: 200 * time.Millisecond, EgressBindAddress: "127.0.0.1",
		HostDialer: clusterIPDialer{net.JoinHostPort(web.Spec.ClusterIP, "80"): backendA.Listener.Addr().String()},
		Selection: proxy.Selection{Namespace: ns, Endpoints: []string{remote},
			ServicesSelector: labels.SelectorFromSet(labels.Set{discovery.LabelGateway: "gw", discovery.LabelRole: discovery.RoleLocal})}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = p.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-stopped })

	// B → A: a tailnet client of cluster B through A's VIP to the Kubernetes Service.
	eventuallyShowing(t, "cluster B reaching A's Service through "+vipA, func(_ context.Context, last *string) (bool, error) {
		body, err := getVia(bNode.Dial, "http://"+addrA+"/")
		*last = fmt.Sprint(body, err)
		return body == "hello from cluster A", nil
	})
	// A → B: through the egress listener of the discovered TailscaleEndpoints.
	egress := "127.0.0.1:" + strconv.Itoa(int(recordedPort(t, api, ns, remote, "tcp-80", 80)))
	var nd net.Dialer
	eventuallyShowing(t, "cluster A reaching B's Service through "+egress, func(_ context.Context, last *string) (bool, error) {
		body, err := getVia(nd.DialContext, "http://"+egress+"/")
		*last = fmt.Sprint(body, err)
		return body == "hello from cluster B", nil
	})

	// The remote service's health is probed by this installation's prober node through B's VIP:
	// it follows whether B's host serves the port.
	remoteHealth := func(want string) {
		t.Helper()
		eventuallyShowing(t, "the discovered endpoint tcp-80 "+want, func(c context.Context, last *string) (bool, error) {
			o, err := api.TailscaleEndpoints(ns).Get(c, remote, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			*last = fmt.Sprintf("%+v", o.Status.Endpoints)
			return health(o)["tcp-80"] == want, nil
		})
	}
	remoteHealth(livestatus.Healthy)
	stopB()
	remoteHealth(livestatus.Unhealthy)
	stopB = serveB()
	remoteHealth(livestatus.Healthy)
}
