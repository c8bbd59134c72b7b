package vipservice

import (
	"context"
	"net/http"
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
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// memoryAPI holds Services in memory and counts deletions; other API methods are not called.
type memoryAPI struct {
	tailnet.API
	mu      sync.Mutex
	svcs    map[string]tailnet.Service
	deletes int
}

func (a *memoryAPI) Service(_ context.Context, name string) (tailnet.Service, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.svcs[name]
	if !ok {
		return tailnet.Service{}, &tailnet.Error{StatusCode: http.StatusNotFound}
	}
	return s, nil
}

func (a *memoryAPI) CreateOrUpdateService(_ context.Context, s tailnet.Service) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.Addrs == nil {
		s.Addrs = []string{"100.100.0.1"}
	}
	a.svcs[s.Name] = s
	return nil
}

func (a *memoryAPI) DeleteService(_ context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.svcs, name)
	a.deletes++
	return nil
}

type oneTailnet struct{ api *memoryAPI }

func (o oneTailnet) Resolve(ref string) (string, bool)                   { return "sim", ref == "sim" }
func (o oneTailnet) Snapshot(string) (tailnet.Snapshot, bool)            { return tailnet.Snapshot{}, false }
func (o oneTailnet) API(string) (tailnet.API, bool)                      { return o.api, true }
func (o oneTailnet) Subscribe(func(tailnet.Change)) (unsubscribe func()) { return func() {} }

// Finding 5: a namespace whose labels are not known (its informer not synced yet) never
// releases a Service; a tailnet refusing the namespace, once known, does.
func TestSecurityUnknownNamespaceNeverDeletes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "sim", ResourceVersion: "1"}, Spec: v1alpha1.TailscaleTailnetSpec{
		Tailnet: "sim.ts.net", AllowedNamespaces: &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}}}
	obj := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "web", UID: "u1"},
		Spec: v1alpha1.TailscaleServicesSpec{VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:web", Ports: []string{"tcp:80"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "sim"}}}
	client := fake.NewSimpleClientset(tn)
	// Created through the typed client: the tracker would guess the resource of a seeded
	// TailscaleServices wrong (tailscaleserviceses).
	if _, err := client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)

	var mu sync.Mutex
	nsLabels, nsKnown := labels.Set{"team": "a"}, true
	setNamespace := func(set labels.Set, known bool) { mu.Lock(); nsLabels, nsKnown = set, known; mu.Unlock() }
	policy := tenancy.New(factory.Gateway().V1alpha1().TailscaleTailnets().Lister(), tenancy.NamespacesFunc(func(string) (labels.Set, bool) {
		mu.Lock()
		defer mu.Unlock()
		return nsLabels, nsKnown
	}), tenancy.ExternalServices{})
	api := &memoryAPI{svcs: map[string]tailnet.Service{}}
	c, err := New(client, factory, Options{OperatorID: "op", Tailnets: oneTailnet{api}, Recorder: record.NewFakeRecorder(100), Tenancy: policy})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	// sync reconciles, then waits until the informer holds what it wrote.
	sync := func(cond func(*v1alpha1.TailscaleServices) bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			if err := c.sync(ctx, "vip/web"); err != nil {
				t.Logf("sync: %v", err)
			}
			o, err := c.services.TailscaleServices("vip").Get("web")
			return err == nil && cond(o), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	degraded := func(reason string) func(*v1alpha1.TailscaleServices) bool {
		return func(o *v1alpha1.TailscaleServices) bool {
			for _, cd := range o.Status.Conditions {
				if cd.Type == "Degraded" && cd.Reason == reason {
					return true
				}
			}
			return false
		}
	}
	sync(func(o *v1alpha1.TailscaleServices) bool { return o.Status.ServiceInfo != nil })
	if _, ok := api.svcs["svc:web"]; !ok {
		t.Fatal("the Service was not created")
	}

	setNamespace(nil, false) // the namespace informer has not synced (or not seen it yet)
	sync(degraded("TenancyPending"))
	if _, ok := api.svcs["svc:web"]; !ok || api.deletes != 0 {
		t.Fatalf("unknown namespace labels: service present %v, %d deletions", ok, api.deletes)
	}

	setNamespace(labels.Set{"team": "b"}, true) // known, and refused: the tailnet's admin's decision
	sync(func(o *v1alpha1.TailscaleServices) bool { return o.Status.ServiceInfo == nil })
	if _, ok := api.svcs["svc:web"]; ok || api.deletes != 1 {
		t.Fatalf("refused namespace: service present %v, %d deletions", ok, api.deletes)
	}
}
