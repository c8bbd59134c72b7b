package hook

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/internal/golden"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

const clusterName = "httproute/web/route/rule/0"

// egCluster is the cluster Envoy Gateway v1.9.1 builds for a rule of custom backends (as
// test/envoygateway records it): EDS from its own ADS without endpoints of its own, a typed
// least-request policy with locality weights, the route in its metadata.
func egCluster() *clusterv3.Cluster {
	leastRequest, err := anypb.New(&leastrequestv3.LeastRequest{LocalityLbConfig: &commonv3.LocalityLbConfig{
		LocalityConfigSpecifier: &commonv3.LocalityLbConfig_LocalityWeightedLbConfig_{LocalityWeightedLbConfig: &commonv3.LocalityLbConfig_LocalityWeightedLbConfig{}}}})
	if err != nil {
		panic(err)
	}
	route, _ := structpb.NewStruct(map[string]any{"resources": []any{map[string]any{"kind": "HTTPRoute", "name": "route", "namespace": "web"}}})
	return &clusterv3.Cluster{
		Name:                 clusterName,
		ConnectTimeout:       durationpb.New(10 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: clusterName, EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(32768),
		CircuitBreakers:               &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: wrapperspb.UInt32(1024)}}},
		DnsLookupFamily:               clusterv3.Cluster_V4_PREFERRED,
		CommonLbConfig:                &clusterv3.Cluster_CommonLbConfig{},
		Metadata:                      &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy-gateway": route}},
		IgnoreHealthOnHostRemoval:     true,
		LoadBalancingPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "envoy.load_balancing_policies.least_request", TypedConfig: leastRequest}}}},
	}
}

func toJSON(t testing.TB, obj runtime.Object, kind string) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy Gateway passes objects as read through the API: with apiVersion and kind.
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["apiVersion"], m["kind"] = v1alpha1.SchemeGroupVersion.String(), kind
	raw, _ = json.Marshal(m)
	return raw
}

func endpointsJSON(t *testing.T, name string) []byte {
	return toJSON(t, &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, UID: types.UID("uid-" + name)},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "a", TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.ts.net", Port: 80, Protocol: v1alpha1.ProtocolHTTP}}}}, backends.KindEndpoints)
}

func servicesJSON(t *testing.T, name string, strategy v1alpha1.LoadBalancingStrategy) []byte {
	return toJSON(t, &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: strategy}}}, backends.KindServices)
}

// registrar records Register calls.
type registrar map[string][]backends.Ref

func (r registrar) Register(cluster string, refs []backends.Ref) { r[cluster] = refs }

type fixture struct {
	server   *Server
	reg      registrar
	recorder *record.FakeRecorder
	routes   cache.Indexer
	gateways cache.Indexer
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	install.Install(scheme)
	f := &fixture{reg: registrar{}, recorder: record.NewFakeRecorder(10),
		routes:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		gateways: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})}
	s, err := New(Options{Registrar: f.reg, XDSAddress: "tailscale-gateway-apiserver.tailscale-gateway-system.svc:18001",
		Routes: gwlisters.NewHTTPRouteLister(f.routes), Gateways: listers.NewTailscaleGatewayLister(f.gateways),
		Recorder: f.recorder, Defaulter: scheme})
	if err != nil {
		t.Fatal(err)
	}
	f.server = s
	return f
}

func (f *fixture) modify(t *testing.T, resources ...[]byte) *clusterv3.Cluster {
	t.Helper()
	req := &pb.PostClusterModifyRequest{Cluster: egCluster(), PostClusterContext: &pb.PostClusterExtensionContext{}}
	for _, r := range resources {
		req.PostClusterContext.BackendExtensionResources = append(req.PostClusterContext.BackendExtensionResources, &pb.ExtensionResource{UnstructuredBytes: r})
	}
	resp, err := f.server.PostClusterModify(context.Background(), req)
	if err != nil {
		t.Fatalf("PostClusterModify: %v", err)
	}
	return resp.Cluster
}

func route(weights ...int32) *gwapiv1.HTTPRoute {
	g := gwapiv1.Group(v1alpha1.GroupName)
	r := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "route"},
		Spec: gwapiv1.HTTPRouteSpec{CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "eg"}}}}}
	rule := gwapiv1.HTTPRouteRule{}
	for i, w := range weights {
		kind := gwapiv1.Kind(backends.KindEndpoints)
		name := []string{"web-east", "web-west"}[i]
		rule.BackendRefs = append(rule.BackendRefs, gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Group: &g, Kind: &kind, Name: gwapiv1.ObjectName(name), Port: ptr.To[gwapiv1.PortNumber](8080)},
			Weight:                 ptr.To(w)}})
	}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{rule}
	return r
}

