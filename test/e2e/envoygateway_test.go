package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// Envoy Gateway's ServiceAccount as its Helm chart names it (artifacts/envoy-gateway/rbac.yaml).
const (
	envoyGatewayNamespace = "envoy-gateway-system"
	envoyGatewayUser      = "system:serviceaccount:" + envoyGatewayNamespace + ":envoy-gateway"
)

var (
	endpointsGVR = schema.GroupVersionResource{Group: "gateway.tailscale.com", Version: "v1alpha1", Resource: "tailscaleendpoints"}
	servicesGVR  = schema.GroupVersionResource{Group: "gateway.tailscale.com", Version: "v1alpha1", Resource: "tailscaleservices"}
)

// asEnvoyGateway is the administrator's configuration impersonating Envoy Gateway's
// ServiceAccount (with the groups kube-apiserver gives a ServiceAccount token).
func asEnvoyGateway() *rest.Config {
	cfg := rest.CopyConfig(env.Admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: envoyGatewayUser, Groups: []string{
		"system:serviceaccounts", "system:serviceaccounts:" + envoyGatewayNamespace, "system:authenticated"}}
	// Envoy Gateway's provider reads extension kinds as unstructured objects, in JSON.
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	return cfg
}

// applyEnvoyGatewayRBAC applies artifacts/envoy-gateway/rbac.yaml (only: the overlay would
// re-apply artifacts/deploy over the e2e environment's ExternalName Service and APIService port).
func applyEnvoyGatewayRBAC(t *testing.T) {
	t.Helper()
	kubectl(t, "apply", "-f", filepath.Join(env.Root, "artifacts", "envoy-gateway", "rbac.yaml"))
	// RBAC changes reach the authorizer's informer asynchronously.
	eventually(t, "the Envoy Gateway ClusterRoleBinding to take effect", func(ctx context.Context) (bool, error) {
		return allowed(ctx, t, "list", "tailscaleendpoints", "")
	})
}

// allowed asks kube-apiserver, as Envoy Gateway, whether it may verb resource of gateway.tailscale.com
// (or of the core group when resource is "secrets") in ns.
func allowed(ctx context.Context, t *testing.T, verb, resource, ns string) (bool, error) {
	t.Helper()
	kube, err := kubernetes.NewForConfig(asEnvoyGateway())
	if err != nil {
		return false, err
	}
	group, sub := "gateway.tailscale.com", ""
	if resource == "secrets" {
		group = ""
	}
	if r, s, ok := strings.Cut(resource, "/"); ok {
		resource, sub = r, s
	}
	review, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Group: group, Resource: resource, Subresource: sub}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return review.Status.Allowed, nil
}

// TestGatewayAPICRDs installs the Gateway API CRDs (v1.6.3, experimental channel) next to our
// aggregated API and checks an HTTPRoute may name our kinds as backendRefs.
func TestGatewayAPICRDs(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"httproute-tailscale-endpoints.yaml", "httproute-tailscale-services.yaml"} {
		path := filepath.Join(env.Root, "artifacts", "envoy-gateway", "examples", name)
		out := kubectl(t, "apply", "-f", path, "--dry-run=server", "-o", "yaml")
		if !strings.Contains(out, "group: gateway.tailscale.com") {
			t.Errorf("%s: the backendRef group did not survive validation:\n%s", name, out)
		}
	}
	if out, err := env.Kubectl(env.AdminKubeconfig, "get", "crd", "httproutes.gateway.networking.k8s.io",
		"-o", "jsonpath={.metadata.annotations.gateway\\.networking\\.k8s\\.io/bundle-version}"); err != nil || out != "v1.6.3" {
		t.Errorf("HTTPRoute CRD bundle version %q (%v), want v1.6.3", out, err)
	}
}

