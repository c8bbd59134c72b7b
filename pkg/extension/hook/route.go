package hook

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
)

// retryOn is what egress retries retry: Envoy Gateway's own default triggers for retries without
// explicit ones (connection failures, refused streams, gRPC unavailable and cancelled, and 503).
const retryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

// ruleOf returns the HTTPRoute rule an xDS route was built from: the rule's cluster is the
// route's action, and Envoy Gateway names routes httproute/<ns>/<name>/rule/<i>/match/<j>...
func ruleOf(r *routev3.Route) (backends.RouteRule, bool) {
	if rule, ok := backends.ParseClusterName(r.GetRoute().GetCluster()); ok {
		return rule, true
	}
	for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
		if rule, ok := backends.ParseClusterName(wc.GetName()); ok {
			return rule, true
		}
	}
	if i := strings.Index(r.GetName(), "/match/"); i > 0 {
		return backends.ParseClusterName(r.GetName()[:i])
	}
	return backends.RouteRule{}, false
}

// egressConfig returns the egress route configuration of gw that applies to objs: the one of the
// tailnet the TailscaleEndpoints among objs live in, else the only enabled one.
func egressConfig(gw *v1alpha1.TailscaleGateway, objs []backends.Object) *v1alpha1.EgressRouteConfig {
	var enabled []v1alpha1.TailnetConfiguration
	for _, t := range gw.Spec.Tailnets {
		if rg := t.RouteGeneration; rg != nil && rg.Egress != nil && rg.Egress.Enabled {
			enabled = append(enabled, t)
		}
	}
	for _, o := range objs {
		if o.Endpoints == nil {
			continue
		}
		for _, t := range enabled {
			if t.TailscaleTailnetRef.Name == o.Endpoints.Spec.Tailnet {
				return t.RouteGeneration.Egress
			}
		}
	}
	if len(enabled) == 1 {
		return enabled[0].RouteGeneration.Egress
	}
	return nil
}

// ShapeRoute returns a copy of in with the timeout and retry policy of egress, where the route
// has none of its own (an HTTPRoute's timeouts or a BackendTrafficPolicy's retries win).
func ShapeRoute(in *routev3.Route, egress *v1alpha1.EgressRouteConfig) *routev3.Route {
	action := in.GetRoute()
	if action == nil || egress == nil {
		return in
	}
	out := proto.Clone(in).(*routev3.Route)
	action = out.GetRoute()
	if egress.Timeout != nil && action.Timeout == nil {
		action.Timeout = durationpb.New(egress.Timeout.Duration)
	}
	if rp := egress.RetryPolicy; rp != nil && rp.NumRetries != nil && action.RetryPolicy == nil {
		policy := &routev3.RetryPolicy{RetryOn: retryOn, RetriableStatusCodes: []uint32{503},
			NumRetries: wrapperspb.UInt32(uint32(max(*rp.NumRetries, 0))), PerTryTimeout: duration(rp.PerTryTimeout)}
		if rp.BackoffBaseInterval != nil {
			policy.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: duration(rp.BackoffBaseInterval),
				MaxInterval: duration(rp.BackoffMaxInterval)}
		}
		action.RetryPolicy = policy
	}
	return out
}
