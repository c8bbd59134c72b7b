// Package plan turns the TailscaleEndpoints and TailscaleServices a proxy serves into what it
// must listen on and where each listener forwards: egress listeners per tailnet endpoint and,
// per Tailscale Service port, the backends and balancing policy. It is pure: the same objects
// give the same plan.
package plan

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/autoprovision"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/balance"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Egress is one egress listener: a local port forwarding to a tailnet endpoint.
type Egress struct {
	// Key is the target's key, "<namespace>/<object>/<endpoint>".
	Key string
	// Network is "tcp" or "udp".
	Network string
	// Port is the local port recorded for the endpoint (pkg/proxy/ports).
	Port int32
	// Target is the tailnet address dialled, host:port.
	Target string
}

// Listener names the egress listener in metrics: "egress/<network>/<port>".
func (e Egress) Listener() string { return fmt.Sprintf("egress/%s/%d", e.Network, e.Port) }

// Service is one TCP port of a Tailscale Service hosted by the proxy.
type Service struct {
	// Object is "<namespace>/<name>" of the TailscaleServices.
	Object string
	// Name is the Tailscale Service, "svc:<label>".
	Name string
	// Port is the Service port.
	Port uint16
	// Policy and Backends feed the port's balancer.
	Policy   balance.Policy
	Backends []balance.Backend
	// Access is the tag rule for the port's tailnet callers, from the object's annotations.
	Access accesscontrol.Rule
	// ConnectionLog logs each connection (the object's accesscontrol.AnnotationConnectionLog).
	ConnectionLog bool
}

// Listener names the Service port in metrics: "svc:<name>/tcp/<port>".
func (s Service) Listener() string { return fmt.Sprintf("%s/tcp/%d", s.Name, s.Port) }

// Plan is what a proxy serves.
type Plan struct {
	Egress   []Egress
	Services []Service
	// Problems are parts of the objects that cannot be served, one sentence each.
	Problems []string
	// PortConflicts counts the egress endpoints left out because another endpoint holds
	// their recorded port (each is also a problem).
	PortConflicts int
}

// EgressOf returns the egress listeners of objs: one per endpoint (declared or discovered)
// with an address, on the port recorded in its object's status (ports.Recorded), UDP for UDP
// endpoints and TCP otherwise, sorted by network and port. Endpoints without a recorded port
// (not allocated yet) and those losing a port conflict are left out, each reported in problems;
// conflicts counts the latter.
func EgressOf(objs []*v1alpha1.TailscaleEndpoints) (out []Egress, problems []string, conflicts int) {
	targets := map[ports.Endpoint]string{}
	recorded := map[ports.Endpoint]int32{}
	var eps []ports.Endpoint
	for _, obj := range objs {
		_, byKey := ports.Recorded(obj)
		for _, w := range ports.Wanted(obj) {
			pe := ports.Endpoint{Object: obj.Namespace + "/" + obj.Name, Key: w.Key}
			targets[pe] = w.Target
			if p, ok := byKey[w.Key]; ok {
				recorded[pe] = p
			}
			eps = append(eps, pe)
		}
	}
	assigned, pending, lost := ports.Assign(eps, func(e ports.Endpoint) (int32, bool) {
		p, ok := recorded[e]
		return p, ok
	})
	for _, e := range pending {
		problems = append(problems, fmt.Sprintf("egress endpoint %s/%s (port %d) is not served: no egress port is allocated to it yet", e.Object, e.Endpoint, e.Port))
	}
	for _, e := range lost {
		problems = append(problems, fmt.Sprintf("egress endpoint %s/%s (port %d) is not served: its egress port %d is taken by another endpoint",
			e.Object, e.Endpoint, e.Port, recorded[e]))
	}
	for pe, port := range assigned {
		network := "tcp"
		if pe.UDP {
			network = "udp"
		}
		out = append(out, Egress{Key: pe.Object + "/" + pe.Endpoint, Network: network, Port: port, Target: targets[pe]})
	}
	slices.SortFunc(out, func(a, b Egress) int {
		if a.Network != b.Network {
			return strings.Compare(a.Network, b.Network)
		}
		return int(a.Port - b.Port)
	})
	return out, problems, len(lost)
}

