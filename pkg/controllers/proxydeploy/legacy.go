package proxydeploy

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Earlier versions kept a proxy's objects in its TailscaleEndpoints' own namespace, named by
// LegacyNamesOf, controlled (ownerReference) by it and labelled ManagedByLabel. With
// Options.MigrateLegacy the controller moves them: the legacy StatefulSet is deleted first (its
// pods stop), the node state of each replica is copied into the new state Secret while that is
// still empty (the replica keeps its node, and needs no key), and once the new objects are in
// place the rest goes, the keys the legacy Secrets record revoked. Objects are found by name,
// never listed, and only those controlled by the object and carrying our label are touched.
// Legacy objects of TailscaleEndpoints deleted before the upgrade went with them (Kubernetes'
// garbage collector follows their ownerReferences).

// legacyOurs reports whether m is an object an earlier version kept for obj.
func legacyOurs(m metav1.Object, obj *v1alpha1.TailscaleEndpoints) bool {
	return metav1.IsControlledBy(m, obj) && m.GetLabels()[ManagedByLabel] == ManagedBy
}

// legacySecret returns obj's legacy Secret name, nil when there is none of ours.
func (c *Controller) legacySecret(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, name string) (*corev1.Secret, error) {
	s, err := c.kube.CoreV1().Secrets(obj.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading legacy Secret %s/%s: %w", obj.Namespace, name, err)
	}
	if !legacyOurs(s, obj) {
		return nil, nil
	}
	return s, nil
}

// migrateState stops obj's legacy StatefulSet and copies the node state of its replicas into
// the new state Secrets that hold none yet.
func (c *Controller) migrateState(ctx context.Context, obj *v1alpha1.TailscaleEndpoints) error {
	if !c.opts.MigrateLegacy {
		return nil
	}
	old := LegacyNamesOf(obj.Name)
	sts := c.kube.AppsV1().StatefulSets(obj.Namespace)
	cur, err := sts.Get(ctx, old.Base, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading legacy StatefulSet %s/%s: %w", obj.Namespace, old.Base, err)
	case legacyOurs(cur, obj):
		uid := cur.UID
		if err := sts.Delete(ctx, old.Base, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting legacy StatefulSet %s/%s: %w", obj.Namespace, old.Base, err)
		}
	}
	n := NamesFor(obj.Namespace, obj.Name)
	secrets := c.kube.CoreV1().Secrets(c.opts.Namespace)
	for i := range Replicas(obj) {
		from, err := c.legacySecret(ctx, obj, old.StateSecret(i))
		if err != nil {
			return err
		}
		if from == nil || len(from.Data) == 0 {
			continue
		}
		to, err := secrets.Get(ctx, n.StateSecret(i), metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading Secret %s: %w", n.StateSecret(i), err)
		}
		if !IsKeptFor(to, obj) || len(to.Data) > 0 {
			continue
		}
		to = to.DeepCopy()
		to.Data = from.Data
		if _, err := secrets.Update(ctx, to, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("copying the node state of %s/%s into %s: %w", obj.Namespace, from.Name, to.Name, err)
		}
		klog.FromContext(ctx).Info("Copied a proxy replica's node state from its earlier namespace",
			"endpoints", klog.KObj(obj), "replica", i, "from", from.Name, "to", klog.KObj(to))
	}
	return nil
}

// removeLegacy deletes what an earlier version kept for obj in obj's namespace: the Secrets
// its Role names and the shared key Secret (their keys revoked), then the other objects.
func (c *Controller) removeLegacy(ctx context.Context, obj *v1alpha1.TailscaleEndpoints) error {
	if !c.opts.MigrateLegacy {
		return nil
	}
	old := LegacyNamesOf(obj.Name)
	core, rbac := c.kube.CoreV1(), c.kube.RbacV1()
	ns := obj.Namespace
	names := []string{old.SharedAuthKey}
	role, err := rbac.Roles(ns).Get(ctx, old.Base, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading legacy Role %s/%s: %w", ns, old.Base, err)
	}
	if err == nil && legacyOurs(role, obj) {
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "secrets") {
				names = append(names, r.ResourceNames...)
			}
		}
	}
	for _, name := range names {
		s, err := c.legacySecret(ctx, obj, name)
		if err != nil {
			return err
		}
		if s == nil {
			continue
		}
		c.revokeRecorded(ctx, obj, s, "its legacy Secret is deleted")
		if err := deleteLegacy(ctx, s, core.Secrets(ns).Delete); err != nil {
			return err
		}
	}
	var errs []error
	for _, kind := range []struct {
		get func(context.Context, string, metav1.GetOptions) (metav1.Object, error)
		del func(context.Context, string, metav1.DeleteOptions) error
	}{
		{asGet(c.kube.AppsV1().StatefulSets(ns).Get), c.kube.AppsV1().StatefulSets(ns).Delete},
		{asGet(c.kube.PolicyV1().PodDisruptionBudgets(ns).Get), c.kube.PolicyV1().PodDisruptionBudgets(ns).Delete},
		{asGet(c.kube.NetworkingV1().NetworkPolicies(ns).Get), c.kube.NetworkingV1().NetworkPolicies(ns).Delete},
		{asGet(core.Services(ns).Get), core.Services(ns).Delete},
		{asGet(rbac.RoleBindings(ns).Get), rbac.RoleBindings(ns).Delete},
		{asGet(rbac.Roles(ns).Get), rbac.Roles(ns).Delete},
		{asGet(core.ServiceAccounts(ns).Get), core.ServiceAccounts(ns).Delete},
	} {
		m, err := kind.get(ctx, old.Base, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reading legacy %s/%s: %w", ns, old.Base, err))
			continue
		}
		if legacyOurs(m, obj) {
			errs = append(errs, deleteLegacy(ctx, m, kind.del))
		}
	}
	return errors.Join(errs...)
}

// asGet adapts a typed client's Get.
func asGet[T metav1.Object](get func(context.Context, string, metav1.GetOptions) (T, error)) func(context.Context, string, metav1.GetOptions) (metav1.Object, error) {
	return func(ctx context.Context, name string, o metav1.GetOptions) (metav1.Object, error) {
		return get(ctx, name, o)
	}
}

// deleteLegacy deletes m (this very object: UID precondition).
func deleteLegacy(ctx context.Context, m metav1.Object, del func(context.Context, string, metav1.DeleteOptions) error) error {
	uid := m.GetUID()
	if err := del(ctx, m.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil &&
		!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting legacy %s/%s: %w", m.GetNamespace(), m.GetName(), err)
	}
	return nil
}
