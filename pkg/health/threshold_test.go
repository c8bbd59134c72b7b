package health

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestObserveThresholds(t *testing.T) {
	// Outcomes: '+' success, '-' failure. Statuses after each outcome: U(nknown), H(ealthy),
	// X (unhealthy). A transition is expected wherever the status letter changes.
	tests := []struct {
		name               string
		healthy, unhealthy int
		outcomes, statuses string
	}{
		{"unknown to healthy after 2", 2, 3, "++", "UH"},
		{"unknown to unhealthy after 3", 2, 3, "---", "UUX"},
		{"interrupted runs stay unknown", 2, 3, "+-+--+-", "UUUUUUU"},
		{"healthy to unhealthy and back", 2, 3, "++---+-++", "UHHHXXXXH"},
		{"a failure resets the success run", 3, 2, "++-+++--", "UUUUUHHX"},
		{"thresholds of one flip at once", 1, 1, "+-+-", "HXHX"},
	}
	letter := map[Status]byte{StatusUnknown: 'U', StatusHealthy: 'H', StatusUnhealthy: 'X'}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Check{HealthyThreshold: tc.healthy, UnhealthyThreshold: tc.unhealthy}
			r := Result{Status: StatusUnknown}
			var got []byte
			for i, o := range []byte(tc.outcomes) {
				var err error
				if o == '-' {
					err = errors.New("boom")
				}
				before := r.Status
				from, changed := r.observe(err, time.Unix(int64(i), 0), time.Millisecond, c)
				if from != before || changed != (r.Status != before) {
					t.Fatalf("step %d: observe returned (%s, %v), status went %s -> %s", i, from, changed, before, r.Status)
				}
				if (err == nil) != (r.Error == "") {
					t.Errorf("step %d: error %q after outcome %c", i, r.Error, o)
				}
				got = append(got, letter[r.Status])
			}
			if string(got) != tc.statuses {
				t.Errorf("statuses %s, want %s", got, tc.statuses)
			}
		})
	}
}

func TestObserveRecordsLastProbe(t *testing.T) {
	r := Result{Status: StatusUnknown}
	c := Check{HealthyThreshold: 1, UnhealthyThreshold: 1}
	at := time.Unix(100, 0)
	r.observe(errors.New("refused"), at, 3*time.Millisecond, c)
	if r.LastChecked != at || r.Latency != 3*time.Millisecond || r.Error != "refused" || r.ConsecutiveFailures != 1 {
		t.Errorf("after a failure: %+v", r)
	}
	r.observe(nil, at.Add(time.Second), time.Millisecond, c)
	if r.Error != "" || r.ConsecutiveSuccesses != 1 || r.ConsecutiveFailures != 0 {
		t.Errorf("after a success: %+v", r)
	}
	r.observe(errors.New(strings.Repeat("é", maxErrorLen)), at, 0, c)
	if len(r.Error) > maxErrorLen || !utf8.ValidString(r.Error) || !strings.HasSuffix(r.Error, "...") {
		t.Errorf("long error kept as %d bytes (valid UTF-8: %v)", len(r.Error), utf8.ValidString(r.Error))
	}
}
