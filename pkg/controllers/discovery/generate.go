// Package discovery implements spec.tailnets[].serviceDiscovery of a TailscaleGateway (workflow
// steps 5-7): local Kubernetes Services chosen by a label become Tailscale Services hosted by a
// proxy of the gateway, and Tailscale Services of other installations in the tailnet become
// TailscaleEndpoints usable as route backends in this cluster.
//
// Everything it writes lives in the TailscaleGateway's namespace, is controlled by the
// TailscaleGateway (ownerReference, so Kubernetes' garbage collector deletes it with it) and
// carries LabelGateway, LabelTailnet, LabelRole and LabelManagedBy=ManagedBy. For a tailnet
// configuration T of TailscaleGateway G:
//
//   - a TailscaleServices "<G>-<T>-local-<namespace>-<service>" per exposed Service, whose
//     vipService is "svc:local-<namespace>-<service>" (LocalVIPName) with the Service's TCP ports
//     and whose externalServices are the Service's ClusterIP on each port; its selector picks
//     the host below, which names the tailnet and carries the proxy;
//   - a TailscaleEndpoints "<G>-<T>-local-host" with spec.proxy (ingress, one replica): the
//     proxy that hosts those Tailscale Services (deployed by pkg/controllers/proxydeploy in
//     cluster mode, or any tailscale-gateway-proxy run with --services-selector LabelHost=<name>);
//   - a TailscaleEndpoints "<G>-<T>-remote-<label>" per Tailscale Service "svc:<label>" whose
//     owner references (vipservice.OwnerAnnotation) name only other installations, with one TCP
//     endpoint per port at the Service's IPv4 VIP and a TCP health check, labelled
//     LabelRemoteService=<label>;
//   - when the same Tailscale Service label is discovered on several tailnet configurations of
//     G, a TailscaleServices "<G>-remote-<label>" (role RoleRemoteGroup, LabelTailnet the
//     highest-priority configuration) selecting those remote TailscaleEndpoints, with
//     loadBalancing.strategy failover: failoverConfig.primaryEndpoints are the remote objects of
//     the configurations with the highest spec.tailnets[].priority (default 100; ties are all
//     primary), secondaryEndpoints the others. Routes (pkg/controllers/tsgateway) then point at
//     the group once instead of at each member, so traffic prefers the higher-priority tailnet
//     and fails over to the others when its endpoints are unhealthy. A group whose member names
//     are not DNS labels (failover tiers name objects by DNS label, at most 63 characters) is not
//     generated, and Output.Skipped says so: its members stay separate backends.
//
// Names longer than the limits (63 characters for Tailscale Service labels, 253 for objects)
// are cut and end in a hash.
package discovery

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Labels and annotations.
const (
	// LabelExpose on a Kubernetes Service, with the value "true", asks TailscaleGateways with
	// service discovery to expose it on their tailnets.
	LabelExpose = "gateway.tailscale.com/expose"
	// AnnotationGateway on an exposed Service names the one TailscaleGateway that exposes it,
	// "<namespace>/<name>" (or "<name>" in the Service's namespace). It is required for a
	// Service outside the TailscaleGateway's namespace; without it every TailscaleGateway of the
	// Service's namespace with discovery on exposes it.
	AnnotationGateway = "gateway.tailscale.com/tailscale-gateway"

	// LabelGateway, LabelTailnet and LabelManagedBy are those of pkg/controllers/tsgateway.
	LabelGateway   = "gateway.tailscale.com/tailscale-gateway"
	LabelTailnet   = "gateway.tailscale.com/tailnet"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of LabelManagedBy on generated objects.
	ManagedBy = "tailscale-gateway-discovery"
	// LabelRole is RoleLocal, RoleHost or RoleRemote.
	LabelRole = "gateway.tailscale.com/discovery"
	// LabelHost marks a host TailscaleEndpoints (its value is the object's name, cut to 63
	// characters); the local TailscaleServices select it by this label.
	LabelHost = "gateway.tailscale.com/discovery-host"

	// AnnotationService on a generated object names what it stands for: "<namespace>/<name>"
	// of the exposed Service (local), or the Tailscale Service "svc:<label>" (remote).
	AnnotationService = "gateway.tailscale.com/discovered-service"
	// AnnotationOwner on a remote TailscaleEndpoints is the operator ID owning the Service.
	AnnotationOwner = "gateway.tailscale.com/discovered-owner"
	// LabelRemoteService on a remote TailscaleEndpoints and a remote group is the Tailscale
	// Service's DNS label (the "<label>" of "svc:<label>"); groups select their members by it.
	LabelRemoteService = "gateway.tailscale.com/discovered-label"
)

