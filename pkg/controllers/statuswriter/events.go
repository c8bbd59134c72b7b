package statuswriter

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// Reasons of the Events the writer records for transitions it persists.
const (
	ReasonEndpointHealthy   = "EndpointHealthy"
	ReasonEndpointUnhealthy = "EndpointUnhealthy"
	ReasonTailnetSyncLost   = "TailnetSyncLost"
	ReasonTailnetSynced     = "TailnetSyncRegained"
)

// SetRecorder makes the writer record an Event for each transition it persists: an endpoint
// turning Healthy or Unhealthy, a tailnet losing or regaining sync. Call it before Run. Events
// are recorded once per persisted transition, so their number follows the transitions, not the
// probes; the recorder's broadcaster rate-limits them further per object.
func (w *Writer) SetRecorder(r record.EventRecorder) { w.recorder = r }

// endpointEvents records the health transitions between the persisted old and new status.
func (w *Writer) endpointEvents(old, updated *v1alpha1.TailscaleEndpoints) {
	if w.recorder == nil {
		return
	}
	before := map[string]string{}
	for _, e := range old.Status.Endpoints {
		before[e.Name] = e.Status
	}
	for _, e := range updated.Status.Endpoints {
		was, known := before[e.Name]
		if e.Status == was {
			continue
		}
		switch {
		case e.Status == livestatus.Unhealthy:
			w.recorder.Eventf(updated, corev1.EventTypeWarning, ReasonEndpointUnhealthy, "Endpoint %s is unhealthy%s", e.Name, detail(e.Error))
		case e.Status == livestatus.Healthy && known && was != "":
			w.recorder.Eventf(updated, corev1.EventTypeNormal, ReasonEndpointHealthy, "Endpoint %s is healthy again (was %s)", e.Name, was)
		}
	}
}

// tailnetEvents records a change of the TailnetSynced condition between the persisted old and
// new status: lost (True to False) and regained (False to True).
func (w *Writer) tailnetEvents(old, updated *v1alpha1.TailscaleTailnet) {
	if w.recorder == nil {
		return
	}
	was := meta.FindStatusCondition(old.Status.Conditions, "TailnetSynced")
	now := meta.FindStatusCondition(updated.Status.Conditions, "TailnetSynced")
	if was == nil || now == nil || was.Status == now.Status {
		return
	}
	switch {
	case was.Status == metav1.ConditionTrue && now.Status == metav1.ConditionFalse:
		w.recorder.Eventf(updated, corev1.EventTypeWarning, ReasonTailnetSyncLost, "Tailscale API not in sync (%s): %s; serving last-known state", now.Reason, now.Message)
	case was.Status == metav1.ConditionFalse && now.Status == metav1.ConditionTrue:
		w.recorder.Eventf(updated, corev1.EventTypeNormal, ReasonTailnetSynced, "Tailscale API in sync again")
	}
}

func detail(msg string) string {
	if msg == "" {
		return ""
	}
	return fmt.Sprintf(": %s", msg)
}
