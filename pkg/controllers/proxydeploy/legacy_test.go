package proxydeploy

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
)

// The upgrade from proxies in the tenant's namespace: the old StatefulSet stops first, the
// node state moves into the new (empty) state Secret, then the old objects go, their keys
// revoked and no device deleted (the node lives on); what is not ours (no managed-by label or
// no ownerReference to the object) stays.
func TestLegacyProxyObjectsAreMigrated(t *testing.T) {
	obj := testEndpoints(Egress, 1)
	old := LegacyNamesOf(obj.Name)
	legacyMeta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: obj.Namespace, Name: name, Labels: map[string]string{ManagedByLabel: ManagedBy},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(obj, v1alpha1.SchemeGroupVersion.WithKind("TailscaleEndpoints"))}}
	}
	state := map[string][]byte{"_machinekey": []byte("m"), kubestate.NodeIDKey: []byte("nOLD")}
	keyMeta := legacyMeta(old.AuthKeySecret(0))
	keyMeta.Annotations = map[string]string{AuthKeyIDAnnotation: "kOLD"}
	notOurs := legacyMeta(old.Base)
	notOurs.Labels = nil
	kube := fake.NewClientset(
		&appsv1.StatefulSet{ObjectMeta: legacyMeta(old.Base)},
		&corev1.Secret{ObjectMeta: legacyMeta(old.StateSecret(0)), Data: state},
		&corev1.Secret{ObjectMeta: keyMeta, Data: map[string][]byte{AuthKeyKey: []byte("tskey-old")}},
		&rbacv1.Role{ObjectMeta: legacyMeta(old.Base), Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"},
			ResourceNames: []string{old.StateSecret(0), old.AuthKeySecret(0)}, Verbs: []string{"get"}}}},
		&corev1.ServiceAccount{ObjectMeta: legacyMeta(old.Base)},
		&corev1.Service{ObjectMeta: notOurs},
		StateSecret(installNS, obj, 0),
	)
	api := &deviceAPI{}
	c := &Controller{kube: kube, opts: Options{Config: Config{Namespace: installNS}, MigrateLegacy: true,
		Tailnets: oneTailnet{api}, Recorder: record.NewFakeRecorder(10)}}
	ctx := context.Background()

	if err := c.migrateState(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.AppsV1().StatefulSets(obj.Namespace).Get(ctx, old.Base, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the old StatefulSet: %v, want deleted", err)
	}
	moved, err := kube.CoreV1().Secrets(installNS).Get(ctx, NamesFor(obj.Namespace, obj.Name).StateSecret(0), metav1.GetOptions{})
	if err != nil || string(moved.Data[kubestate.NodeIDKey]) != "nOLD" || string(moved.Data["_machinekey"]) != "m" {
		t.Fatalf("the new state Secret: %v %v, want the old node state", moved.Data, err)
	}
	if err := c.removeLegacy(ctx, obj); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{old.StateSecret(0), old.AuthKeySecret(0)} {
		if _, err := kube.CoreV1().Secrets(obj.Namespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("old Secret %s: %v, want deleted", name, err)
		}
	}
	if _, err := kube.RbacV1().Roles(obj.Namespace).Get(ctx, old.Base, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("old Role: %v, want deleted", err)
	}
	if _, err := kube.CoreV1().ServiceAccounts(obj.Namespace).Get(ctx, old.Base, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("old ServiceAccount: %v, want deleted", err)
	}
	if _, err := kube.CoreV1().Services(obj.Namespace).Get(ctx, old.Base, metav1.GetOptions{}); err != nil {
		t.Errorf("a Service without our label was deleted: %v", err)
	}
	if len(api.revoked) != 1 || api.revoked[0] != "kOLD" || len(api.deleted) != 0 {
		t.Errorf("revoked %v, devices deleted %v: want kOLD revoked and no device deleted", api.revoked, api.deleted)
	}
	// Without the option nothing outside the installation's namespace is read.
	c.opts.MigrateLegacy = false
	kube.ClearActions()
	if err := errors.Join(c.migrateState(ctx, obj), c.removeLegacy(ctx, obj)); err != nil || len(kube.Actions()) != 0 {
		t.Fatalf("without MigrateLegacy: %v, actions %v", err, kube.Actions())
	}
}
