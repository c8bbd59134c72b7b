package health

import (
	"time"
	"unicode/utf8"
)

// maxErrorLen bounds Result.Error; servers can reflect long messages into errors.
const maxErrorLen = 512

// observe folds one probe outcome into r. It returns the status r had before and whether the
// status changed. Thresholds apply from Unknown as well as between Healthy and Unhealthy.
func (r *Result) observe(err error, started time.Time, latency time.Duration, c Check) (from Status, changed bool) {
	from = r.Status
	r.LastChecked = started
	r.Latency = latency
	if err == nil {
		r.Error = ""
		r.ConsecutiveSuccesses++
		r.ConsecutiveFailures = 0
		if r.Status != StatusHealthy && r.ConsecutiveSuccesses >= c.HealthyThreshold {
			r.Status = StatusHealthy
		}
	} else {
		r.Error = truncate(err.Error(), maxErrorLen)
		r.ConsecutiveFailures++
		r.ConsecutiveSuccesses = 0
		if r.Status != StatusUnhealthy && r.ConsecutiveFailures >= c.UnhealthyThreshold {
			r.Status = StatusUnhealthy
		}
	}
	return from, r.Status != from
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("...")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
