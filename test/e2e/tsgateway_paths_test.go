package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// TestTailscaleGatewayPathRoutes runs workflow step 7's path routes through kube-apiserver with
// Gateway API's CRDs (their validation included): a Gateway "main" with an HTTP listener, the
// Envoy Service for it, a Tailscale Service of another installation on the simulated tailnet and
// a TailscaleGateway with discovery, ingress and egress routes give /gateway/main-http to the
// listener TailscaleServices and /cross-cluster/webapp-cluster2 to the remote TailscaleEndpoints,
// both controlled by the TailscaleGateway. An edit of a path route is undone; a user's route on
// the Gateway with the same prefix takes it (ours deleted, Ready=False RouteConflict naming it,
// a PathConflict Event) and gives it back when deleted; turning egress off removes
// /cross-cluster/.
func TestTailscaleGatewayPathRoutes(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	sim, admin := startSimWith(t, "e2e-paths", tailnetsim.Options{}, "tag:k8s-proxy")
	if _, err := sim.AddVirtualDevice("b-host"); err != nil { // the tailnet's MagicDNS suffix comes from device names
		t.Fatal(err)
	}
	ns := newNamespace(t, "paths")
	egNS := newNamespace(t, "eg-paths")
	api := viaKube(t)
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	gateway := &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "main"}, Spec: gwapiv1.GatewaySpec{
		GatewayClassName: "eg", Listeners: []gwapiv1.Listener{{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType}}}}
	if _, err := gwc.GatewayV1().Gateways(ns).Create(ctx(t), gateway, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	envoy := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: egNS, Name: "envoy-main",
		Labels: map[string]string{tsgateway.EnvoyOwningGatewayName: "main", tsgateway.EnvoyOwningGatewayNamespace: ns}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	if _, err := env.Kube.CoreV1().Services(egNS).Create(ctx(t), envoy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign := tailnet.Service{Name: "svc:webapp-cluster2", Ports: []string{"tcp:80"},
		Annotations: map[string]string{vipservice.OwnerAnnotation: `{"ownerRefs":[{"operatorID":"cluster-b","resource":{"kind":"TailscaleServices","name":"b/webapp","uid":"1"}}]}`}}
	if err := admin.CreateOrUpdateService(ctx(t), foreign); err != nil {
		t.Fatal(err)
	}
	tg := discoveryGateway(t, ns, "e2e-paths", func(g *v1alpha1.TailscaleGateway) {
		g.Spec.Tailnets[0].RouteGeneration = &v1alpha1.RouteGenerationConfig{
			Ingress: &v1alpha1.IngressRouteConfig{Enabled: true}, Egress: &v1alpha1.EgressRouteConfig{Enabled: true}}
	})

	routes := gwc.GatewayV1().HTTPRoutes(ns)
	gwRoute := tsgateway.PathRouteName("gw", tsgateway.PathRouteGateway, "http")
	crossRoute := tsgateway.PathRouteName("gw", tsgateway.PathRouteCrossCluster, "webapp-cluster2")
	want := map[string]string{ // route -> "prefix -> backend"
		gwRoute:    "/gateway/main-http -> TailscaleServices/gw-prod-listener-http",
		crossRoute: "/cross-cluster/webapp-cluster2 -> TailscaleEndpoints/gw-prod-remote-webapp-cluster2",
	}
	describe := func(r *gwapiv1.HTTPRoute) string {
		rule := r.Spec.Rules[len(r.Spec.Rules)-1]
		ref := rule.BackendRefs[0]
		return *rule.Matches[0].Path.Value + " -> " + string(*ref.Kind) + "/" + string(ref.Name)
	}
	generated := func(name string) func(context.Context, *string) (bool, error) {
		return func(c context.Context, last *string) (bool, error) {
			r, err := routes.Get(c, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				*last = name + " not found"
				return false, nil
			}
			if err != nil {
				return false, err
			}
			*last = describe(r)
			ref := metav1.GetControllerOf(r)
			return describe(r) == want[name] && ref != nil && ref.UID == tg.UID, nil
		}
	}
	for name := range want {
		eventuallyShowing(t, "path route "+name, generated(name))
	}

	// Stored as generated: nothing is rewritten without a change (API defaults included).
	for name := range want {
		r, err := routes.Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Generation != 1 {
			t.Errorf("%s: generation %d, want 1: the controller rewrote an unchanged spec", name, r.Generation)
		}
	}

	// An edit is undone.
	r, err := routes.Get(ctx(t), gwRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := "/elsewhere"
	r.Spec.Rules[1].Matches[0].Path.Value = &other
	r.Spec.Rules[1].Filters = r.Spec.Rules[1].Filters[1:] // URLRewrite needs a PathPrefix of its own
	if _, err := routes.Update(ctx(t), r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventuallyShowing(t, "the edited path route restored", generated(gwRoute))

	// A user's route on the Gateway with the same prefix keeps it.
	prefix := gwapiv1.PathMatchPathPrefix
	mine := "/cross-cluster/webapp-cluster2/"
	user := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}, Spec: gwapiv1.HTTPRouteSpec{
		CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "main"}}},
		Rules:           []gwapiv1.HTTPRouteRule{{Matches: []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: &prefix, Value: &mine}}}}}}}
	if _, err := routes.Create(ctx(t), user, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventuallyShowing(t, "ours given way, Ready=False RouteConflict naming the user's route", func(c context.Context, last *string) (bool, error) {
		_, err := routes.Get(c, crossRoute, metav1.GetOptions{})
		if err == nil || !apierrors.IsNotFound(err) {
			*last = fmt.Sprintf("%s still there (%v)", crossRoute, err)
			return false, nil
		}
		g, err := api.TailscaleGateways(ns).Get(c, "gw", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(g.Status.Conditions, tsgateway.ConditionReady)
		*last = fmt.Sprintf("Ready %+v", cond)
		return cond != nil && cond.Reason == tsgateway.ReasonRouteConflict &&
			strings.Contains(cond.Message, "path /cross-cluster/webapp-cluster2 (HTTPRoute "+ns+"/mine)"), nil
	})
	eventually(t, "a PathConflict Event", func(c context.Context) (bool, error) {
		evs, err := env.Kube.CoreV1().Events(ns).List(c, metav1.ListOptions{FieldSelector: "reason=" + tsgateway.ReasonPathConflict})
		return err == nil && len(evs.Items) > 0, err
	})
	if err := routes.Delete(ctx(t), "mine", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventuallyShowing(t, "the prefix given back", generated(crossRoute))

	// Egress off: no /cross-cluster/, /gateway/ stays.
	g, err := api.TailscaleGateways(ns).Get(ctx(t), "gw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.Spec.Tailnets[0].RouteGeneration.Egress.Enabled = false
	if _, err := api.TailscaleGateways(ns).Update(ctx(t), g, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cross-cluster route deleted", func(c context.Context) (bool, error) {
		_, err := routes.Get(c, crossRoute, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if _, err := routes.Get(ctx(t), gwRoute, metav1.GetOptions{}); err != nil {
		t.Errorf("the gateway route: %v", err)
	}
}
