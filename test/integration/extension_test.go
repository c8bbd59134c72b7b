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
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
)

// extensionEnv is a simEnv whose server also runs the Envoy Gateway extension and xDS server.
type extensionEnv struct {
	*simEnv
	hook pb.EnvoyGatewayExtensionClient
	xds  *grpc.ClientConn
}

func startExtensionEnv(t *testing.T) *extensionEnv {
	hookL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := &extensionEnv{simEnv: startSimEnv(t, func(o *server.Options) {
		o.Extension.HookListener, o.Extension.XDSListener = hookL, xdsL
	})}
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	env.hook = pb.NewEnvoyGatewayExtensionClient(dial(hookL.Addr().String()))
	env.xds = dial(xdsL.Addr().String())
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

// edsStream is an Envoy-like EDS subscriber: SotW over EndpointDiscoveryService or delta over
// ADS, subscribed to named clusters, acking every response.
type edsStream struct {
	t       *testing.T
	updates chan *endpointv3.ClusterLoadAssignment
}

func subscribeSotW(t *testing.T, conn *grpc.ClientConn, names ...string) *edsStream {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := endpointservice.NewEndpointDiscoveryServiceClient(conn).StreamEndpoints(c)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-sotw", Cluster: "default/eg"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	s := &edsStream{t: t, updates: make(chan *endpointv3.ClusterLoadAssignment, 100)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			s.deliver(resp.Resources)
			_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: names,
				VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce})
		}
	}()
	return s
}

func subscribeDelta(t *testing.T, conn *grpc.ClientConn, names ...string) *edsStream {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(c)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-delta", Cluster: "default/eg"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	s := &edsStream{t: t, updates: make(chan *endpointv3.ClusterLoadAssignment, 100)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			var res []*anypb.Any
			for _, r := range resp.Resources {
				res = append(res, r.Resource)
			}
			s.deliver(res)
			_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: resp.Nonce})
		}
	}()
	return s
}

func (s *edsStream) deliver(resources []*anypb.Any) {
	for _, r := range resources {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := r.UnmarshalTo(cla); err != nil {
			s.t.Errorf("decoding a load assignment: %v", err)
			continue
		}
		s.updates <- cla
	}
}

// waitFor reads updates until one satisfies cond and returns it.
func (s *edsStream) waitFor(what string, cond func(*endpointv3.ClusterLoadAssignment) bool) *endpointv3.ClusterLoadAssignment {
	s.t.Helper()
	timeout := time.After(2 * time.Minute)
	var last *endpointv3.ClusterLoadAssignment
	for {
		select {
		case cla := <-s.updates:
			last = cla
			if cond(cla) {
				return cla
			}
		case <-timeout:
			s.t.Fatalf("waiting for %s; last load assignment: %v", what, last)
		}
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
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover, FailoverConfig: &v1alpha1.FailoverConfig{
				PrimaryEndpoints: []string{"east"}, SecondaryEndpoints: []string{"west"}, FailbackDelay: &metav1.Duration{Duration: failback}}}},
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
	streams := map[string]*edsStream{"sotw": subscribeSotW(t, env.xds, cluster), "delta": subscribeDelta(t, env.xds, cluster)}
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
