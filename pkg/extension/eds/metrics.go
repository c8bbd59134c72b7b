package eds

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	streamsGauge = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "streams",
		Help: "Open xDS streams (EDS and ADS, SotW and delta).", StabilityLevel: metrics.ALPHA,
	})
	loadAssignmentsGauge = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "load_assignments",
		Help: "Load assignments published.", StabilityLevel: metrics.ALPHA,
	})
	pushesTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "load_assignment_updates_total",
		Help: "Load assignments published because they changed (each reaches every subscribed stream).", StabilityLevel: metrics.ALPHA,
	})
	rebuildDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "rebuild_duration_seconds",
		Help: "Time to recompute every load assignment after an input changed.", StabilityLevel: metrics.ALPHA,
		Buckets: []float64{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1},
	})
	refusedRefsGauge = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "refused_backend_refs",
		Help:           "backendRefs (or endpoints reached through them) given no endpoints, by reason: RefNotPermitted (no ReferenceGrant) or NotAllowedByTailnet (the tailnet does not admit the route's namespace).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	subscriptionsRefused = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "subscriptions_refused_total",
		Help: "xDS requests refused, by reason: wildcard or type (not load assignments).", StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	registrationsEvicted = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "xds", Name: "registrations_evicted_total",
		Help: "Clusters known from hook calls alone forgotten because the bound was reached.", StabilityLevel: metrics.ALPHA,
	})
	registerOnce sync.Once
)

// registerMetrics registers the xDS server's metrics in the legacy registry the server's
// /metrics serves.
func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(streamsGauge, loadAssignmentsGauge, pushesTotal, rebuildDuration,
			refusedRefsGauge, subscriptionsRefused, registrationsEvicted)
	})
}
