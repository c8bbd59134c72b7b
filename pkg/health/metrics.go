package health

import (
	"strings"
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	probesTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "health", Name: "probes_total",
		Help:           "Scheduled health probes, by protocol (http, https, tcp, udp, tls, grpc) and result (success or failure).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"protocol", "result"})
	probeDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "tailscale_gateway", Subsystem: "health", Name: "probe_duration_seconds",
		Help:           "Duration of a scheduled health probe, by protocol and result.",
		Buckets:        []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		StabilityLevel: metrics.ALPHA,
	}, []string{"protocol", "result"})
	transitionsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "health", Name: "transitions_total",
		Help:           "Health status changes of probed targets, by protocol and the new status (Healthy, Unhealthy, Unknown).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"protocol", "to"})
	registerOnce sync.Once
)

// registerMetrics registers the prober's metrics in the legacy registry the server's /metrics
// serves.
func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(probesTotal, probeDuration, transitionsTotal)
	})
}

// protocolLabel is p in lower case, or "other" for an unknown protocol, so the label is bounded.
func protocolLabel(p Protocol) string {
	switch l := strings.ToLower(string(p)); l {
	case "http", "https", "tcp", "udp", "tls", "grpc":
		return l
	case "":
		return "http"
	}
	return "other"
}

// statusLabel bounds the "to" label.
func statusLabel(s Status) string {
	switch s {
	case StatusHealthy, StatusUnhealthy:
		return string(s)
	}
	return string(StatusUnknown)
}
