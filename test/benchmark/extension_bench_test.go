package benchmark

import (
	"context"
	"net"
	"sort"
	"testing"
	"time"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// BenchmarkTransitionToEDS times a health transition from its detection (the collector's report)
// to an EDS update showing it at each of 100 xDS clients subscribed to the endpoint's cluster:
// the status write, the watch event, the load-assignment rebuild and the push.
func BenchmarkTransitionToEDS(b *testing.B) {
	const clients = 100
	const cluster = "httproute/transitions/route/rule/0"
	collector := &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}
	hookL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	xdsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s, err := framework.StartServer(b.TempDir(), func(o *server.Options) {
		o.Collector = collector
		o.Extension.HookListener, o.Extension.XDSListener = hookL, xdsL
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	obj := object(0)
	obj.Namespace = "transitions"
	obj.Spec.Endpoints[0].HealthCheck.Enabled = ptr.To(true)
	c := s.Clientset(b).GatewayV1alpha1()
	if _, err := c.TailscaleEndpoints(obj.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	raw, err := c.RESTClient().Get().Namespace(obj.Namespace).Resource("tailscaleendpoints").Name(obj.Name).DoRaw(ctx)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(hookL.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := pb.NewEnvoyGatewayExtensionClient(conn).PostClusterModify(ctx, &pb.PostClusterModifyRequest{
		Cluster:            &clusterv3.Cluster{Name: cluster},
		PostClusterContext: &pb.PostClusterExtensionContext{BackendExtensionResources: []*pb.ExtensionResource{{UnstructuredBytes: raw}}},
	}); err != nil {
		b.Fatal(err)
	}

	// health is the EDS health of endpoint-0 (port 8080, the backendRef's port is unknown
	// standalone, so all three endpoints are in the assignment).
	health := func(r *xdsclient.Response) corev3.HealthStatus {
		for _, l := range r.LoadAssignment(cluster).GetEndpoints() {
			for _, e := range l.LbEndpoints {
				if e.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() == 8080 {
					return e.HealthStatus
				}
			}
		}
		return -1
	}
	watches := make([]*xdsclient.Watch, clients)
	for i := range watches {
		xc, err := xdsclient.Dial(xdsL.Addr().String(), xdsclient.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer xc.Close()
		if watches[i], err = xc.Watch(ctx, xdsclient.EndpointType, cluster); err != nil {
			b.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, err = watches[i].WaitFor(wctx, func(r *xdsclient.Response) bool { return r.LoadAssignment(cluster) != nil })
		wcancel()
		if err != nil {
			b.Fatalf("client %d: no load assignment: %v", i, err)
		}
	}

	var latencies []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		status, want := livestatus.Healthy, corev3.HealthStatus_HEALTHY
		if i%2 == 1 {
			status, want = livestatus.Unhealthy, corev3.HealthStatus_UNHEALTHY
		}
		detected := time.Now()
		collector.SetProbe(obj.Namespace, obj.Name, "endpoint-0", livestatus.Probe{Status: status, LastChecked: detected})
		arrived := make(chan time.Duration, clients)
		for _, w := range watches {
			go func(w *xdsclient.Watch) {
				wctx, wcancel := context.WithTimeout(ctx, time.Minute)
				defer wcancel()
				if _, err := w.WaitFor(wctx, func(r *xdsclient.Response) bool { return health(r) == want }); err != nil {
					arrived <- -1
					return
				}
				arrived <- time.Since(detected)
			}(w)
		}
		for range clients {
			d := <-arrived
			if d < 0 {
				b.Fatalf("transition %d did not reach every client within a minute", i)
			}
			latencies = append(latencies, d)
		}
	}
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	b.ReportMetric(ms(latencies[len(latencies)/2]), "p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
}
