package tailnet

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	apiRequests = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "tailscale_api", Name: "requests_total",
		Help: "HTTP requests to the Tailscale API, retries and token requests included, by endpoint " +
			"(method and path template) and code (HTTP status, or \"error\" when no answer arrived).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"endpoint", "code"})
	apiRequestDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "tailscale_gateway", Subsystem: "tailscale_api", Name: "request_duration_seconds",
		Help:           "Duration of one HTTP request to the Tailscale API (one attempt), by endpoint.",
		Buckets:        []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		StabilityLevel: metrics.ALPHA,
	}, []string{"endpoint"})
	polls = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "tailnet", Name: "polls_total",
		Help:           "Polls of a tailnet (devices, Services, hosts), by reason: Synced or why not.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	syncTransitions = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "tailnet", Name: "sync_transitions_total",
		Help:           "Changes of a tailnet's TailnetSynced state, by the new state (true or false).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"synced"})
	pollAgeDesc = metrics.NewDesc("tailscale_gateway_tailnet_poll_age_seconds",
		"Seconds since a tailnet was last read successfully, by TailscaleTailnet; absent before the first success.",
		[]string{"tailnet"}, nil, metrics.ALPHA, "")
	syncedDesc = metrics.NewDesc("tailscale_gateway_tailnet_synced",
		"1 when the last poll of a tailnet succeeded, else 0, by TailscaleTailnet.",
		[]string{"tailnet"}, nil, metrics.ALPHA, "")

	registerOnce sync.Once
	caches       = &cacheCollector{caches: map[*Cache]struct{}{}}
)

// registerMetrics registers the package's metrics in the legacy registry the server's /metrics
// serves.
func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(apiRequests, apiRequestDuration, polls, syncTransitions)
		legacyregistry.CustomMustRegister(caches)
	})
}

// cacheCollector reports the poll age and sync state of every tailnet of every open Cache.
type cacheCollector struct {
	metrics.BaseStableCollector
	mu     sync.Mutex
	caches map[*Cache]struct{}
}

func (c *cacheCollector) add(cache *Cache) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.caches[cache] = struct{}{}
}

func (c *cacheCollector) remove(cache *Cache) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.caches, cache)
}

// DescribeWithStability implements metrics.StableCollector.
func (c *cacheCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- pollAgeDesc
	ch <- syncedDesc
}

// CollectWithStability implements metrics.StableCollector. A tailnet known to several Caches
// (several servers in one test process) is reported once, with its oldest successful poll and
// synced only if every Cache is.
func (c *cacheCollector) CollectWithStability(ch chan<- metrics.Metric) {
	type state struct {
		lastSync time.Time
		synced   bool
	}
	all := map[string]state{}
	c.mu.Lock()
	for cache := range c.caches {
		for _, name := range cache.Tailnets() {
			snap, ok := cache.Snapshot(name)
			if !ok {
				continue
			}
			s, seen := all[name]
			if !seen || snap.LastSync.Before(s.lastSync) {
				s.lastSync = snap.LastSync
			}
			s.synced = snap.Status.Synced && (!seen || s.synced)
			all[name] = s
		}
	}
	c.mu.Unlock()
	now := time.Now()
	for name, s := range all {
		if !s.lastSync.IsZero() {
			ch <- metrics.NewLazyConstMetric(pollAgeDesc, metrics.GaugeValue, now.Sub(s.lastSync).Seconds(), name)
		}
		v := 0.0
		if s.synced {
			v = 1
		}
		ch <- metrics.NewLazyConstMetric(syncedDesc, metrics.GaugeValue, v, name)
	}
}

// Path segments an endpoint template keeps, and those whose successor is a variable.
var (
	fixedSegments    = map[string]bool{"api": true, "v2": true, "oauth": true, "token": true, "devices": true, "approved": true, "tags": true, "routes": true}
	variableSegments = map[string]string{"tailnet": "{tailnet}", "device": "{device}", "vip-services": "{service}", "services": "{service}", "keys": "{key}"}
)

// endpointTemplate names an API request by method and path with its variable parts replaced,
// so that the label's values are bounded: "GET /api/v2/tailnet/{tailnet}/vip-services/{service}".
// Unknown segments become "other".
func endpointTemplate(method, path string) string {
	i := strings.Index(path, "/api/v2/")
	if i < 0 {
		return method + " other"
	}
	segs := strings.Split(strings.Trim(path[i:], "/"), "/")
	out := make([]string, 0, len(segs))
	for j, seg := range segs {
		if j > 0 {
			if v, ok := variableSegments[segs[j-1]]; ok && out[j-1] == segs[j-1] {
				out = append(out, v)
				continue
			}
		}
		if _, ok := variableSegments[seg]; ok || fixedSegments[seg] {
			out = append(out, seg)
		} else {
			out = append(out, "other")
		}
		if len(out) == 8 {
			break
		}
	}
	return method + " /" + strings.Join(out, "/")
}

// observeRequest records one attempt.
func observeRequest(method, path string, status int, err error, took time.Duration) {
	ep := endpointTemplate(method, path)
	code := "error"
	if err == nil {
		code = strconv.Itoa(status)
	}
	apiRequests.WithLabelValues(ep, code).Inc()
	apiRequestDuration.WithLabelValues(ep).Observe(took.Seconds())
}
