package envoygateway_test

// Self-tests of the harness against the real Envoy Gateway: a recording extension server (test
// only, not the product's pkg/extension) checks that Envoy Gateway calls the hooks with our
// objects, that what the hooks return is what its xDS serves, and how hook errors are treated.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	// Typed configs nested in the clusters and listeners Envoy Gateway sends, for protojson.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

const (
	ns          = "default"
	gatewayName = "gw"
	// edsCluster is the cluster the recorder's Translation hook adds for its (fictional) EDS server.
	edsCluster = "tailscale-gateway-eds"
	waitBound  = 2 * time.Minute
)

// recorder is the test extension server: it records every request, shapes custom-backend
// clusters into EDS clusters, adds edsCluster in the Translation hook, and fails on demand.
type recorder struct {
	pb.UnimplementedEnvoyGatewayExtensionServer

	mu        sync.Mutex
	clusters  []*pb.PostClusterModifyRequest
	translate []*pb.PostTranslateModifyRequest
	routes    []*pb.PostRouteModifyRequest
	fail      bool
	changed   chan struct{}
}

func newRecorder(t *testing.T) (*recorder, string) {
	t.Helper()
	return newRecorderOn(t, "127.0.0.1:0")
}

// newRecorderOn serves a recorder on addr.
func newRecorderOn(t *testing.T, addr string) (*recorder, string) {
	t.Helper()
	r := &recorder{changed: make(chan struct{}, 1)}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	pb.RegisterEnvoyGatewayExtensionServer(srv, r)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return r, l.Addr().String()
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) setFail(fail bool) {
	r.mu.Lock()
	r.fail = fail
	r.mu.Unlock()
}

// edsServiceName is the EDS service name the recorder gives a shaped cluster.
func edsServiceName(cluster string) string { return "tsgw:" + cluster }

func (r *recorder) PostClusterModify(_ context.Context, req *pb.PostClusterModifyRequest) (*pb.PostClusterModifyResponse, error) {
	r.mu.Lock()
	r.clusters = append(r.clusters, proto.Clone(req).(*pb.PostClusterModifyRequest))
	fail := r.fail
	r.mu.Unlock()
	defer r.notify()
	if fail {
		return nil, status.Error(codes.Internal, "recorder: failing on purpose")
	}
	c := proto.Clone(req.GetCluster()).(*clusterv3.Cluster)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.LoadAssignment = nil
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
		ServiceName: edsServiceName(c.GetName()),
		EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: edsCluster}}}},
			}},
		},
	}
	return &pb.PostClusterModifyResponse{Cluster: c}, nil
}

func (r *recorder) PostTranslateModify(_ context.Context, req *pb.PostTranslateModifyRequest) (*pb.PostTranslateModifyResponse, error) {
	r.mu.Lock()
	r.translate = append(r.translate, proto.Clone(req).(*pb.PostTranslateModifyRequest))
	r.mu.Unlock()
	defer r.notify()
	clusters := slices.Clone(req.GetClusters())
	if !slices.ContainsFunc(clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == edsCluster }) {
		clusters = append(clusters, staticCluster(edsCluster, "127.0.0.1", 18001))
	}
	return &pb.PostTranslateModifyResponse{Clusters: clusters, Secrets: req.GetSecrets(),
		Listeners: req.GetListeners(), Routes: req.GetRoutes()}, nil
}

func (r *recorder) PostRouteModify(_ context.Context, req *pb.PostRouteModifyRequest) (*pb.PostRouteModifyResponse, error) {
	r.mu.Lock()
	r.routes = append(r.routes, proto.Clone(req).(*pb.PostRouteModifyRequest))
	r.mu.Unlock()
	defer r.notify()
	return &pb.PostRouteModifyResponse{Route: req.GetRoute()}, nil
}

// clusterCalls returns the PostClusterModify requests so far for the cluster called name.
func (r *recorder) clusterCalls(name string) []*pb.PostClusterModifyRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pb.PostClusterModifyRequest
	for _, req := range r.clusters {
		if req.GetCluster().GetName() == name {
			out = append(out, req)
		}
	}
	return out
}

