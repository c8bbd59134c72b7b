package envoygateway_test

import (
	"net"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// The real Envoy Gateway calls our extension: the clusters it publishes are EDS clusters fed by
// our xDS server, plus the cluster that reaches that server; and a health transition reaches an
// Envoy subscribed to our EDS while Envoy Gateway's snapshot stays as it was (no re-translation).
func TestEnvoyGatewayPublishesClustersOurHookShaped(t *testing.T) {
	collector := &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}
	s, hookL, xdsL := startServer(t, collector)
	ctx := bounded(t)
	c := s.Clientset(t).GatewayV1alpha1()
	// The objects of resources(t), in our registry too: there the endpoints and health come from.
	web := objects.Endpoints(ns, "web-services")
	db := objects.Endpoints(ns, "db")
	db.Labels = map[string]string{"service-type": "db"}
	for _, o := range []*v1alpha1.TailscaleEndpoints{web, db} {
		if _, err := c.TailscaleEndpoints(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.TailscaleServices(ns).Create(ctx, objects.Services(ns, "web-svc"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: hookL.Addr().String(), Resources: resources(t)})
	rule0, rule1 := envoygateway.ClusterName(ns, "web", 0), envoygateway.ClusterName(ns, "web", 1)
	cds, err := eg.XDS(t, ns, gatewayName).Watch(ctx, xdsclient.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	defer cds.Stop()
	ours := func(cl *clusterv3.Cluster) bool {
		src := cl.GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource()
		return cl.GetEdsClusterConfig().GetServiceName() == cl.GetName() && len(src.GetGrpcServices()) == 1 &&
			src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() == eds.ClusterName &&
			cl.GetLoadBalancingPolicy() == nil && cl.GetCommonLbConfig().GetHealthyPanicThreshold() != nil
	}
	got, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool {
		return r.Cluster(rule0) != nil && ours(r.Cluster(rule0)) && r.Cluster(rule1) != nil && ours(r.Cluster(rule1)) &&
			r.Cluster(eds.ClusterName) != nil
	})
	if err != nil {
		t.Fatalf("Envoy Gateway never published the clusters our hook shapes: %v", err)
	}
	// The cluster through which Envoy reaches our xDS server: its listening address.
	sa := got.Cluster(eds.ClusterName).GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if addr := net.JoinHostPort(sa.GetAddress(), itoa(sa.GetPortValue())); addr != xdsL.Addr().String() {
		t.Errorf("%s points at %s, want our xDS server %s", eds.ClusterName, addr, xdsL.Addr())
	}
	if p := got.Cluster(rule1).GetLbPolicy(); p != clusterv3.Cluster_ROUND_ROBIN {
		t.Errorf("%s (failover TailscaleServices): lb_policy %v, want ROUND_ROBIN over priorities", rule1, p)
	}
	translated := got.VersionInfo

	// Envoy asks our EDS for the clusters' endpoints; a probe result flips one of them.
	xc, err := xdsclient.Dial(xdsL.Addr().String(), xdsclient.Options{NodeCluster: ns + "/" + gatewayName})
	if err != nil {
		t.Fatal(err)
	}
	defer xc.Close()
	endpoints, err := xc.EndpointsWatch(ctx, rule0, rule1)
	if err != nil {
		t.Fatal(err)
	}
	defer endpoints.Stop()
	apiServer := func(want corev3.HealthStatus) func(*xdsclient.Response) bool {
		return func(r *xdsclient.Response) bool {
			for _, l := range r.LoadAssignment(rule0).GetEndpoints() {
				for _, e := range l.GetLbEndpoints() {
					if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == "100.64.0.10" {
						return e.GetHealthStatus() == want
					}
				}
			}
			return false
		}
	}
	collector.SetProbe(ns, "web-services", "api-server", livestatus.Probe{Status: livestatus.Healthy})
	if _, err := endpoints.WaitFor(ctx, apiServer(corev3.HealthStatus_HEALTHY)); err != nil {
		t.Fatalf("no healthy api-server in our EDS: %v", err)
	}
	collector.SetProbe(ns, "web-services", "api-server", livestatus.Probe{Status: livestatus.Unhealthy})
	if _, err := endpoints.WaitFor(ctx, apiServer(corev3.HealthStatus_UNHEALTHY)); err != nil {
		t.Fatalf("the transition did not reach our EDS: %v", err)
	}
	if v := cds.Latest().VersionInfo; v != translated {
		t.Errorf("Envoy Gateway's CDS moved from version %q to %q: a health transition must not need a translation", translated, v)
	}
}

// startServer runs our server with collector, its extension hook and xDS server on loopback
// listeners it returns; edits change its options further.
func startServer(t *testing.T, collector *framework.ScriptedCollector, edits ...func(*server.Options)) (s *framework.Server, hookL, xdsL net.Listener) {
	t.Helper()
	hookL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsL, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = framework.Start(t, "", func(o *server.Options) {
		o.Collector = collector
		o.Extension.HookListener, o.Extension.XDSListener = hookL, xdsL
		for _, e := range edits {
			e(o)
		}
	})
	return s, hookL, xdsL
}

func itoa(p uint32) string { return strconv.FormatUint(uint64(p), 10) }
