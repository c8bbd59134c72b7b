// Package tsgateway reconciles TailscaleGateways: it generates the HTTPRoutes (and Envoy Gateway
// BackendTrafficPolicies for retries) that spec.tailnets[].routeGeneration asks for, attached to
// the referenced Gateway and pointing at the TailscaleEndpoints and TailscaleServices of each
// tailnet, and reports routes, listeners and services in status.
//
// Generated objects live in the TailscaleGateway's namespace, are named
// "<tailscalegateway>-<tailnet>-<ingress|egress>-<ep|svc>-<object>" (ep: TailscaleEndpoints, svc:
// TailscaleServices; names longer than 253 characters are cut and end in a hash), carry the
// labels LabelGateway, LabelTailnet, LabelDirection and LabelManagedBy, and are controlled
// (ownerReference) by the TailscaleGateway, so that Kubernetes' garbage collector deletes them
// with it. An existing object of that name that the TailscaleGateway does not control is never
// changed: the Ready condition (reason RouteConflict) and an Event say so.
package tsgateway

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Labels of generated objects.
const (
	LabelGateway   = "gateway.tailscale.com/tailscale-gateway"
	LabelTailnet   = "gateway.tailscale.com/tailnet"
	LabelDirection = "gateway.tailscale.com/route-direction"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of LabelManagedBy.
	ManagedBy = "tailscale-gateway"
)

// Route directions.
const (
	DirectionIngress = "ingress"
	DirectionEgress  = "egress"
)

// servicePlaceholder is substituted with the backend object's name.
const servicePlaceholder = "{service}"

// BackendTrafficPolicyGVR is Envoy Gateway's BackendTrafficPolicy.
var BackendTrafficPolicyGVR = schema.GroupVersionResource{Group: "gateway.envoyproxy.io", Version: "v1alpha1", Resource: "backendtrafficpolicies"}

// RetryTriggers are the retryOn triggers of generated BackendTrafficPolicies: the same as the
// extension hook applies to hand-written routes (pkg/extension/hook), with 503 retriable.
var RetryTriggers = []string{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}

// Input is what a TailscaleGateway's routes are generated from.
type Input struct {
	Gateway *v1alpha1.TailscaleGateway
	// Tailnets by name (a TailscaleTailnet missing here generates nothing for its tailnets).
	Tailnets  map[string]*v1alpha1.TailscaleTailnet
	Endpoints []*v1alpha1.TailscaleEndpoints
	Services  []*v1alpha1.TailscaleServices
}

// Output is the generated objects and what could not be generated.
type Output struct {
	Routes []*gwapiv1.HTTPRoute
	// Policies are BackendTrafficPolicies (one per egress route with a retry policy).
	Policies []*unstructured.Unstructured
	// RoutesPerTailnet counts the routes of each spec.tailnets[].name.
	RoutesPerTailnet map[string]int32
	// Backends are the TailscaleEndpoints and TailscaleServices routes were generated for, by
	// "Kind/name", deduplicated across tailnets.
	Backends map[string]bool
	// Problems are objects that got no route, with why.
	Problems []string
}

// Generate returns the routes and policies of in. It is pure: the same input gives the same
// output, in a stable order.
func Generate(in Input) Output {
	gw := in.Gateway
	out := Output{RoutesPerTailnet: map[string]int32{}, Backends: map[string]bool{}}
	for _, t := range gw.Spec.Tailnets {
		rg := t.RouteGeneration
		if rg == nil || (!enabledIngress(rg) && !enabledEgress(rg)) {
			continue
		}
		tn, ok := in.Tailnets[t.TailscaleTailnetRef.Name]
		if !ok {
			continue
		}
		for _, b := range backendsOf(gw, t, tn, in.Endpoints, in.Services) {
			if enabledIngress(rg) {
				r, err := ingressRoute(gw, t, b)
				if err != nil {
					out.Problems = append(out.Problems, err.Error())
				} else {
					out.Routes = append(out.Routes, r)
					out.RoutesPerTailnet[t.Name]++
					out.Backends[b.kind+"/"+b.name] = true
				}
			}
			if enabledEgress(rg) {
				r, err := egressRoute(gw, t, b)
				if err != nil {
					out.Problems = append(out.Problems, err.Error())
					continue
				}
				out.Routes = append(out.Routes, r)
				out.RoutesPerTailnet[t.Name]++
				out.Backends[b.kind+"/"+b.name] = true
				if p := retryPolicy(gw, t, r); p != nil {
					out.Policies = append(out.Policies, p)
				}
			}
		}
	}
	return out
}

