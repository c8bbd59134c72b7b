package hook

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Results of PostClusterModify calls, the label of clustersTotal.
const (
	resultShaped    = "shaped"
	resultForeign   = "foreign"
	resultInvalid   = "invalid"
	resultNoBackend = "no_backend"
)

var (
	hookDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "tailscale_gateway", Subsystem: "extension", Name: "hook_duration_seconds",
		Help:           "Time to answer an Envoy Gateway extension hook call, by hook.",
		Buckets:        []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05},
		StabilityLevel: metrics.ALPHA,
	}, []string{"hook"})
	clustersTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "extension", Name: "clusters_total",
		Help: "Clusters passed to PostClusterModify, by result: shaped (ours), foreign (other backends only), " +
			"invalid (a backend that cannot be decoded: left unchanged) and no_backend.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	registerOnce sync.Once
)

// registerMetrics registers the hook's metrics in the legacy registry the server's /metrics serves.
func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(hookDuration, clustersTotal)
	})
}