// TestEnvoyGatewayReadsOurKinds reads our kinds as Envoy Gateway's Kubernetes provider does,
// through kube-apiserver and the aggregation layer with the ServiceAccount's RBAC of
// artifacts/envoy-gateway: discovery of the group version (its "CRD exists" check), then
// cluster-wide informers of unstructured objects in JSON (client-go reflectors, which first try a
// streaming watch-list and fall back to LIST+WATCH), and the two protocols one by one.
func TestEnvoyGatewayReadsOurKinds(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	applyEnvoyGatewayRBAC(t)
	ns := newNamespace(t, "eg-read")
	if _, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := viaKube(t).TailscaleServices(ns).Create(ctx(t), objects.Services(ns, "web-svc"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := asEnvoyGateway()

	// Discovery, as crdExists does it: ServerResourcesForGroupVersion must list both kinds.
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := disc.ServerResourcesForGroupVersion("gateway.tailscale.com/v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range list.APIResources {
		kinds = append(kinds, r.Kind)
	}
	for _, k := range []string{"TailscaleEndpoints", "TailscaleServices"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("discovery of gateway.tailscale.com/v1alpha1 lacks %s: %v", k, kinds)
		}
	}

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Informers, all namespaces.
	factory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	epInformer := factory.ForResource(endpointsGVR).Informer()
	svcInformer := factory.ForResource(servicesGVR).Informer()
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	syncCtx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), epInformer.HasSynced, svcInformer.HasSynced) {
		t.Fatal("the informers of TailscaleEndpoints and TailscaleServices did not sync as Envoy Gateway")
	}
	// Envoy Gateway marshals these objects to JSON for its hooks; the extension reads their
	// apiVersion and kind there.
	for informer, want := range map[cache.SharedIndexInformer][2]string{
		epInformer: {ns + "/web", "TailscaleEndpoints"}, svcInformer: {ns + "/web-svc", "TailscaleServices"}} {
		key, kind := want[0], want[1]
		obj, ok, err := informer.GetStore().GetByKey(key)
		if err != nil || !ok {
			t.Fatalf("informer store lacks %s (%v)", key, err)
		}
		u := obj.(*unstructured.Unstructured)
		if u.GetAPIVersion() != "gateway.tailscale.com/v1alpha1" || u.GetKind() != kind || u.Object["spec"] == nil {
			t.Errorf("%s arrived as %v", key, u.Object)
		}
	}
	// A new object reaches the informer (the watch).
	if _, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "db"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the informer to see a new TailscaleEndpoints", func(context.Context) (bool, error) {
		_, ok, err := epInformer.GetStore().GetByKey(ns + "/db")
		return ok, err
	})

	// LIST then WATCH from its resourceVersion, cluster-wide.
	c := ctx(t)
	items, err := dyn.Resource(endpointsGVR).List(c, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range items.Items {
		if it.GetNamespace() == ns {
			names = append(names, it.GetName())
		}
	}
	if slices.Sort(names); !slices.Equal(names, []string{"db", "web"}) {
		t.Errorf("LIST as Envoy Gateway in %s: %v", ns, names)
	}
	w, err := dyn.Resource(endpointsGVR).Watch(c, metav1.ListOptions{ResourceVersion: items.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := viaKube(t).TailscaleEndpoints(ns).Patch(c, "db", types.JSONPatchType, portPatch(15432), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, w, func(ev watch.Event) bool {
		u, ok := ev.Object.(*unstructured.Unstructured)
		return ok && ev.Type == watch.Modified && u.GetName() == "db" && u.GetNamespace() == ns
	})

	// The streaming watch-list client-go reflectors try first: initial ADDED events, then a
	// bookmark annotated k8s.io/initial-events-end.
	wl, err := dyn.Resource(servicesGVR).Namespace(ns).Watch(c, metav1.ListOptions{
		SendInitialEvents: ptrTo(true), AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	if err != nil {
		t.Fatalf("watch-list as Envoy Gateway: %v", err)
	}
	defer wl.Stop()
	var initial []string
	waitEvent(t, wl, func(ev watch.Event) bool {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return false
		}
		if ev.Type == watch.Added {
			initial = append(initial, u.GetName())
		}
		return ev.Type == watch.Bookmark && u.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true"
	})
	if !slices.Equal(initial, []string{"web-svc"}) {
		t.Errorf("watch-list initial events %v, want [web-svc]", initial)
	}
}

func ptrTo[T any](v T) *T { return &v }

// waitEvent reads w until match is true or waitTimeout passes.
func waitEvent(t *testing.T, w watch.Interface, match func(watch.Event) bool) {
	t.Helper()
	timeout := time.After(waitTimeout)
	var seen []string
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed; events seen: %v", seen)
			}
			if st, isStatus := ev.Object.(*metav1.Status); isStatus {
				t.Fatalf("watch error: %s", st.Message)
			}
			seen = append(seen, string(ev.Type))
			if match(ev) {
				return
			}
		case <-timeout:
			t.Fatalf("no matching watch event within %s; events seen: %v", waitTimeout, seen)
		}
	}
}

