package proxyhosts

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
)

func pod(ns, name string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("pod-" + name), ResourceVersion: "1",
		Labels: map[string]string{"app.kubernetes.io/name": "tailscale-gateway-proxy"}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
}

// stateSecret is a state Secret kept for owner (its parent labels) or, with owner nil, one with
// only the managed-by label.
func stateSecret(ns, name, nodeID string, owner *v1alpha1.TailscaleEndpoints) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{kubestate.NodeIDKey: []byte(nodeID)}}
	s.Labels = map[string]string{proxydeploy.ManagedByLabel: proxydeploy.ManagedBy}
	if owner != nil {
		s.Labels = proxydeploy.ParentLabels(owner.Namespace, owner.Name, owner.UID)
	}
	return s
}

// Only a state Secret in the installation's namespace whose labels name an existing
// TailscaleEndpoints with its UID makes a device ours: the managed-by label alone, labels naming
// another UID, or a pod and Secret in a tenant's namespace do not. A Ready pod is ready, an
// unready or deleted one is not, and a deleted one stays known as ours.
func TestSecurityOnlyOurStateSecretsMakeHosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	web := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "web", UID: "web-uid", Labels: map[string]string{"app": "web"}}}
	impostor := web.DeepCopy()
	impostor.UID = "another-uid"
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "front"}, Spec: v1alpha1.TailscaleServicesSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:front"}}}
	gw := fake.NewSimpleClientset()
	if _, err := gw.GatewayV1alpha1().TailscaleEndpoints("vip").Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.GatewayV1alpha1().TailscaleServices("vip").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const system = "tailscale-gateway-system"
	kube := kubefake.NewSimpleClientset(
		pod(system, "web-proxy-0", true), stateSecret(system, "web-proxy-0", "nOurs", web),
		pod(system, "web-proxy-1", false), stateSecret(system, "web-proxy-1", "nUnready", web),
		pod(system, "copied-label", true), stateSecret(system, "copied-label", "nLabelOnly", nil),
		pod(system, "wrong-uid", true), stateSecret(system, "wrong-uid", "nWrongUID", impostor),
		// A tenant's pod and Secret, labelled exactly like ours, in the tenant's namespace.
		pod("vip", "tenant-made", true), stateSecret("vip", "tenant-made", "nTenant", web),
	)
	f := informers.NewSharedInformerFactory(gw, 0)
	s, err := New(kube, system, f.Gateway().V1alpha1().TailscaleEndpoints().Lister(), f.Gateway().V1alpha1().TailscaleServices().Lister(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	s.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.HasSynced) {
		t.Fatal("pods not synced")
	}
	for _, id := range []string{"nLabelOnly", "nWrongUID", "nTenant", "nUnknown"} {
		if h, ok := s.Lookup(ctx, id); ok {
			t.Errorf("%s counted as ours: %+v", id, h)
		}
	}
	h, ok := s.Lookup(ctx, "nOurs")
	if !ok || !h.Ready || h.Pod != system+"/web-proxy-0" || h.Namespace != "vip" || !slices.Equal(h.Services, []string{"front"}) {
		t.Errorf("nOurs = %+v, %v; want the Ready web-proxy-0 hosting front", h, ok)
	}
	if h, ok := s.Lookup(ctx, "nUnready"); !ok || h.Ready || h.Reason != "its pod is not Ready" {
		t.Errorf("nUnready = %+v, %v", h, ok)
	}

	gen := s.Generation()
	if err := kube.CoreV1().Pods(system).Delete(ctx, "web-proxy-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for s.Generation() == gen {
		select {
		case <-ctx.Done():
			t.Fatal("the deletion was not seen")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if h, ok := s.Lookup(ctx, "nOurs"); !ok || h.Ready || h.Reason != "its pod is gone" {
		t.Errorf("after its pod was deleted, nOurs = %+v, %v", h, ok)
	}
}
