// Command xds-watch subscribes to load assignments the way Envoy does (EDS over gRPC, state of the
// world) and prints every update: what Envoy would route to, with priority and health.
//
//	xds-watch -server 127.0.0.1:18001 httproute/default/web/rule/0
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	server := flag.String("server", "127.0.0.1:18001", "xDS server (host:port)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: xds-watch [-server host:port] CLUSTER...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := watch(ctx, *server, flag.Args()); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "xds-watch:", err)
		os.Exit(1)
	}
}

func watch(ctx context.Context, server string, clusters []string) error {
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := endpointservice.NewEndpointDiscoveryServiceClient(conn).StreamEndpoints(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: "xds-watch", Cluster: "xds-watch"}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: clusters}
	for {
		if err := stream.Send(req); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, r := range resp.Resources {
			cla := &endpointv3.ClusterLoadAssignment{}
			if err := r.UnmarshalTo(cla); err != nil {
				return fmt.Errorf("decoding a load assignment: %w", err)
			}
			print(cla, resp.VersionInfo)
		}
		req = &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: clusters,
			VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
	}
}

func print(cla *endpointv3.ClusterLoadAssignment, version string) {
	fmt.Printf("%s  %s (version %s)\n", time.Now().Format("15:04:05"), cla.ClusterName, version)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  PRIORITY\tWEIGHT\tLOCALITY\tADDRESS\tHEALTH")
	for _, l := range cla.Endpoints {
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			fmt.Fprintf(w, "  %d\t%d\t%s\t%s\t%s\n", l.Priority, l.GetLoadBalancingWeight().GetValue(), l.GetLocality().GetSubZone(),
				net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())), strings.ToLower(e.HealthStatus.String()))
		}
	}
	if len(cla.Endpoints) == 0 {
		fmt.Fprintln(w, "  (no endpoints)")
	}
	w.Flush()
}
