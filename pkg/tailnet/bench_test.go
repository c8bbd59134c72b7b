package tailnet

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	tsclient "tailscale.com/client/tailscale/v2"
)

// envDuration reads a duration from the environment, or returns def.
func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return d
}

// benchTailnet starts a fake API with devices and Services with hosts.
func benchTailnet(b *testing.B, devices, services int) *fakeAPI {
	f := newFakeAPI(b)
	var ds []tsclient.Device
	for i := range devices {
		ds = append(ds, device(fmt.Sprintf("n%04d", i), fmt.Sprintf("100.64.%d.%d", i/250, i%250+1), i%3 != 0))
	}
	f.setDevices(ds...)
	var ss []tsclient.Service
	for i := range services {
		name := fmt.Sprintf("svc:s%d", i)
		ss = append(ss, tsclient.Service{Name: name, Addrs: []string{fmt.Sprintf("100.100.0.%d", i+1)}, Ports: []string{"tcp:443"}})
		f.setHosts(name, `{"hosts":[{"stableNodeID":"n0001","approvalLevel":"approved:auto","configured":true}]}`)
	}
	f.setServices(ss...)
	return f
}

// BenchmarkReadsDoNotCallAPI serves 1,000 snapshot reads per second across three tailnets
// and reports API use per poll interval, which must stay at one poll per interval per tailnet.
// The scenario runs once whatever b.N; use -benchtime=1x. Defaults: 5s at a 1s interval;
// TAILNET_BENCH_DURATION=60s and TAILNET_BENCH_INTERVAL=5s change them.
func BenchmarkReadsDoNotCallAPI(b *testing.B) {
	duration := envDuration(b, "TAILNET_BENCH_DURATION", 5*time.Second)
	interval := envDuration(b, "TAILNET_BENCH_INTERVAL", time.Second)
	const (
		tailnets       = 3
		readsPerSecond = 1000
		readers        = 8
	)
	discard := logr.Discard()
	// The default client rate limit (5/s) suits the default 30s interval; at 1s a poll of seven
	// calls would be throttled, so allow more here.
	cache := NewCache(Options{Interval: interval, Credentials: StaticSource{APIKey: testKey}, Logger: &discard,
		Transport: TransportOptions{RequestsPerSecond: 50, Burst: 20}})
	defer cache.Close()
	names := make([]string, tailnets)
	fakes := make([]*fakeAPI, tailnets)
	ctx := context.Background()
	for i := range tailnets {
		names[i] = fmt.Sprintf("tailnet-%d", i)
		fakes[i] = benchTailnet(b, 300, 5)
		cache.Add(names[i], Config{BaseURL: fakes[i].URL()})
		if _, err := cache.Refresh(ctx, names[i]); err != nil {
			b.Fatal(err)
		}
	}
	base := make([]Stats, tailnets)
	baseServer := make([]int, tailnets)
	for i, n := range names {
		base[i], _ = cache.Stats(n)
		baseServer[i] = fakes[i].total()
	}

	b.ResetTimer()
	start := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	limiter := rate.NewLimiter(readsPerSecond, 20) // a little burst absorbs scheduling delays
	addrs := make([]string, 250)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("100.64.0.%d", i+1)
	}
	var reads, found atomic.Int64
	var readNanos atomic.Int64
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for i := r; ; i += readers {
				if limiter.Wait(runCtx) != nil {
					return
				}
				t0 := time.Now()
				s, ok := cache.Snapshot(names[i%tailnets])
				if ok {
					if _, ok := s.DeviceByAddress(addrs[i%len(addrs)]); ok {
						found.Add(1)
					}
				}
				readNanos.Add(int64(time.Since(t0)))
				reads.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	intervals := elapsed.Seconds() / interval.Seconds()
	var polls, calls, httpReqs, served float64
	maxPolls := 0.0
	for i, n := range names {
		s, _ := cache.Stats(n)
		p := float64(s.Polls - base[i].Polls)
		polls += p
		maxPolls = math.Max(maxPolls, p)
		calls += float64(s.APICalls - base[i].APICalls)
		httpReqs += float64(s.HTTP.Requests - base[i].HTTP.Requests)
		served += float64(fakes[i].total() - baseServer[i])
	}
	per := func(v float64) float64 { return v / tailnets / intervals }
	b.ReportMetric(per(polls), "polls/interval/tailnet")
	b.ReportMetric(per(calls), "api-calls/interval/tailnet")
	b.ReportMetric(per(served), "server-requests/interval/tailnet")
	b.ReportMetric(float64(reads.Load())/elapsed.Seconds(), "reads/s")
	b.ReportMetric(float64(readNanos.Load())/float64(max(reads.Load(), 1)), "ns/read")
	b.Logf("%d reads in %s over %d tailnets at a %s interval (%.1f intervals): %.0f polls, %.0f API calls, %.0f HTTP requests (client), %.0f served",
		reads.Load(), elapsed.Round(time.Millisecond), tailnets, interval, intervals, polls, calls, httpReqs, served)

	// One poll per interval per tailnet: with ±10% jitter, at most intervals/0.9 + 1 polls.
	if limit := intervals/(1-DefaultJitter) + 1; maxPolls > limit {
		b.Errorf("a tailnet was polled %.0f times in %.1f intervals; want at most %.1f", maxPolls, intervals, limit)
	}
	if found.Load() == 0 {
		b.Error("reads found no device")
	}
}

// BenchmarkSnapshot measures one read: a snapshot and a device lookup by address.
func BenchmarkSnapshot(b *testing.B) {
	f := benchTailnet(b, 1000, 10)
	discard := logr.Discard()
	cache := NewCache(Options{Interval: time.Hour, Credentials: StaticSource{APIKey: testKey}, Logger: &discard})
	defer cache.Close()
	cache.Add("prod", Config{BaseURL: f.URL()})
	if _, err := cache.Refresh(context.Background(), "prod"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, _ := cache.Snapshot("prod")
			if _, ok := s.DeviceByAddress("100.64.0.7"); !ok {
				b.Error("device not found")
				return
			}
		}
	})
}
