package tsgateway

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
)

// Path routes: the path-based routes of the workflow's step 7, one HTTPRoute per target, attached
// to the referenced Gateway like the other generated routes:
//
//   - "/gateway/<gateway>-<listener>/" per HTTP listener of the Gateway published on a tailnet
//     entry with routeGeneration.ingress.enabled, to that listener's TailscaleServices (whose one
//     external service is Envoy Gateway's Service on the listener's port), so that a client of
//     any listener reaches that listener through Envoy again;
//   - "/cross-cluster/<label>/" per Tailscale Service "svc:<label>" that discovery found on a
//     tailnet entry with routeGeneration.egress.enabled, to its remote TailscaleEndpoints (or its
//     failover group when found on several entries).
//
// Each rule rewrites the prefix to "/" (URLRewrite ReplacePrefixMatch), so the backend sees the
// path without it.
const (
	GatewayPathPrefix      = "/gateway/"
	CrossClusterPathPrefix = "/cross-cluster/"

	// LabelPathRoute marks a path route with PathRouteGateway or PathRouteCrossCluster.
	LabelPathRoute        = "gateway.tailscale.com/path-route"
	PathRouteGateway      = "gateway"
	PathRouteCrossCluster = "cross-cluster"

	// HopHeader is set on requests a /gateway/ rule sends back into Envoy; a /gateway/ request
	// carrying it is answered by Envoy Gateway with 500 instead of going round again, so one
	// request makes at most one extra pass through Envoy however often the prefix repeats.
	HopHeader = "X-Tailscale-Gateway-Hop"
	hopValue  = "1"

	// ReasonPathConflict is the Warning Event of a path route left out because another route of
	// the Gateway matches the same path prefix.
	ReasonPathConflict = "PathConflict"
)

// PathInput is what the path routes of a TailscaleGateway are generated from.
type PathInput struct {
	Gateway *v1alpha1.TailscaleGateway
	// Listeners are the referenced Gateway's.
	Listeners []gwapiv1.Listener
	// Published are the listener TailscaleServices in place (GenerateListeners, less those whose
	// name an object of someone else holds).
	Published []Listener
	Endpoints []*v1alpha1.TailscaleEndpoints
	Services  []*v1alpha1.TailscaleServices
	// Generated are the routes routeGeneration makes (Generate); Routes are the HTTPRoutes of the
	// cluster (those the TailscaleGateway controls are ignored).
	Generated []*gwapiv1.HTTPRoute
	Routes    []*gwapiv1.HTTPRoute
}

// PathOutput is the generated path routes and what was left out.
type PathOutput struct {
	Routes []*gwapiv1.HTTPRoute
	// Conflicts are prefixes another route of the Gateway already matches: "path P (HTTPRoute ns/name)".
	Conflicts []string
	// Problems are prefixes two objects would take; the one kept is named.
	Problems []string
}

// PathRouteName is the name of a path route: "<tailscalegateway>-path-gateway-<listener>" or
// "<tailscalegateway>-path-cross-cluster-<label>" (cut with a hash past 253 characters).
func PathRouteName(gateway, kind, target string) string {
	return cutName(strings.Join([]string{gateway, "path", kind, target}, "-"))
}

// pathTarget is one prefix and the object it goes to. The prefix has no trailing "/": Gateway API
// matches "/p" and "/p/" alike (path elements), but Envoy Gateway v1.9.1 builds the rewrite regex
// of ReplacePrefixMatch "/" from the value as written ("^/p/\/*"), which would leave the path
// "/p" unrewritten; from "/p" it is "^/p\/*", which strips "/p" and "/p/" alike.
type pathTarget struct {
	kind, prefix, target string // kind: PathRouteGateway or PathRouteCrossCluster
	tailnet, direction   string
	backend              backend
	hostname             string // the listener's hostname, when it names one host
}

// GeneratePaths returns the path routes of in. It is pure: the same input gives the same output,
// in a stable order.
func GeneratePaths(in PathInput) PathOutput {
	var out PathOutput
	targets := append(gatewayTargets(in), crossClusterTargets(in, &out)...)
	taken := takenPrefixes(in)
	names := map[string]bool{}
	for _, r := range in.Generated {
		names[r.Name] = true
	}
	for _, t := range targets {
		name := PathRouteName(in.Gateway.Name, t.kind, t.target)
		if by, ok := taken[t.prefix]; ok {
			out.Conflicts = append(out.Conflicts, fmt.Sprintf("path %s (%s)", t.prefix, by))
			continue
		}
		if names[name] {
			out.Problems = append(out.Problems, fmt.Sprintf("path %s: HTTPRoute name %s is a routeGeneration route's", t.prefix, name))
			continue
		}
		out.Routes = append(out.Routes, pathRoute(in.Gateway, name, t))
	}
	return out
}

