package requestcounts

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
)

// proxy serves a real proxy's metrics.
type proxy struct {
	metrics *forward.Metrics
	srv     *httptest.Server
}

func newProxy(t *testing.T) *proxy {
	reg := prometheus.NewRegistry()
	p := &proxy{metrics: forward.NewMetrics(reg), srv: httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))}
	t.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) connect(listener, target string, n int) {
	c := p.metrics.For(forward.RoleService, listener, target)
	for range n {
		c.Connections.Inc()
	}
}

func TestRequestCountsFromTheProxiesMetrics(t *testing.T) {
	ctx := context.Background()
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:web"}}}
	other := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "api"},
		Spec: v1alpha1.TailscaleServicesSpec{VIPService: &v1alpha1.VIPServiceSpec{Name: "api"}}}
	client := fake.NewSimpleClientset()
	for _, o := range []*v1alpha1.TailscaleServices{svc, other} {
		if _, err := client.GatewayV1alpha1().TailscaleServices("web").Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range []any{svc, other} {
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	p0, p1 := newProxy(t), newProxy(t)
	serves := []string{"web", "api"}
	targets := []Target{{Key: "web/p-0", URL: p0.srv.URL, Namespace: "web", Serves: serves}, {Key: "web/p-1", URL: p1.srv.URL, Namespace: "web", Serves: serves}}
	a := New(Options{Client: client, Services: listers.NewTailscaleServicesLister(idx), Targets: func() []Target { return targets }})

	// Counted before the first scrape: the base, not counted.
	p0.connect("svc:web/tcp/80", "web/east/http", 5)
	a.Scrape(ctx)
	p0.connect("svc:web/tcp/80", "web/east/http", 3)
	p0.connect("svc:web/tcp/80", "web/web/external/cdn", 2)
	p1.connect("svc:web/tcp/80", "web/east/http", 0) // a series seen first, at 0
	a.Scrape(ctx)
	p1.connect("svc:web/tcp/80", "web/east/http", 4)
	p1.connect("svc:web/tcp/80", "web/west/http", 1)
	p1.connect("svc:api/tcp/443", "web/west/http", 7) // another Service
	p0.metrics.For(forward.RoleEgress, "egress/tcp/20000", "web/east/http").Connections.Add(100)
	a.Scrape(ctx)
	if err := a.Write(ctx); err != nil {
		t.Fatal(err)
	}
	got := func(name string) map[string]int64 {
		o, err := client.GatewayV1alpha1().TailscaleServices("web").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if o.Status.LoadBalancingStatus == nil {
			return nil
		}
		return o.Status.LoadBalancingStatus.RequestCounts
	}
	// Series that appear after a target's first scrape grew from 0.
	if c := got("web"); c["east"] != 7 || c["cdn"] != 2 || c["west"] != 1 || len(c) != 3 {
		t.Fatalf("web requestCounts %v, want east 7 (3 of p-0, 4 of p-1), cdn 2, west 1", c)
	}
	if c := got("api"); c["west"] != 7 || len(c) != 1 {
		t.Fatalf("api requestCounts %v, want west 7", c)
	}

	// p-0 restarts: its counter starts again from zero; what it counts now is growth.
	restarted := newProxy(t)
	targets[0].URL = restarted.srv.URL
	restarted.connect("svc:web/tcp/80", "web/east/http", 2)
	p1.connect("svc:api/tcp/443", "web/west/http", 1)
	a.Scrape(ctx)
	if err := a.Write(ctx); err != nil {
		t.Fatal(err)
	}
	if c := got("web"); c["east"] != 9 {
		t.Fatalf("after a restart, east %d, want 9", c["east"])
	}
	if c := got("api"); c["west"] != 8 {
		t.Fatalf("api west %d, want 8", c["west"])
	}
	// Nothing new: no write.
	before := len(client.Actions())
	a.Scrape(ctx)
	if err := a.Write(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(client.Actions()) - before; n != 0 {
		t.Fatalf("%d API calls without new connections", n)
	}
}
