package eds

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
	gwlistersv1b1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

func newIndexer() cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// securityFixture is a server over objects in memory: a route cache, a ReferenceGrant cache and
// tailnets, each an indexer the test fills.
type securityFixture struct {
	s                        *Server
	routes, grants, tailnets cache.Indexer
	recorder                 *record.FakeRecorder
	clock                    *clocktesting.FakeClock
}

func newSecurityFixture(t *testing.T, objs ...*v1alpha1.TailscaleEndpoints) *securityFixture {
	t.Helper()
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0)
	inf := factory.Gateway().V1alpha1().TailscaleEndpoints().Informer()
	for _, o := range objs {
		if err := inf.GetIndexer().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	f := &securityFixture{routes: newIndexer(), grants: newIndexer(), tailnets: newIndexer(), recorder: record.NewFakeRecorder(100),
		clock: clocktesting.NewFakeClock(time.Now())}
	f.s = New(factory, Options{
		Routes:       gwlisters.NewHTTPRouteLister(f.routes),
		RoutesSynced: func() bool { return true },
		Grants:       &refgrant.Grants{Lister: gwlistersv1b1.NewReferenceGrantLister(f.grants)},
		Policy:       tenancy.New(listers.NewTailscaleTailnetLister(f.tailnets), nil, tenancy.ExternalServices{}),
		Recorder:     f.recorder,
		Clock:        f.clock,
	})
	return f
}

func endpointsIn(ns, name, tailnet, ip string) *v1alpha1.TailscaleEndpoints {
	return &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: tailnet, Endpoints: []v1alpha1.TailscaleEndpoint{{
			Name: "a", TailscaleIP: ip, Port: 80, Protocol: v1alpha1.ProtocolHTTP}}}}
}

// routeTo is an HTTPRoute in ns with one rule whose backendRefs name TailscaleEndpoints
// "namespace/name" ("name" alone: the route's namespace).
func routeTo(ns, name string, refs ...string) *gwapiv1.HTTPRoute {
	g, kind := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Kind(backends.KindEndpoints)
	var brs []gwapiv1.HTTPBackendRef
	for _, r := range refs {
		ref := gwapiv1.BackendObjectReference{Group: &g, Kind: &kind, Port: ptr.To[gwapiv1.PortNumber](80)}
		if refNS, refName, ok := strings.Cut(r, "/"); ok {
			ref.Namespace, ref.Name = ptr.To(gwapiv1.Namespace(refNS)), gwapiv1.ObjectName(refName)
		} else {
			ref.Name = gwapiv1.ObjectName(r)
		}
		brs = append(brs, gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{BackendObjectReference: ref}})
	}
	return &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: "route-uid"},
		Spec: gwapiv1.HTTPRouteSpec{Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: brs}}}}
}

