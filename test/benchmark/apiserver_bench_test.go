// Package benchmark measures the standalone server over HTTPS: GET latency percentiles, LIST time
// and resident memory at 10, 1,000 and 10,000 TailscaleEndpoints of three endpoints each.
package benchmark

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apiserver"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

const namespace = "bench"

var sizes = []int{10, 1000, 10000}

// fixture is a server shared by the benchmarks of one mode, grown to each size in turn. The
// server runs in a child process (proc) unless BENCH_IN_PROCESS is set (server).
type fixture struct {
	once    sync.Once
	live    bool
	server  *framework.Server
	proc    *serverProcess
	client  *versioned.Clientset
	created int
	err     error
}

// The modes. Both servers hold the same objects with the same stored status, as the status
// writer persists it for a tailnet holding a device for every object's address. The stored
// server (--live-status=false) serves that status as stored, its objects' status written by the
// benchmark; the live server computes status on every read from a collector with that tailnet,
// so the overlay does its full work, and its own status writer persists the status.
var (
	stored = &fixture{}
	live   = &fixture{live: true}
)

// configure sets the options of a benchmark server of either mode.
func configure(o *server.Options, live bool) {
	o.Live.Enabled = false
	if live {
		o.Collector = benchCollector(sizes[len(sizes)-1])
	}
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(serverEnv); mode != "" {
		os.Exit(serve(mode))
	}
	code := m.Run()
	for _, f := range []*fixture{stored, live} {
		if f.server != nil {
			f.server.Stop()
			os.RemoveAll(f.server.DataDir)
		}
		if f.proc != nil {
			f.proc.stop()
		}
	}
	os.Exit(code)
}

// modes runs a benchmark against the stored and the live server.
func modes(b *testing.B, run func(b *testing.B, f *fixture)) {
	for _, f := range []*fixture{stored, live} {
		name := "mode=stored"
		if f.live {
			name = "mode=live"
		}
		b.Run(name, func(b *testing.B) { run(b, f) })
	}
}

// start runs the fixture's server, in a child process unless BENCH_IN_PROCESS is set.
func (f *fixture) start() error {
	if os.Getenv(inProcessEnv) == "" {
		proc, cfg, err := startServerProcess(f.live)
		if err != nil {
			return err
		}
		f.proc = proc
		f.client, err = versioned.NewForConfig(cfg)
		return err
	}
	dir, err := os.MkdirTemp("", "tsgw-bench-")
	if err != nil {
		return err
	}
	if f.server, err = framework.StartServer(dir, func(o *server.Options) { configure(o, f.live) }); err != nil {
		return err
	}
	f.client, err = versioned.NewForConfig(f.server.Config)
	return err
}

// with returns the fixture's client once its server holds at least n TailscaleEndpoints.
func (f *fixture) with(b *testing.B, n int) *versioned.Clientset {
	b.Helper()
	f.once.Do(func() { f.err = f.start() })
	if f.err != nil {
		b.Fatal(f.err)
	}
	if err := f.createUpTo(n); err != nil {
		b.Fatal(err)
	}
	if err := f.quiesce(); err != nil {
		b.Fatal(err)
	}
	// Measure from a collected heap, not amid the garbage of the objects just written.
	runtime.GC()
	return f.client
}

// memory reports the memory figures of a benchmark at its end: RSS at the end of the loop
// (rss-MiB) and its peak, the live heap after a collection (heap-MiB) and what was allocated per
// operation (alloc-MiB/op, against before, read as the loop started). With the server in a child
// process they are the server's, prefixed server-, and client-rss-MiB is this process's RSS;
// in process (BENCH_IN_PROCESS) they are the whole process's: server, etcd and client.
func (f *fixture) memory(b *testing.B, before serverStats) {
	b.Helper()
	var after serverStats
	var err error
	prefix := ""
	if f.proc != nil {
		after, err = f.proc.stats()
		prefix = "server-"
	} else {
		after, err = readStats()
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(after.RSSMiB, prefix+"rss-MiB")
	b.ReportMetric(after.PeakRSSMiB, prefix+"peak-rss-MiB")
	b.ReportMetric(after.HeapMiB, prefix+"heap-MiB")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20)/float64(b.N), prefix+"alloc-MiB/op")
	if f.proc == nil {
		return
	}
	client, err := readStats()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(client.RSSMiB, "client-rss-MiB")
	if dir := os.Getenv("BENCH_HEAP_PROFILE_DIR"); dir != "" {
		path := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".heap.pb.gz")
		if err := f.proc.heapProfile(path); err != nil {
			b.Fatal(err)
		}
		b.Logf("server heap profile: %s", path)
	}
}

