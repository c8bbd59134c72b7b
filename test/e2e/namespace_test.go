package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// holdFinalizer keeps a deleted namespace in Terminating until the test removes it.
const holdFinalizer = "e2e.tailscale.com/hold"

// TestNamespaceLifecycle checks the server's NamespaceLifecycle admission (kube-apiserver does not
// admit requests it proxies): no objects in a missing namespace, none in a terminating one; and
// the namespace controller deleting a namespace's objects through the aggregated API.
func TestNamespaceLifecycle(t *testing.T) {
	c := viaKube(t)
	_, err := c.TailscaleEndpoints("no-such-namespace").Create(ctx(t), objects.Endpoints("no-such-namespace", "web"), metav1.CreateOptions{})
	if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `namespaces "no-such-namespace" not found`) {
		t.Fatalf("create in a missing namespace: %v, want 404 for the namespace", err)
	}

	ns, err := env.Kube.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "lifecycle-", Finalizers: []string{holdFinalizer},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := ns.Name
	release := func() {
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		_, err := env.Kube.CoreV1().Namespaces().Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("releasing namespace %s: %v", name, err)
		}
	}
	t.Cleanup(release)
	for _, n := range []string{"a", "b"} {
		if _, err := c.TailscaleEndpoints(name).Create(ctx(t), objects.Endpoints(name, n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Kube.CoreV1().Namespaces().Delete(ctx(t), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The server learns of the deletion from its namespace informer; from then on it refuses.
	attempt := 0
	eventually(t, "creates in the terminating namespace to be refused", func(ctx context.Context) (bool, error) {
		attempt++
		_, err := c.TailscaleEndpoints(name).Create(ctx, objects.Endpoints(name, fmt.Sprintf("late-%d", attempt)), metav1.CreateOptions{})
		if err == nil {
			return false, nil
		}
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "because it is being terminated") {
			return false, fmt.Errorf("create in a terminating namespace: %w", err)
		}
		return true, nil
	})
	// kube-controller-manager's namespace controller empties the namespace through kube-apiserver
	// and the aggregated API.
	eventually(t, "the namespace controller to delete the namespace's TailscaleEndpoints", func(ctx context.Context) (bool, error) {
		l, err := c.TailscaleEndpoints(name).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0, nil
	})

	release()
	eventually(t, "the namespace to be gone", func(ctx context.Context) (bool, error) {
		_, err := env.Kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	eventually(t, "creates in the deleted namespace to be refused with 404", func(ctx context.Context) (bool, error) {
		_, err := c.TailscaleEndpoints(name).Create(ctx, objects.Endpoints(name, "gone"), metav1.CreateOptions{})
		if err == nil {
			return false, fmt.Errorf("created an object in deleted namespace %s", name)
		}
		return apierrors.IsNotFound(err), nil
	})
}
