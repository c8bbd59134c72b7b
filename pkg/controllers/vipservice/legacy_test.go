package vipservice

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Heartbeats written by an earlier version (LegacyHeartbeatAnnotation) still keep a shared
// Service's references alive; the later heartbeat of a reference wins, and the next write keeps
// them under HeartbeatAnnotation only.
func TestLegacyHeartbeatsStillRead(t *testing.T) {
	old := now.Add(-2 * ttl)
	raw := func(m map[string]string) string { b, _ := json.Marshal(m); return string(b) }
	ann := annotated([]OwnerRef{ours, b}, map[string]string{ours.key(): old.Format(time.RFC3339)}, map[string]string{
		LegacyHeartbeatAnnotation: raw(map[string]string{b.key(): now.Format(time.RFC3339), ours.key(): now.Format(time.RFC3339)}),
	})
	o, err := parseOwners(ann)
	if err != nil {
		t.Fatal(err)
	}
	if !o.heartbeats[b.key()].Equal(now) || !o.heartbeats[ours.key()].Equal(now) {
		t.Fatalf("heartbeats %v, want both at %v (the legacy key's, being later)", o.heartbeats, now)
	}
	out := o.annotations(ann, ours, now, time.Hour)
	if _, ok := out[LegacyHeartbeatAnnotation]; ok {
		t.Fatalf("legacy heartbeats kept: %v", out)
	}
	back, err := parseOwners(out)
	if err != nil || !back.heartbeats[b.key()].Equal(now) {
		t.Fatalf("b's legacy heartbeat lost on rewrite: %v %v", out, err)
	}
}

// Services an earlier version recorded under LegacyRegisteredAnnotation are still released.
func TestLegacyRegisteredAnnotationStillRead(t *testing.T) {
	e := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		LegacyRegisteredAnnotation: `["company.ts.net/svc:old"]`,
		RegisteredAnnotation:       `["company.ts.net/svc:new"]`,
	}}}
	if got := registeredOf(e); !slices.Equal(got, []string{"company.ts.net/svc:new", "company.ts.net/svc:old"}) {
		t.Fatalf("registeredOf = %v", got)
	}
	delete(e.Annotations, RegisteredAnnotation)
	if got := registeredOf(e); !slices.Equal(got, []string{"company.ts.net/svc:old"}) {
		t.Fatalf("registeredOf with the legacy key only = %v", got)
	}
}
