package e2e

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// installBackendTrafficPolicyCRD applies Envoy Gateway's BackendTrafficPolicy CRD.
func installBackendTrafficPolicyCRD(t *testing.T) {
	t.Helper()
	installEnvoyGatewayCRD(t, "backendtrafficpolicies")
}

// installEnvoyGatewayCRD applies Envoy Gateway's CRD of resource (plural) from the
// github.com/envoyproxy/gateway module go.mod requires, and waits until kube-apiserver serves it.
func installEnvoyGatewayCRD(t *testing.T, resource string) {
	t.Helper()
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/envoyproxy/gateway")
	list.Dir = env.Root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -m github.com/envoyproxy/gateway: %v", err)
	}
	crd := filepath.Join(strings.TrimSpace(string(out)), "charts", "gateway-helm", "charts", "crds", "crds", "generated",
		"gateway.envoyproxy.io_"+resource+".yaml")
	kubectl(t, "apply", "--server-side", "-f", crd)
	eventually(t, "kube-apiserver to serve "+resource, func(context.Context) (bool, error) {
		l, err := env.Kube.Discovery().ServerResourcesForGroupVersion("gateway.envoyproxy.io/v1alpha1")
		return err == nil && slices.ContainsFunc(l.APIResources, func(r metav1.APIResource) bool { return r.Name == resource }), nil
	})
}

// routeGolden compares what identifies and makes a generated route with testdata/tsgateway/<file>.yaml.
func routeGolden(t *testing.T, file string, r *gwapiv1.HTTPRoute) {
	t.Helper()
	var owners []string
	for _, o := range r.OwnerReferences {
		owners = append(owners, o.Kind+"/"+o.Name)
	}
	got, err := yaml.Marshal(map[string]any{"labels": r.Labels, "owners": owners, "spec": r.Spec})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "tsgateway", file+".yaml")
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (go test ./test/e2e -run TestTailscaleGatewayRoutes -update writes it): %v", path, err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("HTTPRoute %s differs from %s:\n%s", r.Name, path, got)
	}
}

func readyReason(gw *v1alpha1.TailscaleGateway, typ string) string {
	if c := meta.FindStatusCondition(gw.Status.Conditions, typ); c != nil {
		return string(c.Status) + "/" + c.Reason
	}
	return ""
}

