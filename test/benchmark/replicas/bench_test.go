package replicas

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

const (
	// endpointsPerObject are the endpoints of each TailscaleEndpoints; the probes are sharded
	// by object.
	endpointsPerObject = 10
	// probeInterval is every endpoint's health check interval.
	probeInterval = 10 * time.Second
	// getsPerReplica and getRate are the GETs of the latency phase, sent to every replica at
	// once.
	getsPerReplica, getRate = 500, 100 // per second
)

// bigEndpoints is the size that runs only when -bench names it (endpoints=10000), since it
// takes several minutes and most of two cores.
const bigEndpoints = 10000

// BenchmarkReplicas runs 1, 2 and 3 replicas probing the same endpoints (HTTP, every 10 s, on
// the simulated tailnet's devices) and reports, for each replica (r0 is the one holding the
// controllers' Lease, which polls the Tailscale API): its probes per second and CPU use in
// percent of one core over b.N probe intervals (process CPU time from /proc/<pid>/stat), its
// RSS, and afterwards its GET p50/p99 with 100 GET/s sent to every replica at once; for the
// installation: the Tailscale API calls and device listings per poll interval, and the
// simulator's (the benchmark process's) CPU. One op is one probe interval after one interval of
// warm-up once every endpoint has been probed.
//
//	go test -run '^$' -bench 'BenchmarkReplicas/endpoints=1000/' ./test/benchmark/replicas/
//	go test -run '^$' -bench 'BenchmarkReplicas/endpoints=10000/replicas=(1|3)$' -benchtime 3x -timeout 60m ./test/benchmark/replicas/
func BenchmarkReplicas(b *testing.B) {
	for _, endpoints := range []int{1000, bigEndpoints} {
		if endpoints == bigEndpoints && !strings.Contains(benchPattern(), fmt.Sprintf("endpoints=%d", bigEndpoints)) {
			continue
		}
		for _, n := range []int{1, 2, 3} {
			b.Run(fmt.Sprintf("endpoints=%d/replicas=%d", endpoints, n), func(b *testing.B) { benchReplicas(b, endpoints, n) })
		}
	}
}

// benchPattern is the -test.bench flag.
func benchPattern() string {
	if f := flag.Lookup("test.bench"); f != nil {
		return f.Value.String()
	}
	return ""
}

func benchReplicas(b *testing.B, endpoints, n int) {
	env, sim := setup(b)
	rs := startReplicas(b, env, sim, n)
	ns := createObjects(b, env, sim, rs[0], endpoints)
	waitProbed(b, rs[0], ns, endpoints)
	time.Sleep(probeInterval) // warm-up: the first probes of each target were spread over one interval

	type sample struct {
		cpu           time.Duration
		probes, fails float64
	}
	read := func() ([]sample, error) {
		out := make([]sample, len(rs))
		for i, r := range rs {
			c, err := cpu(r.Pid())
			if err != nil {
				return nil, err
			}
			all, failed, err := r.probeCounts()
			if err != nil {
				return nil, err
			}
			out[i] = sample{c, all, failed}
		}
		return out, nil
	}
	listings := func() int64 { return sim.APIRequestCounts()["GET /api/v2/tailnet/{tailnet}/devices"] }
	load0, _ := loadAverage()
	before, err := read()
	if err != nil {
		b.Fatal(err)
	}
	self0, _ := cpu(os.Getpid())
	calls0, listings0, start := sim.APIRequestCount(), listings(), time.Now()
	b.ResetTimer()
	for range b.N {
		time.Sleep(probeInterval)
	}
	b.StopTimer()
	wall := time.Since(start)
	after, err := read()
	if err != nil {
		b.Fatal(err)
	}
	self1, _ := cpu(os.Getpid())
	calls, listed := sim.APIRequestCount()-calls0, listings()-listings0
	load1, _ := loadAverage()

	var total, failed float64
	for i := range rs {
		probes := after[i].probes - before[i].probes
		fails := after[i].fails - before[i].fails
		total, failed = total+probes, failed+fails
		b.ReportMetric(probes/wall.Seconds(), fmt.Sprintf("r%d-probes/s", i))
		b.ReportMetric(100*float64(after[i].cpu-before[i].cpu)/float64(wall), fmt.Sprintf("r%d-cpu%%", i))
		rss, err := rssMiB(rs[i].Pid())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rss, fmt.Sprintf("r%d-rss-MiB", i))
	}
	b.ReportMetric(total/wall.Seconds(), "probes/s")
	b.ReportMetric(100*failed/max(total, 1), "failed-%")
	intervals := float64(wall) / float64(pollInterval)
	b.ReportMetric(float64(calls)/intervals, "api-calls/interval")
	b.ReportMetric(float64(listed)/intervals, "device-listings/interval")
	b.ReportMetric(100*float64(self1-self0)/float64(wall), "sim-cpu%")
	b.ReportMetric(load0, "load-before")
	b.ReportMetric(load1, "load-after")

	// The errors of failed probes, as the replicas serve them (live fields of their own shard).
	errSeen := map[string]int{}
	for _, r := range rs {
		list, err := r.client.GatewayV1alpha1().TailscaleEndpoints(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, o := range list.Items {
			for _, e := range o.Status.Endpoints {
				if e.Error != "" {
					errSeen[e.Error]++
				}
			}
		}
	}
	if len(errSeen) > 0 {
		b.Logf("probe errors in status: %v", errSeen)
	}
	// Read latency of every replica, all of them loaded at once.
	p50, p99 := getLatencies(b, rs, ns, endpoints/endpointsPerObject)
	for i := range rs {
		b.ReportMetric(ms(p50[i]), fmt.Sprintf("r%d-get-p50-ms", i))
		b.ReportMetric(ms(p99[i]), fmt.Sprintf("r%d-get-p99-ms", i))
	}
	if want := float64(endpoints) / probeInterval.Seconds(); total/wall.Seconds() > 1.2*want {
		b.Errorf("%.0f probes/s for %d endpoints every %s: replicas probe the same endpoints", total/wall.Seconds(), endpoints, probeInterval)
	}
}

