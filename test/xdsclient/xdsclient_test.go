package xdsclient_test

import (
	"context"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// serve runs a go-control-plane ADS server on loopback with a snapshot cache keyed by node id.
func serve(t *testing.T) (string, cachev3.SnapshotCache) {
	t.Helper()
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(context.Background(), cache, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), cache
}

func snapshot(t *testing.T, version string, endpoints ...string) *cachev3.Snapshot {
	t.Helper()
	cluster := &clusterv3.Cluster{
		Name:                 "backend",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		},
	}
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "backend"}
	var lbs []*endpointv3.LbEndpoint
	for _, addr := range endpoints {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80}}}},
		}}})
	}
	la.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	s, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType:  {cluster},
		resourcev3.EndpointType: {la},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start serves snapshot version 1 (one endpoint) to node-1 and returns a client of node-1.
func start(t *testing.T) (context.Context, *xdsclient.Client, cachev3.SnapshotCache) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	addr, cache := serve(t)
	c, err := xdsclient.Dial(addr, xdsclient.Options{NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := cache.SetSnapshot(ctx, "node-1", snapshot(t, "1", "100.64.0.1")); err != nil {
		t.Fatal(err)
	}
	return ctx, c, cache
}

func TestFetchAndWatch(t *testing.T) {
	ctx, c, cache := start(t)

	clusters, err := c.FetchClusters(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := clusters.Cluster("backend"); got == nil || got.GetType() != clusterv3.Cluster_EDS || clusters.VersionInfo != "1" {
		t.Fatalf("clusters: version %q, %v", clusters.VersionInfo, clusters.Names())
	}

	w, err := c.Watch(ctx, xdsclient.EndpointType, "backend")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	first, err := w.WaitForVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(first.LoadAssignment("backend").GetEndpoints()[0].GetLbEndpoints()); n != 1 {
		t.Fatalf("version 1 has %d endpoints, want 1", n)
	}
	if err := cache.SetSnapshot(ctx, "node-1", snapshot(t, "2", "100.64.0.1", "100.64.0.2")); err != nil {
		t.Fatal(err)
	}
	second, err := w.WaitForVersion(ctx, "2")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(second.LoadAssignment("backend").GetEndpoints()[0].GetLbEndpoints()); n != 2 {
		t.Fatalf("version 2 has %d endpoints, want 2", n)
	}

	// A bounded wait for a version that never comes fails with what was last seen.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if _, err := w.WaitForVersion(short, "3"); err == nil {
		t.Fatal("waiting for a version never published succeeded")
	}
}

func TestDeltaWatch(t *testing.T) {
	ctx, c, cache := start(t)
	w, err := c.DeltaWatch(ctx, xdsclient.EndpointType, "backend")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	first, err := w.WaitFor(ctx, func(r *xdsclient.Response) bool { return r.LoadAssignment("backend") != nil })
	if err != nil {
		t.Fatal(err)
	}
	if n := len(first.LoadAssignment("backend").GetEndpoints()[0].GetLbEndpoints()); n != 1 {
		t.Fatalf("first delta has %d endpoints, want 1", n)
	}
	if err := cache.SetSnapshot(ctx, "node-1", snapshot(t, "2", "100.64.0.1", "100.64.0.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(r *xdsclient.Response) bool {
		la := r.LoadAssignment("backend")
		return la != nil && len(la.GetEndpoints()[0].GetLbEndpoints()) == 2
	}); err != nil {
		t.Fatal(err)
	}

	// Wildcard delta CDS.
	cds, err := c.DeltaWatch(ctx, xdsclient.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	defer cds.Stop()
	if _, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool { return r.Cluster("backend") != nil }); err != nil {
		t.Fatal(err)
	}
}
