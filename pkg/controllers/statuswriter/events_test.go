package statuswriter

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// drain returns the Events recorded so far.
func drain(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestEndpointTransitionEvents(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	seen := time.Now().Add(-time.Minute)
	// First status: no transition to report.
	written := syncRecording(t, endpoints(), sources(true, seen), rec)
	if len(written) != 1 {
		t.Fatalf("%d updates", len(written))
	}
	if ev := drain(rec); len(ev) != 0 {
		t.Fatalf("Events for the first status: %v", ev)
	}
	// The device goes offline: unhealthy, a Warning.
	down := syncRecording(t, written[0], sources(false, seen), rec)
	if len(down) != 1 {
		t.Fatalf("%d updates after the device went offline", len(down))
	}
	ev := drain(rec)
	if len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+ReasonEndpointUnhealthy+" Endpoint primary is unhealthy") {
		t.Fatalf("Events after the device went offline: %v", ev)
	}
	// Back online: healthy again, Normal.
	syncRecording(t, down[0], sources(true, seen), rec)
	ev = drain(rec)
	if len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal "+ReasonEndpointHealthy+" Endpoint primary is healthy again") {
		t.Fatalf("Events after the device came back: %v", ev)
	}
	// No change: no Event.
	syncRecording(t, down[0], sources(false, seen), rec)
	drain(rec)
	if updates := syncRecording(t, down[0], sources(false, seen), rec); len(updates) != 0 || len(drain(rec)) != 0 {
		t.Fatal("an unchanged status was written or reported")
	}
}

func TestTailnetSyncEvents(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	w := &Writer{recorder: rec}
	tn := func(status metav1.ConditionStatus, reason string) *v1alpha1.TailscaleTailnet {
		return &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "t"}, Status: v1alpha1.TailscaleTailnetStatus{
			Conditions: []metav1.Condition{{Type: "TailnetSynced", Status: status, Reason: reason, Message: "HTTP 401"}}}}
	}
	w.tailnetEvents(tn(metav1.ConditionTrue, "Synced"), tn(metav1.ConditionFalse, "Unauthorized"))
	w.tailnetEvents(tn(metav1.ConditionFalse, "Unauthorized"), tn(metav1.ConditionFalse, "RateLimited"))
	w.tailnetEvents(tn(metav1.ConditionFalse, "RateLimited"), tn(metav1.ConditionTrue, "Synced"))
	w.tailnetEvents(&v1alpha1.TailscaleTailnet{}, tn(metav1.ConditionTrue, "Synced"))
	ev := drain(rec)
	if len(ev) != 2 || !strings.HasPrefix(ev[0], "Warning "+ReasonTailnetSyncLost+" Tailscale API not in sync (Unauthorized)") ||
		!strings.HasPrefix(ev[1], "Normal "+ReasonTailnetSynced) {
		t.Fatalf("Events: %v", ev)
	}
}