func TestPostClusterModify(t *testing.T) {
	breaker := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "tsgw"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "eg"},
			LoadBalancing: &v1alpha1.GatewayLoadBalancingConfig{Strategy: "random", CircuitBreaker: &v1alpha1.CircuitBreakerConfig{
				Enabled: true, MaxConnections: ptr.To[int32](100), MaxPendingRequests: ptr.To[int32](10), MaxRequests: ptr.To[int32](200),
				MaxRetries: ptr.To[int32](3), ConsecutiveErrors: ptr.To[int32](5), Interval: &metav1.Duration{Duration: 10 * time.Second},
				BaseEjectionTime: &metav1.Duration{Duration: 30 * time.Second}, MaxEjectionPercent: ptr.To[int32](50)}}}}
	for _, tc := range []struct {
		name      string
		resources func(t *testing.T) [][]byte
		route     *gwapiv1.HTTPRoute
		gateway   *v1alpha1.TailscaleGateway
		wantRefs  []backends.Ref
	}{
		{name: "endpoints", resources: func(t *testing.T) [][]byte { return [][]byte{endpointsJSON(t, "web-east")} },
			wantRefs: []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "web", Name: "web-east", Weight: 1}}},
		{name: "services-least-connections", resources: func(t *testing.T) [][]byte {
			return [][]byte{servicesJSON(t, "svc", v1alpha1.StrategyLeastConnections)}
		}, wantRefs: []backends.Ref{{Kind: backends.KindServices, Namespace: "web", Name: "svc", Weight: 1}}},
		{name: "services-weighted", resources: func(t *testing.T) [][]byte {
			return [][]byte{servicesJSON(t, "svc", v1alpha1.StrategyWeighted)}
		}, wantRefs: []backends.Ref{{Kind: backends.KindServices, Namespace: "web", Name: "svc", Weight: 1}}},
		{name: "services-failover", resources: func(t *testing.T) [][]byte {
			return [][]byte{servicesJSON(t, "svc", v1alpha1.StrategyFailover)}
		}, wantRefs: []backends.Ref{{Kind: backends.KindServices, Namespace: "web", Name: "svc", Weight: 1}}},
		{name: "route-weights-and-gateway", route: route(3, 1), gateway: breaker,
			resources: func(t *testing.T) [][]byte {
				return [][]byte{endpointsJSON(t, "web-east"), endpointsJSON(t, "web-west")}
			},
			wantRefs: []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "web", Name: "web-east", Port: 8080, Weight: 3},
				{Kind: backends.KindEndpoints, Namespace: "web", Name: "web-west", Port: 8080, Weight: 1}}},
		{name: "foreign-filter-beside-ours", resources: func(t *testing.T) [][]byte {
			return [][]byte{[]byte(`{"apiVersion":"example.com/v1","kind":"Filter","metadata":{"name":"f","namespace":"web"}}`), endpointsJSON(t, "web-east")}
		}, wantRefs: []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "web", Name: "web-east", Weight: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.route != nil {
				f.routes.Add(tc.route)
			}
			if tc.gateway != nil {
				f.gateways.Add(tc.gateway)
			}
			got := f.modify(t, tc.resources(t)...)
			golden.Assert(t, "cluster-"+tc.name, got)
			if refs := f.reg[clusterName]; len(refs) != len(tc.wantRefs) || (len(refs) > 0 && !equalRefs(refs, tc.wantRefs)) {
				t.Errorf("registered refs %v, want %v", refs, tc.wantRefs)
			}
		})
	}
}

