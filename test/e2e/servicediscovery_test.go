package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	gatewayv1alpha1 "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/typed/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// discoveryGateway creates a TailscaleGateway in ns with discovery on for tailnet configuration
// "prod" of the TailscaleTailnet tailnetName, after applying edits to it.
func discoveryGateway(t *testing.T, ns, tailnetName string, edits ...func(*v1alpha1.TailscaleGateway)) *v1alpha1.TailscaleGateway {
	t.Helper()
	gw := &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "main"},
			Tailnets: []v1alpha1.TailnetConfiguration{{Name: "prod", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: tailnetName},
				ServiceDiscovery: &v1alpha1.TailnetServiceDiscovery{Enabled: true}}}},
	}
	for _, edit := range edits {
		edit(gw)
	}
	tg, err := viaKube(t).TailscaleGateways(ns).Create(ctx(t), gw, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// exposedService creates a Kubernetes Service labelled for discovery with TCP ports.
func exposedService(t *testing.T, ns, name string, ports ...int32) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discovery.LabelExpose: "true"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("tcp-%d", p), Port: p, Protocol: corev1.ProtocolTCP})
	}
	out, err := env.Kube.CoreV1().Services(ns).Create(ctx(t), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// discoveryCondition returns the TailscaleGateway's ServiceDiscovery condition, nil when absent.
func discoveryCondition(c context.Context, api gatewayv1alpha1.GatewayV1alpha1Interface, ns string) (*metav1.Condition, *v1alpha1.TailscaleGateway, error) {
	tg, err := api.TailscaleGateways(ns).Get(c, "gw", metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	return meta.FindStatusCondition(tg.Status.Conditions, discovery.ConditionServiceDiscovery), tg, nil
}

func tailscaleService(c context.Context, admin *tailnet.Client, name string) (tailnet.Service, bool, error) {
	s, err := admin.Service(c, name)
	if tailnet.IsNotFound(err) {
		return tailnet.Service{}, false, nil
	}
	return s, err == nil, err
}

// ownerOperators returns the operator IDs in a Tailscale Service's owner references.
func ownerOperators(s tailnet.Service) []string {
	refs, _ := vipservice.OwnerRefs(s.Annotations)
	var out []string
	for _, r := range refs {
		out = append(out, r.OperatorID)
	}
	return out
}

// eventuallyShowing is eventually, logging what cond last saw when it fails.
func eventuallyShowing(t *testing.T, what string, cond func(c context.Context, last *string) (bool, error)) {
	t.Helper()
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("%s: last seen: %s", what, last)
		}
	}()
	eventually(t, what, func(c context.Context) (bool, error) { return cond(c, &last) })
}

