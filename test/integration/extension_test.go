package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// extensionEnv is a simEnv whose server also runs the Envoy Gateway extension and xDS server.
type extensionEnv struct {
	*simEnv
	hook    pb.EnvoyGatewayExtensionClient
	xdsAddr string
}

func startExtensionEnv(t *testing.T, configure ...func(*server.Options)) *extensionEnv {
	hookL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := &extensionEnv{simEnv: startSimEnv(t, append([]func(*server.Options){func(o *server.Options) {
		o.Extension.HookListener, o.Extension.XDSListener = hookL, xdsL
	}}, configure...)...)}
	conn, err := grpc.NewClient(hookL.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	env.hook, env.xdsAddr = pb.NewEnvoyGatewayExtensionClient(conn), xdsL.Addr().String()
	return env
}

// backendJSON is the object as Envoy Gateway reads it through the API and passes it to hooks.
func (e *extensionEnv) backendJSON(t *testing.T, resource, namespace, name string) []byte {
	t.Helper()
	raw, err := e.client.GatewayV1alpha1().RESTClient().Get().Namespace(namespace).Resource(resource).Name(name).DoRaw(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// shape calls PostClusterModify as Envoy Gateway does for a rule of custom backends.
func (e *extensionEnv) shape(t *testing.T, cluster string, backends ...[]byte) *clusterv3.Cluster {
	t.Helper()
	req := &pb.PostClusterModifyRequest{
		Cluster:            &clusterv3.Cluster{Name: cluster, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}},
		PostClusterContext: &pb.PostClusterExtensionContext{},
	}
	for _, b := range backends {
		req.PostClusterContext.BackendExtensionResources = append(req.PostClusterContext.BackendExtensionResources, &pb.ExtensionResource{UnstructuredBytes: b})
	}
	resp, err := e.hook.PostClusterModify(ctx(t), req)
	if err != nil {
		t.Fatalf("PostClusterModify: %v", err)
	}
	return resp.Cluster
}

// edsStream is an Envoy-like subscriber to one cluster's load assignment.
type edsStream struct {
	t       *testing.T
	w       *xdsclient.Watch
	cluster string
}

// subscribe opens an EDS subscription to cluster: SotW over the EndpointDiscoveryService (what
// the shaped clusters' config source makes Envoy open) or delta over ADS.
func (e *extensionEnv) subscribe(t *testing.T, delta bool, cluster string) *edsStream {
	c, err := xdsclient.Dial(e.xdsAddr, xdsclient.Options{NodeID: fmt.Sprintf("envoy-%v", delta), NodeCluster: "default/eg"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var w *xdsclient.Watch
	if delta {
		w, err = c.DeltaWatch(context.Background(), xdsclient.EndpointType, cluster)
	} else {
		w, err = c.EndpointsWatch(context.Background(), cluster)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return &edsStream{t: t, w: w, cluster: cluster}
}

// waitFor waits for a load assignment of the cluster that satisfies cond.
func (s *edsStream) waitFor(what string, cond func(*endpointv3.ClusterLoadAssignment) bool) {
	s.t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := s.w.WaitFor(c, func(r *xdsclient.Response) bool {
		cla := r.LoadAssignment(s.cluster)
		return cla != nil && cond(cla)
	})
	if err != nil {
		s.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// hosts maps each host of cla, "locality sub-zone/address:port", to its priority and health.
type host struct {
	priority uint32
	health   corev3.HealthStatus
}

func hosts(cla *endpointv3.ClusterLoadAssignment) map[string]host {
	out := map[string]host{}
	for _, l := range cla.Endpoints {
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out[l.Locality.SubZone+"/"+net.JoinHostPort(sa.Address, fmt.Sprint(sa.GetPortValue()))] = host{l.Priority, e.HealthStatus}
		}
	}
	return out
}

func TestExtensionServesLiveHealthAndFailoverOverEDS(t *testing.T) {
	env := startExtensionEnv(t)
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := env.sim.Device("postgres")
	if err != nil {
		t.Fatal(err)
	}
	check := &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Type: v1alpha1.ProtocolHTTP, Path: api.HealthPath,
		Interval: &metav1.Duration{Duration: 100 * time.Millisecond}, Timeout: &metav1.Duration{Duration: 80 * time.Millisecond},
		HealthyThreshold: ptr.To[int32](1), UnhealthyThreshold: ptr.To[int32](1)}
	web := map[string]string{"app": "web"}
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("sim")
	for name, dev := range map[string]struct {
		ip   string
		fqdn string
		port int
	}{"east": {api.IPv4.String(), api.FQDN, api.HTTPPort}, "west": {pg.IPv4.String(), pg.FQDN, pg.HTTPPort}} {
		_, err := eps.Create(ctx(t), &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: name, Labels: web},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "http", TailscaleIP: dev.ip,
				TailscaleFQDN: dev.fqdn, Port: int32(dev.port), Protocol: v1alpha1.ProtocolHTTP, HealthCheck: check}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	const failback = 3 * time.Second
	_, err = env.client.GatewayV1alpha1().TailscaleServices("sim").Create(ctx(t), &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: web},
			// No secondaryEndpoints: every selected TailscaleEndpoints not primary is secondary,
			// west and the member joining later alike.
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover, FailoverConfig: &v1alpha1.FailoverConfig{
				PrimaryEndpoints: []string{"east"}, FailbackDelay: &metav1.Duration{Duration: failback}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Envoy Gateway shapes the rule's cluster; Envoy then subscribes to its endpoints.
	const cluster = "httproute/sim/web/rule/0"
	shaped := env.shape(t, cluster, env.backendJSON(t, "tailscaleservices", "sim", "web"))
	if shaped.GetEdsClusterConfig().GetServiceName() != cluster {
		t.Fatalf("cluster not shaped for our EDS: %v", shaped)
	}
	east := "TailscaleEndpoints/sim/east/" + net.JoinHostPort(api.IPv4.String(), fmt.Sprint(api.HTTPPort))
	westKey := "TailscaleEndpoints/sim/west/" + net.JoinHostPort(pg.IPv4.String(), fmt.Sprint(pg.HTTPPort))
	streams := map[string]*edsStream{"sotw": env.subscribe(t, false, cluster), "delta": env.subscribe(t, true, cluster)}
	state := func(cla *endpointv3.ClusterLoadAssignment) (map[string]host, bool) {
		h := hosts(cla)
		_, e := h[east]
		_, w := h[westKey]
		return h, e && w
	}
	for name, s := range streams {
		s.waitFor(name+": primary tier healthy at priority 0", func(cla *endpointv3.ClusterLoadAssignment) bool {
			h, ok := state(cla)
			return ok && h[east] == host{0, corev3.HealthStatus_HEALTHY} && h[westKey] == host{1, corev3.HealthStatus_HEALTHY}
		})
	}

	// The primary failing its probe reaches Envoy as an EDS update, with the tiers swapped:
	// no Envoy Gateway translation is involved.
	if err := env.sim.SetHTTPStatus("api-server", 500); err != nil {
		t.Fatal(err)
	}
	for name, s := range streams {
		s.waitFor(name+": failover to the secondary tier", func(cla *endpointv3.ClusterLoadAssignment) bool {
			h, ok := state(cla)
			return ok && h[east] == host{1, corev3.HealthStatus_UNHEALTHY} && h[westKey] == host{0, corev3.HealthStatus_HEALTHY}
		})
	}

	// Recovery shows at once as health, and as priority only after failbackDelay.
	if err := env.sim.SetHTTPStatus("api-server", 200); err != nil {
		t.Fatal(err)
	}
	s := streams["sotw"]
	s.waitFor("primary healthy again, still the backup tier", func(cla *endpointv3.ClusterLoadAssignment) bool {
		h, ok := state(cla)
		return ok && h[east] == host{1, corev3.HealthStatus_HEALTHY}
	})
	recovered := time.Now()
	s.waitFor("failback to the primary tier", func(cla *endpointv3.ClusterLoadAssignment) bool {
		h, ok := state(cla)
		return ok && h[east] == host{0, corev3.HealthStatus_HEALTHY}
	})
	// The condition's transition time has a resolution of one second.
	if waited := time.Since(recovered); waited < failback-time.Second {
		t.Errorf("failed back after %v, before failbackDelay %v", waited, failback)
	}

	// Membership: a new TailscaleEndpoints the selector matches joins the load assignment.
	_, err = eps.Create(ctx(t), &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "south", Labels: web},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "http", TailscaleIP: "100.64.9.9",
			TailscaleFQDN: "south.example.ts.net", Port: 80, Protocol: v1alpha1.ProtocolHTTP}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	streams["delta"].waitFor("new member", func(cla *endpointv3.ClusterLoadAssignment) bool {
		_, ok := hosts(cla)["TailscaleEndpoints/sim/south/100.64.9.9:80"]
		return ok
	})

	// Membership through tag discovery: a TailscaleEndpoints whose tagSelectors match the
	// api-server device (tag:web) joins with the discovered endpoint.
	_, err = eps.Create(ctx(t), &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "tagged", Labels: web},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim",
			TagSelectors: []v1alpha1.TagSelector{{Key: "web", Operator: v1alpha1.TagSelectorOpExists}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	discovered := "TailscaleEndpoints/sim/tagged/" + net.JoinHostPort(api.IPv4.String(), "80")
	streams["sotw"].waitFor("a tag-discovered member", func(cla *endpointv3.ClusterLoadAssignment) bool {
		_, ok := hosts(cla)[discovered]
		return ok
	})

	// The server's /metrics shows the hook and xDS figures (the registry is the process's, shared
	// with other servers of the test binary: presence, not exact counts).
	metrics, err := env.client.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`tailscale_gateway_extension_clusters_total{result="shaped"}`,
		`tailscale_gateway_extension_hook_duration_seconds_count{hook="PostClusterModify"}`, "tailscale_gateway_xds_streams ",
		"tailscale_gateway_xds_load_assignment_updates_total ", "tailscale_gateway_xds_load_assignments "} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
