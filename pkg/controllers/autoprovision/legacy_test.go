package autoprovision

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// A TailscaleEndpoints an earlier version provisioned carries only LegacyAnnotation: it is still
// recognised as ours (kept, not reported as a taken name, not replaced) and moves to Annotation.
func TestLegacyAnnotationStillRecognised(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", UID: "u1"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "sim", Labels: map[string]string{"app": "web"}}}}
	old := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web" + Suffix, UID: "old-uid",
		Labels:      map[string]string{"app": "web"},
		Annotations: map[string]string{LegacyAnnotation: "true"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "TailscaleServices",
			Name: "web", UID: "u1", Controller: ptr(true)}}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim"}}
	if !IsAutoProvisioned(old) {
		t.Fatal("the legacy annotation is not recognised")
	}
	client := fake.NewSimpleClientset(&v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "sim"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "sim.ts.net"}}, old)
	// Created, not given to the fake: it would guess the resource "tailscaleserviceses".
	if _, err := client.GatewayV1alpha1().TailscaleServices("app").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	policy := tenancy.New(factory.Gateway().V1alpha1().TailscaleTailnets().Lister(),
		tenancy.NamespacesFunc(func(string) (labels.Set, bool) { return labels.Set{}, true }), tenancy.ExternalServices{})
	rec := record.NewFakeRecorder(100)
	c, err := New(client, factory, rec, policy)
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	var got *v1alpha1.TailscaleEndpoints
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		if err := c.sync(ctx, "app/web"); err != nil {
			return false, nil
		}
		got, err = client.GatewayV1alpha1().TailscaleEndpoints("app").Get(ctx, "web"+Suffix, metav1.GetOptions{})
		return err == nil && got.Annotations[Annotation] == "true", nil
	}); err != nil {
		t.Fatalf("the legacy object never took %s: %+v", Annotation, got)
	}
	if got.UID != "old-uid" {
		t.Fatalf("the legacy object was replaced (uid %s)", got.UID)
	}
	if _, ok := got.Annotations[LegacyAnnotation]; ok {
		t.Errorf("%s kept: %v", LegacyAnnotation, got.Annotations)
	}
	close(rec.Events)
	for e := range rec.Events {
		if strings.Contains(e, ReasonNameTaken) || strings.Contains(e, ReasonDeprovisioned) {
			t.Errorf("event %q for an object the controller provisioned", e)
		}
	}
}