// TestTailscaleGatewayRoutes generates HTTPRoutes and BackendTrafficPolicies for a
// TailscaleGateway through kube-apiserver: golden routes, status, a hand-written route of a
// generated name left alone, spec changes followed, and the garbage collector of
// kube-controller-manager deleting everything with the TailscaleGateway.
func TestTailscaleGatewayRoutes(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	installBackendTrafficPolicyCRD(t)
	startSim(t, "e2e-tsgw")
	ns := newNamespace(t, "tsgw")
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	routes := gwc.GatewayV1().HTTPRoutes(ns)
	policies := dyn.Resource(tsgateway.BackendTrafficPolicyGVR).Namespace(ns)
	api := viaKube(t)

	gateway := &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "main"}, Spec: gwapiv1.GatewaySpec{
		GatewayClassName: "eg", Listeners: []gwapiv1.Listener{
			{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType},
			{Name: "alt", Port: 8080, Protocol: gwapiv1.HTTPProtocolType},
		}}}
	if _, err := gwc.GatewayV1().Gateways(ns).Create(ctx(t), gateway, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-tsgw", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "web-1", TailscaleIP: "100.64.0.10", TailscaleFQDN: "web-1.tailnet.ts.net", Port: 80, Protocol: v1alpha1.ProtocolHTTP}}}}
	if _, err := api.TailscaleEndpoints(ns).Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcs := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	if _, err := api.TailscaleServices(ns).Create(ctx(t), svcs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A hand-written route that has the name of one the TailscaleGateway generates.
	prefix := "/mine"
	handWritten := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsgw-main-ingress-svc-api"},
		Spec: gwapiv1.HTTPRouteSpec{CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "main"}}},
			Rules: []gwapiv1.HTTPRouteRule{{Matches: []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Value: &prefix}}}}}}}
	handWritten, err = routes.Create(ctx(t), handWritten, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	weight := int32(100)
	retries := int32(3)
	tg := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsgw"}, Spec: v1alpha1.TailscaleGatewaySpec{
		GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "main"},
		Tailnets: []v1alpha1.TailnetConfiguration{{Name: "main", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "e2e-tsgw"},
			RouteGeneration: &v1alpha1.RouteGenerationConfig{
				Ingress: &v1alpha1.IngressRouteConfig{Enabled: true, HostPattern: "{service}.company.ts.net",
					DefaultBackend: &v1alpha1.BackendConfig{Weight: &weight},
					Filters: []v1alpha1.HTTPRouteFilter{{Type: "RequestHeaderModifier", RequestHeaderModifier: &v1alpha1.HTTPHeaderFilter{
						Add: []v1alpha1.HTTPHeader{{Name: "X-Gateway-Version", Value: "v1.0.0"}}}}}},
				Egress: &v1alpha1.EgressRouteConfig{Enabled: true, PathPrefix: "/api/{service}/",
					RewriteRules: []v1alpha1.RewriteRule{{From: "/api/{service}/", To: "/"}},
					Timeout:      &metav1.Duration{Duration: 30 * time.Second},
					RetryPolicy: &v1alpha1.RetryPolicy{NumRetries: &retries, PerTryTimeout: &metav1.Duration{Duration: 10 * time.Second},
						BackoffBaseInterval: &metav1.Duration{Duration: time.Second}, BackoffMaxInterval: &metav1.Duration{Duration: 10 * time.Second}}},
			}}},
	}}
	if _, err := api.TailscaleGateways(ns).Create(ctx(t), tg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	generated := []string{"tsgw-main-ingress-ep-web", "tsgw-main-egress-ep-web", "tsgw-main-egress-svc-api"}
	for _, name := range generated {
		eventually(t, "HTTPRoute "+name, func(c context.Context) (bool, error) {
			_, err := routes.Get(c, name, metav1.GetOptions{})
			return err == nil, nil
		})
	}
	for _, name := range generated {
		r, err := routes.Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		routeGolden(t, strings.TrimPrefix(name, "tsgw-main-"), r)
	}
	for _, name := range generated[1:] {
		eventually(t, "BackendTrafficPolicy "+name, func(c context.Context) (bool, error) {
			_, err := policies.Get(c, name, metav1.GetOptions{})
			return err == nil, nil
		})
	}

	// The hand-written route is left alone and the conflict reported.
	var got *v1alpha1.TailscaleGateway
	eventually(t, "Ready=False RouteConflict with counts", func(c context.Context) (bool, error) {
		got, err = api.TailscaleGateways(ns).Get(c, "tsgw", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return readyReason(got, "Ready") == "False/RouteConflict" && len(got.Status.Tailnets) == 1 &&
			got.Status.Tailnets[0].RoutesGenerated == 3 && got.Status.GatewayInfo != nil && got.Status.GatewayInfo.ListenerCount == 2 &&
			got.Status.GatewayInfo.RouteCount == 4 && got.Status.ServiceInfo != nil && got.Status.ServiceInfo.TotalServices == 2, nil
	})
	if got.Status.GatewayInfo.LastReconciled == nil || got.Status.Tailnets[0].Status != "Connected" {
		t.Fatalf("status: %+v", got.Status)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, "Ready"); !strings.Contains(c.Message, handWritten.Name) {
		t.Fatalf("conflict message: %q", c.Message)
	}
	mine, err := routes.Get(ctx(t), handWritten.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mine.ResourceVersion != handWritten.ResourceVersion || len(mine.OwnerReferences) != 0 {
		t.Fatalf("the hand-written route was changed: %+v", mine.ObjectMeta)
	}
	eventually(t, "a RouteConflict Event", func(c context.Context) (bool, error) {
		evs, err := env.Kube.CoreV1().Events(ns).List(c, metav1.ListOptions{FieldSelector: "reason=" + tsgateway.ReasonRouteConflict})
		return err == nil && len(evs.Items) > 0, err
	})

	// Once the name is free the route is generated and the gateway is Ready.
	if err := routes.Delete(ctx(t), handWritten.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the generated route in place of the hand-written one", func(c context.Context) (bool, error) {
		r, err := routes.Get(c, handWritten.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return metav1.IsControlledBy(r, got), nil
	})
	eventually(t, "Ready=True", func(c context.Context) (bool, error) {
		got, err = api.TailscaleGateways(ns).Get(c, "tsgw", metav1.GetOptions{})
		return err == nil && readyReason(got, "Ready") == "True/GatewayConfigured" && got.Status.Tailnets[0].RoutesGenerated == 4, err
	})
	// Gateway API's Programmed and Accepted beside Ready.
	if p, a := readyReason(got, tsgateway.ConditionProgrammed), readyReason(got, "Accepted"); p != "True/GatewayConfigured" || !strings.HasPrefix(a, "True/") {
		t.Errorf("Programmed %s, Accepted %s; want both True", p, a)
	}

	// Routes whose stored form equals the generated one are not written again (the generator
	// sets Gateway API's defaults itself).
	evs, err := env.Kube.CoreV1().Events(ns).List(ctx(t), metav1.ListOptions{FieldSelector: "reason=" + tsgateway.EventRouteUpdated})
	if err != nil || len(evs.Items) != 0 {
		t.Fatalf("routes updated without a spec change: %v %+v", err, evs)
	}

	// Spec changes: a new host pattern is applied, disabled egress routes and policies go.
	got.Spec.Tailnets[0].RouteGeneration.Ingress.HostPattern = "{service}.example.ts.net"
	got.Spec.Tailnets[0].RouteGeneration.Egress.Enabled = false
	if _, err := api.TailscaleGateways(ns).Update(ctx(t), got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new hostname", func(c context.Context) (bool, error) {
		r, err := routes.Get(c, "tsgw-main-ingress-ep-web", metav1.GetOptions{})
		return err == nil && len(r.Spec.Hostnames) == 1 && r.Spec.Hostnames[0] == "web.example.ts.net", nil
	})
	for _, name := range generated[1:] {
		eventually(t, "deletion of "+name, func(c context.Context) (bool, error) {
			_, rerr := routes.Get(c, name, metav1.GetOptions{})
			_, perr := policies.Get(c, name, metav1.GetOptions{})
			return apierrors.IsNotFound(rerr) && apierrors.IsNotFound(perr), nil
		})
	}

	// Deleting the TailscaleGateway: kube-controller-manager's garbage collector deletes its routes.
	if err := api.TailscaleGateways(ns).Delete(ctx(t), "tsgw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the garbage collector to delete the generated routes", func(c context.Context) (bool, error) {
		list, err := routes.List(c, metav1.ListOptions{LabelSelector: tsgateway.LabelGateway + "=tsgw"})
		return err == nil && len(list.Items) == 0, err
	})
}

// TestTailscaleGatewayNotFoundReasons reports a missing Gateway and a missing TailscaleTailnet.
func TestTailscaleGatewayNotFoundReasons(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "tsgw-missing")
	api := viaKube(t)
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	gateway := &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "present"}, Spec: gwapiv1.GatewaySpec{
		GatewayClassName: "eg", Listeners: []gwapiv1.Listener{{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType}}}}
	if _, err := gwc.GatewayV1().Gateways(ns).Create(ctx(t), gateway, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*v1alpha1.TailscaleGateway{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-gateway"}, Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "absent"},
			Tailnets:   []v1alpha1.TailnetConfiguration{{Name: "t", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "absent-tailnet"}}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-tailnet"}, Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef:    v1alpha1.LocalPolicyTargetReference{Name: "present"},
			Security:      &v1alpha1.SecurityConfig{TLSMode: "strict"},
			Observability: &v1alpha1.ObservabilityConfig{Metrics: &v1alpha1.MetricsConfig{Enabled: true, Port: ptr.To[int32](9090)}},
			Tailnets:      []v1alpha1.TailnetConfiguration{{Name: "t", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "absent-tailnet"}}}}},
	} {
		if _, err := api.TailscaleGateways(ns).Create(ctx(t), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"no-gateway": "False/GatewayNotFound", "no-tailnet": "False/TailnetNotFound"} {
		eventually(t, name+" Ready="+want, func(c context.Context) (bool, error) {
			got, err := api.TailscaleGateways(ns).Get(c, name, metav1.GetOptions{})
			return err == nil && readyReason(got, "Ready") == want && readyReason(got, tsgateway.ConditionProgrammed) == want &&
				readyReason(got, "TailnetsReady") == "False/TailnetNotFound", err
		})
	}
	got, err := api.TailscaleGateways(ns).Get(ctx(t), "no-tailnet", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, tsgateway.ConditionSupported); c == nil ||
		c.Reason != tsgateway.ReasonFieldsNotSupported || !strings.Contains(c.Message, "spec.observability.metrics.port") || strings.Contains(c.Message, "spec.security") {
		t.Fatalf("Supported: %+v", c)
	}
	// tlsMode strict without mtls validates no client certificate: said so.
	if c := meta.FindStatusCondition(got.Status.Conditions, tsgateway.ConditionClientTLS); c == nil ||
		c.Reason != tsgateway.ReasonClientTLSRefused || !strings.Contains(c.Message, "strict needs security.mtls") {
		t.Fatalf("%s: %+v", tsgateway.ConditionClientTLS, c)
	}
}
