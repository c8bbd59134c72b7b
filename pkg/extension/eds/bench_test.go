package eds

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
)

// BenchmarkServerMemory publishes 1,000 load assignments of 10 endpoints each (10,000
// endpoints) and reports the heap the server holds for them and the time of a full rebuild.
func BenchmarkServerMemory(b *testing.B) {
	const clusters, perCluster = 1000, 10
	for b.Loop() {
		b.StopTimer()
		client := fake.NewSimpleClientset()
		factory := informers.NewSharedInformerFactory(client, 0)
		for i := range clusters {
			obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("eps-%d", i)},
				Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main"}}
			for j := range perCluster {
				obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: fmt.Sprintf("ep-%d", j),
					TailscaleIP: fmt.Sprintf("100.64.%d.%d", i%250, j+1), TailscaleFQDN: fmt.Sprintf("d%d-%d.ts.net", i, j), Port: 80, Protocol: v1alpha1.ProtocolHTTP})
				obj.Status.Endpoints = append(obj.Status.Endpoints, v1alpha1.EndpointStatus{Name: fmt.Sprintf("ep-%d", j), Status: "Healthy"})
			}
			if err := factory.Gateway().V1alpha1().TailscaleEndpoints().Informer().GetIndexer().Add(obj); err != nil {
				b.Fatal(err)
			}
		}
		s := New(factory, Options{})
		for i := range clusters {
			s.Register(backends.RouteRule{Namespace: "bench", Name: fmt.Sprintf("route-%d", i)}.ClusterName(),
				[]backends.Ref{{Kind: backends.KindEndpoints, Namespace: "bench", Name: fmt.Sprintf("eps-%d", i), Port: 80, Weight: 1}})
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start := time.Now()
		s.rebuild()
		elapsed := time.Since(start)
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := len(s.cache.GetResources()); n != clusters {
			b.Fatalf("published %d load assignments, want %d", n, clusters)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(elapsed.Milliseconds()), "rebuild-ms")
		runtime.KeepAlive(s)
		b.StartTimer()
	}
}
