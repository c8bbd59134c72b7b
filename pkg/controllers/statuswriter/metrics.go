package statuswriter

import (
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	writesTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "status", Name: "writes_total",
		Help: "Status updates the status writer sent, by kind and result (ok, conflict, not_found, error); " +
			"a conflict is retried from the informer's newer version.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind", "result"})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() { legacyregistry.MustRegister(writesTotal) })
}

// countWrite records the outcome of one status update of kind and returns err.
func countWrite(kind string, err error) error {
	result := "ok"
	switch {
	case err == nil:
	case apierrors.IsConflict(err):
		result = "conflict"
	case apierrors.IsNotFound(err):
		result = "not_found"
	default:
		result = "error"
	}
	writesTotal.WithLabelValues(kind, result).Inc()
	return err
}
