// Package objects builds valid objects of every kind for integration and e2e tests.
package objects

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Tailnet returns a valid TailscaleTailnet for company.ts.net.
func Tailnet(name string) *v1alpha1.TailscaleTailnet {
	return &v1alpha1.TailscaleTailnet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"env": "test"}},
		Spec: v1alpha1.TailscaleTailnetSpec{
			Tailnet:         "company.ts.net",
			OAuthSecretName: "tailscale-oauth",
			Tags:            []string{"tag:k8s-operator"},
		},
	}
}

// Endpoints returns a valid TailscaleEndpoints of three endpoints (HTTP with a health check, TCP,
// and gRPC on an IPv6 tailnet address), labelled service-type=web.
func Endpoints(ns, name string) *v1alpha1.TailscaleEndpoints {
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"service-type": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{
			Tailnet: "company.ts.net",
			Endpoints: []v1alpha1.TailscaleEndpoint{
				{Name: "api-server", TailscaleIP: "100.64.0.10", TailscaleFQDN: "api-server.company.ts.net", Port: 8080,
					Protocol: v1alpha1.ProtocolHTTP, HealthCheck: &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Path: "/health"}},
				{Name: "postgres", TailscaleIP: "100.64.0.11", TailscaleFQDN: "postgres.company.ts.net", Port: 5432,
					Protocol: v1alpha1.ProtocolTCP},
				{Name: "grpc", TailscaleIP: "fd7a:115c:a1e0::12", TailscaleFQDN: "grpc.company.ts.net", Port: 9090,
					Protocol: v1alpha1.ProtocolGRPC},
			},
		},
	}
}

// Services returns a valid TailscaleServices selecting service-type=web, with a failover strategy.
func Services(ns, name string) *v1alpha1.TailscaleServices {
	return &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector:   &metav1.LabelSelector{MatchLabels: map[string]string{"service-type": "web"}},
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:" + name, Ports: []string{"tcp:80"}, Tags: []string{"tag:web"}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{
				Strategy: v1alpha1.StrategyFailover,
				FailoverConfig: &v1alpha1.FailoverConfig{
					// Endpoints(ns, "web"), which the selector selects, is secondary: a backend
					// named in neither tier would get no traffic.
					PrimaryEndpoints: []string{"web-east"}, SecondaryEndpoints: []string{"web-west", "web"},
				},
			},
		},
	}
}

// Gateway returns a valid TailscaleGateway with one tailnet.
func Gateway(ns, name string) *v1alpha1.TailscaleGateway {
	return &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "envoy-gateway", Namespace: "envoy-gateway-system"},
			Tailnets: []v1alpha1.TailnetConfiguration{{
				Name:                "main-tailnet",
				TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "main-tailnet"},
				RouteGeneration: &v1alpha1.RouteGenerationConfig{Ingress: &v1alpha1.IngressRouteConfig{
					Enabled: true, HostPattern: "{service}.company.ts.net",
				}},
			}},
		},
	}
}