// gatewayTargets are the /gateway/ prefixes: per HTTP listener, the listener TailscaleServices of
// the first tailnet entry (in spec order) with ingress routes that publishes it. HTTPS and TLS
// listeners are not targets (Envoy would speak cleartext to them), nor TCP and UDP ones.
func gatewayTargets(in PathInput) []pathTarget {
	gw := in.Gateway
	_, gwName := gatewayKey(gw)
	var out []pathTarget
	for _, l := range in.Listeners {
		if l.Protocol != gwapiv1.HTTPProtocolType {
			continue
		}
		for _, t := range gw.Spec.Tailnets {
			if t.RouteGeneration == nil || !enabledIngress(t.RouteGeneration) {
				continue
			}
			i := slices.IndexFunc(in.Published, func(p Listener) bool { return p.Tailnet == t.Name && p.Listener == string(l.Name) })
			if i < 0 {
				continue
			}
			target := gwName + "-" + string(l.Name)
			pt := pathTarget{kind: PathRouteGateway, prefix: GatewayPathPrefix + target, target: string(l.Name),
				tailnet: t.Name, direction: DirectionIngress, backend: backend{backends.KindServices, in.Published[i].Object}}
			if l.Hostname != nil && !strings.HasPrefix(string(*l.Hostname), "*") {
				pt.hostname = string(*l.Hostname)
			}
			out = append(out, pt)
			break
		}
	}
	return out
}

// crossCluster is one object standing for a remote Tailscale Service label.
type crossCluster struct {
	label, tailnet string
	priority       int32
	order          int // the tailnet entry's index
	backend        backend
}

// crossClusterTargets are the /cross-cluster/ prefixes: per remote Tailscale Service label, the
// failover group discovery made of it or its remote TailscaleEndpoints, on a tailnet entry with
// egress routes. Only objects the TailscaleGateway controls count. Should a label still have
// several objects (discovery could not group them), the one of the highest-priority entry (the
// first in spec order on a tie) takes the prefix and out.Problems names the others.
func crossClusterTargets(in PathInput, out *PathOutput) []pathTarget {
	gw := in.Gateway
	entry := map[string]int{}
	for i, t := range gw.Spec.Tailnets {
		if t.RouteGeneration != nil && enabledEgress(t.RouteGeneration) {
			entry[t.Name] = i
		}
	}
	var groups []labels.Selector
	var found []crossCluster
	add := func(o metav1.Object, kind string) {
		l := o.GetLabels()
		i, ok := entry[l[discovery.LabelTailnet]]
		if !ok || l[discovery.LabelRemoteService] == "" {
			return
		}
		found = append(found, crossCluster{label: l[discovery.LabelRemoteService], tailnet: l[discovery.LabelTailnet],
			priority: discovery.Priority(gw.Spec.Tailnets[i]), order: i, backend: backend{kind, o.GetName()}})
	}
	for _, s := range in.Services {
		if !controlledBy(s, gw) || s.Labels[discovery.LabelRole] != discovery.RoleRemoteGroup {
			continue
		}
		if s.Spec.Selector != nil {
			if sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector); err == nil && !sel.Empty() {
				groups = append(groups, sel)
			}
		}
		add(s, backends.KindServices)
	}
	for _, e := range in.Endpoints {
		if !controlledBy(e, gw) || e.Labels[discovery.LabelRole] != discovery.RoleRemote ||
			slices.ContainsFunc(groups, func(sel labels.Selector) bool { return sel.Matches(labels.Set(e.Labels)) }) {
			continue
		}
		add(e, backends.KindEndpoints)
	}
	// By label, then the winner first: highest priority, then spec order, then name.
	slices.SortFunc(found, func(a, b crossCluster) int {
		if c := strings.Compare(a.label, b.label); c != 0 {
			return c
		}
		if a.priority != b.priority {
			return int(b.priority - a.priority)
		}
		if a.order != b.order {
			return a.order - b.order
		}
		return strings.Compare(a.backend.name, b.backend.name)
	})
	var targets []pathTarget
	for i, f := range found {
		prefix := CrossClusterPathPrefix + f.label
		if i > 0 && found[i-1].label == f.label {
			win := targets[len(targets)-1].backend
			out.Problems = append(out.Problems, fmt.Sprintf("path %s: %s %s (tailnet %s) left out, the prefix goes to %s %s",
				prefix, f.backend.kind, f.backend.name, f.tailnet, win.kind, win.name))
			continue
		}
		targets = append(targets, pathTarget{kind: PathRouteCrossCluster, prefix: prefix, target: f.label,
			tailnet: f.tailnet, direction: DirectionEgress, backend: f.backend})
	}
	return targets
}