func enabledIngress(rg *v1alpha1.RouteGenerationConfig) bool {
	return rg.Ingress != nil && rg.Ingress.Enabled
}
func enabledEgress(rg *v1alpha1.RouteGenerationConfig) bool {
	return rg.Egress != nil && rg.Egress.Enabled
}

// backend is one TailscaleEndpoints or TailscaleServices a route points at.
type backend struct {
	kind, name string
}

func (b backend) abbrev() string {
	if b.kind == backends.KindServices {
		return "svc"
	}
	return "ep"
}

// InTailnet reports whether a TailscaleEndpoints' spec.tailnet names tn: its name, or its
// tailnet domain.
func InTailnet(tailnet string, tn *v1alpha1.TailscaleTailnet) bool {
	if tailnet == tn.Name {
		return true
	}
	d := tn.Spec.Tailnet
	return d != "" && d != v1alpha1.DefaultTailnet && strings.EqualFold(strings.TrimSuffix(tailnet, "."), strings.TrimSuffix(d, "."))
}

// backendsOf returns the TailscaleEndpoints in tn and the TailscaleServices that select one of
// them or provision into tn, sorted by kind and name, for gw's tailnet configuration t. Of the
// objects TailscaleGateways generate, only the remote services discovery found are backends:
// listener objects (GenerateListeners), discovery's hosts and the local Services it exposes to
// the tailnet are not. A remote service found on several of gw's tailnet configurations is
// grouped by discovery into one failover TailscaleServices (discovery.RoleRemoteGroup): the
// group is a backend of the configuration it is labelled with (the highest spec.tailnets[]
// priority), once, and the remote TailscaleEndpoints it selects are backends of none.
func backendsOf(gw *v1alpha1.TailscaleGateway, t v1alpha1.TailnetConfiguration, tn *v1alpha1.TailscaleTailnet, eps []*v1alpha1.TailscaleEndpoints, svcs []*v1alpha1.TailscaleServices) []backend {
	var groups []labels.Selector
	for _, s := range svcs {
		if remoteGroup(s) && s.Spec.Selector != nil {
			if sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector); err == nil && !sel.Empty() {
				groups = append(groups, sel)
			}
		}
	}
	grouped := func(e *v1alpha1.TailscaleEndpoints) bool {
		return slices.ContainsFunc(groups, func(sel labels.Selector) bool { return sel.Matches(labels.Set(e.Labels)) })
	}
	var out []backend
	for _, e := range eps {
		if InTailnet(e.Spec.Tailnet, tn) && routeBackend(e) && !grouped(e) {
			out = append(out, backend{backends.KindEndpoints, e.Name})
		}
	}
	for _, s := range svcs {
		if remoteGroup(s) {
			if s.Labels[discovery.LabelGateway] == gw.Name && s.Labels[discovery.LabelTailnet] == t.Name {
				out = append(out, backend{backends.KindServices, s.Name})
			}
			continue
		}
		if ServicesInTailnet(s, tn, eps) && routeBackend(s) {
			out = append(out, backend{backends.KindServices, s.Name})
		}
	}
	slices.SortFunc(out, func(a, b backend) int { return strings.Compare(a.kind+"/"+a.name, b.kind+"/"+b.name) })
	return out
}

// routeBackend reports whether routes are generated for o: it is not generated by a
// TailscaleGateway, or it is a remote service found by discovery.
func routeBackend(o metav1.Object) bool {
	return !tenancy.GeneratedByGateway(o) || o.GetLabels()[discovery.LabelRole] == discovery.RoleRemote
}

// remoteGroup reports whether s is a failover group discovery made of one remote service found
// on several tailnet configurations.
func remoteGroup(s *v1alpha1.TailscaleServices) bool {
	return tenancy.GeneratedByGateway(s) && s.Labels[discovery.LabelRole] == discovery.RoleRemoteGroup
}