// createObjects creates a namespace holding endpoints/endpointsPerObject TailscaleEndpoints of
// endpointsPerObject HTTP endpoints each, spread over the simulated devices, through r with a
// few concurrent writers. The namespace is deleted when the benchmark ends.
func createObjects(b *testing.B, env *framework.Environment, sim *tailnetsim.Tailnet, r *replica, endpoints int) string {
	b.Helper()
	ctx := context.Background()
	ns, err := env.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-replicas-"}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// The objects go first, while a replica still serves them.
		_ = r.client.GatewayV1alpha1().TailscaleEndpoints(ns.Name).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = env.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	var devs []tailnetsim.Device
	for i := range devices {
		d, err := sim.Device(fmt.Sprintf("bench-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, d)
	}
	objects := endpoints / endpointsPerObject
	const writers = 8
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < objects; i += writers {
				obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("ep-%d", i)},
					Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: tailnetName}}
				for j := range endpointsPerObject {
					d := devs[(i*endpointsPerObject+j)%len(devs)]
					obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{
						Name: fmt.Sprintf("e%d", j), TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN,
						Port: int32(d.HTTPPort), Protocol: v1alpha1.ProtocolHTTP,
						HealthCheck: &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Type: v1alpha1.ProtocolHTTP,
							Path: tailnetsim.DefaultHealthPath, Interval: &metav1.Duration{Duration: probeInterval},
							Timeout: &metav1.Duration{Duration: 5 * time.Second}},
					})
				}
				if _, err := r.client.GatewayV1alpha1().TailscaleEndpoints(ns.Name).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return ns.Name
}

// waitProbed waits until r serves a probe result (Healthy or Unhealthy) for every endpoint of
// the namespace: each has been probed by its owner and, for other replicas' shards, its
// transition persisted. (Not all Healthy: under load a few probes time out.)
func waitProbed(b *testing.B, r *replica, ns string, endpoints int) {
	b.Helper()
	waitFor(b, "every endpoint probed", 10*time.Minute, func(ctx context.Context) (bool, error) {
		list, err := r.client.GatewayV1alpha1().TailscaleEndpoints(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		probed := 0
		for _, o := range list.Items {
			for _, e := range o.Status.Endpoints {
				if e.Status == "Healthy" || e.Status == "Unhealthy" {
					probed++
				}
			}
		}
		return probed == endpoints, nil
	})
}

// getLatencies sends getsPerReplica GETs of random objects to every replica at getRate per
// second each, all replicas at once, and returns each replica's p50 and p99.
func getLatencies(b *testing.B, rs []*replica, ns string, objects int) (p50, p99 []time.Duration) {
	b.Helper()
	lat := make([][]time.Duration, len(rs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	start := time.Now()
	for n := range getsPerReplica {
		time.Sleep(time.Until(start.Add(time.Duration(n) * time.Second / getRate)))
		for i, r := range rs {
			wg.Go(func() {
				name := fmt.Sprintf("ep-%d", rand.IntN(objects))
				t0 := time.Now()
				_, err := r.client.GatewayV1alpha1().TailscaleEndpoints(ns).Get(context.Background(), name, metav1.GetOptions{})
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = err
					return
				}
				lat[i] = append(lat[i], d)
			})
		}
	}
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	for _, l := range lat {
		slices.Sort(l)
		p50 = append(p50, l[len(l)/2])
		p99 = append(p99, l[len(l)*99/100])
	}
	return p50, p99
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
