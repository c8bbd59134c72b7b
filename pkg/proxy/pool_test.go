package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// idleNode is a proxy's node that is never dialled: these tests and benchmarks look at what a
// pool selects and listens on, not at bytes.
type idleNode struct{}

func (idleNode) Dial(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("not dialled here")
}
func (idleNode) ListenService(string, tsnet.ServiceMode) (*tsnet.ServiceListener, error) {
	return nil, errors.New("no Services here")
}
func (idleNode) ServiceConns(string, uint16) (net.Listener, error) {
	return nil, errors.New("no Services here")
}

// poolObject is a TailscaleEndpoints of tailnet ref in ns, with one endpoint, its port
// allocated and the server's verdict accepted.
func poolObject(alloc *egressalloc.Allocator, ns, name, ref string, accepted bool) *v1alpha1.TailscaleEndpoints {
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name)},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: ref, Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "http", TailscaleIP: "100.64.0.7", Port: 80, Protocol: "HTTP"}}},
	}
	status := metav1.ConditionTrue
	if !accepted {
		status = metav1.ConditionFalse
	}
	obj.Status.Conditions = []metav1.Condition{{Type: tenancy.ConditionAccepted, Status: status, Reason: "Test"}}
	alloc.Allocate("shared", obj)
	return obj
}

// startPool runs a pool proxy of TailscaleTailnet "corp" (spec.tailnet corp.ts.net) over a fake
// clientset holding objs, its egress listeners on bind, until stop.
func startPool(t testing.TB, bind string, objs ...*v1alpha1.TailscaleEndpoints) (p *proxy.Proxy, stop func()) {
	t.Helper()
	client := fake.NewSimpleClientset(
		&v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "corp"}, Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "corp.ts.net"}},
		&v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "other.ts.net"}})
	for _, o := range objs {
		if err := client.Tracker().Create(schema.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: "tailscaleendpoints"}, o, o.Namespace); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	p, err = proxy.New(proxy.Options{Client: client, Node: idleNode{}, Metrics: forward.NewMetrics(prometheus.NewRegistry()),
		EgressBindAddress: bind, Selection: proxy.Selection{Tailnet: "corp"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stop = func() {
		cancel()
		<-done
	}
	select {
	case <-p.Ready():
	case <-time.After(time.Minute):
		stop()
		t.Fatal("the pool proxy did not apply its first configuration")
	}
	return p, stop
}

// TestPoolServesItsTailnetAcrossNamespaces: a pool serves the objects of its tailnet without a
// proxy of their own in every namespace, whichever way spec.tailnet names it, and nothing else:
// not another tailnet's, not one with spec.proxy, not one the server refused (its namespace not
// admitted by the tailnet).
func TestPoolServesItsTailnetAcrossNamespaces(t *testing.T) {
	alloc := egressalloc.New(egressalloc.Options{})
	dedicated := poolObject(alloc, "team-a", "dedicated", "corp", true)
	dedicated.Spec.Proxy = &v1alpha1.ProxyConfig{}
	p, stop := startPool(t, "127.0.0.1",
		poolObject(alloc, "team-a", "db", "corp", true),
		poolObject(alloc, "team-b", "cache", "corp.ts.net", true),
		poolObject(alloc, "team-b", "elsewhere", "other", true),
		poolObject(alloc, "team-c", "refused", "corp", false),
		dedicated)
	defer stop()
	var got []string
	for k := range p.Served().Egress {
		got = append(got, k)
	}
	slices.Sort(got)
	if want := []string{"team-a/db/http", "team-b/cache/http"}; !slices.Equal(got, want) {
		t.Fatalf("the pool serves %v, want %v", got, want)
	}
}

// BenchmarkPoolThousandObjects measures one pool replica's serving state at 1,000 objects of
// its tailnet in 10 namespaces (1,000 egress listeners): the heap it holds (informer caches,
// plan, listeners; without the tsnet node), the goroutines, and the wall and CPU time (the
// whole test process) to its first full configuration.
func BenchmarkPoolThousandObjects(b *testing.B) {
	alloc := egressalloc.New(egressalloc.Options{})
	objs := make([]*v1alpha1.TailscaleEndpoints, 1000)
	for i := range objs {
		objs[i] = poolObject(alloc, fmt.Sprintf("team-%d", i%10), fmt.Sprintf("obj-%d", i), "corp", true)
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cpu0 := cpuTime(b)
		start := time.Now()
		// A loopback address of its own: the listeners meet no other test's ports.
		p, stop := startPool(b, "127.0.0.77", objs...)
		ready, cpu := time.Since(start), cpuTime(b)-cpu0
		goroutines := runtime.NumGoroutine()
		if n := len(p.Served().Egress); n != len(objs) {
			stop()
			b.Fatalf("%d egress listeners, want %d: %v", n, len(objs), p.Served().Problems)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		stop()
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(ready.Seconds(), "s-to-ready")
		b.ReportMetric(cpu.Seconds(), "cpu-s-to-ready")
		b.ReportMetric(float64(goroutines), "goroutines")
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