// startStats reads the allocation counters as a benchmark loop starts.
func (f *fixture) startStats(b *testing.B) serverStats {
	b.Helper()
	var st serverStats
	var err error
	if f.proc != nil {
		st, err = f.proc.stats()
	} else {
		st, err = readStats()
	}
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// quiesce waits until the server stops writing (the live server's status writer persists the
// status of every new object), so that measurements do not share the machine with those writes.
func (f *fixture) quiesce() error {
	last := ""
	return wait.PollUntilContextTimeout(context.Background(), time.Second, 10*time.Minute, false, func(ctx context.Context) (bool, error) {
		l, err := f.client.GatewayV1alpha1().TailscaleEndpoints(namespace).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return false, err
		}
		rv := l.ResourceVersion
		done := rv == last
		last = rv
		return done, nil
	})
}

// benchCollector knows a device for the address of each of the first n objects.
func benchCollector(n int) *framework.ScriptedCollector {
	tn := livestatus.Tailnet{Name: "company.ts.net", Synced: true, LastSync: time.Now()}
	for i := 0; i < n; i++ {
		tn.Devices = append(tn.Devices, livestatus.Device{Name: fmt.Sprintf("ep-%d.company.ts.net", i),
			Addresses: []string{address(i)}, Online: true, LastSeen: time.Now()})
	}
	tn.BuildIndex()
	return &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{"company.ts.net": tn}}
}

// createUpTo creates objects ep-<created>..ep-<n-1> with a few concurrent writers.
func (f *fixture) createUpTo(n int) error {
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := f.created + w; i < n; i += writers {
				c := f.client.GatewayV1alpha1().TailscaleEndpoints(namespace)
				obj, err := c.Create(context.Background(), object(i), metav1.CreateOptions{})
				if err != nil {
					errs <- fmt.Errorf("creating object %d: %w", i, err)
					return
				}
				if f.live {
					continue
				}
				if obj, err = withPersistedStatus(obj); err == nil {
					_, err = c.UpdateStatus(context.Background(), obj, metav1.UpdateOptions{FieldManager: "tailscale-gateway-status"})
				}
				if err != nil {
					errs <- fmt.Errorf("writing the status of object %d: %w", i, err)
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
	if n > f.created {
		f.created = n
	}
	return nil
}

// persistedSources is the live server's tailnet, for the status the stored server holds; built
// when first needed, so that server processes, which never need it, do not hold it.
var persistedSources = sync.OnceValue(func() *framework.ScriptedCollector { return benchCollector(sizes[len(sizes)-1]) })

// withPersistedStatus returns obj with the status the live server's status writer persists.
func withPersistedStatus(obj *v1alpha1.TailscaleEndpoints) (*v1alpha1.TailscaleEndpoints, error) {
	var internal gateway.TailscaleEndpoints
	if err := apiserver.Scheme.Convert(obj, &internal, nil); err != nil {
		return nil, err
	}
	internal.Status = livestatus.Endpoints(&internal, persistedSources(), time.Now())
	livestatus.StripEndpoints(&internal.Status)
	out := obj.DeepCopy()
	if err := apiserver.Scheme.Convert(&internal, out, nil); err != nil {
		return nil, err
	}
	return out, nil
}

func address(i int) string {
	return fmt.Sprintf("100.%d.%d.%d", 64+i/65536%64, i/256%256, i%256)
}

func object(i int) *v1alpha1.TailscaleEndpoints {
	ep := func(j int) v1alpha1.TailscaleEndpoint {
		return v1alpha1.TailscaleEndpoint{
			Name:          fmt.Sprintf("endpoint-%d", j),
			TailscaleIP:   address(i),
			TailscaleFQDN: fmt.Sprintf("ep-%d-%d.company.ts.net", i, j),
			Port:          int32(8080 + j),
			Protocol:      v1alpha1.ProtocolHTTP,
			HealthCheck:   &v1alpha1.HealthCheckConfig{Enabled: ptr.To(false), Path: "/health"},
		}
	}
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ep-%d", i), Namespace: namespace, Labels: map[string]string{"tier": "bench"}},
		Spec:       v1alpha1.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []v1alpha1.TailscaleEndpoint{ep(0), ep(1), ep(2)}},
	}
}

// BenchmarkGet reports GET latency percentiles and the memory figures at each size.
func BenchmarkGet(b *testing.B) { modes(b, benchmarkGet) }

func benchmarkGet(b *testing.B, f *fixture) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			c := f.with(b, n).GatewayV1alpha1().TailscaleEndpoints(namespace)
			latencies := make([]time.Duration, 0, b.N)
			before := f.startStats(b)
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
			f.memory(b, before)
		})
	}
}

// BenchmarkList reports the time of one LIST of every object and the memory figures at each size.
func BenchmarkList(b *testing.B) { modes(b, benchmarkList) }

func benchmarkList(b *testing.B, f *fixture) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			c := f.with(b, n).GatewayV1alpha1().TailscaleEndpoints(namespace)
			before := f.startStats(b)
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
			f.memory(b, before)
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