// ServicesOf returns the Service ports of svc, a TailscaleServices with spec.vipService:
// one per "tcp:N" port (tsnet hosts TCP Service ports only; "udp:N" ports are reported as
// problems), each balancing over the TCP endpoints of the TailscaleEndpoints selected (those
// listening on N, or all of an object's when none does) and the external services.
func ServicesOf(svc *v1alpha1.TailscaleServices, selected []*v1alpha1.TailscaleEndpoints) (out []Service, problems []string) {
	vs := svc.Spec.VIPService
	if vs == nil || vs.Name == "" {
		return nil, nil
	}
	name := vs.Name
	if !strings.HasPrefix(name, "svc:") {
		name = "svc:" + name
	}
	object := svc.Namespace + "/" + svc.Name
	policy := policyOf(svc)
	access := accesscontrol.FromAnnotations(svc.Annotations)
	for _, p := range vs.Ports {
		proto, num, ok := strings.Cut(p, ":")
		port, err := strconv.ParseUint(num, 10, 16)
		if !ok || err != nil || port == 0 {
			problems = append(problems, fmt.Sprintf("TailscaleServices %s: port %q is not tcp:N or udp:N", object, p))
			continue
		}
		if proto != "tcp" {
			problems = append(problems, fmt.Sprintf("TailscaleServices %s: port %q is not served: tsnet hosts TCP Service ports only", object, p))
			continue
		}
		out = append(out, Service{Object: object, Name: name, Port: uint16(port), Policy: policy,
			Backends: backendsOf(svc, selected, int32(port)), Access: access, ConnectionLog: accesscontrol.ConnectionLog(svc.Annotations)})
	}
	return out, problems
}

func policyOf(svc *v1alpha1.TailscaleServices) balance.Policy {
	p := balance.Policy{Strategy: v1alpha1.StrategyRoundRobin}
	if lb := svc.Spec.LoadBalancing; lb != nil && lb.Strategy != "" {
		p.Strategy = lb.Strategy
	}
	if p.Strategy == v1alpha1.StrategyFailover {
		p.ActiveTier = balance.TierPrimary
		if ls := svc.Status.LoadBalancingStatus; ls != nil && ls.FailoverStatus != nil && ls.FailoverStatus.ActiveTier == livestatus.TierSecondary {
			p.ActiveTier = balance.TierSecondary
		}
	}
	return p
}

// backendsOf lists the backends of one Service port. Weights follow the extension's EDS:
// spec.loadBalancing.weights by TailscaleEndpoints (or external service) name under the
// weighted strategy, else 1 (an external service's own weight first). Under failover, tiers are
// livestatus.FailoverTier's: a backend not named primary is secondary, or, when
// failoverConfig.secondaryEndpoints is set, only those it names are and the others are left out.
func backendsOf(svc *v1alpha1.TailscaleServices, selected []*v1alpha1.TailscaleEndpoints, port int32) []balance.Backend {
	lb := svc.Spec.LoadBalancing
	weightOf := func(name string, own *int32) int32 {
		w := int32(1)
		if own != nil {
			w = max(*own, 0)
		}
		if lb != nil && lb.Strategy == v1alpha1.StrategyWeighted {
			if v, ok := lb.Weights[name]; ok {
				w = max(v, 0)
			}
		}
		return w
	}
	var primaries, secondaries []string
	if lb != nil && lb.FailoverConfig != nil && lb.Strategy == v1alpha1.StrategyFailover {
		primaries, secondaries = lb.FailoverConfig.PrimaryEndpoints, lb.FailoverConfig.SecondaryEndpoints
	}
	// tier is livestatus.FailoverTier's under the failover strategy: "" (no part) for a backend
	// in neither tier when secondaryEndpoints is set.
	tier := func(name string) string {
		if len(primaries) == 0 {
			return livestatus.TierPrimary
		}
		return livestatus.FailoverTier(primaries, secondaries, name)
	}

	var out []balance.Backend
	for _, obj := range selected {
		if tier(obj.Name) == "" {
			continue
		}
		all := endpointset.Of(obj)
		matching := slices.DeleteFunc(slices.Clone(all), func(ep endpointset.Endpoint) bool { return ep.Port != port })
		if len(matching) == 0 {
			matching = all
		}
		for _, ep := range matching {
			target := ep.Target()
			if ep.Protocol == v1alpha1.ProtocolUDP || target == "" || ep.Port <= 0 {
				continue
			}
			// Through the node, externalTarget included: tsnet routes it through the tailnet
			// (subnet routes, exit node) or from the host.
			out = append(out, balance.Backend{
				Key: obj.Namespace + "/" + obj.Name + "/" + ep.Name, Group: obj.Name,
				Network: "tcp", Address: target, Tailnet: true,
				Weight: weightOf(obj.Name, nil), Secondary: tier(obj.Name) == livestatus.TierSecondary, Unhealthy: ep.Health == livestatus.Unhealthy,
			})
		}
	}
	if sd := svc.Spec.ServiceDiscovery; sd != nil {
		// As for endpoints: the external services on the Service port when any is, else all.
		onPort := slices.ContainsFunc(sd.ExternalServices, func(e v1alpha1.ExternalService) bool { return e.Port == port })
		for _, ext := range sd.ExternalServices {
			if ext.Protocol == v1alpha1.ProtocolUDP || ext.Address == "" || ext.Port <= 0 || (onPort && ext.Port != port) || tier(ext.Name) == "" {
				continue
			}
			out = append(out, balance.Backend{
				Key: svc.Namespace + "/" + svc.Name + "/external/" + ext.Name, Group: ext.Name,
				Network: "tcp", Address: net.JoinHostPort(ext.Address, strconv.Itoa(int(ext.Port))), Tailnet: IsTailnetAddress(ext.Address),
				Weight: weightOf(ext.Name, ext.Weight), Secondary: tier(ext.Name) == livestatus.TierSecondary,
			})
		}
	}
	// Tailscale Services discovered by spec.serviceDiscovery.vipServiceSelector (status, written
	// from the tailnet's API by live status): each Service's VIP on the port, else on each of its
	// TCP ports, dialled through the node. Only tailnet addresses are taken, whatever a status
	// write says. Weights and tiers name a Service by its label, "db" for svc:db.
	for _, d := range svc.Status.DiscoveredVIPServices {
		name := strings.TrimPrefix(d.Name, "svc:")
		if tier(name) == "" {
			continue
		}
		addr := ""
		for _, a := range d.Addresses {
			if IsTailnetAddress(a) && (addr == "" || strings.Contains(addr, ":")) {
				addr = a // the first IPv4 one, else the first
			}
		}
		if addr == "" {
			continue
		}
		for _, p := range endpointset.ServicePorts(d.Ports, port) {
			out = append(out, balance.Backend{
				Key: svc.Namespace + "/" + svc.Name + "/vip/" + d.Name + "/" + strconv.Itoa(int(p)), Group: name,
				Network: "tcp", Address: net.JoinHostPort(addr, strconv.Itoa(int(p))), Tailnet: true,
				Weight: weightOf(name, nil), Secondary: tier(name) == livestatus.TierSecondary,
			})
		}
	}
	return out
}