// ServicesInTailnet reports whether s selects a TailscaleEndpoints of eps in tn or provisions
// its endpoints into tn.
func ServicesInTailnet(s *v1alpha1.TailscaleServices, tn *v1alpha1.TailscaleTailnet, eps []*v1alpha1.TailscaleEndpoints) bool {
	if t := s.Spec.EndpointTemplate; t != nil && InTailnet(t.Tailnet, tn) {
		return true
	}
	if s.Spec.Selector == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
	if err != nil || sel.Empty() {
		return false
	}
	for _, e := range eps {
		if e.Namespace == s.Namespace && sel.Matches(labels.Set(e.Labels)) && InTailnet(e.Spec.Tailnet, tn) {
			return true
		}
	}
	return false
}

// RouteName is the name of a generated object (see the package documentation).
func RouteName(gateway, tailnet, direction, abbrev, object string) string {
	return cutName(strings.Join([]string{gateway, tailnet, direction, abbrev, object}, "-"))
}

// cutName cuts an object name past 253 characters, ending it in a hash of the whole.
func cutName(name string) string {
	if len(name) <= 253 {
		return name
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return strings.TrimRight(name[:244], "-.") + "-" + strconv.FormatUint(uint64(h.Sum32()), 16)
}

func objectMeta(gw *v1alpha1.TailscaleGateway, t v1alpha1.TailnetConfiguration, direction string, b backend) metav1.ObjectMeta {
	controller := true
	return metav1.ObjectMeta{
		Name:      RouteName(gw.Name, t.Name, direction, b.abbrev(), b.name),
		Namespace: gw.Namespace,
		Labels: map[string]string{LabelGateway: gw.Name, LabelTailnet: t.Name, LabelDirection: direction,
			LabelManagedBy: ManagedBy},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "TailscaleGateway",
			Name: gw.Name, UID: gw.UID, Controller: &controller, BlockOwnerDeletion: &controller}},
	}
}

func parentRef(gw *v1alpha1.TailscaleGateway) gwapiv1.ParentReference {
	ref := gw.Spec.GatewayRef
	group := gwapiv1.Group(gwapiv1.GroupName)
	kind := gwapiv1.Kind("Gateway")
	p := gwapiv1.ParentReference{Group: &group, Kind: &kind, Name: gwapiv1.ObjectName(ref.Name)}
	if ref.Namespace != "" && ref.Namespace != gw.Namespace {
		ns := gwapiv1.Namespace(ref.Namespace)
		p.Namespace = &ns
	}
	return p
}

func backendRef(b backend, weight *int32) gwapiv1.HTTPBackendRef {
	group := gwapiv1.Group(v1alpha1.GroupName)
	kind := gwapiv1.Kind(b.kind)
	ref := gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Group: &group, Kind: &kind, Name: gwapiv1.ObjectName(b.name)},
	}}
	// Gateway API's default weight, set so that the stored route equals the generated one.
	w := int32(1)
	if weight != nil {
		w = *weight
	}
	ref.Weight = &w
	return ref
}

// hostname substitutes {service} in pattern and checks the result is a hostname Gateway API accepts.
func hostname(pattern, service string) (gwapiv1.Hostname, error) {
	h := strings.ReplaceAll(pattern, servicePlaceholder, service)
	check := strings.TrimPrefix(h, "*.")
	if len(h) > 253 {
		return "", fmt.Errorf("hostname %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(check, ".") {
		if len(label) == 0 || len(label) > 63 {
			return "", fmt.Errorf("hostname %q has a label that is empty or longer than 63 characters", h)
		}
	}
	return gwapiv1.Hostname(strings.ToLower(h)), nil
}

func pathMatch(prefix string) []gwapiv1.HTTPRouteMatch {
	typ := gwapiv1.PathMatchPathPrefix
	return []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: &typ, Value: &prefix}}}
}