// Roles of generated objects.
const (
	RoleLocal  = "local"
	RoleHost   = "host"
	RoleRemote = "remote"
	// RoleRemoteGroup is a TailscaleServices grouping the remote TailscaleEndpoints of one
	// Tailscale Service label found on several tailnet configurations.
	RoleRemoteGroup = "remote-group"
)

// Tailnet is one tailnet configuration of a TailscaleGateway with discovery on, as generation
// sees it.
type Tailnet struct {
	// Config is the TailscaleGateway's entry.
	Config v1alpha1.TailnetConfiguration
	// Ref is the TailscaleTailnet's name.
	Ref string
	// Snapshot is the tailnet's last poll; nil while none is known (no remote services then).
	Snapshot *tailnet.Snapshot
}

// Input is what one TailscaleGateway's objects are generated from.
type Input struct {
	Gateway *v1alpha1.TailscaleGateway
	// OperatorID is this installation's ID in owner references.
	OperatorID string
	// Tailnets with discovery enabled whose TailscaleTailnet exists.
	Tailnets []Tailnet
	// Services are the Kubernetes Services carrying LabelExpose, any namespace.
	Services []*corev1.Service
	// Allowed reports whether the TailscaleTailnet ref admits namespace (pkg/tenancy); nil
	// admits all.
	Allowed func(namespace, ref string) bool
}

// Counts are what was generated for one tailnet configuration.
type Counts struct {
	// Local Services exposed; Remote Tailscale Services discovered.
	Local, Remote int
}

// Output is everything generated for a TailscaleGateway.
type Output struct {
	Services  []*v1alpha1.TailscaleServices
	Endpoints []*v1alpha1.TailscaleEndpoints
	// Counts by tailnet configuration name.
	Counts map[string]Counts
	// Skipped explains labelled Services or foreign Tailscale Services not used.
	Skipped []string
}

