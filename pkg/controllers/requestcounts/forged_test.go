package requestcounts

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// Finding 7 of the security review: what a proxy's metrics say reaches only the objects that
// proxy serves, in its own namespace; an object's keys are bounded; a replica that does not
// answer delays a scrape by ScrapeTimeout at most.
func TestSecurityForgedRequestCounts(t *testing.T) {
	ctx := context.Background()
	svc := func(ns, name, vip string) *v1alpha1.TailscaleServices {
		return &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.TailscaleServicesSpec{VIPService: &v1alpha1.VIPServiceSpec{Name: vip}}}
	}
	objs := []*v1alpha1.TailscaleServices{svc("web", "web", "svc:web"), svc("web", "api", "svc:api"), svc("victim", "web", "svc:web")}
	client := fake.NewSimpleClientset()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		if _, err := client.GatewayV1alpha1().TailscaleServices(o.Namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	p := newProxy(t)
	stalled := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(stalled.Close)
	targets := []Target{
		{Key: "web/stalled-0", URL: stalled.URL, Namespace: "web", Serves: []string{"web"}},
		{Key: "web/p-0", URL: p.srv.URL, Namespace: "web", Serves: []string{"web"}},
	}
	a := New(Options{Client: client, Services: listers.NewTailscaleServicesLister(idx), ScrapeTimeout: 200 * time.Millisecond,
		Targets: func() []Target { return targets }})

	a.Scrape(ctx)                                  // the base
	p.connect("svc:web/tcp/80", "victim/db/pg", 5) // another namespace's object
	p.connect("svc:api/tcp/80", "web/db/pg", 5)    // a Service of its namespace it does not host
	for i := range MaxKeys + 20 {                  // more keys than an object may hold
		p.connect("svc:web/tcp/80", fmt.Sprintf("web/group-%d/pg", i), 1)
	}
	start := time.Now()
	a.Scrape(ctx)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a scrape took %s with one stalled replica", took)
	}
	if err := a.Write(ctx); err != nil {
		t.Fatal(err)
	}
	counts := func(ns, name string) map[string]int64 {
		o, err := client.GatewayV1alpha1().TailscaleServices(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if o.Status.LoadBalancingStatus == nil {
			return nil
		}
		return o.Status.LoadBalancingStatus.RequestCounts
	}
	if c := counts("victim", "web"); len(c) != 0 {
		t.Errorf("another namespace's object got counts %v", c)
	}
	if c := counts("web", "api"); len(c) != 0 {
		t.Errorf("a Service the proxy does not host got counts %v", c)
	}
	if c := counts("web", "web"); len(c) != MaxKeys {
		t.Errorf("the hosted Service holds %d keys, want the bound %d", len(c), MaxKeys)
	}
}
