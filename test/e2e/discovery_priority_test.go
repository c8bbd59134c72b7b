package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// TestDiscoveryPriorityGroup: cluster B's svc:billing on two tailnets of one TailscaleGateway
// (priorities 100 and 50) → discovery's failover TailscaleServices over both remote
// TailscaleEndpoints with the priority-100 one primary, and one generated egress HTTPRoute, to
// the group, in that tailnet's routes, beside the /cross-cluster/billing path route to the group;
// raising the other tailnet's priority moves the primary and the route; the Service gone from
// one tailnet removes the group and routes its remaining TailscaleEndpoints directly (both routes).
func TestDiscoveryPriorityGroup(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	_, east := startSimWith(t, "e2e-prio-east", tailnetsim.Options{}, "tag:k8s-proxy")
	_, west := startSimWith(t, "e2e-prio-west", tailnetsim.Options{}, "tag:k8s-proxy")
	ns := newNamespace(t, "disc-prio")
	api := viaKube(t)
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(name, ref string, prio int32) v1alpha1.TailnetConfiguration {
		return v1alpha1.TailnetConfiguration{Name: name, Priority: &prio,
			TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: ref},
			ServiceDiscovery:    &v1alpha1.TailnetServiceDiscovery{Enabled: true},
			RouteGeneration:     &v1alpha1.RouteGenerationConfig{Egress: &v1alpha1.EgressRouteConfig{Enabled: true}}}
	}
	if _, err := api.TailscaleGateways(ns).Create(ctx(t), &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "main"},
			Tailnets: []v1alpha1.TailnetConfiguration{entry("east", "e2e-prio-east", 100), entry("west", "e2e-prio-west", 50)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	billing := tailnet.Service{Name: "svc:billing", Ports: []string{"tcp:80"}, Comment: "cluster B's billing",
		Annotations: map[string]string{vipservice.OwnerAnnotation: `{"ownerRefs":[{"operatorID":"cluster-b","resource":{"kind":"TailscaleServices","name":"b/billing","uid":"1"}}]}`}}
	for _, admin := range []*tailnet.Client{east, west} {
		if err := admin.CreateOrUpdateService(ctx(t), billing); err != nil {
			t.Fatal(err)
		}
	}
	group := discovery.ObjectName("gw", "remote", "billing")
	eastEP, westEP := discovery.ObjectName("gw", "east", "remote", "billing"), discovery.ObjectName("gw", "west", "remote", "billing")

	// tiers waits for the group's failover tiers.
	tiers := func(primary, secondary string) {
		t.Helper()
		eventuallyShowing(t, "the failover group with primary "+primary, func(c context.Context, last *string) (bool, error) {
			s, err := api.TailscaleServices(ns).Get(c, group, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				cond, _, _ := discoveryCondition(c, api, ns)
				*last = fmt.Sprintf("no %s; condition %+v", group, cond)
				return false, nil
			}
			if err != nil {
				return false, err
			}
			*last = fmt.Sprintf("%+v labels %v", s.Spec, s.Labels)
			lb := s.Spec.LoadBalancing
			return lb != nil && lb.Strategy == v1alpha1.StrategyFailover && lb.FailoverConfig != nil &&
				slices.Equal(lb.FailoverConfig.PrimaryEndpoints, []string{primary}) &&
				slices.Equal(lb.FailoverConfig.SecondaryEndpoints, []string{secondary}) &&
				metav1.GetControllerOf(s) != nil && metav1.GetControllerOf(s).Name == "gw", nil
		})
	}
	// routesAre waits for the TailscaleGateway's generated HTTPRoutes to be want ("name -> Kind/backend").
	routesAre := func(want ...string) {
		t.Helper()
		eventuallyShowing(t, "routes "+strings.Join(want, ", "), func(c context.Context, last *string) (bool, error) {
			list, err := gwc.GatewayV1().HTTPRoutes(ns).List(c, metav1.ListOptions{LabelSelector: tsgateway.LabelGateway + "=gw"})
			if err != nil {
				return false, err
			}
			var got []string
			for _, r := range list.Items {
				for _, rule := range r.Spec.Rules {
					for _, b := range rule.BackendRefs {
						got = append(got, r.Name+" -> "+string(*b.Kind)+"/"+string(b.Name))
					}
				}
			}
			slices.Sort(got)
			*last = strings.Join(got, ", ")
			return slices.Equal(got, want), nil
		})
	}

	tiers(eastEP, westEP)
	eventually(t, "the ServiceDiscovery condition naming the group", func(c context.Context) (bool, error) {
		cond, _, err := discoveryCondition(c, api, ns)
		return err == nil && cond != nil && cond.Status == metav1.ConditionTrue &&
			strings.Contains(cond.Message, "grouped for failover by priority: "+group+" (svc:billing, primary "+eastEP+")"), err
	})
	// The /cross-cluster/billing path route (pkg/controllers/tsgateway pathroutes.go) follows the group too.
	cross := tsgateway.PathRouteName("gw", tsgateway.PathRouteCrossCluster, "billing")
	routesAre("gw-east-egress-svc-"+group+" -> TailscaleServices/"+group, cross+" -> TailscaleServices/"+group)

	// West above east: the primary and the route move.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		tg := mustGateway(t, ctx(t), ns)
		tg.Spec.Tailnets[1].Priority = ptrTo(int32(200))
		_, err := api.TailscaleGateways(ns).Update(ctx(t), tg, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	tiers(westEP, eastEP)
	routesAre(cross+" -> TailscaleServices/"+group, "gw-west-egress-svc-"+group+" -> TailscaleServices/"+group)

	// Gone from west: no group; east's TailscaleEndpoints routed directly.
	if err := west.DeleteService(ctx(t), "svc:billing"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the group deleted", func(c context.Context) (bool, error) {
		_, err := api.TailscaleServices(ns).Get(c, group, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	routesAre("gw-east-egress-ep-"+eastEP+" -> TailscaleEndpoints/"+eastEP, cross+" -> TailscaleEndpoints/"+eastEP)
}

func mustGateway(t *testing.T, c context.Context, ns string) *v1alpha1.TailscaleGateway {
	t.Helper()
	tg, err := viaKube(t).TailscaleGateways(ns).Get(c, "gw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}