// Generate returns the objects in's TailscaleGateway needs, sorted by name.
func Generate(in Input) Output {
	out := Output{Counts: map[string]Counts{}}
	gw := in.Gateway
	// remotes are the remote TailscaleEndpoints of each Tailscale Service label, in the order
	// of the tailnet configurations.
	remotes := map[string][]member{}
	allowed := in.Allowed
	if allowed == nil {
		allowed = func(string, string) bool { return true }
	}
	for _, t := range in.Tailnets {
		var n Counts
		// Local Services, only when the tailnet admits the gateway's namespace (it hosts them).
		if allowed(gw.Namespace, t.Ref) {
			host := hostEndpoints(gw, t)
			for _, svc := range sortedServices(in.Services) {
				if !selects(gw, svc) {
					continue
				}
				if !allowed(svc.Namespace, t.Ref) {
					out.Skipped = append(out.Skipped, fmt.Sprintf("Service %s/%s: TailscaleTailnet %s does not admit namespace %s", svc.Namespace, svc.Name, t.Ref, svc.Namespace))
					continue
				}
				obj, why := localServices(gw, t, svc, host.Labels[LabelHost])
				if obj == nil {
					out.Skipped = append(out.Skipped, fmt.Sprintf("Service %s/%s: %s", svc.Namespace, svc.Name, why))
					continue
				}
				out.Services = append(out.Services, obj)
				n.Local++
			}
			if n.Local > 0 {
				out.Endpoints = append(out.Endpoints, host)
			}
			// Remote Services.
			if t.Snapshot != nil {
				for _, s := range t.Snapshot.Services {
					owner, foreign := foreignOwner(s, in.OperatorID)
					if !foreign {
						continue
					}
					obj, why := remoteEndpoints(gw, t, s, owner, t.Snapshot.MagicDNSSuffix)
					if obj == nil {
						out.Skipped = append(out.Skipped, fmt.Sprintf("Tailscale Service %s: %s", s.Name, why))
						continue
					}
					out.Endpoints = append(out.Endpoints, obj)
					label := obj.Labels[LabelRemoteService]
					remotes[label] = append(remotes[label], member{tailnet: t, obj: obj})
					n.Remote++
				}
			}
		} else {
			out.Skipped = append(out.Skipped, fmt.Sprintf("tailnet %s: TailscaleTailnet %s does not admit namespace %s", t.Config.Name, t.Ref, gw.Namespace))
		}
		out.Counts[t.Config.Name] = n
	}
	taken := map[string]bool{}
	for _, s := range out.Services {
		taken[s.Name] = true
	}
	for _, label := range slices.Sorted(maps.Keys(remotes)) {
		if len(remotes[label]) < 2 {
			continue
		}
		g, why := remoteGroup(gw, label, remotes[label])
		if g != nil && taken[g.Name] {
			g, why = nil, "its name "+g.Name+" is taken by a local TailscaleServices"
		}
		if g == nil {
			out.Skipped = append(out.Skipped, fmt.Sprintf("failover group of Tailscale Service svc:%s: %s; its TailscaleEndpoints stay separate backends", label, why))
			continue
		}
		out.Services = append(out.Services, g)
	}
	slices.SortFunc(out.Services, func(a, b *v1alpha1.TailscaleServices) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Endpoints, func(a, b *v1alpha1.TailscaleEndpoints) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func sortedServices(in []*corev1.Service) []*corev1.Service {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b *corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// selects reports whether gw exposes svc: LabelExpose "true", and AnnotationGateway naming gw
// when set (required outside gw's namespace).
func selects(gw *v1alpha1.TailscaleGateway, svc *corev1.Service) bool {
	if svc.Labels[LabelExpose] != "true" || svc.DeletionTimestamp != nil {
		return false
	}
	want, ok := svc.Annotations[AnnotationGateway]
	if !ok {
		return svc.Namespace == gw.Namespace
	}
	ns, name, found := strings.Cut(want, "/")
	if !found {
		ns, name = svc.Namespace, want
	}
	return ns == gw.Namespace && name == gw.Name
}

// Enabled returns gw's tailnet configurations with discovery on.
func Enabled(gw *v1alpha1.TailscaleGateway) []v1alpha1.TailnetConfiguration {
	var out []v1alpha1.TailnetConfiguration
	for _, t := range gw.Spec.Tailnets {
		if t.ServiceDiscovery != nil && t.ServiceDiscovery.Enabled {
			out = append(out, t)
		}
	}
	return out
}

// ObjectName is the name of a generated object: parts joined with "-", cut with a hash past
// 253 characters.
func ObjectName(parts ...string) string { return cut(strings.Join(parts, "-"), 253) }

// LocalVIPName is the Tailscale Service of the Kubernetes Service namespace/name:
// "svc:local-<namespace>-<name>", its label cut with a hash past 63 characters.
func LocalVIPName(namespace, name string) string {
	return "svc:" + cut("local-"+namespace+"-"+name, 63)
}

// cut returns name, or its first characters and a hash of all of it when longer than n.
func cut(name string, n int) string {
	if len(name) <= n {
		return name
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return strings.TrimRight(name[:n-9], "-.") + "-" + fmt.Sprintf("%08x", h.Sum32())
}

func meta(gw *v1alpha1.TailscaleGateway, t Tailnet, name, role string) metav1.ObjectMeta {
	controller := true
	return metav1.ObjectMeta{
		Name: name, Namespace: gw.Namespace,
		Labels: map[string]string{LabelGateway: gw.Name, LabelTailnet: t.Config.Name, LabelManagedBy: ManagedBy, LabelRole: role},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "TailscaleGateway",
			Name: gw.Name, UID: gw.UID, Controller: &controller, BlockOwnerDeletion: &controller}},
	}
}

// hostEndpoints is the TailscaleEndpoints carrying the proxy that hosts the local Services.
func hostEndpoints(gw *v1alpha1.TailscaleGateway, t Tailnet) *v1alpha1.TailscaleEndpoints {
	name := ObjectName(gw.Name, t.Config.Name, "local-host")
	e := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: meta(gw, t, name, RoleHost),
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: t.Ref,
			Proxy: &v1alpha1.ProxyConfig{Replicas: ptr(int32(1)), ConnectionType: "ingress"}},
	}
	e.Labels[LabelHost] = cut(name, 63)
	v1alpha1.SetObjectDefaults_TailscaleEndpoints(e)
	return e
}

