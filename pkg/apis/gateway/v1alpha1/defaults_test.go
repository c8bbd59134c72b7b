package v1alpha1

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

func defaulted(t *testing.T, obj runtime.Object) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	scheme.Default(obj)
}

func TestHealthCheckDefaults(t *testing.T) {
	obj := &TailscaleEndpoints{Spec: TailscaleEndpointsSpec{Endpoints: []TailscaleEndpoint{{HealthCheck: &HealthCheckConfig{}}}}}
	defaulted(t, obj)
	want := &HealthCheckConfig{
		Enabled:            ptr.To(false),
		Type:               ProtocolHTTP,
		Path:               "/",
		Interval:           &metav1.Duration{Duration: 30 * time.Second},
		Timeout:            &metav1.Duration{Duration: 10 * time.Second},
		HealthyThreshold:   ptr.To[int32](2),
		UnhealthyThreshold: ptr.To[int32](3),
		ExpectedStatus:     ptr.To[int32](200),
	}
	if got := obj.Spec.Endpoints[0].HealthCheck; !equality.Semantic.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestHealthCheckDefaultsKeepSetValuesAndSkipHTTPOnlyFieldsForTCP(t *testing.T) {
	hc := &HealthCheckConfig{Enabled: ptr.To(true), Type: ProtocolTCP, Interval: &metav1.Duration{Duration: time.Minute}, HealthyThreshold: ptr.To[int32](5)}
	obj := &TailscaleServices{Spec: TailscaleServicesSpec{LoadBalancing: &LoadBalancingConfig{HealthCheck: hc}}}
	defaulted(t, obj)
	if !*hc.Enabled || hc.Interval.Duration != time.Minute || *hc.HealthyThreshold != 5 {
		t.Fatalf("set values changed: %+v", hc)
	}
	if hc.Path != "" || hc.ExpectedStatus != nil {
		t.Fatalf("HTTP-only defaults applied to a TCP check: path %q expectedStatus %v", hc.Path, hc.ExpectedStatus)
	}
	if hc.Timeout.Duration != 10*time.Second || *hc.UnhealthyThreshold != 3 {
		t.Fatalf("missing defaults: %+v", hc)
	}
}

func TestTailnetDefaults(t *testing.T) {
	obj := &TailscaleTailnet{}
	defaulted(t, obj)
	if obj.Spec.Tailnet != "-" || obj.Spec.OAuthSecretNamespace != "" {
		t.Fatalf("got %+v", obj.Spec)
	}
	withSecret := &TailscaleTailnet{Spec: TailscaleTailnetSpec{OAuthSecretName: "oauth"}}
	defaulted(t, withSecret)
	if withSecret.Spec.OAuthSecretNamespace != DefaultOAuthSecretNamespace {
		t.Fatalf("secret namespace = %q", withSecret.Spec.OAuthSecretNamespace)
	}
	// allowedNamespaces stays unset (every namespace admitted, as before the field existed);
	// set without from, it admits all.
	if obj.Spec.AllowedNamespaces != nil {
		t.Fatalf("allowedNamespaces defaulted to %+v", obj.Spec.AllowedNamespaces)
	}
	set := &TailscaleTailnet{Spec: TailscaleTailnetSpec{AllowedNamespaces: &AllowedNamespaces{}}}
	defaulted(t, set)
	if set.Spec.AllowedNamespaces.From != NamespacesFromAll {
		t.Fatalf("allowedNamespaces.from = %q", set.Spec.AllowedNamespaces.From)
	}
}

func TestServiceDiscoveryAndProxyDefaults(t *testing.T) {
	obj := &TailscaleEndpoints{Spec: TailscaleEndpointsSpec{
		ServiceDiscovery: &ServiceDiscoveryConfig{},
		Proxy:            &ProxyConfig{Ports: []ProxyPort{{Port: 80}}},
	}}
	defaulted(t, obj)
	if !*obj.Spec.ServiceDiscovery.AutoRegister {
		t.Error("autoRegister should default to true")
	}
	if p := obj.Spec.Proxy; *p.Replicas != 1 || p.ConnectionType != "bidirectional" || p.Ports[0].Protocol != "TCP" {
		t.Errorf("proxy defaults: %+v", p)
	}
	explicit := &TailscaleEndpoints{Spec: TailscaleEndpointsSpec{ServiceDiscovery: &ServiceDiscoveryConfig{AutoRegister: ptr.To(false)}}}
	defaulted(t, explicit)
	if *explicit.Spec.ServiceDiscovery.AutoRegister {
		t.Error("explicit autoRegister=false was overwritten")
	}
}

func TestServicesDefaults(t *testing.T) {
	obj := &TailscaleServices{Spec: TailscaleServicesSpec{
		LoadBalancing:    &LoadBalancingConfig{},
		EndpointTemplate: &EndpointTemplate{Proxy: &ProxyConfig{}},
	}}
	defaulted(t, obj)
	if obj.Spec.LoadBalancing.Strategy != StrategyRoundRobin {
		t.Errorf("strategy = %q", obj.Spec.LoadBalancing.Strategy)
	}
	if *obj.Spec.EndpointTemplate.Proxy.Replicas != 1 {
		t.Errorf("template proxy replicas = %d", *obj.Spec.EndpointTemplate.Proxy.Replicas)
	}
}

func TestGatewayDefaults(t *testing.T) {
	obj := &TailscaleGateway{Spec: TailscaleGatewaySpec{
		GatewayRef: LocalPolicyTargetReference{Name: "eg"},
		Tailnets: []TailnetConfiguration{{
			Name:                "main",
			TailscaleTailnetRef: LocalPolicyTargetReference{Name: "main"},
			RouteGeneration:     &RouteGenerationConfig{Ingress: &IngressRouteConfig{Enabled: true}},
		}},
		ServiceCoordination: &ServiceCoordinationConfig{Enabled: true},
		LoadBalancing:       &GatewayLoadBalancingConfig{HealthChecking: &HealthCheckConfig{}},
	}}
	defaulted(t, obj)
	s := obj.Spec
	if s.GatewayRef.Group != "gateway.networking.k8s.io" || s.GatewayRef.Kind != "Gateway" {
		t.Errorf("gatewayRef = %+v", s.GatewayRef)
	}
	tn := s.Tailnets[0]
	if *tn.Priority != 100 || tn.TailscaleTailnetRef.Kind != "TailscaleTailnet" || tn.TailscaleTailnetRef.Group != GroupName {
		t.Errorf("tailnet = %+v", tn)
	}
	if tn.RouteGeneration.Ingress.PathPrefix != "/" {
		t.Errorf("ingress pathPrefix = %q", tn.RouteGeneration.Ingress.PathPrefix)
	}
	if s.ServiceCoordination.Strategy != "shared" || s.LoadBalancing.Strategy != "round_robin" {
		t.Errorf("coordination %q, load balancing %q", s.ServiceCoordination.Strategy, s.LoadBalancing.Strategy)
	}
	if *s.LoadBalancing.HealthChecking.UnhealthyThreshold != 3 {
		t.Errorf("healthChecking not defaulted: %+v", s.LoadBalancing.HealthChecking)
	}
}

func TestHealthCheckTimeoutDefaultFitsShortIntervals(t *testing.T) {
	hc := &HealthCheckConfig{Interval: &metav1.Duration{Duration: 5 * time.Second}}
	defaulted(t, &TailscaleServices{Spec: TailscaleServicesSpec{LoadBalancing: &LoadBalancingConfig{HealthCheck: hc}}})
	if hc.Timeout.Duration != 2500*time.Millisecond {
		t.Fatalf("timeout = %s, want 2.5s", hc.Timeout.Duration)
	}
}