func (r *recorder) counts() (clusters, translate, routes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.clusters), len(r.translate), len(r.routes)
}

// waitFor waits until cond holds, re-checking whenever the recorder got a call (and every
// 100 ms, for conditions on other state), within ctx.
func (r *recorder) waitFor(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-r.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func staticCluster(name, host string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
			}}}},
		}}},
	}
}

// resources are the files of the tests: a Gateway, the HTTPRoute "web" (rule 0: one
// TailscaleEndpoints; rule 1: a TailscaleServices and a TailscaleEndpoints, sharing one cluster),
// and our objects.
func resources(t *testing.T) map[string]string {
	t.Helper()
	web := objects.Endpoints(ns, "web-services")
	// A field our schema does not have: the file provider keeps objects of backendResources as
	// unstructured and must pass it through untouched.
	webMap := toMap(t, web)
	webMap["spec"].(map[string]any)["notInOurSchema"] = "kept"
	db := objects.Endpoints(ns, "db")
	db.Labels = map[string]string{"service-type": "db"}
	svc := objects.Services(ns, "web-svc")
	return map[string]string{
		"gateway.yaml": envoygateway.JoinYAML(
			envoygateway.GatewayClassYAML("eg"),
			envoygateway.GatewayYAML(ns, gatewayName, "eg", 8080),
		),
		"route.yaml": envoygateway.HTTPRouteYAML(ns, "web", gatewayName,
			[]envoygateway.BackendRef{envoygateway.EndpointsRef("web-services", 8080)},
			[]envoygateway.BackendRef{envoygateway.ServicesRef("web-svc", 80), envoygateway.EndpointsRef("db", 5432)},
		),
		"objects.yaml": envoygateway.JoinYAML(
			objectYAML(t, "TailscaleEndpoints", webMap),
			objectYAML(t, "TailscaleEndpoints", db),
			objectYAML(t, "TailscaleServices", svc),
		),
	}
}

