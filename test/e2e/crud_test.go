package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// object is a pointer to a v1alpha1 kind.
type object interface {
	runtime.Object
	metav1.Object
}

// typedClient is what the generated clientset offers for every kind.
type typedClient[T object, L runtime.Object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	List(context.Context, metav1.ListOptions) (L, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (T, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

// crud creates, reads, lists, updates, patches the status of and deletes obj through
// kube-apiserver. change makes a spec change; items counts a list.
func crud[T object, L runtime.Object](t *testing.T, c typedClient[T, L], obj T, change func(T), items func(L) int) {
	t.Helper()
	created, err := c.Create(ctx(t), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if created.GetGeneration() != 1 || created.GetUID() == "" || created.GetResourceVersion() == "" {
		t.Fatalf("create returned generation %d uid %q rv %q", created.GetGeneration(), created.GetUID(), created.GetResourceVersion())
	}
	// The server's status writer may update the status meanwhile: read, change, write, retry.
	var updated T
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got, err := c.Get(ctx(t), obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(got)
		updated, err = c.Update(ctx(t), got, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("get and update: %v", err)
	}
	if updated.GetGeneration() != 2 {
		t.Fatalf("generation after a spec change = %d, want 2", updated.GetGeneration())
	}
	list, err := c.List(ctx(t), metav1.ListOptions{FieldSelector: "metadata.name=" + obj.GetName()})
	if err != nil || items(list) != 1 {
		t.Fatalf("list: %d items, %v", items(list), err)
	}
	status := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"E2E","message":"set by the e2e suite","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":%d}]}}`, updated.GetGeneration())
	patched, err := c.Patch(ctx(t), obj.GetName(), types.MergePatchType, []byte(status), metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("patch status: %v", err)
	}
	if patched.GetGeneration() != 2 {
		t.Fatalf("generation after a status change = %d, want 2", patched.GetGeneration())
	}
	labels, err := c.Patch(ctx(t), obj.GetName(), types.MergePatchType, []byte(`{"metadata":{"labels":{"e2e":"patched"}}}`), metav1.PatchOptions{})
	if err != nil || labels.GetLabels()["e2e"] != "patched" {
		t.Fatalf("patch labels: %v (labels %v)", err, labels.GetLabels())
	}
	if err := c.Delete(ctx(t), obj.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Get(ctx(t), obj.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
}

// TestCRUDEveryKind drives every kind with the generated clientset through kube-apiserver.
func TestCRUDEveryKind(t *testing.T) {
	ns := newNamespace(t, "crud")
	c := viaKube(t)
	t.Run("TailscaleTailnet", func(t *testing.T) {
		crud(t, c.TailscaleTailnets(), objects.Tailnet("e2e-crud"),
			func(o *v1alpha1.TailscaleTailnet) { o.Spec.Tags = append(o.Spec.Tags, "tag:updated") },
			func(l *v1alpha1.TailscaleTailnetList) int { return len(l.Items) })
	})
	t.Run("TailscaleEndpoints", func(t *testing.T) {
		crud(t, c.TailscaleEndpoints(ns), objects.Endpoints(ns, "web"),
			func(o *v1alpha1.TailscaleEndpoints) { o.Spec.Endpoints[0].Port = 8081 },
			func(l *v1alpha1.TailscaleEndpointsList) int { return len(l.Items) })
	})
	t.Run("TailscaleServices", func(t *testing.T) {
		crud(t, c.TailscaleServices(ns), objects.Services(ns, "web"),
			func(o *v1alpha1.TailscaleServices) { o.Spec.VIPService.Comment = "updated" },
			func(l *v1alpha1.TailscaleServicesList) int { return len(l.Items) })
	})
	t.Run("TailscaleGateway", func(t *testing.T) {
		crud(t, c.TailscaleGateways(ns), objects.Gateway(ns, "gw"),
			func(o *v1alpha1.TailscaleGateway) { o.Spec.Tailnets[0].Priority = ptr.To(int32(7)) },
			func(l *v1alpha1.TailscaleGatewayList) int { return len(l.Items) })
	})
}

// TestValidationErrorsPassThrough checks that kube-apiserver relays the server's 422 with every
// field error.
func TestValidationErrorsPassThrough(t *testing.T) {
	ns := newNamespace(t, "invalid")
	bad := objects.Endpoints(ns, "bad")
	bad.Spec.Endpoints[0].Port = 0
	bad.Spec.Endpoints[1].TailscaleIP = "10.0.0.1"
	_, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("create of an invalid object: %v, want 422 Invalid", err)
	}
	for _, want := range []string{"spec.endpoints[0].port", "spec.endpoints[1].tailscaleIP"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s: %v", want, err)
		}
	}
}

// TestExamplesApplyThroughKubeAPIServer applies examples/ with kubectl through the aggregation
// layer, as a newcomer following docs/install.md in a cluster would.
func TestExamplesApplyThroughKubeAPIServer(t *testing.T) {
	for _, ns := range []string{"production"} {
		kubectl(t, "create", "namespace", ns)
		t.Cleanup(func() { _, _ = env.Kubectl(env.AdminKubeconfig, "delete", "namespace", ns, "--wait=false") })
	}
	t.Cleanup(func() { _, _ = env.Kubectl(env.AdminKubeconfig, "delete", "-f", env.Root+"/examples", "--wait=false") })
	kubectl(t, "apply", "-f", env.Root+"/examples")
	out := kubectl(t, "get", "tailscale", "-A", "--no-headers")
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n < 10 {
		t.Fatalf("kubectl get tailscale -A shows %d objects after applying examples/:\n%s", n, out)
	}

	// The contract's Gateway API objects, to kube-apiserver's Gateway API CRDs (strict field
	// validation, kubectl's default: an unknown field fails the apply).
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	dir := env.Root + "/examples/gateway-api"
	t.Cleanup(func() { _, _ = env.Kubectl(env.AdminKubeconfig, "delete", "-f", dir, "--wait=false") })
	out = kubectl(t, "apply", "-f", dir)
	for _, want := range []string{"gateway.gateway.networking.k8s.io/main-gateway", "httproute.gateway.networking.k8s.io/api-route",
		"tcproute.gateway.networking.k8s.io/database-route", "httproute.gateway.networking.k8s.io/web-route"} {
		if !strings.Contains(out, want+" created") && !strings.Contains(out, want+" unchanged") && !strings.Contains(out, want+" configured") {
			t.Errorf("kubectl apply -f examples/gateway-api did not apply %s:\n%s", want, out)
		}
	}
	out = kubectl(t, "get", "httproute", "api-route", "-n", "default", "-o", "jsonpath={.spec.rules[0].backendRefs[0].kind}")
	if out != "TailscaleEndpoints" {
		t.Errorf("stored api-route's backendRef kind %q, want TailscaleEndpoints", out)
	}
}