func ingressRoute(gw *v1alpha1.TailscaleGateway, t v1alpha1.TailnetConfiguration, b backend) (*gwapiv1.HTTPRoute, error) {
	cfg := t.RouteGeneration.Ingress
	r := &gwapiv1.HTTPRoute{ObjectMeta: objectMeta(gw, t, DirectionIngress, b)}
	r.Spec.ParentRefs = []gwapiv1.ParentReference{parentRef(gw)}
	if cfg.HostPattern != "" {
		h, err := hostname(cfg.HostPattern, b.name)
		if err != nil {
			return nil, fmt.Errorf("%s %s (tailnet %s, ingress): %w", b.kind, b.name, t.Name, err)
		}
		r.Spec.Hostnames = []gwapiv1.Hostname{h}
	}
	prefix := cfg.PathPrefix
	if prefix == "" {
		prefix = "/"
	}
	var weight *int32
	if cfg.DefaultBackend != nil {
		weight = cfg.DefaultBackend.Weight
	}
	rule := gwapiv1.HTTPRouteRule{Matches: pathMatch(prefix), BackendRefs: []gwapiv1.HTTPBackendRef{backendRef(b, weight)}}
	for _, f := range cfg.Filters {
		rule.Filters = append(rule.Filters, filter(f))
	}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{rule}
	return r, nil
}

// EgressPathPrefix is the default egress pathPrefix: "/{service}/" without a hostPattern (so
// that the routes of different objects do not collide), "/" with one.
func EgressPathPrefix(cfg *v1alpha1.EgressRouteConfig) string {
	if cfg.PathPrefix != "" {
		return cfg.PathPrefix
	}
	if cfg.HostPattern != "" {
		return "/"
	}
	return "/" + servicePlaceholder + "/"
}

// egressRoute has one rule matching the pathPrefix, plus one per rewrite rule whose from differs
// from it, matching from and replacing it with to (the longest matching prefix wins, as Gateway
// API orders rules). A rewrite rule whose from is the pathPrefix rewrites the main rule.
func egressRoute(gw *v1alpha1.TailscaleGateway, t v1alpha1.TailnetConfiguration, b backend) (*gwapiv1.HTTPRoute, error) {
	cfg := t.RouteGeneration.Egress
	r := &gwapiv1.HTTPRoute{ObjectMeta: objectMeta(gw, t, DirectionEgress, b)}
	r.Spec.ParentRefs = []gwapiv1.ParentReference{parentRef(gw)}
	if cfg.HostPattern != "" {
		h, err := hostname(cfg.HostPattern, b.name)
		if err != nil {
			return nil, fmt.Errorf("%s %s (tailnet %s, egress): %w", b.kind, b.name, t.Name, err)
		}
		r.Spec.Hostnames = []gwapiv1.Hostname{h}
	}
	sub := func(s string) string { return strings.ReplaceAll(s, servicePlaceholder, b.name) }
	prefix := sub(EgressPathPrefix(cfg))
	var timeouts *gwapiv1.HTTPRouteTimeouts
	if cfg.Timeout != nil && cfg.Timeout.Duration > 0 {
		d := gwapiv1.Duration(FormatDuration(cfg.Timeout.Duration))
		timeouts = &gwapiv1.HTTPRouteTimeouts{Request: &d}
	}
	rule := func(match string, rewrite string) gwapiv1.HTTPRouteRule {
		if rewrite != "" && len(match) > 1 {
			// Gateway API matches "/p" and "/p/" alike, but Envoy Gateway v1.9.1 rewrites from the
			// value as written: from "/p/", a request for "/p" is not rewritten and "/p/x" to
			// "/v2" becomes "/v2x". From "/p" both are rewritten element-wise.
			match = strings.TrimRight(match, "/")
		}
		rr := gwapiv1.HTTPRouteRule{Matches: pathMatch(match), BackendRefs: []gwapiv1.HTTPBackendRef{backendRef(b, nil)}, Timeouts: timeouts}
		if rewrite != "" {
			rw := rewrite
			rr.Filters = []gwapiv1.HTTPRouteFilter{{Type: gwapiv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwapiv1.HTTPURLRewriteFilter{
				Path: &gwapiv1.HTTPPathModifier{Type: gwapiv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &rw}}}}
		}
		return rr
	}
	main := rule(prefix, "")
	var extra []gwapiv1.HTTPRouteRule
	seen := map[string]bool{prefix: true}
	for _, rw := range cfg.RewriteRules {
		from, to := sub(rw.From), sub(rw.To)
		if from == prefix {
			main = rule(prefix, to)
			continue
		}
		if seen[from] {
			continue // the first rewrite of a prefix wins
		}
		seen[from] = true
		extra = append(extra, rule(from, to))
	}
	r.Spec.Rules = append([]gwapiv1.HTTPRouteRule{main}, extra...)
	return r, nil
}

