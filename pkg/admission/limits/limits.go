// Package limits is the admission plugin that bounds what one object may cost the server's
// prober and Envoy: a minimum health-check interval and timeout, and a maximum number of
// endpoints per TailscaleEndpoints. The bounds are the server's (flags), so they are checked at
// admission rather than in the types' static validation; refusals are 422 with field paths.
package limits

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// PluginName is the plugin's name in admission configuration.
const PluginName = "TailscaleGatewayLimits"

// Defaults of Limits.
const (
	DefaultMinInterval           = time.Second
	DefaultMinTimeout            = 100 * time.Millisecond
	DefaultMaxEndpointsPerObject = 256
)

// Limits are the bounds; a zero field does not bound.
type Limits struct {
	// MinInterval is the shortest health-check interval.
	MinInterval time.Duration
	// MinTimeout is the shortest health-check timeout.
	MinTimeout time.Duration
	// MaxEndpoints is the most spec.endpoints of one TailscaleEndpoints.
	MaxEndpoints int
}

// Defaults returns the default limits.
func Defaults() Limits {
	return Limits{MinInterval: DefaultMinInterval, MinTimeout: DefaultMinTimeout, MaxEndpoints: DefaultMaxEndpointsPerObject}
}

// Plugin refuses creations and updates beyond its Limits.
type Plugin struct {
	*admission.Handler
	limits Limits
}

var _ admission.ValidationInterface = &Plugin{}

// New returns the plugin enforcing l.
func New(l Limits) *Plugin {
	return &Plugin{Handler: admission.NewHandler(admission.Create, admission.Update), limits: l}
}

// Validate implements admission.ValidationInterface.
func (p *Plugin) Validate(_ context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetSubresource() != "" || a.GetKind().Group != gateway.GroupName {
		return nil
	}
	errs := p.Check(a.GetObject())
	if old := a.GetOldObject(); old != nil && len(errs) > 0 {
		// An object admitted under looser limits may still be edited elsewhere (and deleted).
		had := map[string]bool{}
		for _, e := range p.Check(old) {
			had[e.Field+"="+fmt.Sprint(e.BadValue)] = true
		}
		kept := errs[:0]
		for _, e := range errs {
			if !had[e.Field+"="+fmt.Sprint(e.BadValue)] {
				kept = append(kept, e)
			}
		}
		errs = kept
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(a.GetKind().GroupKind(), a.GetName(), errs)
}

// Check returns obj's violations of the limits.
func (p *Plugin) Check(obj any) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	switch o := obj.(type) {
	case *gateway.TailscaleEndpoints:
		if max := p.limits.MaxEndpoints; max > 0 && len(o.Spec.Endpoints) > max {
			errs = append(errs, field.TooMany(spec.Child("endpoints"), len(o.Spec.Endpoints), max))
		}
		for i := range o.Spec.Endpoints {
			errs = append(errs, p.healthCheck(o.Spec.Endpoints[i].HealthCheck, spec.Child("endpoints").Index(i).Child("healthCheck"))...)
		}
	case *gateway.TailscaleServices:
		if lb := o.Spec.LoadBalancing; lb != nil {
			errs = append(errs, p.healthCheck(lb.HealthCheck, spec.Child("loadBalancing", "healthCheck"))...)
		}
	case *gateway.TailscaleGateway:
		if lb := o.Spec.LoadBalancing; lb != nil {
			errs = append(errs, p.healthCheck(lb.HealthChecking, spec.Child("loadBalancing", "healthChecking"))...)
		}
		for i, t := range o.Spec.Tailnets {
			if rg := t.RouteGeneration; rg != nil && rg.Ingress != nil && rg.Ingress.DefaultBackend != nil {
				errs = append(errs, p.healthCheck(rg.Ingress.DefaultBackend.HealthCheck,
					spec.Child("tailnets").Index(i).Child("routeGeneration", "ingress", "defaultBackend", "healthCheck"))...)
			}
		}
	}
	return errs
}

// healthCheck checks one health check's interval and timeout (defaulted before admission).
func (p *Plugin) healthCheck(hc *gateway.HealthCheckConfig, path *field.Path) field.ErrorList {
	if hc == nil {
		return nil
	}
	var errs field.ErrorList
	if min := p.limits.MinInterval; min > 0 && hc.Interval != nil && hc.Interval.Duration < min {
		errs = append(errs, field.Invalid(path.Child("interval"), hc.Interval.Duration.String(),
			fmt.Sprintf("must be at least %s (the server's --health-check-min-interval)", min)))
	}
	if min := p.limits.MinTimeout; min > 0 && hc.Timeout != nil && hc.Timeout.Duration < min {
		errs = append(errs, field.Invalid(path.Child("timeout"), hc.Timeout.Duration.String(),
			fmt.Sprintf("must be at least %s (the server's --health-check-min-timeout)", min)))
	}
	return errs
}