// TestEnvoyGatewayRBAC checks artifacts/envoy-gateway/rbac.yaml is not broader than Envoy
// Gateway needs: reads of TailscaleEndpoints and TailscaleServices only, every write refused by
// kube-apiserver before it proxies, and no Secrets or other kinds of ours.
func TestEnvoyGatewayRBAC(t *testing.T) {
	applyEnvoyGatewayRBAC(t)
	ns := newNamespace(t, "eg-rbac")
	if _, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		verb, resource, ns string
		want               bool
	}{
		{"get", "tailscaleendpoints", ns, true},
		{"list", "tailscaleendpoints", "", true},
		{"watch", "tailscaleendpoints", "", true},
		{"get", "tailscaleservices", ns, true},
		{"list", "tailscaleservices", "", true},
		{"watch", "tailscaleservices", "", true},
		{"create", "tailscaleendpoints", ns, false},
		{"update", "tailscaleendpoints", ns, false},
		{"patch", "tailscaleendpoints", ns, false},
		{"delete", "tailscaleendpoints", ns, false},
		{"deletecollection", "tailscaleendpoints", ns, false},
		{"update", "tailscaleendpoints/status", ns, false},
		{"create", "tailscaleservices", ns, false},
		{"delete", "tailscaleservices", ns, false},
		{"list", "tailscalegateways", "", false},
		{"list", "tailscaletailnets", "", false},
		{"get", "secrets", "tailscale-gateway-system", false},
		{"list", "secrets", "", false},
	} {
		got, err := allowed(ctx(t), t, tc.verb, tc.resource, tc.ns)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("Envoy Gateway %s %s in %q: allowed %v, want %v", tc.verb, tc.resource, tc.ns, got, tc.want)
		}
	}

	// The real requests through aggregation.
	dyn, err := dynamic.NewForConfig(asEnvoyGateway())
	if err != nil {
		t.Fatal(err)
	}
	c := ctx(t)
	if _, err := dyn.Resource(endpointsGVR).Namespace(ns).Get(c, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("get as Envoy Gateway: %v", err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.tailscale.com/v1alpha1", "kind": "TailscaleEndpoints",
		"metadata": map[string]any{"name": "forbidden", "namespace": ns},
		"spec": map[string]any{"tailnet": "company.ts.net", "endpoints": []any{map[string]any{
			"name": "a", "tailscaleIP": "100.64.0.1", "port": int64(80), "protocol": "HTTP"}}},
	}}
	for what, err := range map[string]error{
		"create": func() error {
			_, err := dyn.Resource(endpointsGVR).Namespace(ns).Create(c, obj, metav1.CreateOptions{})
			return err
		}(),
		"patch": func() error {
			_, err := dyn.Resource(endpointsGVR).Namespace(ns).Patch(c, "web", types.JSONPatchType, portPatch(81), metav1.PatchOptions{})
			return err
		}(),
		"delete": dyn.Resource(endpointsGVR).Namespace(ns).Delete(c, "web", metav1.DeleteOptions{}),
		"secrets": func() error {
			_, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}).List(c, metav1.ListOptions{})
			return err
		}(),
		"gateways": func() error {
			_, err := dyn.Resource(schema.GroupVersionResource{Group: "gateway.tailscale.com", Version: "v1alpha1", Resource: "tailscalegateways"}).List(c, metav1.ListOptions{})
			return err
		}(),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s as Envoy Gateway: %v, want Forbidden", what, err)
		}
	}
	if _, err := viaKube(t).TailscaleEndpoints(ns).Get(c, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("the object is gone after Envoy Gateway's refused delete: %v", err)
	}
}

// TestEnvoyGatewayArtifacts renders the overlay of artifacts/envoy-gateway and has kube-apiserver
// validate it in a server-side dry run.
func TestEnvoyGatewayArtifacts(t *testing.T) {
	dir := filepath.Join(env.Root, "artifacts", "envoy-gateway")
	out := kubectl(t, "kustomize", dir)
	for _, want := range []string{"name: tailscale-gateway-envoy-gateway", "port: 5005", "port: 18001",
		"namespace: " + envoyGatewayNamespace, "name: tailscale-gateway-apiserver"} {
		if !strings.Contains(out, want) {
			t.Errorf("artifacts/envoy-gateway lacks %q", want)
		}
	}
	out = kubectl(t, "apply", "--dry-run=server", "-k", dir)
	for _, want := range []string{"clusterrole.rbac.authorization.k8s.io/tailscale-gateway-envoy-gateway",
		"clusterrolebinding.rbac.authorization.k8s.io/tailscale-gateway-envoy-gateway"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %s:\n%s", want, out)
		}
	}
}
