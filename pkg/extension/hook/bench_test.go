package hook

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	pb "github.com/envoyproxy/gateway/proto/extension"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
)

// BenchmarkPostClusterModify calls the hook over gRPC on loopback, as Envoy Gateway does (one
// call at a time), for the 1,000 clusters of one translation, each with one TailscaleEndpoints of
// 1 or 100 endpoints whose HTTPRoute is in the route cache; it reports per-call percentiles.
func BenchmarkPostClusterModify(b *testing.B) {
	for _, endpoints := range []int{1, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", endpoints), func(b *testing.B) {
			const clusters = 1000
			f := newFixture(b)
			for i := range 10 {
				f.gateways.Add(&v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: fmt.Sprintf("tsgw-%d", i)},
					Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: fmt.Sprintf("gw-%d", i)}}})
			}
			reqs := make([]*pb.PostClusterModifyRequest, clusters)
			for i := range clusters {
				r := route(1)
				r.Name = fmt.Sprintf("route-%d", i)
				f.routes.Add(r)
				obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web-east"},
					Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main"}}
				for j := range endpoints {
					obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: fmt.Sprintf("ep-%d", j),
						TailscaleIP: fmt.Sprintf("100.64.%d.%d", j/250, j%250+1), TailscaleFQDN: fmt.Sprintf("d%d.ts.net", j), Port: 8080, Protocol: v1alpha1.ProtocolHTTP})
				}
				cluster := egCluster()
				cluster.Name = backends.RouteRule{Namespace: "web", Name: r.Name}.ClusterName()
				reqs[i] = &pb.PostClusterModifyRequest{Cluster: cluster, PostClusterContext: &pb.PostClusterExtensionContext{
					BackendExtensionResources: []*pb.ExtensionResource{{UnstructuredBytes: toJSON(b, obj, backends.KindEndpoints)}}}}
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go f.server.Serve(ctx, l)
			conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			client := pb.NewEnvoyGatewayExtensionClient(conn)
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				for _, req := range reqs {
					start := time.Now()
					resp, err := client.PostClusterModify(ctx, req)
					lat = append(lat, time.Since(start))
					if err != nil || resp.Cluster.GetEdsClusterConfig().GetServiceName() != req.Cluster.Name {
						b.Fatalf("PostClusterModify: %v", err)
					}
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/translation")
		})
	}
}