func objectYAML(t *testing.T, kind string, obj any) string {
	t.Helper()
	y, err := envoygateway.ObjectYAML(v1alpha1.SchemeGroupVersion.String(), kind, obj)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func toMap(t *testing.T, obj any) map[string]any {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func bounded(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}

// shaped reports whether the CDS response holds cluster name as the recorder shaped it.
func shaped(r *xdsclient.Response, name string) bool {
	c := r.Cluster(name)
	return c != nil && c.GetType() == clusterv3.Cluster_EDS && c.GetEdsClusterConfig().GetServiceName() == edsServiceName(name)
}

// resourceJSON decodes the backend_extension_resources of a request.
func resourceJSON(t *testing.T, req *pb.PostClusterModifyRequest) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, res := range req.GetPostClusterContext().GetBackendExtensionResources() {
		var m map[string]any
		if err := json.Unmarshal(res.GetUnstructuredBytes(), &m); err != nil {
			t.Fatalf("backend extension resource is not JSON: %v: %q", err, res.GetUnstructuredBytes())
		}
		out = append(out, m)
	}
	return out
}

func dump(t *testing.T, m proto.Message) string {
	t.Helper()
	data, err := protojson.MarshalOptions{Multiline: true}.Marshal(m)
	if err != nil {
		// A typed config whose Go package the test does not link: text format keeps it packed.
		return prototext.MarshalOptions{Multiline: true}.Format(m)
	}
	return string(data)
}

// TestHooksReceiveOurObjects checks what Envoy Gateway sends the Cluster, Route and Translation
// hooks for HTTPRoute backendRefs to our kinds, and that its xDS serves what the hooks returned.
func TestHooksReceiveOurObjects(t *testing.T) {
	rec, addr := newRecorder(t)
	eg := envoygateway.Start(t, envoygateway.Options{
		ExtensionAddr: addr,
		Hooks:         []string{envoygateway.HookRoute, envoygateway.HookCluster, envoygateway.HookTranslation},
		Resources:     resources(t),
	})
	ctx := bounded(t)
	rule0, rule1 := envoygateway.ClusterName(ns, "web", 0), envoygateway.ClusterName(ns, "web", 1)

	cds, err := eg.XDS(t, ns, gatewayName).Watch(ctx, xdsclient.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	defer cds.Stop()
	got, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool {
		return shaped(r, rule0) && shaped(r, rule1) && r.Cluster(edsCluster) != nil
	})
	if err != nil {
		t.Fatalf("the xDS of Envoy Gateway never held the clusters the hooks shaped: %v", err)
	}
	t.Logf("CDS version %q: %v", got.VersionInfo, got.Names())

	// PostClusterModify: one call per rule, named httproute/<ns>/<name>/rule/<i>, with the objects
	// of the rule's backendRefs as JSON.
	calls0, calls1 := rec.clusterCalls(rule0), rec.clusterCalls(rule1)
	if len(calls0) == 0 || len(calls1) == 0 {
		t.Fatalf("PostClusterModify calls: %d for %s, %d for %s", len(calls0), rule0, len(calls1), rule1)
	}
	req0 := calls0[len(calls0)-1]
	res0 := resourceJSON(t, req0)
	if len(res0) != 1 {
		t.Fatalf("%s: %d backend extension resources, want 1", rule0, len(res0))
	}
	web := res0[0]
	meta, _ := web["metadata"].(map[string]any)
	spec, _ := web["spec"].(map[string]any)
	if web["apiVersion"] != "gateway.tailscale.com/v1alpha1" || web["kind"] != "TailscaleEndpoints" ||
		meta["name"] != "web-services" || meta["namespace"] != ns {
		t.Fatalf("%s: resource %v", rule0, web)
	}
	if spec["notInOurSchema"] != "kept" || len(spec["endpoints"].([]any)) != 3 {
		t.Fatalf("%s: the object did not arrive whole: spec %v", rule0, spec)
	}
	var kinds []string
	for _, m := range resourceJSON(t, calls1[len(calls1)-1]) {
		kinds = append(kinds, fmt.Sprint(m["kind"], "/", m["metadata"].(map[string]any)["name"]))
	}
	sort.Strings(kinds)
	if want := []string{"TailscaleEndpoints/db", "TailscaleServices/web-svc"}; !slices.Equal(kinds, want) {
		t.Fatalf("%s: resources %v, want %v (several custom refs of one rule share its cluster)", rule1, kinds, want)
	}

	// What Envoy Gateway builds for a custom backend before the hook, pinned so an upgrade that
	// changes it is noticed (pkg/extension relies on it).
	c := req0.GetCluster()
	t.Logf("PostClusterModify of %s receives:\n%s\nresource JSON: %s", rule0, dump(t, c),
		req0.GetPostClusterContext().GetBackendExtensionResources()[0].GetUnstructuredBytes())
	if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil ||
		c.GetEdsClusterConfig().GetServiceName() != rule0 || c.GetLoadAssignment() != nil {
		t.Errorf("%s: EG sent type %v, eds_config %v, load_assignment %v; want an EDS cluster over ADS named after itself, without load assignment",
			rule0, c.GetType(), c.GetEdsClusterConfig(), c.GetLoadAssignment())
	}

	// PostTranslateModify: by default clusters and secrets, no listeners or routes.
	_, translates, routes := rec.counts()
	rec.mu.Lock()
	last := rec.translate[len(rec.translate)-1]
	var routeReq *pb.PostRouteModifyRequest
	if routes > 0 {
		routeReq = rec.routes[len(rec.routes)-1]
	}
	rec.mu.Unlock()
	var names []string
	for _, c := range last.GetClusters() {
		names = append(names, c.GetName())
	}
	var secrets []string
	for _, s := range last.GetSecrets() {
		secrets = append(secrets, s.GetName())
	}
	t.Logf("PostTranslateModify (%d calls) receives clusters %v, secrets %v, %d listeners, %d route configurations, %d extension resources",
		translates, names, secrets, len(last.GetListeners()), len(last.GetRoutes()), len(last.GetPostTranslateContext().GetExtensionResources()))
	if !slices.Contains(names, rule0) || !slices.Contains(names, rule1) {
		t.Errorf("PostTranslateModify clusters %v lack the custom-backend clusters", names)
	}
	if len(last.GetListeners()) != 0 || len(last.GetRoutes()) != 0 {
		t.Errorf("PostTranslateModify got %d listeners and %d routes without translation.listener/route.includeAll", len(last.GetListeners()), len(last.GetRoutes()))
	}
	if routeReq != nil {
		for _, res := range routeReq.GetPostRouteContext().GetExtensionResources() {
			t.Logf("PostRouteModify extension resource: %.200s", res.GetUnstructuredBytes())
		}
		t.Logf("PostRouteModify (%d calls), last: route %q, %d extension resources, hostnames %v", routes,
			routeReq.GetRoute().GetName(), len(routeReq.GetPostRouteContext().GetExtensionResources()), routeReq.GetPostRouteContext().GetHostnames())
	} else {
		t.Logf("PostRouteModify was not called for routes whose backends are custom")
	}

	// The listeners and routes Envoy Gateway publishes are untouched by a Translation hook that
	// did not receive them.
	lds, err := eg.XDS(t, ns, gatewayName).Fetch(ctx, xdsclient.ListenerType, func(r *xdsclient.Response) bool { return len(r.Listeners()) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("LDS: %v", lds.Names())
}

// TestHookErrorKeepsPreviousSnapshot: with failOpen false, a hook error makes Envoy Gateway skip
// publishing; the previous snapshot stays until a translation succeeds again.
func TestHookErrorKeepsPreviousSnapshot(t *testing.T) {
	rec, addr := newRecorder(t)
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, Resources: resources(t)})
	ctx := bounded(t)
	rule0, rule2 := envoygateway.ClusterName(ns, "web", 0), envoygateway.ClusterName(ns, "web", 2)
	cds, err := eg.XDS(t, ns, gatewayName).Watch(ctx, xdsclient.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	defer cds.Stop()
	before, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool { return shaped(r, rule0) })
	if err != nil {
		t.Fatal(err)
	}

	// A third rule while the hook fails.
	rec.setFail(true)
	failedCalls := len(rec.clusterCalls(rule2))
	offset := eg.LogSize()
	route3 := envoygateway.HTTPRouteYAML(ns, "web", gatewayName,
		[]envoygateway.BackendRef{envoygateway.EndpointsRef("web-services", 8080)},
		[]envoygateway.BackendRef{envoygateway.ServicesRef("web-svc", 80), envoygateway.EndpointsRef("db", 5432)},
		[]envoygateway.BackendRef{envoygateway.EndpointsRef("db", 5432)},
	)
	if err := eg.WriteResource("route.yaml", route3); err != nil {
		t.Fatal(err)
	}
	if err := rec.waitFor(ctx, "a PostClusterModify call for "+rule2, func() bool { return len(rec.clusterCalls(rule2)) > failedCalls }); err != nil {
		t.Fatal(err)
	}
	if err := eg.WaitForLog(ctx, offset, "skipped publishing xds resources"); err != nil {
		t.Fatal(err)
	}
	now, err := eg.XDS(t, ns, gatewayName).FetchClusters(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if now.VersionInfo != before.VersionInfo || now.Cluster(rule2) != nil || !shaped(now, rule0) {
		t.Fatalf("after a hook error EG published version %q (before %q) with %v", now.VersionInfo, before.VersionInfo, now.Names())
	}
	t.Logf("hook error (failOpen false): EG logged %q and kept CDS version %q", "skipped publishing xds resources: failed to translate xds ir", now.VersionInfo)

	// The hook recovers; the next translation (any change of the resources) publishes.
	rec.setFail(false)
	if err := eg.WriteResource("route.yaml", route3+"# touched\n"); err != nil {
		t.Fatal(err)
	}
	after, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool { return shaped(r, rule2) })
	if err != nil {
		t.Fatal(err)
	}
	if after.VersionInfo == before.VersionInfo {
		t.Fatalf("new clusters under the old version %q", after.VersionInfo)
	}
}

// TestHookErrorFailOpen: with failOpen true, Envoy Gateway publishes the cluster as it built it.
func TestHookErrorFailOpen(t *testing.T) {
	rec, addr := newRecorder(t)
	rec.setFail(true)
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, FailOpen: true, Resources: resources(t)})
	ctx := bounded(t)
	rule0 := envoygateway.ClusterName(ns, "web", 0)
	got, err := eg.XDS(t, ns, gatewayName).FetchClusters(ctx, func(r *xdsclient.Response) bool { return r.Cluster(rule0) != nil })
	if err != nil {
		t.Fatal(err)
	}
	c := got.Cluster(rule0)
	if shaped(got, rule0) {
		t.Fatalf("%s was shaped although the hook failed", rule0)
	}
	// A wildcard EDS subscription (a named one for a load assignment the snapshot lacks would
	// never be answered in ADS mode).
	eds, err := eg.XDS(t, ns, gatewayName).FetchEndpoints(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	la := eds.LoadAssignment(rule0)
	if la == nil {
		t.Fatalf("no load assignment for %s in %v", rule0, eds.Names())
	}
	for _, l := range la.GetEndpoints() {
		if len(l.GetLbEndpoints()) != 0 {
			t.Errorf("EG published endpoints for a custom backend: %s", dump(t, la))
		}
	}
	t.Logf("hook error (failOpen true): EG publishes %s as built:\n%s\nand its load assignment without endpoints:\n%s",
		rule0, dump(t, c), dump(t, la))
}