// TestDiscoveryLocalServices: a labelled Kubernetes Service becomes a TailscaleServices
// controlled by the TailscaleGateway and a Tailscale Service in the simulated tailnet, hosted by
// the proxy deployed for the generated host; a name taken by a hand-written object is left
// alone; removing the label removes both.
func TestDiscoveryLocalServices(t *testing.T) {
	_, admin := startSimWith(t, "e2e-disc-local", tailnetsim.Options{}, "tag:k8s-proxy")
	ns := newNamespace(t, "disc")
	api := viaKube(t)
	web := exposedService(t, ns, "web", 80, 443)
	exposedService(t, ns, "db", 5432)
	// A hand-written TailscaleServices with the name the TailscaleGateway would give db's.
	dbName := discovery.ObjectName("gw", "prod", "local", ns, "db")
	mine, err := api.TailscaleServices(ns).Create(ctx(t), &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: dbName},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tg := discoveryGateway(t, ns, "e2e-disc-local")

	name := discovery.ObjectName("gw", "prod", "local", ns, "web")
	vip := discovery.LocalVIPName(ns, "web")
	eventually(t, "the generated TailscaleServices", func(c context.Context) (bool, error) {
		o, err := api.TailscaleServices(ns).Get(c, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		ref := metav1.GetControllerOf(o)
		if ref == nil || ref.UID != tg.UID || o.Labels[discovery.LabelGateway] != "gw" {
			t.Fatalf("not controlled by the TailscaleGateway: %v %v", o.OwnerReferences, o.Labels)
		}
		return o.Spec.VIPService.Name == vip && slices.Equal(o.Spec.VIPService.Ports, []string{"tcp:80", "tcp:443"}) &&
			len(o.Spec.ServiceDiscovery.ExternalServices) == 2 && o.Spec.ServiceDiscovery.ExternalServices[0].Address == web.Spec.ClusterIP &&
			o.Spec.ServiceDiscovery.ExternalServices[1].Port == 443, nil
	})
	eventually(t, "the Tailscale Service "+vip+" in the simulated tailnet", func(c context.Context) (bool, error) {
		s, ok, err := tailscaleService(c, admin, vip)
		return ok && slices.Equal(s.Ports, []string{"tcp:80", "tcp:443"}) && len(ownerOperators(s)) == 1, err
	})
	host := discovery.ObjectName("gw", "prod", "local-host")
	eventually(t, "the host's proxy serving the TailscaleServices", func(c context.Context) (bool, error) {
		sts, err := env.Kube.AppsV1().StatefulSets(framework.Namespace).Get(c, proxydeploy.NamesFor(ns, host).Base, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(sts.Spec.Template.Spec.Containers[0].Args, func(a string) bool {
			return strings.HasPrefix(a, "--services=") && strings.Contains(a, name)
		}), nil
	})
	eventuallyShowing(t, "ServiceDiscovery reporting the conflict and the exposed Service", func(c context.Context, last *string) (bool, error) {
		cond, tg, err := discoveryCondition(c, api, ns)
		if err != nil || cond == nil {
			return false, err
		}
		*last = fmt.Sprintf("%+v", *cond)
		if s := meta.FindStatusCondition(tg.Status.Conditions, tsgateway.ConditionSupported); s != nil && strings.Contains(s.Message, "serviceDiscovery") {
			t.Fatalf("serviceDiscovery still reported as not supported: %s", s.Message)
		}
		return cond.Status == metav1.ConditionFalse && cond.Reason == discovery.ReasonConflict && strings.Contains(cond.Message, dbName) &&
			strings.Contains(cond.Message, "1 local Services exposed"), nil
	})
	got, err := api.TailscaleServices(ns).Get(ctx(t), dbName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.VIPService != nil || len(got.OwnerReferences) != 0 || len(got.Labels) != 0 || got.Generation != mine.Generation {
		t.Fatalf("the hand-written TailscaleServices was changed: %+v", got)
	}

	// The label removed: the TailscaleServices, its Tailscale Service and (no Service left but
	// db, whose name is taken) the host stay only as long as something is exposed.
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{discovery.LabelExpose: nil}}})
	if _, err := env.Kube.CoreV1().Services(ns).Patch(ctx(t), "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the TailscaleServices and the Tailscale Service removed", func(c context.Context) (bool, error) {
		_, err := api.TailscaleServices(ns).Get(c, name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		_, ok, err := tailscaleService(c, admin, vip)
		return !ok, err
	})
	if err := env.Kube.CoreV1().Services(ns).Delete(ctx(t), "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the host removed with nothing left to expose", func(c context.Context) (bool, error) {
		_, err := api.TailscaleEndpoints(ns).Get(c, host, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		cond, _, err := discoveryCondition(c, api, ns)
		return err == nil && cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "0 local Services exposed"), err
	})
}

// TestDiscoveryCrossCluster: a Tailscale Service owned by another installation becomes a
// TailscaleEndpoints at its VIP; this installation's own Service (a local one exposed here) is
// not discovered as foreign; the foreign Service deleted removes its TailscaleEndpoints.
func TestDiscoveryCrossCluster(t *testing.T) {
	sim, admin := startSimWith(t, "e2e-disc-remote", tailnetsim.Options{}, "tag:k8s-proxy")
	ns := newNamespace(t, "disc-x")
	api := viaKube(t)
	exposedService(t, ns, "web", 80)
	// A device, so that the tailnet's MagicDNS suffix is known (it is derived from device names).
	if _, err := sim.AddVirtualDevice("b-host"); err != nil {
		t.Fatal(err)
	}
	discoveryGateway(t, ns, "e2e-disc-remote")

	// Our own Service, for our operator ID.
	vip := discovery.LocalVIPName(ns, "web")
	var ours string
	eventually(t, "our Tailscale Service", func(c context.Context) (bool, error) {
		s, ok, err := tailscaleService(c, admin, vip)
		if ok && len(ownerOperators(s)) == 1 {
			ours = ownerOperators(s)[0]
		}
		return ours != "", err
	})
	foreign := tailnet.Service{Name: "svc:billing", Ports: []string{"tcp:80", "tcp:8443"}, Comment: "cluster B's billing",
		Annotations: map[string]string{vipservice.OwnerAnnotation: `{"ownerRefs":[{"operatorID":"cluster-b","resource":{"kind":"TailscaleServices","name":"b/billing","uid":"1"}}]}`}}
	if err := admin.CreateOrUpdateService(ctx(t), foreign); err != nil {
		t.Fatal(err)
	}
	remote := discovery.ObjectName("gw", "prod", "remote", "billing")
	var addr string
	eventuallyShowing(t, "the TailscaleEndpoints of cluster B's Service", func(c context.Context, last *string) (bool, error) {
		s, ok, err := tailscaleService(c, admin, "svc:billing")
		if !ok || err != nil || len(s.Addrs) == 0 {
			*last = fmt.Sprintf("Tailscale Service %+v %v", s, err)
			return false, nil
		}
		addr = s.Addrs[0]
		e, err := api.TailscaleEndpoints(ns).Get(c, remote, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cond, _, _ := discoveryCondition(c, api, ns)
			*last = fmt.Sprintf("no %s; condition %+v", remote, cond)
			return false, nil
		}
		*last = fmt.Sprintf("%+v %v", e.Spec, e.Annotations)
		if err != nil {
			return false, err
		}
		var got []string
		for _, ep := range e.Spec.Endpoints {
			got = append(got, ep.Name+" "+ep.TailscaleIP+" "+ep.TailscaleFQDN)
		}
		want := []string{"tcp-80 " + addr + " billing." + sim.MagicDNSSuffix(), "tcp-8443 " + addr + " billing." + sim.MagicDNSSuffix()}
		return slices.Equal(got, want) && e.Annotations[discovery.AnnotationOwner] == "cluster-b" && e.Spec.Tailnet == "e2e-disc-remote", nil
	})
	eventually(t, "ServiceDiscovery counting one of each", func(c context.Context) (bool, error) {
		cond, _, err := discoveryCondition(c, api, ns)
		return err == nil && cond != nil && cond.Status == metav1.ConditionTrue &&
			strings.Contains(cond.Message, "1 local Services exposed, 1 Tailscale Services of other installations discovered"), err
	})
	list, err := api.TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{LabelSelector: discovery.LabelRole + "=" + discovery.RoleRemote})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("remote TailscaleEndpoints %d, want only cluster B's (ours, owned by %s, is not foreign)", len(list.Items), ours)
	}

	if err := admin.DeleteService(ctx(t), "svc:billing"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the TailscaleEndpoints removed with the Service", func(c context.Context) (bool, error) {
		_, err := api.TailscaleEndpoints(ns).Get(c, remote, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}
