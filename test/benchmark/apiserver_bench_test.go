// Package benchmark measures the standalone server over HTTPS: GET latency percentiles, LIST time
// and resident memory at 10, 1,000 and 10,000 TailscaleEndpoints of three endpoints each.
package benchmark

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

const namespace = "bench"

var sizes = []int{10, 1000, 10000}

// fixture is one server shared by every benchmark of the package, grown to each size in turn.
var fixture struct {
	once    sync.Once
	server  *framework.Server
	client  *versioned.Clientset
	created int
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.server != nil {
		fixture.server.Stop()
		os.RemoveAll(fixture.server.DataDir)
	}
	os.Exit(code)
}

// serverWith returns the shared server holding at least n TailscaleEndpoints.
func serverWith(b *testing.B, n int) *versioned.Clientset {
	b.Helper()
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "tsgw-bench-")
		if err != nil {
			fixture.err = err
			return
		}
		fixture.server, fixture.err = framework.StartServer(dir)
		if fixture.err == nil {
			fixture.client, fixture.err = versioned.NewForConfig(fixture.server.Config)
		}
	})
	if fixture.err != nil {
		b.Fatal(fixture.err)
	}
	if err := createUpTo(fixture.client, n); err != nil {
		b.Fatal(err)
	}
	return fixture.client
}

// createUpTo creates objects ep-<created>..ep-<n-1> with a few concurrent writers.
func createUpTo(c *versioned.Clientset, n int) error {
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := fixture.created + w; i < n; i += writers {
				_, err := c.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(context.Background(), object(i), metav1.CreateOptions{})
				if err != nil {
					errs <- fmt.Errorf("creating object %d: %w", i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if n > fixture.created {
		fixture.created = n
	}
	return nil
}

func object(i int) *v1alpha1.TailscaleEndpoints {
	ep := func(j int) v1alpha1.TailscaleEndpoint {
		return v1alpha1.TailscaleEndpoint{
			Name:          fmt.Sprintf("endpoint-%d", j),
			TailscaleIP:   fmt.Sprintf("100.%d.%d.%d", 64+i/65536%64, i/256%256, i%256),
			TailscaleFQDN: fmt.Sprintf("ep-%d-%d.company.ts.net", i, j),
			Port:          int32(8080 + j),
			Protocol:      v1alpha1.ProtocolHTTP,
			HealthCheck:   &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Path: "/health"},
		}
	}
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ep-%d", i), Namespace: namespace, Labels: map[string]string{"tier": "bench"}},
		Spec:       v1alpha1.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []v1alpha1.TailscaleEndpoint{ep(0), ep(1), ep(2)}},
	}
}

// BenchmarkGet reports GET latency percentiles and the process RSS at each size.
func BenchmarkGet(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			c := serverWith(b, n).GatewayV1alpha1().TailscaleEndpoints(namespace)
			latencies := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := c.Get(context.Background(), fmt.Sprintf("ep-%d", i%n), metav1.GetOptions{}); err != nil {
					b.Fatal(err)
				}
				latencies = append(latencies, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
			b.ReportMetric(ms(latencies[len(latencies)/2]), "p50-ms")
			b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
			b.ReportMetric(rssMiB(b), "rss-MiB")
		})
	}
}

// BenchmarkList reports the time of one LIST of every object at each size.
func BenchmarkList(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			c := serverWith(b, n).GatewayV1alpha1().TailscaleEndpoints(namespace)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l, err := c.List(context.Background(), metav1.ListOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if len(l.Items) < n {
					b.Fatalf("listed %d objects, want %d", len(l.Items), n)
				}
			}
			b.StopTimer()
			b.ReportMetric(rssMiB(b), "rss-MiB")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rssMiB reads the resident set size of this process, which holds the server, its embedded etcd
// and the benchmark client.
func rssMiB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("VmRSS not found")
	return 0
}