// TestResourceFilesAreWatched checks the harness's own file handling: a resource written
// while Envoy Gateway runs is picked up (the file provider's watch), and removing it removes the
// cluster.
func TestResourceFilesAreWatched(t *testing.T) {
	_, addr := newRecorder(t)
	res := resources(t)
	route := res["route.yaml"]
	delete(res, "route.yaml")
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, Resources: res})
	ctx := bounded(t)
	rule0 := envoygateway.ClusterName(ns, "web", 0)
	cds, err := eg.XDS(t, ns, gatewayName).Watch(ctx, xdsclient.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	defer cds.Stop()
	if err := eg.WriteResource("route.yaml", route); err != nil {
		t.Fatal(err)
	}
	if _, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool { return shaped(r, rule0) }); err != nil {
		t.Fatal(err)
	}
	if err := eg.RemoveResource("route.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool { return r.Cluster(rule0) == nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(eg.ConfigHome, "certs", "envoy", "tls.crt")); err != nil {
		t.Fatal(err)
	}
}

// TestArtifactExtensionManager runs Envoy Gateway with the extensionManager of
// artifacts/envoy-gateway/envoy-gateway-config.yaml (its service moved to the recorder): Envoy
// Gateway accepts it and calls the hooks for both kinds.
// artifactExtensionManager is the extensionManager block of artifacts/envoy-gateway, decoded
// strictly into Envoy Gateway's types first (it ignores unknown fields: a misspelt one fails here).
func artifactExtensionManager(t *testing.T) map[string]any {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "artifacts", "envoy-gateway", "envoy-gateway-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatal(err)
	}
	// Envoy Gateway ignores unknown fields of its configuration: decode strictly into its types so
	// a misspelt field fails here.
	var typed egv1a1.EnvoyGateway
	if err := yaml.UnmarshalStrict([]byte(cm.Data["envoy-gateway.yaml"]), &typed); err != nil {
		t.Fatalf("artifacts/envoy-gateway/envoy-gateway-config.yaml: %v", err)
	}
	var config struct {
		ExtensionManager map[string]any `json:"extensionManager"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["envoy-gateway.yaml"]), &config); err != nil {
		t.Fatal(err)
	}
	if config.ExtensionManager == nil {
		t.Fatal("the artifact has no extensionManager")
	}
	return config.ExtensionManager
}

func TestArtifactExtensionManager(t *testing.T) {
	em := artifactExtensionManager(t)
	service, _ := em["service"].(map[string]any)
	fqdn, _ := service["fqdn"].(map[string]any)
	if fqdn["hostname"] != "tailscale-gateway-apiserver.tailscale-gateway-system.svc" || fmt.Sprint(fqdn["port"]) != "5005" {
		t.Errorf("extension service %v", service)
	}
	if em["failOpen"] != false || em["maxMessageSize"] != "16Mi" {
		t.Errorf("failOpen %v, maxMessageSize %v", em["failOpen"], em["maxMessageSize"])
	}

	rec, addr := newRecorder(t)
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, ExtensionManager: em, Resources: resources(t)})
	ctx := bounded(t)
	rule0, rule1 := envoygateway.ClusterName(ns, "web", 0), envoygateway.ClusterName(ns, "web", 1)
	if _, err := eg.XDS(t, ns, gatewayName).FetchClusters(ctx, func(r *xdsclient.Response) bool {
		return shaped(r, rule0) && shaped(r, rule1) && r.Cluster(edsCluster) != nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, routes := rec.counts(); routes == 0 {
		t.Error("the artifact's Route hook was not called")
	}
}

// nativeBackendYAML is an Envoy Gateway Backend with a static endpoint: a native backend next to
// our custom ones.
const nativeBackendYAML = `apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: native
  namespace: default
spec:
  endpoints:
  - ip:
      address: 10.0.0.1
      port: 8080
`

// TestMixedGatewayEDS: Envoy Gateway also publishes a load assignment (without endpoints) under
// the name of every custom-backend cluster, even when the Cluster hook moved that cluster's EDS to
// another server. An Envoy then never subscribes to those names on Envoy Gateway's ADS. Envoy
// Gateway's Envoys use delta ADS, where a subscription to only the native clusters is answered;
// this pins that (a SotW ADS subscription naming only them would not be, see xdsclient.Watch).
func TestMixedGatewayEDS(t *testing.T) {
	_, addr := newRecorder(t)
	res := resources(t)
	res["native.yaml"] = envoygateway.JoinYAML(nativeBackendYAML, envoygateway.HTTPRouteYAML(ns, "native", gatewayName,
		[]envoygateway.BackendRef{{Group: "gateway.envoyproxy.io", Kind: "Backend", Name: "native"}}))
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, Resources: res})
	ctx := bounded(t)
	rule0, native := envoygateway.ClusterName(ns, "web", 0), envoygateway.ClusterName(ns, "native", 0)
	c := eg.XDS(t, ns, gatewayName)
	if _, err := c.FetchClusters(ctx, func(r *xdsclient.Response) bool { return shaped(r, rule0) && r.Cluster(native) != nil }); err != nil {
		t.Fatal(err)
	}
	all, err := c.FetchEndpoints(ctx, func(r *xdsclient.Response) bool { return r.LoadAssignment(rule0) != nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range all.LoadAssignment(rule0).GetEndpoints() {
		if len(l.GetLbEndpoints()) != 0 {
			t.Errorf("EG published endpoints for the custom backend %s: %s", rule0, dump(t, all.LoadAssignment(rule0)))
		}
	}
	w, err := c.DeltaWatch(ctx, xdsclient.EndpointType, native)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	got, err := w.WaitFor(ctx, func(r *xdsclient.Response) bool { return r.LoadAssignment(native) != nil })
	if err != nil {
		t.Fatal(err)
	}
	if la := got.LoadAssignment(native); len(la.GetEndpoints()) == 0 || len(la.GetEndpoints()[0].GetLbEndpoints()) != 1 {
		t.Errorf("native load assignment: %s", dump(t, la))
	}
}

// TestExtensionStartsAfterEnvoyGateway: Envoy Gateway calls hooks with waitForReady, so an
// extension server that is not listening yet delays the translation instead of failing it; the
// snapshot appears once the server is up, without any change of the resources.
func TestExtensionStartsAfterEnvoyGateway(t *testing.T) {
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, Resources: resources(t)})
	ctx := bounded(t)
	// Envoy Gateway has tried the extension and found nobody.
	if err := eg.WaitForLog(ctx, 0, "connection refused"); err != nil {
		t.Fatal(err)
	}
	newRecorderOn(t, addr)
	rule0 := envoygateway.ClusterName(ns, "web", 0)
	if _, err := eg.XDS(t, ns, gatewayName).FetchClusters(ctx, func(r *xdsclient.Response) bool { return shaped(r, rule0) }); err != nil {
		t.Fatal(err)
	}
}