// takenPrefixes maps each PathPrefix (without its trailing "/", which Gateway API ignores) that a
// route without hostnames, attached to gw's Gateway and not controlled by gw, matches to
// "HTTPRoute ns/name"; and those of the routes routeGeneration makes. Gateway API would order two
// equal prefixes by the routes' age: the path route gives way instead.
func takenPrefixes(in PathInput) map[string]string {
	gwNS, gwName := gatewayKey(in.Gateway)
	out := map[string]string{}
	note := func(r *gwapiv1.HTTPRoute) {
		if len(r.Spec.Hostnames) > 0 {
			return
		}
		for _, rule := range r.Spec.Rules {
			for _, m := range rule.Matches {
				p := m.Path
				if p == nil || p.Value == nil || (p.Type != nil && *p.Type != gwapiv1.PathMatchPathPrefix) {
					continue
				}
				key := strings.TrimSuffix(*p.Value, "/")
				if _, ok := out[key]; !ok {
					out[key] = "HTTPRoute " + r.Namespace + "/" + r.Name
				}
			}
		}
	}
	for _, r := range in.Generated {
		note(r)
	}
	for _, r := range in.Routes {
		if controlledBy(r, in.Gateway) || !slices.ContainsFunc(r.Spec.ParentRefs, func(p gwapiv1.ParentReference) bool {
			return isGatewayParent(p) && string(p.Name) == gwName && parentNamespace(p, r.Namespace) == gwNS
		}) {
			continue
		}
		note(r)
	}
	return out
}

// pathRoute is the HTTPRoute of t: a rule matching the prefix that rewrites it to "/" and sends
// the request to t's backend; for /gateway/, also the listener's hostname as Host, HopHeader set,
// and a first rule (it has a header match, so Gateway API orders it first) that sends nowhere a
// request already carrying HopHeader: Envoy Gateway answers it 500.
func pathRoute(gw *v1alpha1.TailscaleGateway, name string, t pathTarget) *gwapiv1.HTTPRoute {
	meta := objectMeta(gw, v1alpha1.TailnetConfiguration{Name: t.tailnet}, t.direction, t.backend)
	meta.Name = name
	meta.Labels[LabelPathRoute] = t.kind
	r := &gwapiv1.HTTPRoute{ObjectMeta: meta}
	r.Spec.ParentRefs = []gwapiv1.ParentReference{parentRef(gw)}
	root := "/"
	rewrite := &gwapiv1.HTTPURLRewriteFilter{Path: &gwapiv1.HTTPPathModifier{Type: gwapiv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &root}}
	rule := gwapiv1.HTTPRouteRule{Matches: pathMatch(t.prefix), BackendRefs: []gwapiv1.HTTPBackendRef{backendRef(t.backend, nil)},
		Filters: []gwapiv1.HTTPRouteFilter{{Type: gwapiv1.HTTPRouteFilterURLRewrite, URLRewrite: rewrite}}}
	if t.kind != PathRouteGateway {
		r.Spec.Rules = []gwapiv1.HTTPRouteRule{rule}
		return r
	}
	if t.hostname != "" {
		h := gwapiv1.PreciseHostname(t.hostname)
		rewrite.Hostname = &h
	}
	rule.Filters = append(rule.Filters, gwapiv1.HTTPRouteFilter{Type: gwapiv1.HTTPRouteFilterRequestHeaderModifier,
		RequestHeaderModifier: &gwapiv1.HTTPHeaderFilter{Set: []gwapiv1.HTTPHeader{{Name: HopHeader, Value: hopValue}}}})
	again := pathMatch(t.prefix)
	exact := gwapiv1.HeaderMatchExact
	again[0].Headers = []gwapiv1.HTTPHeaderMatch{{Type: &exact, Name: HopHeader, Value: hopValue}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{Matches: again}, rule}
	return r
}

// addPathRoutes appends the path routes of gw to res.out (so that applyRoutes writes them as it
// writes the others) and returns the prefixes left to other routes. It runs after applyListeners:
// a /gateway/ rule goes to a listener TailscaleServices only once gw holds it. An unbound
// TailscaleGateway (controller.binding) gets none.
func (c *Controller) addPathRoutes(gw *v1alpha1.TailscaleGateway, in Input, res *result) ([]string, error) {
	if res.listeners.unboundReason != "" {
		return nil, nil
	}
	pin := PathInput{Gateway: gw, Endpoints: in.Endpoints, Services: in.Services, Generated: res.out.Routes}
	gwNS, gwName := gatewayKey(gw)
	if kgw, err := c.kgateways.Gateways(gwNS).Get(gwName); err == nil {
		pin.Listeners = kgw.Spec.Listeners
	}
	for _, l := range res.listeners.out.Listeners {
		if !slices.Contains(res.listeners.conflicts, "TailscaleServices "+l.Object) {
			pin.Published = append(pin.Published, l)
		}
	}
	var err error
	if pin.Routes, err = c.routes.List(labels.Everything()); err != nil {
		return nil, err
	}
	out := GeneratePaths(pin)
	res.out.Routes = append(res.out.Routes, out.Routes...)
	res.out.Problems = append(res.out.Problems, out.Problems...)
	if len(out.Conflicts) > 0 {
		c.recorder.Eventf(gw, "Warning", ReasonPathConflict, "Path routes not generated, another route of the Gateway matches the prefix: %s",
			strings.Join(out.Conflicts, ", "))
	}
	return out.Conflicts, nil
}