// localServices is the TailscaleServices exposing svc, or nil and why not.
func localServices(gw *v1alpha1.TailscaleGateway, t Tailnet, svc *corev1.Service, hostLabel string) (*v1alpha1.TailscaleServices, string) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, "an ExternalName Service has no cluster address to forward to"
	}
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return nil, "a headless Service has no cluster address to forward to"
	}
	var ports []string
	var ext []v1alpha1.ExternalService
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue // Tailscale Services hosted by tsnet carry TCP only
		}
		ports = append(ports, "tcp:"+strconv.Itoa(int(p.Port)))
		ext = append(ext, v1alpha1.ExternalService{Name: "tcp-" + strconv.Itoa(int(p.Port)), Address: ip, Port: p.Port, Protocol: v1alpha1.ProtocolTCP})
	}
	if len(ports) == 0 {
		return nil, "no TCP port"
	}
	vip := LocalVIPName(svc.Namespace, svc.Name)
	o := &v1alpha1.TailscaleServices{
		ObjectMeta: meta(gw, t, ObjectName(gw.Name, t.Config.Name, "local", svc.Namespace, svc.Name), RoleLocal),
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{LabelHost: hostLabel}},
			VIPService: &v1alpha1.VIPServiceSpec{Name: vip, Ports: ports,
				Comment: fmt.Sprintf("Kubernetes Service %s/%s, exposed by TailscaleGateway %s/%s", svc.Namespace, svc.Name, gw.Namespace, gw.Name)},
			ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: ext},
		},
	}
	o.Annotations = map[string]string{AnnotationService: svc.Namespace + "/" + svc.Name}
	v1alpha1.SetObjectDefaults_TailscaleServices(o)
	return o, ""
}

// foreignOwner returns the owning installation of s when its owner references name only other
// installations than operatorID. Services without owner references (made by hand) and those
// this installation owns or consumes are not foreign.
func foreignOwner(s tailnet.Service, operatorID string) (string, bool) {
	refs, err := vipservice.OwnerRefs(s.Annotations)
	if err != nil || len(refs) == 0 {
		return "", false
	}
	for _, r := range refs {
		if r.OperatorID == operatorID {
			return "", false
		}
	}
	return refs[0].OperatorID, true
}

