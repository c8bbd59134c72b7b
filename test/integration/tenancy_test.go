package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// wantRefused checks err is a 422 whose cause names field and says message.
func wantRefused(t *testing.T, err error, field, message string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v, want 422 Invalid on %s", err, field)
	}
	var status apierrors.APIStatus
	if s, ok := err.(apierrors.APIStatus); ok {
		status = s
	}
	for _, c := range status.Status().Details.Causes {
		if c.Field == field && strings.Contains(c.Message, message) {
			return
		}
	}
	t.Fatalf("no cause on %s saying %q in %v", field, message, err)
}

// waitAccepted waits for the persisted Accepted condition of a TailscaleEndpoints to be status.
func waitAccepted(t *testing.T, ctx context.Context, get func() ([]metav1.Condition, error), status metav1.ConditionStatus, reason string) {
	t.Helper()
	var last []metav1.Condition
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		conds, err := get()
		if err != nil {
			return false, err
		}
		last = conds
		c := meta.FindStatusCondition(conds, tenancy.ConditionAccepted)
		return c != nil && c.Status == status && c.Reason == reason, nil
	})
	if err != nil {
		t.Fatalf("waiting for Accepted=%s (%s): %v; conditions %+v", status, reason, err, last)
	}
}

// A tailnet's allowedNamespaces decides at admission (standalone: namespaces carry only
// kubernetes.io/metadata.name) and, after a change, in the persisted status of admitted objects.
func TestTenancyAllowedNamespaces(t *testing.T) {
	s, _ := startLiveServer(t)
	ctx := ctx(t)
	c := s.Clientset(t).GatewayV1alpha1()

	tn := objects.Tailnet("team")
	tn.Spec.AllowedNamespaces = &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"alpha"}}
	if _, err := c.TailscaleTailnets().Create(ctx, tn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// By TailscaleTailnet name and by tailnet domain alike.
	for _, ref := range []string{"team", "company.ts.net"} {
		eps := liveEndpoints("beta")
		eps.Spec.Tailnet = ref
		_, err := c.TailscaleEndpoints("beta").Create(ctx, eps, metav1.CreateOptions{})
		wantRefused(t, err, "spec.tailnet", "does not admit namespace beta")
	}
	svc := objects.Services("beta", "web")
	svc.Spec.EndpointTemplate = &v1alpha1.EndpointTemplate{Tailnet: "team", Labels: map[string]string{"service-type": "web"}}
	_, err := c.TailscaleServices("beta").Create(ctx, svc, metav1.CreateOptions{})
	wantRefused(t, err, "spec.endpointTemplate.tailnet", "does not admit namespace beta")
	gw := objects.Gateway("beta", "gw")
	gw.Spec.Tailnets[0].TailscaleTailnetRef.Name = "team"
	_, err = c.TailscaleGateways("beta").Create(ctx, gw, metav1.CreateOptions{})
	wantRefused(t, err, "spec.tailnets[0].tailscaleTailnetRef.name", "does not admit namespace beta")

	eps, err := c.TailscaleEndpoints("alpha").Create(ctx, liveEndpoints("alpha"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("alpha is admitted: %v", err)
	}
	// As persisted by the status writer (what the EDS and the proxy follow), not as overlaid on
	// reads.
	getEps := func() ([]metav1.Condition, error) {
		return storedEndpoints(t, s, "alpha", eps.Name).Status.Conditions, nil
	}
	waitAccepted(t, ctx, getEps, metav1.ConditionTrue, tenancy.ReasonAccepted)

	// The owner tightens the tailnet: the existing object is refused in status, not deleted,
	// and can still be edited (its tailnet reference unchanged) and deleted.
	tn, err = c.TailscaleTailnets().Get(ctx, "team", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tn.Spec.AllowedNamespaces = &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}
	if _, err := c.TailscaleTailnets().Update(ctx, tn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAccepted(t, ctx, getEps, metav1.ConditionFalse, tenancy.ReasonNotAllowedByTailnet)
	o, err := c.TailscaleEndpoints("alpha").Get(ctx, eps.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := meta.FindStatusCondition(o.Status.Conditions, "Ready"); r == nil || r.Reason != tenancy.ReasonNotAllowedByTailnet {
		t.Errorf("Ready of a refused object: %+v", r)
	}
	for _, e := range o.Status.Endpoints {
		if e.Online != nil || e.Status != "Unknown" {
			t.Errorf("a refused object shows its tailnet's state: %+v", e)
		}
	}
	o.Labels["edited"] = "yes"
	if _, err := c.TailscaleEndpoints("alpha").Update(ctx, o, metav1.UpdateOptions{}); err != nil {
		t.Errorf("editing a refused object without changing its tailnet: %v", err)
	}
	// Standalone namespaces have no labels but kubernetes.io/metadata.name.
	_, err = c.TailscaleEndpoints("gamma").Create(ctx, liveEndpoints("gamma"), metav1.CreateOptions{})
	wantRefused(t, err, "spec.tailnet", "does not admit namespace gamma")
	tn, _ = c.TailscaleTailnets().Get(ctx, "team", metav1.GetOptions{})
	tn.Spec.AllowedNamespaces.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{"alpha", "gamma"}}}}
	if _, err := c.TailscaleTailnets().Update(ctx, tn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAccepted(t, ctx, getEps, metav1.ConditionTrue, tenancy.ReasonAccepted)
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		_, err := c.TailscaleEndpoints("gamma").Create(ctx, liveEndpoints("gamma"), metav1.CreateOptions{})
		return err == nil, nil // the server's informer may not have the update yet
	}); err != nil {
		t.Fatalf("gamma admitted by the name selector: %v", err)
	}
	if err := c.TailscaleEndpoints("alpha").Delete(ctx, eps.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// externalServices are refused unless --allow-external-services, and limited to
// --external-service-allowed-cidrs when set.
func TestTenancyExternalServices(t *testing.T) {
	withExternal := func(addresses ...string) *v1alpha1.TailscaleServices {
		svc := objects.Services("default", "ext")
		svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{}
		for i, a := range addresses {
			svc.Spec.ServiceDiscovery.ExternalServices = append(svc.Spec.ServiceDiscovery.ExternalServices,
				v1alpha1.ExternalService{Name: "e" + string(rune('a'+i)), Address: a, Port: 443})
		}
		return svc
	}
	off := framework.Start(t, "", func(o *server.Options) { o.Live.Enabled = false })
	ctx := ctx(t)
	c := off.Clientset(t).GatewayV1alpha1()
	_, err := c.TailscaleServices("default").Create(ctx, withExternal("192.0.2.10"), metav1.CreateOptions{})
	wantRefused(t, err, "spec.serviceDiscovery.externalServices[0].address", "--allow-external-services")
	if _, err := c.TailscaleServices("default").Create(ctx, withExternal(), metav1.CreateOptions{}); err != nil {
		t.Fatalf("a TailscaleServices without externalServices: %v", err)
	}

	limited := framework.Start(t, "", func(o *server.Options) {
		o.Live.Enabled = false
		o.Tenancy.External = tenancy.ExternalFlags{Allow: true, CIDRs: []string{"192.0.2.0/24"}}
	})
	c = limited.Clientset(t).GatewayV1alpha1()
	_, err = c.TailscaleServices("default").Create(ctx, withExternal("192.0.2.10", "198.51.100.1", "cdn.example.com"), metav1.CreateOptions{})
	wantRefused(t, err, "spec.serviceDiscovery.externalServices[1].address", "outside --external-service-allowed-cidrs")
	wantRefused(t, err, "spec.serviceDiscovery.externalServices[2].address", "not an IP address")
	if _, err := c.TailscaleServices("default").Create(ctx, withExternal("192.0.2.10"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("an address inside the allowed CIDRs: %v", err)
	}
}

// When the tailnet stops admitting a namespace, the controllers release its Tailscale Service
// and its auto-provisioned TailscaleEndpoints, the prober stops reporting its endpoints, and each
// object says Accepted=False; admitting the namespace again restores them.
func TestTenancyControllers(t *testing.T) {
	env := startVIPEnv(t, nil, "op-tenancy")
	ctx := ctx(t)
	c := env.client.GatewayV1alpha1()
	if _, err := c.TailscaleServices("vip").Create(ctx, vipServices("web", "svc:web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	probed := simEndpoints(t, env.sim)
	probed.Namespace = "vip"
	if _, err := c.TailscaleEndpoints("vip").Create(ctx, probed, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.service(t, "svc:web", "created", func(_ tailnet.Service, ok bool) bool { return ok })
	getProbed := func() (*v1alpha1.TailscaleEndpoints, error) {
		return c.TailscaleEndpoints("vip").Get(ctx, probed.Name, metav1.GetOptions{})
	}
	waitProbed := func(what string, cond func(*v1alpha1.TailscaleEndpoints) bool) {
		t.Helper()
		var last *v1alpha1.TailscaleEndpoints
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			o, err := getProbed()
			last = o
			return err == nil && cond(o), nil
		}); err != nil {
			t.Fatalf("waiting for %s: %v; last status %+v", what, err, last.Status)
		}
	}
	webHealthy := func(o *v1alpha1.TailscaleEndpoints) bool { return endpointStatus(o, "web").Status == "Healthy" }
	waitProbed("the probed endpoint healthy", webHealthy)

	setAllowed := func(names ...string) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			tn, err := c.TailscaleTailnets().Get(ctx, "sim", metav1.GetOptions{})
			if err != nil {
				return err
			}
			tn.Spec.AllowedNamespaces = &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: names}
			_, err = c.TailscaleTailnets().Update(ctx, tn, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setAllowed("elsewhere")
	env.service(t, "svc:web", "released", func(_ tailnet.Service, ok bool) bool { return !ok })
	env.object(t, "web", "Accepted=False and the finalizer gone", func(o *v1alpha1.TailscaleServices) bool {
		a := condition(o, tenancy.ConditionAccepted)
		return a != nil && a.Status == metav1.ConditionFalse && a.Reason == tenancy.ReasonNotAllowedByTailnet &&
			!slices.Contains(o.Finalizers, vipservice.Finalizer)
	})
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		_, err := c.TailscaleEndpoints("vip").Get(ctx, "web-auto", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("the auto-provisioned TailscaleEndpoints stays: %v", err)
	}
	waitProbed("the refused endpoints unprobed and Accepted=False", func(o *v1alpha1.TailscaleEndpoints) bool {
		a := meta.FindStatusCondition(o.Status.Conditions, tenancy.ConditionAccepted)
		return a != nil && a.Status == metav1.ConditionFalse && endpointStatus(o, "web").Status == "Unknown" &&
			endpointStatus(o, "db").Online == nil
	})
	waitAccepted(t, ctx, func() ([]metav1.Condition, error) {
		return storedEndpoints(t, env.server, "vip", probed.Name).Status.Conditions, nil
	}, metav1.ConditionFalse, tenancy.ReasonNotAllowedByTailnet)

	setAllowed("vip")
	env.service(t, "svc:web", "created again", func(_ tailnet.Service, ok bool) bool { return ok })
	waitProbed("probed again", webHealthy)
}
