package health

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

func TestCheckFromAPI(t *testing.T) {
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	tests := []struct {
		name   string
		in     *gateway.HealthCheckConfig
		want   Check
		wantOK bool
	}{
		{name: "nil", in: nil},
		{name: "enabled unset", in: &gateway.HealthCheckConfig{Type: gateway.ProtocolTCP}},
		{name: "disabled", in: &gateway.HealthCheckConfig{Enabled: ptr.To(false), Type: gateway.ProtocolTCP}},
		{
			name: "all fields",
			in: &gateway.HealthCheckConfig{
				Enabled: ptr.To(true), Type: gateway.ProtocolHTTPS, Path: "/api/v1/health",
				Interval: dur(15 * time.Second), Timeout: dur(5 * time.Second),
				HealthyThreshold: ptr.To[int32](3), UnhealthyThreshold: ptr.To[int32](2), ExpectedStatus: ptr.To[int32](204),
				Headers: map[string]string{"Authorization": "Bearer health-check-token"},
			},
			want: Check{
				Type: ProtocolHTTPS, Path: "/api/v1/health", Interval: 15 * time.Second, Timeout: 5 * time.Second,
				HealthyThreshold: 3, UnhealthyThreshold: 2, ExpectedStatus: 204,
				Headers: map[string]string{"Authorization": "Bearer health-check-token"},
			},
			wantOK: true,
		},
		{
			name:   "unset fields stay zero",
			in:     &gateway.HealthCheckConfig{Enabled: ptr.To(true), Type: gateway.ProtocolUDP},
			want:   Check{Type: ProtocolUDP},
			wantOK: true,
		},
		{
			name:   "HTTP check of the gRPC health method is a gRPC check",
			in:     &gateway.HealthCheckConfig{Enabled: ptr.To(true), Type: gateway.ProtocolHTTP, Path: "/grpc.health.v1.Health/Check", ExpectedStatus: ptr.To[int32](200)},
			want:   Check{Type: ProtocolGRPC, Path: "/grpc.health.v1.Health/Check", ExpectedStatus: 200},
			wantOK: true,
		},
		{
			name:   "gRPC check with a service",
			in:     &gateway.HealthCheckConfig{Enabled: ptr.To(true), Type: gateway.ProtocolGRPC, Path: "/billing.v1.Billing"},
			want:   Check{Type: ProtocolGRPC, Path: "/billing.v1.Billing"},
			wantOK: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := CheckFromAPI(tc.in)
			if ok != tc.wantOK || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CheckFromAPI() = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestCheckFromAPICopiesHeaders(t *testing.T) {
	in := &gateway.HealthCheckConfig{Enabled: ptr.To(true), Headers: map[string]string{"A": "1"}}
	c, _ := CheckFromAPI(in)
	in.Headers["A"] = "2"
	if c.Headers["A"] != "1" {
		t.Error("Check shares its headers with the API object")
	}
}

func TestCheckDefaults(t *testing.T) {
	got := Check{}.withDefaults()
	want := Check{Type: ProtocolHTTP, Path: "/", Interval: 30 * time.Second, Timeout: 10 * time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 3, ExpectedStatus: 200}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	if got := (Check{Type: "grpc", Interval: 4 * time.Second}).withDefaults(); got.Type != ProtocolGRPC || got.Path != "" || got.Timeout != 2*time.Second {
		t.Errorf("gRPC check with a short interval defaulted to %+v", got)
	}
}
