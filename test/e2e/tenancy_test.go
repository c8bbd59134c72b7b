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
	"k8s.io/apimachinery/pkg/types"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// TestTenancyNamespaceLabels checks spec.allowedNamespaces in cluster mode, where namespace labels
// come from the core API: admission through kube-apiserver refuses a namespace the selector does
// not match with a 422 naming spec.tailnet, and relabelling an admitted namespace turns its
// objects' Accepted condition False and back.
func TestTenancyNamespaceLabels(t *testing.T) {
	c := viaKube(t)
	tn := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "tenancy-e2e"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "tenancy-e2e.ts.net", AllowedNamespaces: &v1alpha1.AllowedNamespaces{
			From: v1alpha1.NamespacesFromSelector, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenancy-e2e": "yes"}}}}}
	if _, err := c.TailscaleTailnets().Create(ctx(t), tn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.TailscaleTailnets().Delete(context.Background(), tn.Name, metav1.DeleteOptions{}) })

	other := newNamespace(t, "tenancy-other")
	eps := objects.Endpoints(other, "web")
	eps.Spec.Tailnet = tn.Name
	_, err := c.TailscaleEndpoints(other).Create(ctx(t), eps, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.tailnet") || !strings.Contains(err.Error(), "does not admit namespace "+other) {
		t.Fatalf("create in a namespace the tailnet does not admit: %v, want 422 on spec.tailnet", err)
	}

	// Labelled at creation: admission reads it from the core API even before its informer has it.
	ns, err := env.Kube.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "tenancy-team-", Labels: map[string]string{"tenancy-e2e": "yes"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	eps = objects.Endpoints(ns.Name, "web")
	eps.Spec.Tailnet = tn.Name
	if _, err := c.TailscaleEndpoints(ns.Name).Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create in an admitted namespace: %v", err)
	}
	// accepted waits for the condition in a version other than notVersion: a new resourceVersion
	// is the status writer's write (what the EDS and the proxy follow), not only the overlay of
	// reads.
	accepted := func(status metav1.ConditionStatus, reason, notVersion string) string {
		t.Helper()
		var version string
		eventually(t, fmt.Sprintf("Accepted=%s (%s) persisted", status, reason), func(ctx context.Context) (bool, error) {
			o, err := c.TailscaleEndpoints(ns.Name).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			version = o.ResourceVersion
			a := meta.FindStatusCondition(o.Status.Conditions, tenancy.ConditionAccepted)
			return a != nil && a.Status == status && a.Reason == reason && version != notVersion, nil
		})
		return version
	}
	v := accepted(metav1.ConditionTrue, tenancy.ReasonAccepted, "")

	relabel := func(value string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{"tenancy-e2e":%q}}}`, value)
		if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx(t), ns.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	relabel("no")
	v = accepted(metav1.ConditionFalse, tenancy.ReasonNotAllowedByTailnet, v)
	relabel("yes")
	accepted(metav1.ConditionTrue, tenancy.ReasonAccepted, v)
}