// IsTailnetAddress reports whether host is reached through the tailnet: an address in
// 100.64.0.0/10 or fd7a:115c:a1e0::/48, or a MagicDNS name under ts.net.
func IsTailnetAddress(host string) bool { return endpointset.IsTailnetHost(host) }

// Build returns the plan for the egress objects eps and the Service objects svcs, sorted by
// namespace/name; selectOf returns the TailscaleEndpoints a TailscaleServices selects. When two
// objects claim the same Service port, the first keeps it.
//
// Objects their tailnet no longer admits (persisted Accepted=False, reason NotAllowedByTailnet:
// the status writer decides with the namespace labels the proxy cannot read) are not served, and
// externalServices only as external allows.
func Build(eps []*v1alpha1.TailscaleEndpoints, svcs []*v1alpha1.TailscaleServices, selectOf func(*v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints,
	external tenancy.ExternalServices) Plan {
	var p Plan
	var refused []string
	admitted := func(kind string, o metav1.Object, conds []metav1.Condition) bool {
		if tenancy.Refused(conds) {
			refused = append(refused, fmt.Sprintf("%s %s/%s: not admitted by its tailnet", kind, o.GetNamespace(), o.GetName()))
			return false
		}
		return true
	}
	eps = slices.DeleteFunc(slices.Clone(eps), func(e *v1alpha1.TailscaleEndpoints) bool {
		return !admitted("TailscaleEndpoints", e, e.Status.Conditions)
	})
	// Endpoints whose externalTarget the rule refuses, for egress and as Service backends; each
	// reported once.
	var targetProblems []string
	reported := map[string]bool{}
	allowTargets := func(e *v1alpha1.TailscaleEndpoints) *v1alpha1.TailscaleEndpoints {
		e, dropped := WithTargetsAllowed(e, external.For(e))
		for _, d := range dropped {
			if !reported[d] {
				reported[d] = true
				targetProblems = append(targetProblems, d)
			}
		}
		return e
	}
	for i, e := range eps {
		eps[i] = allowTargets(e)
	}
	p.Egress, p.Problems, p.PortConflicts = EgressOf(eps)
	p.Problems = append(p.Problems, refused...)
	claimed := map[string]string{}
	for _, svc := range svcs {
		if !admitted("TailscaleServices", svc, svc.Status.Conditions) {
			p.Problems = append(p.Problems, refused[len(refused)-1])
			continue
		}
		svc, dropped := withExternalAllowed(svc, external.For(svc))
		p.Problems = append(p.Problems, dropped...)
		selected := slices.DeleteFunc(slices.Clone(selectOf(svc)), func(e *v1alpha1.TailscaleEndpoints) bool { return tenancy.Refused(e.Status.Conditions) })
		for i, e := range selected {
			selected[i] = allowTargets(e)
		}
		out, problems := ServicesOf(svc, selected)
		p.Problems = append(p.Problems, problems...)
		for _, s := range out {
			if owner, ok := claimed[s.Listener()]; ok {
				p.Problems = append(p.Problems, fmt.Sprintf("TailscaleServices %s: %s is already served for %s", s.Object, s.Listener(), owner))
				continue
			}
			claimed[s.Listener()] = s.Object
			p.Services = append(p.Services, s)
		}
	}
	p.Problems = append(p.Problems, targetProblems...)
	return p
}

// TargetAllowed returns nil when the proxy may forward to target, an endpoint's externalTarget
// (host:port): a tailnet address always, any other host only as external (the
// externalServices rule) allows.
func TargetAllowed(target string, external tenancy.ExternalServices) error {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("externalTarget %q: %w", target, err)
	}
	if IsTailnetAddress(host) {
		return nil
	}
	return external.Check(host)
}

