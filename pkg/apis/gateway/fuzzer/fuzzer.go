// Package fuzzer fills objects of the gateway.tailscale.com API for round-trip tests.
package fuzzer

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeserializer "k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/randfill"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// Funcs returns fuzzer functions that keep random objects stable under serialization: quantities
// are canonical, and fields the decoder defaults are always set.
var Funcs = func(runtimeserializer.CodecFactory) []any {
	return []any{
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewMilliQuantity(c.Int63n(1000), resource.DecimalSI)
		},
		func(s *gateway.TailscaleTailnetSpec, c randfill.Continue) {
			c.FillNoCustom(s)
			fill(c, &s.Tailnet)
			fill(c, &s.OAuthSecretNamespace)
		},
		func(a *gateway.AllowedNamespaces, c randfill.Continue) {
			c.FillNoCustom(a)
			fill(c, (*string)(&a.From))
		},
		func(h *gateway.HealthCheckConfig, c randfill.Continue) {
			c.FillNoCustom(h)
			fillPtr(c, &h.Enabled)
			fill(c, (*string)(&h.Type))
			fill(c, &h.Path)
			fillPtr(c, &h.HealthyThreshold)
			fillPtr(c, &h.UnhealthyThreshold)
			fillPtr(c, &h.ExpectedStatus)
			fillDuration(c, &h.Interval)
			fillDuration(c, &h.Timeout)
		},
		func(s *gateway.ServiceDiscoveryConfig, c randfill.Continue) {
			c.FillNoCustom(s)
			fillPtr(c, &s.AutoRegister)
		},
		func(p *gateway.ProxyConfig, c randfill.Continue) {
			c.FillNoCustom(p)
			fillPtr(c, &p.Replicas)
			fill(c, &p.ConnectionType)
		},
		func(p *gateway.ProxyPort, c randfill.Continue) {
			c.FillNoCustom(p)
			fill(c, &p.Protocol)
		},
		func(l *gateway.LoadBalancingConfig, c randfill.Continue) {
			c.FillNoCustom(l)
			fill(c, (*string)(&l.Strategy))
		},
		func(s *gateway.TailscaleGatewaySpec, c randfill.Continue) {
			c.FillNoCustom(s)
			fill(c, &s.GatewayRef.Group)
			fill(c, &s.GatewayRef.Kind)
		},
		func(t *gateway.TailnetConfiguration, c randfill.Continue) {
			c.FillNoCustom(t)
			fillPtr(c, &t.Priority)
			fill(c, &t.TailscaleTailnetRef.Group)
			fill(c, &t.TailscaleTailnetRef.Kind)
		},
		func(i *gateway.IngressRouteConfig, c randfill.Continue) {
			c.FillNoCustom(i)
			fill(c, &i.PathPrefix)
		},
		func(s *gateway.ServiceCoordinationConfig, c randfill.Continue) {
			c.FillNoCustom(s)
			fill(c, &s.Strategy)
		},
		func(l *gateway.GatewayLoadBalancingConfig, c randfill.Continue) {
			c.FillNoCustom(l)
			fill(c, &l.Strategy)
		},
	}
}

// fill sets an empty string to a random non-empty one.
func fill(c randfill.Continue, s *string) {
	for *s == "" {
		*s = c.String(0)
	}
}

// fillPtr sets a nil pointer to a random value.
func fillPtr[T any](c randfill.Continue, p **T) {
	if *p == nil {
		*p = new(T)
		c.Fill(*p)
	}
}

// fillDuration sets a nil duration to a random one.
func fillDuration(c randfill.Continue, d **metav1.Duration) {
	if *d == nil {
		*d = &metav1.Duration{Duration: time.Duration(c.Int63())}
	}
}
