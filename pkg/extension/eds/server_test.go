package eds

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// The server derives clusters from HTTPRoutes (with the backendRefs' ports), follows the objects'
// changes through informers, and falls back to the hook's registration without a route.
func TestServerFollowsRoutesAndObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eps := endpoints("web-east", nil, "a 100.64.0.1 80 HTTP Healthy", "m 100.64.0.1 8080 HTTP Healthy")
	client := fake.NewSimpleClientset(eps)
	g, kind := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Kind(backends.KindEndpoints)
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "route"}, Spec: gwapiv1.HTTPRouteSpec{
		Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Group: &g, Kind: &kind, Name: "web-east", Port: ptr.To[gwapiv1.PortNumber](8080)}}}}}}}}
	gw := gwfake.NewSimpleClientset(route)

	factory := informers.NewSharedInformerFactory(client, 0)
	gwFactory := gwinformers.NewSharedInformerFactory(gw, 0)
	routes := gwFactory.Gateway().V1().HTTPRoutes()
	s := New(factory, Options{Routes: routes.Lister()})
	if _, err := routes.Informer().AddEventHandler(s.RouteHandler()); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	gwFactory.Start(ctx.Done())
	go s.Run(ctx)

	const cluster = "httproute/web/route/rule/0"
	waitCLA := func(what string, cond func(*endpointv3.ClusterLoadAssignment, bool) bool) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			cla, ok := s.LoadAssignment(cluster)
			return cond(cla, ok), nil
		})
		if err != nil {
			cla, _ := s.LoadAssignment(cluster)
			t.Fatalf("waiting for %s: last %v", what, cla)
		}
	}
	ports := func(cla *endpointv3.ClusterLoadAssignment) (out []uint32) {
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.LbEndpoints {
				out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())
			}
		}
		return out
	}
	waitCLA("the route's port only", func(cla *endpointv3.ClusterLoadAssignment, ok bool) bool {
		p := ports(cla)
		return ok && len(p) == 1 && p[0] == 8080
	})

	eps = eps.DeepCopy()
	eps.Status.Endpoints[1].Status = "Unhealthy"
	if _, err := client.GatewayV1alpha1().TailscaleEndpoints("web").UpdateStatus(ctx, eps, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCLA("the endpoint unhealthy", func(cla *endpointv3.ClusterLoadAssignment, ok bool) bool {
		return ok && len(cla.Endpoints) == 1 && cla.Endpoints[0].LbEndpoints[0].HealthStatus == corev3.HealthStatus_UNHEALTHY
	})

	if err := gw.GatewayV1().HTTPRoutes("web").Delete(ctx, "route", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCLA("the cluster gone with its route", func(_ *endpointv3.ClusterLoadAssignment, ok bool) bool { return !ok })

	// Standalone: only the hook knows the cluster, and not the port.
	s.Register(cluster, []backends.Ref{{Kind: backends.KindEndpoints, Namespace: "web", Name: "web-east", Weight: 1}})
	waitCLA("every port from the registration", func(cla *endpointv3.ClusterLoadAssignment, ok bool) bool {
		return ok && len(ports(cla)) == 2
	})
	if n := len(s.cache.GetResources()); n != 1 {
		t.Errorf("cache holds %d load assignments, want 1", n)
	}

	// The status writer marks the object refused by its tailnet: its endpoints leave the cluster.
	eps = eps.DeepCopy()
	eps.Status.Conditions = []metav1.Condition{{Type: tenancy.ConditionAccepted, Status: metav1.ConditionFalse,
		Reason: tenancy.ReasonNotAllowedByTailnet, LastTransitionTime: metav1.Now()}}
	if _, err := client.GatewayV1alpha1().TailscaleEndpoints("web").UpdateStatus(ctx, eps, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCLA("no endpoints of the refused object", func(cla *endpointv3.ClusterLoadAssignment, ok bool) bool {
		return ok && len(cla.Endpoints) == 0
	})
}
