package e2e

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// tailnetService returns the Tailscale Service name of the simulated tailnet, ok false when absent.
func tailnetService(c context.Context, admin *tailnet.Client, name string) (tailnet.Service, bool, error) {
	list, err := admin.Services(c)
	if err != nil {
		return tailnet.Service{}, false, err
	}
	i := slices.IndexFunc(list, func(s tailnet.Service) bool { return s.Name == name })
	if i < 0 {
		return tailnet.Service{}, false, nil
	}
	return list[i], true, nil
}

// TestTailscaleGatewayListeners publishes a Gateway's listeners on a simulated tailnet through
// kube-apiserver: a Gateway with two listeners and the Service Envoy Gateway would create for it
// (its labels) give two listener TailscaleServices and two Tailscale Services with the listeners'
// ports; a listener's port change and a removed listener are followed in the tailnet; a
// TailscaleServices of a generated name is left alone; users cannot write the externalServices
// the controller writes; and everything goes with the TailscaleGateway.
func TestTailscaleGatewayListeners(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	admin := startSim(t, "e2e-tsgwl")
	ns := newNamespace(t, "tsgwl")
	egNS := newNamespace(t, "envoy-gateway-system")
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	api := viaKube(t)

	gateway := &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"}, Spec: gwapiv1.GatewaySpec{
		GatewayClassName: "eg", Listeners: []gwapiv1.Listener{
			{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType},
			{Name: "db", Port: 5432, Protocol: gwapiv1.TCPProtocolType},
		}}}
	if gateway, err = gwc.GatewayV1().Gateways(ns).Create(ctx(t), gateway, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The Service Envoy Gateway v1.9.1 creates for the Gateway: its owning-gateway labels, one
	// port per listener with the listener's port.
	envoy := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: egNS, Name: "envoy-" + ns + "-edge-1a2b3c4d",
		Labels: map[string]string{tsgateway.EnvoyOwningGatewayName: "edge", tsgateway.EnvoyOwningGatewayNamespace: ns}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80},
			{Name: "tcp-5432", Protocol: corev1.ProtocolTCP, Port: 5432},
		}}}
	if envoy, err = env.Kube.CoreV1().Services(egNS).Create(ctx(t), envoy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	tg := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsgw"}, Spec: v1alpha1.TailscaleGatewaySpec{
		GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "edge"},
		Tailnets:   []v1alpha1.TailnetConfiguration{{Name: "main", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "e2e-tsgwl"}}},
		Security: &v1alpha1.SecurityConfig{AccessControl: &v1alpha1.AccessControlConfig{
			AllowedTags: []string{"tag:prod"}, DeniedTags: []string{"tag:dev"}}},
	}}
	if _, err := api.TailscaleGateways(ns).Create(ctx(t), tg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{ // TailscaleServices -> Tailscale Service
		"tsgw-main-listener-http": "svc:gateway-edge-http-80",
		"tsgw-main-listener-db":   "svc:gateway-edge-db-5432",
	}
	ports := map[string]string{"svc:gateway-edge-http-80": "tcp:80", "svc:gateway-edge-db-5432": "tcp:5432"}
	for obj, svc := range want {
		eventually(t, "TailscaleServices "+obj+" and "+svc+" in the tailnet", func(c context.Context) (bool, error) {
			o, err := api.TailscaleServices(ns).Get(c, obj, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			if o.Spec.VIPService == nil || o.Spec.VIPService.Name != svc {
				t.Fatalf("%s: vipService %+v, want %s", obj, o.Spec.VIPService, svc)
			}
			s, ok, err := tailnetService(c, admin, svc)
			return ok && slices.Equal(s.Ports, []string{ports[svc]}), err
		})
	}
	for obj := range want {
		o, err := api.TailscaleServices(ns).Get(ctx(t), obj, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ext := o.Spec.ServiceDiscovery.ExternalServices
		if len(ext) != 1 || ext[0].Address != envoy.Spec.ClusterIP || ports[o.Spec.VIPService.Name] != "tcp:"+strconv.Itoa(int(ext[0].Port)) {
			t.Errorf("%s forwards to %+v, want the Envoy Service's cluster IP %s on the listener's port", obj, ext, envoy.Spec.ClusterIP)
		}
		if r := accesscontrol.FromAnnotations(o.Annotations); !r.Equal(accesscontrol.Rule{Allowed: []string{"tag:prod"}, Denied: []string{"tag:dev"}}) {
			t.Errorf("%s: access rule %+v", obj, r)
		}
		if ref := metav1.GetControllerOf(o); ref == nil || ref.Kind != "TailscaleGateway" || ref.Name != "tsgw" {
			t.Errorf("%s: controller %+v", obj, ref)
		}
	}
	if _, err := api.TailscaleEndpoints(ns).Get(ctx(t), "tsgw-main-gateway-proxy", metav1.GetOptions{}); err != nil {
		t.Fatalf("the gateway-proxy TailscaleEndpoints: %v", err)
	}
	var last []metav1.Condition
	defer func() {
		if t.Failed() {
			t.Logf("last TailscaleGateway conditions: %+v", last)
		}
	}()
	eventually(t, "ListenersReady=True naming both Services, accessControl not listed as unsupported", func(c context.Context) (bool, error) {
		got, err := api.TailscaleGateways(ns).Get(c, "tsgw", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = got.Status.Conditions
		cond := meta.FindStatusCondition(got.Status.Conditions, tsgateway.ConditionListenersReady)
		sup := meta.FindStatusCondition(got.Status.Conditions, tsgateway.ConditionSupported)
		return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "svc:gateway-edge-http-80") &&
			strings.Contains(cond.Message, "svc:gateway-edge-db-5432") && sup != nil && !strings.Contains(sup.Message, "accessControl"), nil
	})

	// Nothing is rewritten without a change: the generated specs are as the server stores them.
	for _, obj := range []string{"tsgw-main-listener-http", "tsgw-main-listener-db"} {
		o, err := api.TailscaleServices(ns).Get(ctx(t), obj, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if o.Generation != 1 {
			t.Errorf("%s: generation %d, want 1: the controller rewrote an unchanged spec", obj, o.Generation)
		}
	}
	if p, err := api.TailscaleEndpoints(ns).Get(ctx(t), "tsgw-main-gateway-proxy", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if p.Generation != 1 {
		t.Errorf("gateway proxy: generation %d, want 1", p.Generation)
	}

	// A user cannot write a TailscaleServices with externalServices controlled by the
	// TailscaleGateway: only the server's controller does (--allow-external-services stays off).
	owner, err := api.TailscaleGateways(ns).Get(ctx(t), "tsgw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	forged := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "forged",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "tsgw", UID: owner.UID, Controller: &yes}}},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{{Name: "e", Address: "192.0.2.1", Port: 80}}}}}
	if _, err := api.TailscaleServices(ns).Create(ctx(t), forged, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("a user's TailscaleServices with a TailscaleGateway controller and externalServices: err = %v, want 422", err)
	}

	// A TailscaleServices of the name a new listener would get is not ours: left alone, reported.
	mine := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsgw-main-listener-admin"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "admin"}}}}
	if mine, err = api.TailscaleServices(ns).Create(ctx(t), mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Listeners change: http moves to 8080, db goes, admin (9000) comes.
	gateway, err = gwc.GatewayV1().Gateways(ns).Get(ctx(t), "edge", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gateway.Spec.Listeners = []gwapiv1.Listener{
		{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType},
		{Name: "admin", Port: 9000, Protocol: gwapiv1.HTTPProtocolType},
	}
	if _, err := gwc.GatewayV1().Gateways(ns).Update(ctx(t), gateway, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	envoy, err = env.Kube.CoreV1().Services(egNS).Get(ctx(t), envoy.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	envoy.Spec.Ports = []corev1.ServicePort{{Name: "http-8080", Protocol: corev1.ProtocolTCP, Port: 8080},
		{Name: "http-9000", Protocol: corev1.ProtocolTCP, Port: 9000}}
	if _, err := env.Kube.CoreV1().Services(egNS).Update(ctx(t), envoy, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "svc:gateway-edge-http-8080 in the tailnet, the port-80 and db Services gone", func(c context.Context) (bool, error) {
		s, ok, err := tailnetService(c, admin, "svc:gateway-edge-http-8080")
		if err != nil || !ok || !slices.Equal(s.Ports, []string{"tcp:8080"}) {
			return false, err
		}
		for _, gone := range []string{"svc:gateway-edge-http-80", "svc:gateway-edge-db-5432"} {
			if _, ok, err := tailnetService(c, admin, gone); ok || err != nil {
				return false, err
			}
		}
		_, err = api.TailscaleServices(ns).Get(c, "tsgw-main-listener-db", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	eventually(t, "ListenersReady=False ListenerConflict naming the hand-written TailscaleServices", func(c context.Context) (bool, error) {
		got, err := api.TailscaleGateways(ns).Get(c, "tsgw", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = got.Status.Conditions
		cond := meta.FindStatusCondition(got.Status.Conditions, tsgateway.ConditionListenersReady)
		return cond != nil && cond.Reason == tsgateway.ReasonListenerConflict && strings.Contains(cond.Message, mine.Name), nil
	})
	if cur, err := api.TailscaleServices(ns).Get(ctx(t), mine.Name, metav1.GetOptions{}); err != nil || cur.Spec.VIPService != nil || len(cur.OwnerReferences) != 0 {
		t.Fatalf("the hand-written TailscaleServices was changed: %v %+v", err, cur)
	}
	eventually(t, "a ListenerConflict Event", func(c context.Context) (bool, error) {
		evs, err := env.Kube.CoreV1().Events(ns).List(c, metav1.ListOptions{FieldSelector: "reason=" + tsgateway.ReasonListenerConflict})
		return err == nil && len(evs.Items) > 0, err
	})

	// Deleting the TailscaleGateway: kube-controller-manager's garbage collector deletes the
	// listener objects and the vipservice controller the Tailscale Services.
	if err := api.TailscaleGateways(ns).Delete(ctx(t), "tsgw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "listener objects and Tailscale Services deleted with the TailscaleGateway", func(c context.Context) (bool, error) {
		if _, ok, err := tailnetService(c, admin, "svc:gateway-edge-http-8080"); ok || err != nil {
			return false, err
		}
		sel := tsgateway.LabelGateway + "=tsgw"
		svcs, err := api.TailscaleServices(ns).List(c, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		eps, err := api.TailscaleEndpoints(ns).List(c, metav1.ListOptions{LabelSelector: sel})
		return err == nil && len(svcs.Items) == 0 && len(eps.Items) == 0, err
	})
	if _, err := api.TailscaleServices(ns).Get(ctx(t), mine.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the hand-written TailscaleServices went with the TailscaleGateway: %v", err)
	}
}
