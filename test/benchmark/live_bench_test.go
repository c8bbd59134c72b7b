package benchmark

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// BenchmarkTransitionLatency times a health transition from its detection (the collector's
// report) to its arrival at each of 100 concurrent watchers, and reports the percentiles over
// every watcher and transition.
func BenchmarkTransitionLatency(b *testing.B) {
	const watchers = 100
	collector := &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}}
	s, err := framework.StartServer(b.TempDir(), func(o *server.Options) { o.Collector = collector })
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	eps := s.Clientset(b).GatewayV1alpha1().TailscaleEndpoints("transitions")
	obj := object(0)
	obj.Namespace = "transitions"
	obj.Spec.Endpoints[0].HealthCheck.Enabled = ptr.To(true)
	created, err := eps.Create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}

	type arrival struct {
		status string
		at     time.Time
	}
	arrivals := make(chan arrival, watchers*4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < watchers; i++ {
		w, err := eps.Watch(ctx, metav1.ListOptions{ResourceVersion: created.ResourceVersion})
		if err != nil {
			b.Fatal(err)
		}
		go func(w watch.Interface) {
			defer w.Stop()
			last := ""
			for ev := range w.ResultChan() {
				o, ok := ev.Object.(*v1alpha1.TailscaleEndpoints)
				if !ok {
					continue
				}
				for _, e := range o.Status.Endpoints {
					if e.Name == "endpoint-0" && e.Status != last && e.Status != livestatus.Unknown && e.Status != "" {
						last = e.Status
						arrivals <- arrival{e.Status, time.Now()}
					}
				}
			}
		}(w)
	}

	var latencies []time.Duration
	status := livestatus.Unhealthy
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if status == livestatus.Healthy {
			status = livestatus.Unhealthy
		} else {
			status = livestatus.Healthy
		}
		detected := time.Now()
		collector.SetProbe("transitions", obj.Name, "endpoint-0", livestatus.Probe{Status: status, LastChecked: detected})
		timeout := time.After(time.Minute)
		for got := 0; got < watchers; {
			select {
			case a := <-arrivals:
				if a.status == status {
					latencies = append(latencies, a.at.Sub(detected))
					got++
				}
			case <-timeout:
				b.Fatalf("transition %d reached %d of %d watchers in a minute", i, got, watchers)
			}
		}
	}
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	b.ReportMetric(ms(latencies[len(latencies)/2]), "p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
}

// BenchmarkAPICallsUnderReadLoad serves 1,000 GET/s of live TailscaleEndpoints from a server
// polling a simulated tailnet every second, and reports the Tailscale API requests per poll
// interval: reads must not add any. BENCH_READ_SECONDS sets the duration (default 10).
func BenchmarkAPICallsUnderReadLoad(b *testing.B) {
	seconds := 10
	if v := os.Getenv("BENCH_READ_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}
	const interval, readsPerSecond = time.Second, 1000
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+5*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{tailnetsim.AllProtocols("api-server")}})
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	creds := b.TempDir()
	secret := filepath.Join(creds, "tailscale-gateway-system", "oauth")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(secret, "client_id"), []byte(sim.OAuthClientID()), 0o600)
	os.WriteFile(filepath.Join(secret, "client_secret"), []byte(sim.OAuthClientSecret()), 0o600)
	s, err := framework.StartServer(b.TempDir(), func(o *server.Options) {
		o.Live.CredentialsDir, o.Live.PollInterval, o.Live.ControlURL = creds, interval, sim.ControlURL()
		o.Live.JoinTailnets = false
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	c := s.Clientset(b).GatewayV1alpha1()
	if _, err := c.TailscaleTailnets().Create(ctx, &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "sim"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: sim.TailnetName(), OAuthSecretName: "oauth", APIBaseURL: sim.APIURL()}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	dev, _ := sim.Device("api-server")
	obj := object(0)
	obj.Namespace, obj.Spec.Tailnet = "reads", "sim"
	obj.Spec.Endpoints = obj.Spec.Endpoints[:1]
	obj.Spec.Endpoints[0].TailscaleIP = dev.IPv4.String()
	eps := c.TailscaleEndpoints("reads")
	if _, err := eps.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// Start counting once the tailnet is synced and polled on its interval.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		o, err := eps.Get(ctx, obj.Name, metav1.GetOptions{})
		return err == nil && len(o.Status.Endpoints) == 1 && o.Status.Endpoints[0].Online != nil, nil
	})
	if err != nil {
		b.Fatal("tailnet never synced")
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := sim.APIRequestCount()
		start := time.Now()
		var reads int
		var wg sync.WaitGroup
		var mu sync.Mutex
		// One GET every millisecond on schedule; a late start is caught up at once rather than
		// dropped, so the offered load is 1,000 GET/s whatever the scheduler's hiccups.
		for n := 0; n < seconds*readsPerSecond; n++ {
			time.Sleep(time.Until(start.Add(time.Duration(n) * time.Second / readsPerSecond)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := eps.Get(ctx, obj.Name, metav1.GetOptions{}); err == nil {
					mu.Lock()
					reads++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		calls := sim.APIRequestCount() - before
		b.ReportMetric(float64(reads)/elapsed.Seconds(), "reads/s")
		b.ReportMetric(float64(calls)/(float64(elapsed)/float64(interval)), "api-calls/interval")
	}
}