func hosts(cla *endpointv3.ClusterLoadAssignment) (out []string) {
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.LbEndpoints {
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	return out
}

func (f *securityFixture) hostsOf(t *testing.T, cluster string) []string {
	t.Helper()
	f.s.rebuild()
	cla, ok := f.s.LoadAssignment(cluster)
	if !ok {
		t.Fatalf("no load assignment for %s", cluster)
	}
	return hosts(cla)
}

// Finding 3 (issue 20): an HTTPRoute in namespace attacker naming namespace victim's
// TailscaleEndpoints gets none of its endpoints without a ReferenceGrant in victim, and a reason
// (an Event on the route, the refused_backend_refs metric); with a grant for HTTPRoutes of
// attacker it gets them, unless the endpoints' tailnet does not admit attacker.
func TestCrossNamespaceBackendRefsNeedAReferenceGrant(t *testing.T) {
	f := newSecurityFixture(t, endpointsIn("attacker", "own", "main", "100.64.0.1"), endpointsIn("victim", "db", "main", "100.64.0.9"))
	if err := f.routes.Add(routeTo("attacker", "steal", "own", "victim/db")); err != nil {
		t.Fatal(err)
	}
	const cluster = "httproute/attacker/steal/rule/0"
	if got := f.hostsOf(t, cluster); len(got) != 1 || got[0] != "100.64.0.1" {
		t.Fatalf("without a ReferenceGrant: hosts %v, want the route's own namespace's 100.64.0.1 only", got)
	}
	if r := f.s.Refusals(cluster); !strings.Contains(r, "no ReferenceGrant in namespace victim") {
		t.Errorf("Refusals = %q", r)
	}
	select {
	case ev := <-f.recorder.Events:
		if !strings.Contains(ev, "Warning RefNotPermitted") || !strings.Contains(ev, "victim/db") {
			t.Errorf("event %q", ev)
		}
	default:
		t.Error("no Event on the HTTPRoute")
	}

	// Grants that do not match: from another namespace, another kind, another name, and one in
	// the route's own namespace.
	grant := func(ns, name, fromNS, fromKind, toKind string, toName *string) *gwapiv1b1.ReferenceGrant {
		g := &gwapiv1b1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwapiv1b1.ReferenceGrantSpec{
			From: []gwapiv1b1.ReferenceGrantFrom{{Group: gwapiv1.GroupName, Kind: gwapiv1.Kind(fromKind), Namespace: gwapiv1.Namespace(fromNS)}},
			To:   []gwapiv1b1.ReferenceGrantTo{{Group: v1alpha1.GroupName, Kind: gwapiv1.Kind(toKind)}}}}
		if toName != nil {
			g.Spec.To[0].Name = ptr.To(gwapiv1.ObjectName(*toName))
		}
		return g
	}
	for _, g := range []*gwapiv1b1.ReferenceGrant{
		grant("victim", "other-ns", "friend", "HTTPRoute", backends.KindEndpoints, nil),
		grant("victim", "other-kind", "attacker", "GRPCRoute", backends.KindEndpoints, nil),
		grant("victim", "other-target", "attacker", "HTTPRoute", backends.KindServices, nil),
		grant("victim", "other-name", "attacker", "HTTPRoute", backends.KindEndpoints, ptr.To("cache")),
		grant("attacker", "wrong-side", "attacker", "HTTPRoute", backends.KindEndpoints, nil),
	} {
		if err := f.grants.Add(g); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.hostsOf(t, cluster); len(got) != 1 {
		t.Fatalf("with non-matching grants: hosts %v, want 1", got)
	}

	if err := f.grants.Add(grant("victim", "allow", "attacker", "HTTPRoute", backends.KindEndpoints, ptr.To("db"))); err != nil {
		t.Fatal(err)
	}
	if got := f.hostsOf(t, cluster); len(got) != 2 {
		t.Fatalf("with a ReferenceGrant: hosts %v, want both", got)
	}
	if r := f.s.Refusals(cluster); r != "" {
		t.Errorf("Refusals with a grant = %q", r)
	}

	// Tenancy: victim's tailnet admits victim only; a grant does not override it.
	if err := f.tailnets.Add(&v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "main"}, Spec: v1alpha1.TailscaleTailnetSpec{
		AllowedNamespaces: &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"victim"}}}}); err != nil {
		t.Fatal(err)
	}
	if got := f.hostsOf(t, cluster); len(got) != 1 || got[0] != "100.64.0.1" {
		t.Fatalf("tailnet not admitting attacker: hosts %v, want the own object's only", got)
	}
	if r := f.s.Refusals(cluster); !strings.Contains(r, "does not admit namespace attacker") {
		t.Errorf("Refusals = %q", r)
	}
}

// Without a ReferenceGrant API (standalone) a cluster the hook registered keeps the refs Envoy
// Gateway passed (it enforced its own ReferenceGrants); one read from a route, or whose name
// names no route rule, gets no other namespace's endpoints.
func TestCrossNamespaceRefsWithoutAGrantAPI(t *testing.T) {
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0)
	if err := factory.Gateway().V1alpha1().TailscaleEndpoints().Informer().GetIndexer().Add(endpointsIn("victim", "db", "main", "100.64.0.9")); err != nil {
		t.Fatal(err)
	}
	s := New(factory, Options{})
	ref := []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "victim", Name: "db", Weight: 1}}
	s.Register("httproute/app/r/rule/0", ref)
	s.Register("invented", ref)
	s.rebuild()
	if cla, _ := s.LoadAssignment("httproute/app/r/rule/0"); len(hosts(cla)) != 1 {
		t.Errorf("registered by Envoy Gateway: hosts %v, want 1", hosts(cla))
	}
	if cla, _ := s.LoadAssignment("invented"); len(hosts(cla)) != 0 {
		t.Errorf("a name of no route rule: hosts %v, want none", hosts(cla))
	}
}

// Finding 1 (issue 20): invented cluster names do not grow the registrations past the bound, and
// registrations whose route does not exist are collected after the TTL, their load assignments
// withdrawn; a cluster whose route is cached is not registered at all.
func TestRegistrationsAreBoundedAndCollected(t *testing.T) {
	f := newSecurityFixture(t, endpointsIn("web", "db", "main", "100.64.0.9"))
	f.s.maxRegistered = 50
	ref := []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "web", Name: "db", Weight: 1}}
	for i := range 1000 {
		f.s.Register(fmt.Sprintf("httproute/web/invented-%d/rule/0", i), ref)
		f.clock.Step(time.Millisecond)
	}
	if n := f.s.Registered(); n != 50 {
		t.Fatalf("Registered() = %d after 1,000 invented names, want the bound 50", n)
	}
	f.s.rebuild()
	if _, ok := f.s.LoadAssignment("httproute/web/invented-999/rule/0"); !ok {
		t.Fatal("the latest registration is not published")
	}
	if _, ok := f.s.LoadAssignment("httproute/web/invented-0/rule/0"); ok {
		t.Fatal("an evicted registration is published")
	}

	f.clock.Step(DefaultRegistrationTTL)
	f.s.rebuild()
	if n := f.s.Registered(); n != 0 {
		t.Fatalf("Registered() = %d after the TTL, want 0", n)
	}
	if n := len(f.s.cache.GetResources()); n != 0 {
		t.Fatalf("%d load assignments still published after the TTL", n)
	}

	if err := f.routes.Add(routeTo("web", "real", "db")); err != nil {
		t.Fatal(err)
	}
	f.s.Register("httproute/web/real/rule/0", ref)
	if n := f.s.Registered(); n != 0 {
		t.Fatalf("a cluster of a cached route was registered (%d)", n)
	}
}

