package limits

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

func endpoints(interval time.Duration, labels map[string]string) *gateway.TailscaleEndpoints {
	return &gateway.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "e", Labels: labels},
		Spec: gateway.TailscaleEndpointsSpec{Endpoints: []gateway.TailscaleEndpoint{{Name: "x",
			HealthCheck: &gateway.HealthCheckConfig{Interval: &metav1.Duration{Duration: interval}}}}}}
}

func validate(p *Plugin, obj, old *gateway.TailscaleEndpoints) error {
	op := admission.Create
	var oldObj runtime.Object
	if old != nil {
		op, oldObj = admission.Update, old
	}
	attrs := admission.NewAttributesRecord(obj, oldObj, gateway.Kind("TailscaleEndpoints").WithVersion("v1alpha1"), "a", "e",
		gateway.Resource("tailscaleendpoints").WithVersion("v1alpha1"), "", op, nil, false, nil)
	return p.Validate(context.Background(), attrs, nil)
}

// An object admitted under looser limits can have other fields edited; tightening its interval
// further, or a new object, is refused.
func TestLimitsRatchetOnUpdate(t *testing.T) {
	p := New(Defaults())
	if err := validate(p, endpoints(100*time.Millisecond, nil), nil); err == nil {
		t.Fatal("create with a 100ms interval admitted")
	}
	old := endpoints(100*time.Millisecond, nil)
	if err := validate(p, endpoints(100*time.Millisecond, map[string]string{"edited": "yes"}), old); err != nil {
		t.Fatalf("label edit of an object admitted earlier: %v", err)
	}
	if err := validate(p, endpoints(50*time.Millisecond, nil), old); err == nil {
		t.Fatal("update to a 50ms interval admitted")
	}
	if err := validate(p, endpoints(time.Second, nil), nil); err != nil {
		t.Fatalf("1s interval: %v", err)
	}
}
