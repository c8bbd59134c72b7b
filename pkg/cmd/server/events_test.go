package server

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// A flapping endpoint cannot flood the core API: past the burst, its Events are dropped.
func TestEventsAreRateLimitedPerObject(t *testing.T) {
	core := fake.NewClientset()
	rec := newEventRecorder(core, "test")
	flapping := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: "flapping", UID: "u1"}}
	quiet := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: "quiet", UID: "u2"}}
	for i := range 50 {
		if i%2 == 0 {
			rec.Eventf(flapping, corev1.EventTypeWarning, "EndpointUnhealthy", "Endpoint web is unhealthy (%d)", i)
		} else {
			rec.Eventf(flapping, corev1.EventTypeNormal, "EndpointHealthy", "Endpoint web is healthy again (%d)", i)
		}
	}
	rec.Eventf(quiet, corev1.EventTypeWarning, "EndpointUnhealthy", "Endpoint db is unhealthy")

	// The broadcaster handles Events in order: once quiet's arrives, flapping's are all done.
	writes := func(name string) int {
		n := 0
		for _, a := range core.Actions() {
			var ev *corev1.Event
			switch a := a.(type) {
			case clienttesting.CreateAction:
				ev, _ = a.GetObject().(*corev1.Event)
			case clienttesting.PatchAction:
				// Patches update the count of an Event created before (only flapping's repeat).
				if name == "flapping" {
					n++
				}
				continue
			}
			if ev != nil && ev.InvolvedObject.Name == name {
				n++
			}
		}
		return n
	}
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return writes("quiet") == 1, nil
	})
	if err != nil {
		t.Fatalf("the quiet object's Event never arrived: %v", err)
	}
	if got := writes("flapping"); got > eventCorrelation.BurstSize || got == 0 {
		t.Fatalf("%d writes of the flapping object's 50 Events, want 1..%d", got, eventCorrelation.BurstSize)
	}
	t.Logf("%d of 50 Events written", writes("flapping"))
}