func filter(f v1alpha1.HTTPRouteFilter) gwapiv1.HTTPRouteFilter {
	out := gwapiv1.HTTPRouteFilter{Type: gwapiv1.HTTPRouteFilterType(f.Type)}
	headers := func(h *v1alpha1.HTTPHeaderFilter) *gwapiv1.HTTPHeaderFilter {
		hf := &gwapiv1.HTTPHeaderFilter{Remove: slices.Clone(h.Remove)}
		for _, s := range h.Set {
			hf.Set = append(hf.Set, gwapiv1.HTTPHeader{Name: gwapiv1.HTTPHeaderName(s.Name), Value: s.Value})
		}
		for _, a := range h.Add {
			hf.Add = append(hf.Add, gwapiv1.HTTPHeader{Name: gwapiv1.HTTPHeaderName(a.Name), Value: a.Value})
		}
		return hf
	}
	if f.RequestHeaderModifier != nil {
		out.RequestHeaderModifier = headers(f.RequestHeaderModifier)
	}
	if f.ResponseHeaderModifier != nil {
		out.ResponseHeaderModifier = headers(f.ResponseHeaderModifier)
	}
	if rw := f.URLRewrite; rw != nil {
		out.URLRewrite = &gwapiv1.HTTPURLRewriteFilter{}
		if rw.Hostname != "" {
			h := gwapiv1.PreciseHostname(rw.Hostname)
			out.URLRewrite.Hostname = &h
		}
		if rw.ReplacePrefixMatch != "" {
			p := rw.ReplacePrefixMatch
			out.URLRewrite.Path = &gwapiv1.HTTPPathModifier{Type: gwapiv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &p}
		}
	}
	return out
}

// retryPolicy returns the BackendTrafficPolicy carrying egress retries for route r, or nil.
func retryPolicy(gw *v1alpha1.TailscaleGateway, t v1alpha1.TailnetConfiguration, r *gwapiv1.HTTPRoute) *unstructured.Unstructured {
	rp := t.RouteGeneration.Egress.RetryPolicy
	if rp == nil || rp.NumRetries == nil {
		return nil
	}
	retry := map[string]any{
		"numRetries": int64(max(*rp.NumRetries, 0)),
		"retryOn":    map[string]any{"triggers": toAny(RetryTriggers), "httpStatusCodes": []any{int64(503)}},
	}
	perRetry := map[string]any{}
	if rp.PerTryTimeout != nil {
		perRetry["timeout"] = FormatDuration(rp.PerTryTimeout.Duration)
	}
	if rp.BackoffBaseInterval != nil {
		backoff := map[string]any{"baseInterval": FormatDuration(rp.BackoffBaseInterval.Duration)}
		if rp.BackoffMaxInterval != nil {
			backoff["maxInterval"] = FormatDuration(rp.BackoffMaxInterval.Duration)
		}
		perRetry["backOff"] = backoff
	}
	if len(perRetry) > 0 {
		retry["perRetry"] = perRetry
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": BackendTrafficPolicyGVR.GroupVersion().String(),
		"kind":       "BackendTrafficPolicy",
		"spec": map[string]any{
			"targetRefs": []any{map[string]any{"group": gwapiv1.GroupName, "kind": "HTTPRoute", "name": r.Name}},
			"retry":      retry,
		},
	}}
	u.SetName(r.Name)
	u.SetNamespace(r.Namespace)
	u.SetLabels(r.Labels)
	u.SetOwnerReferences(r.OwnerReferences)
	return u
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// FormatDuration writes d in Gateway API's duration format (GEP-2257: hours, minutes, seconds
// and milliseconds, e.g. "1m30s", "1500ms"), rounded to the millisecond; zero is "0s".
func FormatDuration(d time.Duration) string {
	ms := d.Round(time.Millisecond).Milliseconds()
	if ms <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		unit string
	}{{3_600_000, "h"}, {60_000, "m"}, {1000, "s"}, {1, "ms"}} {
		if v := ms / u.n; v > 0 {
			fmt.Fprintf(&b, "%d%s", v, u.unit)
			ms -= v * u.n
		}
	}
	return b.String()
}