// remoteEndpoints is the TailscaleEndpoints reaching the foreign Service s, or nil and why not.
func remoteEndpoints(gw *v1alpha1.TailscaleGateway, t Tailnet, s tailnet.Service, owner, suffix string) (*v1alpha1.TailscaleEndpoints, string) {
	var ip string
	for _, a := range s.Addrs {
		if strings.Count(a, ".") == 3 {
			ip = a
			break
		}
	}
	if ip == "" && len(s.Addrs) > 0 {
		ip = s.Addrs[0]
	}
	if ip == "" {
		return nil, "no address allocated yet"
	}
	label := s.DNSLabel()
	fqdn := label
	if suffix != "" {
		fqdn = label + "." + suffix
	}
	check := remoteHealthCheck(gw)
	var eps []v1alpha1.TailscaleEndpoint
	for _, p := range s.Ports {
		proto, num, ok := strings.Cut(p, ":")
		port, err := strconv.ParseUint(num, 10, 16)
		if !ok || err != nil || port == 0 || proto != "tcp" {
			continue
		}
		eps = append(eps, v1alpha1.TailscaleEndpoint{
			Name: "tcp-" + num, TailscaleIP: ip, TailscaleFQDN: fqdn, Port: int32(port), Protocol: v1alpha1.ProtocolTCP,
			HealthCheck: check.DeepCopy(),
		})
	}
	if len(eps) == 0 {
		return nil, "no TCP port"
	}
	e := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: meta(gw, t, ObjectName(gw.Name, t.Config.Name, "remote", label), RoleRemote),
		Spec:       v1alpha1.TailscaleEndpointsSpec{Tailnet: t.Ref, Endpoints: eps},
	}
	e.Labels[LabelRemoteService] = label
	e.Annotations = map[string]string{AnnotationService: s.Name, AnnotationOwner: owner}
	v1alpha1.SetObjectDefaults_TailscaleEndpoints(e)
	return e, ""
}

// remoteHealthCheck is the health check of a discovered remote service's endpoints: the
// TailscaleGateway's spec.loadBalancing.healthChecking when set (as stored, so defaulted),
// otherwise a TCP connect to the Service's address every DefaultHealthCheckInterval. Either way
// the probe goes to the VIP, so health follows the Service's hosts: it fails once no host
// answers on the port.
func remoteHealthCheck(gw *v1alpha1.TailscaleGateway) *v1alpha1.HealthCheckConfig {
	if lb := gw.Spec.LoadBalancing; lb != nil && lb.HealthChecking != nil {
		return lb.HealthChecking
	}
	return &v1alpha1.HealthCheckConfig{Enabled: ptr(true), Type: v1alpha1.ProtocolTCP}
}

// member is a remote TailscaleEndpoints and the tailnet configuration it was found in.
type member struct {
	tailnet Tailnet
	obj     *v1alpha1.TailscaleEndpoints
}

// Priority is a tailnet configuration's spec.tailnets[].priority, DefaultTailnetPriority when
// unset; higher wins.
func Priority(t v1alpha1.TailnetConfiguration) int32 {
	if t.Priority == nil {
		return v1alpha1.DefaultTailnetPriority
	}
	return *t.Priority
}

// remoteGroup is the failover TailscaleServices over the remote TailscaleEndpoints members (two
// or more) of the Tailscale Service label, or nil and why not.
func remoteGroup(gw *v1alpha1.TailscaleGateway, label string, members []member) (*v1alpha1.TailscaleServices, string) {
	top := members[0]
	for _, m := range members[1:] {
		if Priority(m.tailnet.Config) > Priority(top.tailnet.Config) {
			top = m // the first of the highest priority, in spec order
		}
	}
	var primary, secondary []string
	for _, m := range members {
		if msgs := utilvalidation.IsDNS1123Label(m.obj.Name); len(msgs) > 0 {
			return nil, fmt.Sprintf("TailscaleEndpoints %s cannot be named in a failover tier: %s", m.obj.Name, strings.Join(msgs, ", "))
		}
		if Priority(m.tailnet.Config) == Priority(top.tailnet.Config) {
			primary = append(primary, m.obj.Name)
		} else {
			secondary = append(secondary, m.obj.Name)
		}
	}
	o := &v1alpha1.TailscaleServices{
		ObjectMeta: meta(gw, top.tailnet, ObjectName(gw.Name, "remote", label), RoleRemoteGroup),
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
				LabelGateway: gw.Name, LabelManagedBy: ManagedBy, LabelRole: RoleRemote, LabelRemoteService: label}},
			LoadBalancing: &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover,
				FailoverConfig: &v1alpha1.FailoverConfig{PrimaryEndpoints: primary, SecondaryEndpoints: secondary}},
		},
	}
	o.Labels[LabelRemoteService] = label
	o.Annotations = map[string]string{AnnotationService: "svc:" + label}
	v1alpha1.SetObjectDefaults_TailscaleServices(o)
	return o, ""
}

func ptr[T any](v T) *T { return &v }