// WithTargetsAllowed returns obj without the endpoints whose externalTarget external refuses
// (a copy when any is left out: they are not served at all rather than sent to their tailnet
// address), and a problem for each.
func WithTargetsAllowed(obj *v1alpha1.TailscaleEndpoints, external tenancy.ExternalServices) (*v1alpha1.TailscaleEndpoints, []string) {
	var problems []string
	kept := make([]v1alpha1.TailscaleEndpoint, 0, len(obj.Spec.Endpoints))
	for _, ep := range obj.Spec.Endpoints {
		if ep.ExternalTarget != "" {
			if err := TargetAllowed(ep.ExternalTarget, external); err != nil {
				problems = append(problems, fmt.Sprintf("TailscaleEndpoints %s/%s: endpoint %s is not served: %v", obj.Namespace, obj.Name, ep.Name, err))
				continue
			}
		}
		kept = append(kept, ep)
	}
	if problems == nil {
		return obj, nil
	}
	obj = obj.DeepCopy()
	obj.Spec.Endpoints = kept
	return obj, problems
}

// withExternalAllowed returns svc without the externalServices external refuses (a copy when
// any is left out), and a problem for each. Objects a TailscaleGateway generates keep theirs:
// the caller passes external.For(svc) (see tenancy.GeneratedByGateway).
func withExternalAllowed(svc *v1alpha1.TailscaleServices, external tenancy.ExternalServices) (*v1alpha1.TailscaleServices, []string) {
	sd := svc.Spec.ServiceDiscovery
	if sd == nil || len(sd.ExternalServices) == 0 {
		return svc, nil
	}
	var problems []string
	kept := make([]v1alpha1.ExternalService, 0, len(sd.ExternalServices))
	for _, ext := range sd.ExternalServices {
		if err := external.Check(ext.Address); err != nil {
			problems = append(problems, fmt.Sprintf("TailscaleServices %s/%s: external service %s: %v", svc.Namespace, svc.Name, ext.Name, err))
			continue
		}
		kept = append(kept, ext)
	}
	if len(problems) == 0 {
		return svc, nil
	}
	svc = svc.DeepCopy()
	svc.Spec.ServiceDiscovery.ExternalServices = kept
	return svc, problems
}

// Dedicated reports whether obj is served by a proxy of its own, which the server deploys for
// it (pkg/controllers/proxydeploy): it has spec.proxy, or was auto-provisioned for a
// TailscaleServices. Every other TailscaleEndpoints is served by its tailnet's proxy pool
// when the tailnet has one (pkg/controllers/proxypool), else by a proxy run by hand.
func Dedicated(obj *v1alpha1.TailscaleEndpoints) bool {
	return obj.Spec.Proxy != nil || autoprovision.IsAutoProvisioned(obj)
}

// PooledBy reports whether the proxy pool of the TailscaleTailnet named tailnet serves obj: obj
// has no proxy of its own (Dedicated), the server has admitted it (condition Accepted True:
// its tailnet admits its namespace) and its spec.tailnet resolves (resolve) to tailnet. The
// pool's proxy and its controller both decide through it.
func PooledBy(obj *v1alpha1.TailscaleEndpoints, tailnet string, resolve func(ref string) (name string, ok bool)) bool {
	if Dedicated(obj) || !meta.IsStatusConditionTrue(obj.Status.Conditions, tenancy.ConditionAccepted) {
		return false
	}
	name, ok := resolve(obj.Spec.Tailnet)
	return ok && name == tailnet
}
