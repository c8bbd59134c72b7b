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

func stateSecret(ns, name, nodeID string, owner *v1alpha1.TailscaleEndpoints, labelled bool) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{kubestate.NodeIDKey: []byte(nodeID)}}
	if labelled {
		s.Labels = map[string]string{proxydeploy.ManagedByLabel: proxydeploy.ManagedBy}
	}
	if owner != nil {
		s.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, v1alpha1.SchemeGroupVersion.WithKind("TailscaleEndpoints"))}
	}
	return s
}

// Only a state Secret controlled by an existing TailscaleEndpoints makes a device ours: a copied
// label, or an owner reference to a TailscaleEndpoints of another UID, does not. A Ready pod is
// ready, an unready or deleted one is not, and a deleted one stays known as ours.
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
	kube := kubefake.NewSimpleClientset(
		pod("vip", "web-proxy-0", true), stateSecret("vip", "web-proxy-0", "nOurs", web, true),
		pod("vip", "web-proxy-1", false), stateSecret("vip", "web-proxy-1", "nUnready", web, true),
		pod("vip", "copied-label", true), stateSecret("vip", "copied-label", "nLabelOnly", nil, true),
		pod("vip", "wrong-uid", true), stateSecret("vip", "wrong-uid", "nWrongUID", impostor, true),
		pod("vip", "no-label", true), stateSecret("vip", "no-label", "nNoLabel", web, false),
	)
	f := informers.NewSharedInformerFactory(gw, 0)
	s, err := New(kube, f.Gateway().V1alpha1().TailscaleEndpoints().Lister(), f.Gateway().V1alpha1().TailscaleServices().Lister(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	s.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.HasSynced) {
		t.Fatal("pods not synced")
	}
	for _, id := range []string{"nLabelOnly", "nWrongUID", "nNoLabel", "nUnknown"} {
		if h, ok := s.Lookup(ctx, id); ok {
			t.Errorf("%s counted as ours: %+v", id, h)
		}
	}
	h, ok := s.Lookup(ctx, "nOurs")
	if !ok || !h.Ready || h.Pod != "vip/web-proxy-0" || !slices.Equal(h.Services, []string{"front"}) {
		t.Errorf("nOurs = %+v, %v; want the Ready web-proxy-0 hosting front", h, ok)
	}
	if h, ok := s.Lookup(ctx, "nUnready"); !ok || h.Ready || h.Reason != "its pod is not Ready" {
		t.Errorf("nUnready = %+v, %v", h, ok)
	}

	gen := s.Generation()
	if err := kube.CoreV1().Pods("vip").Delete(ctx, "web-proxy-0", metav1.DeleteOptions{}); err != nil {
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
