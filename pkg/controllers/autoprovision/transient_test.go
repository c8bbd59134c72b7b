package autoprovision

import (
	"context"
	"sync"
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

// Finding 5 of the security review, for auto-provisioned endpoints (and the proxy deployed for
// them): unknown namespace labels (informer not synced) delete nothing; a tailnet refusing the
// namespace, once known, does.
func TestSecurityUnknownNamespaceKeepsProvisionedEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fake.NewSimpleClientset(&v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "sim", ResourceVersion: "1"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "sim.ts.net", AllowedNamespaces: &v1alpha1.AllowedNamespaces{
			From: v1alpha1.NamespacesFromSelector, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}}})
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", UID: "u1"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "sim", Labels: map[string]string{"app": "web"}}}}
	if _, err := client.GatewayV1alpha1().TailscaleServices("app").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	var mu sync.Mutex
	nsLabels, nsKnown := labels.Set{"team": "a"}, true
	set := func(l labels.Set, known bool) { mu.Lock(); nsLabels, nsKnown = l, known; mu.Unlock() }
	policy := tenancy.New(factory.Gateway().V1alpha1().TailscaleTailnets().Lister(), tenancy.NamespacesFunc(func(string) (labels.Set, bool) {
		mu.Lock()
		defer mu.Unlock()
		return nsLabels, nsKnown
	}), tenancy.ExternalServices{})
	c, err := New(client, factory, record.NewFakeRecorder(100), policy)
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	exists := func() bool {
		_, err := client.GatewayV1alpha1().TailscaleEndpoints("app").Get(ctx, "web"+Suffix, metav1.GetOptions{})
		return err == nil
	}
	until := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			_ = c.sync(ctx, "app/web")
			_, inCache := c.eps.TailscaleEndpoints("app").Get("web" + Suffix)
			return cond() && (inCache == nil) == exists(), nil
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	until("provisioned", exists)

	set(nil, false)
	var errs int
	for range 5 {
		if err := c.sync(ctx, "app/web"); err != nil {
			errs++ // retried: decided once the labels are known
		}
		if !exists() {
			t.Fatal("the provisioned TailscaleEndpoints was deleted while the namespace's labels were unknown")
		}
	}
	if errs != 5 {
		t.Fatalf("%d of 5 syncs with unknown namespace labels asked to be retried", errs)
	}

	set(labels.Set{"team": "b"}, true)
	until("deleted once refused", func() bool { return !exists() })
}