func equalRefs(a, b []backends.Ref) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Resources that are not ours, or that cannot be decoded, leave the cluster as it came and never
// fail the call (which would freeze Envoy Gateway's translation).
func TestPostClusterModifyLeavesClusterUnchanged(t *testing.T) {
	for _, tc := range []struct {
		name      string
		resources [][]byte
		wantEvent bool
	}{
		{name: "no resources"},
		{name: "foreign kind", resources: [][]byte{[]byte(`{"apiVersion":"example.com/v1","kind":"Backend","metadata":{"name":"b"}}`)}},
		{name: "not JSON", resources: [][]byte{[]byte(`{{`)}},
		{name: "wrong field type", wantEvent: true, resources: [][]byte{[]byte(
			`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":"e","namespace":"web"},"spec":{"endpoints":"oops"}}`)}},
		{name: "unserved version", wantEvent: true, resources: [][]byte{[]byte(
			`{"apiVersion":"gateway.tailscale.com/v2","kind":"TailscaleEndpoints","metadata":{"name":"e","namespace":"web"}}`)}},
		{name: "without a name", resources: [][]byte{[]byte(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices","metadata":{}}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			resources := tc.resources
			if tc.wantEvent {
				resources = append(resources, endpointsJSON(t, "web-east")) // one bad object spoils the cluster
			}
			got := f.modify(t, resources...)
			if !proto.Equal(got, egCluster()) {
				t.Errorf("cluster changed:\n%v", got)
			}
			if len(f.reg) != 0 {
				t.Errorf("registered %v for an unchanged cluster", f.reg)
			}
			select {
			case e := <-f.recorder.Events:
				if !tc.wantEvent {
					t.Errorf("unexpected event %q", e)
				}
			default:
				if tc.wantEvent {
					t.Error("no Event recorded on the object")
				}
			}
		})
	}
}

func TestPostTranslateModifyAddsXDSClusterOnce(t *testing.T) {
	f := newFixture(t)
	shaped := f.modify(t, endpointsJSON(t, "web-east"))
	other := &clusterv3.Cluster{Name: "httproute/web/plain/rule/0"}
	req := &pb.PostTranslateModifyRequest{Clusters: []*clusterv3.Cluster{other}}
	resp, err := f.server.PostTranslateModify(context.Background(), req)
	if err != nil || len(resp.Clusters) != 1 {
		t.Fatalf("without custom-backend clusters: %v clusters, err %v; want the one given", len(resp.GetClusters()), err)
	}
	req.Clusters = append(req.Clusters, shaped)
	resp, err = f.server.PostTranslateModify(context.Background(), req)
	if err != nil || len(resp.Clusters) != 3 || resp.Clusters[2].Name != eds.ClusterName {
		t.Fatalf("got %d clusters, err %v; want the two given and %s", len(resp.GetClusters()), err, eds.ClusterName)
	}
	golden.Assert(t, "cluster-xds", resp.Clusters[2])
	req.Clusters = resp.Clusters
	if resp, _ = f.server.PostTranslateModify(context.Background(), req); len(resp.Clusters) != 3 {
		t.Errorf("added the xDS cluster again: %d clusters", len(resp.Clusters))
	}
}

func TestXDSClusterOfAnIPAddressIsStatic(t *testing.T) {
	c, err := XDSCluster("127.0.0.1:18001")
	if err != nil || c.GetType() != clusterv3.Cluster_STATIC {
		t.Errorf("XDSCluster(127.0.0.1:18001) = %v, %v; want a STATIC cluster", c.GetType(), err)
	}
	for _, bad := range []string{"no-port", "host:0", "host:http", ""} {
		if _, err := XDSCluster(bad); err == nil {
			t.Errorf("XDSCluster(%q): no error", bad)
		}
	}
}

func TestPostRouteModifyAppliesEgressConfig(t *testing.T) {
	f := newFixture(t)
	f.routes.Add(route(1))
	f.gateways.Add(&v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "tsgw"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "eg"}, Tailnets: []v1alpha1.TailnetConfiguration{
			{Name: "other", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "other"}, RouteGeneration: &v1alpha1.RouteGenerationConfig{
				Egress: &v1alpha1.EgressRouteConfig{Enabled: true, Timeout: &metav1.Duration{Duration: time.Minute}}}},
			{Name: "main", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "main"}, RouteGeneration: &v1alpha1.RouteGenerationConfig{
				Egress: &v1alpha1.EgressRouteConfig{Enabled: true, Timeout: &metav1.Duration{Duration: 15 * time.Second},
					RetryPolicy: &v1alpha1.RetryPolicy{NumRetries: ptr.To[int32](3), PerTryTimeout: &metav1.Duration{Duration: 5 * time.Second},
						BackoffBaseInterval: &metav1.Duration{Duration: 100 * time.Millisecond}, BackoffMaxInterval: &metav1.Duration{Duration: time.Second}}}}},
		}}})
	call := func(r *routev3.Route, resources ...[]byte) *routev3.Route {
		req := &pb.PostRouteModifyRequest{Route: r, PostRouteContext: &pb.PostRouteExtensionContext{}}
		for _, raw := range resources {
			req.PostRouteContext.ExtensionResources = append(req.PostRouteContext.ExtensionResources, &pb.ExtensionResource{UnstructuredBytes: raw})
		}
		resp, err := f.server.PostRouteModify(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Route
	}
	xdsRoute := func() *routev3.Route {
		return &routev3.Route{Name: "httproute/web/route/rule/0/match/0/www_example_com",
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName}}}}
	}
	golden.Assert(t, "route-egress", call(xdsRoute(), endpointsJSON(t, "web-east")))

	// A timeout of the route's own (an HTTPRoute timeouts field) wins.
	own := xdsRoute()
	own.GetRoute().Timeout = durationpb.New(2 * time.Second)
	if got := call(own, endpointsJSON(t, "web-east")).GetRoute().GetTimeout().AsDuration(); got != 2*time.Second {
		t.Errorf("timeout %v, want the route's own 2s", got)
	}
	// Routes without our backends are untouched.
	if got := call(xdsRoute()); !proto.Equal(got, xdsRoute()) {
		t.Errorf("route without our backends changed: %v", got)
	}
	// A TailscaleGateway its tailnet no longer admits shapes nothing.
	refused, _, _ := f.gateways.GetByKey("web/tsgw")
	gw := refused.(*v1alpha1.TailscaleGateway).DeepCopy()
	gw.Status.Conditions = []metav1.Condition{{Type: tenancy.ConditionAccepted, Status: metav1.ConditionFalse, Reason: tenancy.ReasonNotAllowedByTailnet}}
	if err := f.gateways.Update(gw); err != nil {
		t.Fatal(err)
	}
	if got := call(xdsRoute(), endpointsJSON(t, "web-east")); !proto.Equal(got, xdsRoute()) {
		t.Errorf("a refused TailscaleGateway shaped the route: %v", got)
	}
}
