// Package ctrlmetrics counts the controllers' reconciles in the legacy registry the server's
// /metrics serves. Queue depth, adds, retries and latency come from the workqueue metrics that
// k8s.io/component-base registers for every named queue (workqueue_*{name="<controller>"}).
package ctrlmetrics

import (
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	reconciles = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "controller", Name: "reconciles_total",
		Help:           "Reconciles, by controller (its queue's name) and result (ok, conflict, error).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"controller", "result"})
	reconcileDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "tailscale_gateway", Subsystem: "controller", Name: "reconcile_duration_seconds",
		Help:           "Duration of one reconcile, by controller.",
		Buckets:        []float64{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30},
		StabilityLevel: metrics.ALPHA,
	}, []string{"controller"})
	registerOnce sync.Once
)

// Observe records one reconcile of controller that started at start and returned err.
func Observe(controller string, start time.Time, err error) {
	registerOnce.Do(func() { legacyregistry.MustRegister(reconciles, reconcileDuration) })
	result := "ok"
	switch {
	case err == nil:
	case apierrors.IsConflict(err):
		result = "conflict"
	default:
		result = "error"
	}
	reconciles.WithLabelValues(controller, result).Inc()
	reconcileDuration.WithLabelValues(controller).Observe(time.Since(start).Seconds())
}
