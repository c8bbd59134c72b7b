package eds

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Reasons a backendRef gets no endpoints, in the refused_backend_refs metric and the Events on
// the HTTPRoute.
const (
	// ReasonRefNotPermitted: a cross-namespace backendRef no ReferenceGrant allows.
	ReasonRefNotPermitted = refgrant.ReasonRefNotPermitted
	// ReasonNotAllowedByTailnet: the tailnet of the endpoints does not admit the route's namespace.
	ReasonNotAllowedByTailnet = tenancy.ReasonNotAllowedByTailnet
)

// clusterInput is one cluster's refs and where they come from.
type clusterInput struct {
	refs []backends.Ref
	// rule is the HTTPRoute rule the cluster is named after; ok false when its name names none.
	rule   backends.RouteRule
	ruleOK bool
	// route is the HTTPRoute from the route cache, nil for a cluster known from the hook alone.
	route *gwapiv1.HTTPRoute
	// registered: known from the hook alone (Envoy Gateway passed the objects).
	registered bool
}

// crossNamespace reports whether a ref of in names another namespace than its route's.
func (in clusterInput) crossNamespace() bool {
	for _, r := range in.refs {
		if !in.ruleOK || r.Namespace != in.rule.Namespace {
			return true
		}
	}
	return false
}

// refusal is one backendRef (or endpoints object reached through it) given no endpoints.
type refusal struct {
	reason, message string
}

// permittedRefs returns the refs of in that its route may use, and the refusals of the others:
// a ref to another namespace than the route's needs a ReferenceGrant there (Grants); without a
// ReferenceGrant API (Grants nil) only a cluster Envoy Gateway registered through the hook keeps
// them, as Envoy Gateway passes the objects of the backendRefs its own ReferenceGrants permit. A
// cluster whose name names no HTTPRoute rule keeps no cross-namespace ref.
func (s *Server) permittedRefs(in clusterInput) ([]backends.Ref, []refusal) {
	var out []backends.Ref
	var refused []refusal
	from := refgrant.FromHTTPRoute(in.rule.Namespace)
	for _, ref := range in.refs {
		to := ref.To()
		switch {
		case in.ruleOK && ref.Namespace == in.rule.Namespace:
		case in.ruleOK && s.grants == nil && in.registered:
		case in.ruleOK && s.grants.Permitted(from, to):
		default:
			refused = append(refused, refusal{reason: ReasonRefNotPermitted, message: refgrant.NotPermittedMessage(from, to)})
			continue
		}
		out = append(out, ref)
	}
	return out, refused
}

// routeView is the registry as one route's namespace may use it: TailscaleEndpoints whose tailnet
// does not admit that namespace are absent, and each is noted as a refusal.
type routeView struct {
	*Server
	namespace string
	refused   []refusal
}

var _ Source = &routeView{}

func (v *routeView) admits(eps *v1alpha1.TailscaleEndpoints) bool {
	if eps.Namespace == v.namespace {
		return true // the object's own namespace: decided by its Accepted condition
	}
	d := v.policy.Decide(v.namespace, eps.Spec.Tailnet)
	if !d.Allowed {
		v.refused = append(v.refused, refusal{reason: ReasonNotAllowedByTailnet,
			message: fmt.Sprintf("TailscaleEndpoints %s/%s: %s", eps.Namespace, eps.Name, d.Message)})
	}
	return d.Allowed
}

// TailscaleEndpoints implements Source.
func (v *routeView) TailscaleEndpoints(namespace, name string) (*v1alpha1.TailscaleEndpoints, bool) {
	o, ok := v.Server.TailscaleEndpoints(namespace, name)
	return o, ok && v.admits(o)
}

// SelectEndpoints implements Source.
func (v *routeView) SelectEndpoints(namespace string, selector labels.Selector) []*v1alpha1.TailscaleEndpoints {
	return slices.DeleteFunc(v.Server.SelectEndpoints(namespace, selector), func(e *v1alpha1.TailscaleEndpoints) bool { return !v.admits(e) })
}

// reportRefusals records a Warning Event on the cluster's HTTPRoute when its refusals changed
// since the last rebuild, and returns the number of refusals by reason.
func (s *Server) reportRefusals(name string, in clusterInput, refused []refusal, counts map[string]int) {
	for _, r := range refused {
		counts[r.reason]++
	}
	msgs := make([]string, len(refused))
	for i, r := range refused {
		msgs[i] = r.message
	}
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	joined := strings.Join(msgs, "; ")
	s.mu.Lock()
	prev := s.refusals[name]
	if joined == "" {
		delete(s.refusals, name)
	} else {
		s.refusals[name] = joined
	}
	s.mu.Unlock()
	if joined == "" || joined == prev || s.recorder == nil || !in.ruleOK {
		return
	}
	ref := &v1.ObjectReference{APIVersion: gwapiv1.GroupVersion.String(), Kind: "HTTPRoute", Namespace: in.rule.Namespace, Name: in.rule.Name}
	if in.route != nil {
		ref.UID, ref.ResourceVersion = in.route.UID, in.route.ResourceVersion
	}
	reason := refused[0].reason
	s.recorder.Eventf(ref, v1.EventTypeWarning, reason, "Rule %d: backendRefs get no endpoints: %s", in.rule.Index, joined)
}

// Refusals returns why backendRefs of cluster get no endpoints, "" when none is refused.
func (s *Server) Refusals(cluster string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusals[cluster]
}