// Finding 1 (issue 20): a wildcard subscription, explicit ("*") or empty, gets no load
// assignment, over SotW and delta EDS; a request for another type is refused.
func TestWildcardSubscriptionsGetNothing(t *testing.T) {
	f := newSecurityFixture(t, endpointsIn("web", "db", "main", "100.64.0.9"), endpointsIn("other", "secret", "main", "100.64.0.10"))
	for _, r := range []*gwapiv1.HTTPRoute{routeTo("web", "mine", "db"), routeTo("other", "theirs", "secret")} {
		if err := f.routes.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	f.s.rebuild()
	const mine, theirs = "httproute/web/mine/rule/0", "httproute/other/theirs/rule/0"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- f.s.Serve(ctx, l) }()
	defer func() { cancel(); <-served }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eds := endpointservice.NewEndpointDiscoveryServiceClient(conn)
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	refused := func(what string, recv func() error) {
		t.Helper()
		if err := recv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", what, err)
		}
	}
	sotw, err := eds.StreamEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	refused("SotW *", func() error { _, err := sotw.Recv(); return err })

	delta, err := eds.DeltaEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	refused("delta *", func() error { _, err := delta.Recv(); return err })

	adsStream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := adsStream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	refused("ADS clusters", func() error { _, err := adsStream.Recv(); return err })

	// An empty subscription is answered with nothing; then one naming a cluster receives that
	// cluster and never the other.
	sotw, err = eds.StreamEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType}); err != nil {
		t.Fatal(err)
	}
	empty, err := sotw.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(empty.Resources); n != 0 {
		t.Fatalf("an empty SotW subscription received %d load assignments", n)
	}
	if err := sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{mine},
		VersionInfo: empty.VersionInfo, ResponseNonce: empty.Nonce}); err != nil {
		t.Fatal(err)
	}
	if err := untilNamed(mine, theirs, func() ([]string, error) {
		resp, err := sotw.Recv()
		var names []string
		for _, r := range resp.GetResources() {
			var cla endpointv3.ClusterLoadAssignment
			if err := r.UnmarshalTo(&cla); err != nil {
				return nil, err
			}
			names = append(names, cla.ClusterName)
		}
		return names, err
	}); err != nil {
		t.Errorf("SotW: %v", err)
	}

	delta, err = eds.DeltaEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range [][]string{nil, {mine}} {
		if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names}); err != nil {
			t.Fatal(err)
		}
	}
	if err := untilNamed(mine, theirs, func() ([]string, error) {
		resp, err := delta.Recv()
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.Name)
		}
		return names, err
	}); err != nil {
		t.Errorf("delta: %v", err)
	}
}

// untilNamed receives responses until one holds want; an error when one holds never first.
func untilNamed(want, never string, recv func() ([]string, error)) error {
	return wait.PollUntilContextTimeout(context.Background(), 0, 30*time.Second, true, func(context.Context) (bool, error) {
		names, err := recv()
		if err != nil {
			return false, err
		}
		for _, n := range names {
			if n == never {
				return false, fmt.Errorf("received %s, which the stream never named", never)
			}
		}
		return len(names) > 0 && names[0] == want, nil
	})
}

// Until the ReferenceGrants are cached, a cluster with a backendRef to another namespace is not
// published (rather than published without that ref's endpoints and then with them); the others
// are.
func TestCrossNamespaceClustersWaitForGrants(t *testing.T) {
	f := newSecurityFixture(t, endpointsIn("app", "own", "main", "100.64.0.1"), endpointsIn("shared", "db", "main", "100.64.0.9"))
	synced := false
	f.s.grantsSynced = func() bool { return synced }
	for _, r := range []*gwapiv1.HTTPRoute{routeTo("app", "local", "own"), routeTo("app", "remote", "own", "shared/db")} {
		if err := f.routes.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	f.s.rebuild()
	if _, ok := f.s.LoadAssignment("httproute/app/local/rule/0"); !ok {
		t.Error("a same-namespace cluster waited for the ReferenceGrants")
	}
	if cla, ok := f.s.LoadAssignment("httproute/app/remote/rule/0"); ok {
		t.Errorf("a cross-namespace cluster was published before the ReferenceGrants were known: %v", hosts(cla))
	}
	synced = true
	if got := f.hostsOf(t, "httproute/app/remote/rule/0"); len(got) != 1 {
		t.Errorf("after the sync: hosts %v, want the own endpoint (no grant)", got)
	}
}
