package e2e

import (
	"context"
	"encoding/json"
	"testing"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// In cluster mode the extension reads HTTPRoutes from kube-apiserver: every replica serves the
// endpoints of a rule with the backendRef's port without having been called by Envoy Gateway, and
// the hook shapes the rule's cluster with the route's weights and its Gateway's TailscaleGateway.
func TestExtensionFollowsHTTPRoutesInCluster(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "extension")
	c := viaKube(t)
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "http", TailscaleIP: "100.64.0.1", TailscaleFQDN: "web.ts.net", Port: 80, Protocol: v1alpha1.ProtocolHTTP},
			{Name: "alt", TailscaleIP: "100.64.0.1", TailscaleFQDN: "web.ts.net", Port: 8080, Protocol: v1alpha1.ProtocolHTTP},
		}}}
	if _, err := c.TailscaleEndpoints(ns).Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.TailscaleGateways(ns).Create(ctx(t), &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsgw"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "eg"},
			Tailnets:      []v1alpha1.TailnetConfiguration{{Name: "main", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "main"}}},
			LoadBalancing: &v1alpha1.GatewayLoadBalancingConfig{CircuitBreaker: &v1alpha1.CircuitBreakerConfig{Enabled: true, MaxConnections: ptr.To[int32](7)}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	routes, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	group, kind := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Kind("TailscaleEndpoints")
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: gwapiv1.HTTPRouteSpec{
		CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "eg"}}},
		Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Group: &group, Kind: &kind, Name: "web", Port: ptr.To[gwapiv1.PortNumber](8080)}}}}}}}}
	if _, err := routes.GatewayV1().HTTPRoutes(ns).Create(ctx(t), route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cluster := "httproute/" + ns + "/web/rule/0"
	w := watchLoadAssignment(t, env.Gateway.XDSAddr, cluster)
	port := func(want uint32) func(*xdsclient.Response) bool {
		return func(r *xdsclient.Response) bool {
			cla := r.LoadAssignment(cluster)
			if cla == nil || len(cla.Endpoints) != 1 || len(cla.Endpoints[0].LbEndpoints) != 1 {
				return false
			}
			return cla.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() == want
		}
	}
	// The route's informer may still be backing off after the CRD appeared: allow its retry.
	wctx := ctx(t)
	if _, err := w.WaitFor(wctx, port(8080)); err != nil {
		t.Fatalf("no load assignment with the backendRef's port: %v", err)
	}
	patch := []byte(`[{"op":"replace","path":"/spec/rules/0/backendRefs/0/port","value":80}]`)
	if _, err := routes.GatewayV1().HTTPRoutes(ns).Patch(ctx(t), "web", types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx(t), port(80)); err != nil {
		t.Fatalf("the load assignment did not follow the route's port: %v", err)
	}

	// The hook, given the object as Envoy Gateway reads it through the aggregated API, finds the
	// route's Gateway and its TailscaleGateway.
	raw, err := c.RESTClient().Get().Namespace(ns).Resource("tailscaleendpoints").Name("web").DoRaw(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var check map[string]any
	if err := json.Unmarshal(raw, &check); err != nil || check["kind"] != "TailscaleEndpoints" {
		t.Fatalf("object read through kube-apiserver: %v %v", err, check["kind"])
	}
	conn, err := grpc.NewClient(env.Gateway.HookAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var shaped *clusterv3.Cluster
	eventually(t, "the cluster shaped with the TailscaleGateway's circuit breaker", func(c context.Context) (bool, error) {
		resp, err := pb.NewEnvoyGatewayExtensionClient(conn).PostClusterModify(c, &pb.PostClusterModifyRequest{
			Cluster:            &clusterv3.Cluster{Name: cluster},
			PostClusterContext: &pb.PostClusterExtensionContext{BackendExtensionResources: []*pb.ExtensionResource{{UnstructuredBytes: raw}}},
		})
		if err != nil {
			return false, err
		}
		shaped = resp.Cluster
		th := shaped.GetCircuitBreakers().GetThresholds()
		return len(th) == 1 && th[0].GetMaxConnections().GetValue() == 7, nil
	})
	if got := shaped.GetEdsClusterConfig().GetServiceName(); got != cluster {
		t.Errorf("EDS service name %q, want %q", got, cluster)
	}
}
