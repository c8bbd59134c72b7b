// Package collector gathers live state for the API server: it polls the Tailscale API of every
// TailscaleTailnet and probes every endpoint whose health check is enabled, configuring both from
// informers, and answers livestatus reads from memory.
package collector

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/health"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tsnode"
)

// targetsDebounce coalesces bursts of TailscaleEndpoints events into one prober update.
const targetsDebounce = 100 * time.Millisecond

// Options configure a Collector.
type Options struct {
	// Tailnets polls the Tailscale API; the collector adds and removes tailnets as
	// TailscaleTailnet objects come and go.
	Tailnets *tailnet.Cache
	// MaxConcurrentProbes bounds the probes in flight (health.DefaultMaxConcurrent when zero).
	MaxConcurrentProbes int
	// NodeStateDir, when set, makes probes of tailnet addresses travel through a tsnet node the
	// collector joins to the endpoint's tailnet (state under this directory), with an auth key
	// minted through the API with the TailscaleTailnet's tags. Without it they use the normal
	// network.
	NodeStateDir string
	// NodeHostname is the nodes' hostname in their tailnets.
	NodeHostname string
	// ControlURL is the nodes' coordination server; empty means Tailscale's.
	ControlURL string
	// Owns, when set, says whether this replica probes the endpoints of a TailscaleEndpoints
	// (its shard, see pkg/replicas). Reads of the others' endpoints show their persisted health.
	// Nil: this replica probes every endpoint.
	Owns func(namespace, name string) bool
}

// Collector implements livestatus.Collector.
type Collector struct {
	tailnets *tailnet.Cache
	prober   *health.Prober
	nodes    *tsnode.Nodes
	scheme   *runtime.Scheme
	owns     func(namespace, name string) bool

	tailnetLister   listers.TailscaleTailnetLister
	endpointsLister listers.TailscaleEndpointsLister
	servicesLister  listers.TailscaleServicesLister
	gatewaysLister  listers.TailscaleGatewayLister
	synced          []cache.InformerSynced
	notify          livestatus.Notifier
	policy          *tenancy.Policy
	targetsDirty    chan struct{}

	// dialNode dials address through the node of a tailnet (nodes.DialContext; nil without
	// nodes).
	dialNode func(ctx context.Context, tailnet, network, address string) (net.Conn, error)

	mu        sync.Mutex
	converted map[string]convertedTailnet // by TailscaleTailnet name
}

type convertedTailnet struct {
	generation uint64
	attempt    time.Time
	// since changes with the sync state between polls too (a follower's snapshot turning
	// stale when no replica polls).
	since time.Time
	state livestatus.Tailnet
}

var _ livestatus.Collector = &Collector{}

// New returns a collector; Configure and Run start it.
func New(opts Options) *Collector {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	c := &Collector{
		tailnets:     opts.Tailnets,
		scheme:       scheme,
		owns:         opts.Owns,
		targetsDirty: make(chan struct{}, 1),
		converted:    map[string]convertedTailnet{},
	}
	if opts.NodeStateDir != "" {
		c.nodes = tsnode.New(tsnode.Options{Dir: opts.NodeStateDir, Hostname: opts.NodeHostname,
			ControlURL: opts.ControlURL, MintKey: c.mintKey})
		c.dialNode = c.nodes.DialContext
	}
	c.prober = health.New(health.Options{
		DialerFor:     health.TailnetDialerFor(c, nil),
		MaxConcurrent: opts.MaxConcurrentProbes,
	})
	return c
}

// DialContext implements health.Dialer for tailnet addresses: it dials through the node of the
// tailnet the probed endpoint was declared in (the target's Via), never one chosen by the
// address alone. Without nodes (--join-tailnets=false) it dials through the host's network,
// which then has to be on the tailnet itself.
func (c *Collector) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if c.dialNode == nil {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	name := health.ViaFrom(ctx)
	if name == "" {
		return nil, fmt.Errorf("%s is a tailnet address but its endpoint's tailnet is unknown", address)
	}
	return c.dialNode(ctx, name, network, address)
}

// Configure implements livestatus.Collector.
func (c *Collector) Configure(factory informers.SharedInformerFactory, notify livestatus.Notifier, policy *tenancy.Policy) error {
	c.notify, c.policy = notify, policy
	gw := factory.Gateway().V1alpha1()
	c.tailnetLister = gw.TailscaleTailnets().Lister()
	c.endpointsLister = gw.TailscaleEndpoints().Lister()

	tailnets := gw.TailscaleTailnets().Informer()
	if _, err := tailnets.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.tailnetChanged,
		UpdateFunc: func(_, obj any) { c.tailnetChanged(obj) },
		DeleteFunc: c.tailnetDeleted,
	}); err != nil {
		return err
	}
	// Endpoints, and TailscaleServices (whose loadBalancing.healthCheck probes the endpoints
	// they select), change the probe targets.
	markDirty := func(any) { c.markTargetsDirty() }
	dirty := cache.ResourceEventHandlerFuncs{AddFunc: markDirty, UpdateFunc: func(_, obj any) { markDirty(obj) }, DeleteFunc: markDirty}
	endpoints := gw.TailscaleEndpoints().Informer()
	if _, err := endpoints.AddEventHandler(dirty); err != nil {
		return err
	}
	c.servicesLister = gw.TailscaleServices().Lister()
	services := gw.TailscaleServices().Informer()
	if _, err := services.AddEventHandler(dirty); err != nil {
		return err
	}
	// TailscaleGateways' routeGeneration.ingress.defaultBackend.healthCheck probes the endpoints
	// their ingress routes reach.
	c.gatewaysLister = gw.TailscaleGateways().Lister()
	gateways := gw.TailscaleGateways().Informer()
	if _, err := gateways.AddEventHandler(dirty); err != nil {
		return err
	}
	c.synced = []cache.InformerSynced{tailnets.HasSynced, endpoints.HasSynced, services.HasSynced, gateways.HasSynced}

	c.tailnets.Subscribe(func(ch tailnet.Change) {
		if ch.TagsChanged || len(ch.Added) > 0 || len(ch.Removed) > 0 {
			// Devices discovered by tag may have come or gone: their probes with them.
			c.markTargetsDirty()
		}
		if len(ch.Online) > 0 || len(ch.Added) > 0 || len(ch.Removed) > 0 || ch.TagsChanged || ch.ServicesChanged || ch.SyncChanged || ch.TailnetRemoved {
			klog.V(2).InfoS("Tailnet changed", "tailnet", ch.Name, "onlineFlips", len(ch.Online), "synced", ch.Snapshot.Status.Synced)
			notify.TailnetChanged()
		}
	})
	c.prober.OnTransition(func(key string, from, to health.Status) {
		klog.V(2).InfoS("Endpoint health changed", "endpoint", key, "from", from, "to", to)
		if ns, name, ok := splitKey(key); ok {
			notify.EndpointsChanged(ns, name)
		}
	})
	return nil
}

// Run implements livestatus.Collector.
func (c *Collector) Run(ctx context.Context) {
	defer c.tailnets.Close()
	if c.nodes != nil {
		defer c.nodes.Close()
	}
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return
	}
	go c.prober.Run(ctx)
	c.markTargetsDirty()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.targetsDirty:
			c.updateTargets()
			// Let a burst of events settle before the next rebuild.
			select {
			case <-ctx.Done():
				return
			case <-time.After(targetsDebounce):
			}
		}
	}
}

// Tailnet implements livestatus.Sources.
func (c *Collector) Tailnet(ref string) (livestatus.Tailnet, bool) {
	name, ok := c.resolve(ref)
	if !ok {
		return livestatus.Tailnet{}, false
	}
	snap, ok := c.tailnets.Snapshot(name)
	if !ok {
		return livestatus.Tailnet{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cv, ok := c.converted[name]; ok && cv.generation == snap.Generation && cv.attempt.Equal(snap.LastAttempt) && cv.since.Equal(snap.Status.Since) {
		return cv.state, true
	}
	state := convert(snap)
	c.converted[name] = convertedTailnet{generation: snap.Generation, attempt: snap.LastAttempt, since: snap.Status.Since, state: state}
	return state, true
}

// Probe implements livestatus.Sources. The endpoints of another replica's shard have a Probe
// that says so (Persisted).
func (c *Collector) Probe(key string) (livestatus.Probe, bool) {
	if c.owns != nil {
		if ns, name, ok := splitKey(key); ok && !c.owns(ns, name) {
			return livestatus.Probe{Persisted: true}, true
		}
	}
	r, ok := c.prober.Result(key)
	if !ok {
		return livestatus.Probe{}, false
	}
	return livestatus.Probe{Status: string(r.Status), LastChecked: r.LastChecked, Latency: r.Latency, Error: r.Error}, true
}

// Resharded rebuilds the probe targets after this replica's shard changed (members came or
// went): it starts probing what it now owns and stops what it no longer does.
func (c *Collector) Resharded() { c.markTargetsDirty() }

// Tenancy implements livestatus.Sources.
func (c *Collector) Tenancy() *tenancy.Policy { return c.policy }

// TenancyChanged re-decides which endpoints are probed, after a namespace's labels changed.
func (c *Collector) TenancyChanged() { c.markTargetsDirty() }

// Resolve maps a TailscaleTailnet name or tailnet domain to the name of the TailscaleTailnet
// polled for it, from memory.
func (c *Collector) Resolve(ref string) (string, bool) { return c.resolve(ref) }

// Cache is the per-tailnet cache the collector polls: the controllers share its clients, rate
// limits and snapshots.
func (c *Collector) Cache() *tailnet.Cache { return c.tailnets }

// mintKey creates an ephemeral, preauthorized auth key carrying the TailscaleTailnet's tags.
func (c *Collector) mintKey(ctx context.Context, name string) (string, error) {
	api, ok := c.tailnets.API(name)
	if !ok {
		return "", fmt.Errorf("tailnet %s is not polled", name)
	}
	var tags []string
	if t, err := c.tailnetLister.Get(name); err == nil {
		tags = t.Spec.Tags
	}
	key, err := api.CreateAuthKey(ctx, tailnet.AuthKeyOptions{Tags: tags, Ephemeral: true, Preauthorized: true,
		Expiry: time.Hour, Description: "tailscale-gateway prober"})
	if err != nil {
		return "", err
	}
	return key.Key, nil
}

// resolve maps a TailscaleTailnet name or tailnet domain to a TailscaleTailnet name, as tenancy
// decisions do.
func (c *Collector) resolve(ref string) (string, bool) {
	var t *v1alpha1.TailscaleTailnet
	var ok bool
	if c.policy != nil {
		t, ok = c.policy.Resolve(ref) // indexed by spec.tailnet
	} else {
		t, ok = tenancy.Resolve(c.tailnetLister, ref)
	}
	if !ok {
		return "", false
	}
	return t.Name, true
}

func (c *Collector) tailnetChanged(obj any) {
	internal := &gateway.TailscaleTailnet{}
	if err := c.scheme.Convert(obj, internal, nil); err != nil {
		utilruntime.HandleError(fmt.Errorf("converting TailscaleTailnet: %w", err))
		return
	}
	c.tailnets.Add(internal.Name, tailnet.ConfigFromSpec(internal.Spec))
	// Endpoints referring to this tailnet by domain may resolve differently now.
	c.markTargetsDirty()
}

func (c *Collector) tailnetDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	internal := &gateway.TailscaleTailnet{}
	if err := c.scheme.Convert(obj, internal, nil); err != nil {
		return
	}
	c.tailnets.Remove(internal.Name)
	if c.nodes != nil {
		c.nodes.Remove(internal.Name)
	}
	c.mu.Lock()
	delete(c.converted, internal.Name)
	c.mu.Unlock()
	c.markTargetsDirty()
}

func (c *Collector) markTargetsDirty() {
	select {
	case c.targetsDirty <- struct{}{}:
	default:
	}
}

// updateTargets rebuilds the prober's targets from every TailscaleEndpoints.
func (c *Collector) updateTargets() {
	all, err := c.endpointsLister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	var targets []health.Target
	var refused int
	gatewayChecks := c.gatewayChecks()
	for _, obj := range all {
		if c.owns != nil && !c.owns(obj.Namespace, obj.Name) {
			continue
		}
		eps := &gateway.TailscaleEndpoints{}
		if err := c.scheme.Convert(obj, eps, nil); err != nil {
			utilruntime.HandleError(fmt.Errorf("converting TailscaleEndpoints %s/%s: %w", obj.Namespace, obj.Name, err))
			continue
		}
		if d := c.policy.Decide(eps.Namespace, eps.Spec.Tailnet); !d.Allowed {
			// Its tailnet does not admit the namespace: no probe, no discovery through it.
			refused++
			continue
		}
		tailnetName, resolved := c.resolve(eps.Spec.Tailnet)
		serviceCheck := c.serviceCheckOf(obj)
		if serviceCheck == nil {
			serviceCheck = c.internalCheck(gatewayChecks[obj.Namespace+"/"+obj.Name], "TailscaleGateway routeGeneration", obj)
		}
		for _, ep := range eps.Spec.Endpoints {
			hc := ep.HealthCheck
			if serviceCheck != nil {
				hc = serviceCheck
			}
			check, ok := health.CheckFromAPI(hc)
			if !ok {
				continue
			}
			check.ServerName = strings.TrimSuffix(ep.TailscaleFQDN, ".")
			address := net.JoinHostPort(ep.TailscaleIP, fmt.Sprint(ep.Port))
			targets = append(targets, health.Target{Key: livestatus.ProbeKey(eps.Namespace, eps.Name, ep.Name), Address: address,
				Via: tailnetName, Check: check})
		}
		// Devices discovered by spec.tagSelectors carry no health check of their own: a TCP
		// connection to their port, every 30s (the prober's defaults), says whether they serve.
		if len(eps.Spec.TagSelectors) > 0 && resolved {
			tn, ok := c.Tailnet(tailnetName)
			if !ok {
				continue
			}
			for _, d := range livestatus.DiscoverEndpoints(eps, tn) {
				targets = append(targets, health.Target{Key: livestatus.ProbeKey(eps.Namespace, eps.Name, d.Name), Address: d.Address,
					Via: tailnetName, Check: health.Check{Type: health.ProtocolTCP}})
			}
		}
	}
	c.prober.Update(targets)
	klog.V(2).InfoS("Updated probe targets", "targets", len(targets), "refusedByTailnet", refused)
}

// serviceCheckOf returns the enabled loadBalancing.healthCheck of the first TailscaleServices (by
// name) of obj's namespace whose selector selects obj, converted to the internal version; nil when
// none has one. It takes precedence over the endpoints' own checks: it is what the service that
// balances over them calls healthy.
func (c *Collector) serviceCheckOf(obj *v1alpha1.TailscaleEndpoints) *gateway.HealthCheckConfig {
	if c.servicesLister == nil {
		return nil
	}
	all, err := c.servicesLister.TailscaleServices(obj.Namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	slices.SortFunc(all, func(a, b *v1alpha1.TailscaleServices) int { return strings.Compare(a.Name, b.Name) })
	for _, svc := range all {
		lb := svc.Spec.LoadBalancing
		if lb == nil || lb.HealthCheck == nil || lb.HealthCheck.Enabled == nil || !*lb.HealthCheck.Enabled || svc.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(svc.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(obj.Labels)) {
			continue
		}
		if out := c.internalCheck(lb.HealthCheck, "TailscaleServices "+svc.Name, obj); out != nil {
			return out
		}
	}
	return nil
}

// internalCheck converts hc, the check of what source names for obj, to the internal version;
// nil when hc is nil or does not convert.
func (c *Collector) internalCheck(hc *v1alpha1.HealthCheckConfig, source string, obj *v1alpha1.TailscaleEndpoints) *gateway.HealthCheckConfig {
	if hc == nil {
		return nil
	}
	out := &gateway.HealthCheckConfig{}
	if err := c.scheme.Convert(hc, out, nil); err != nil {
		utilruntime.HandleError(fmt.Errorf("converting the health check of %s for %s/%s: %w", source, obj.Namespace, obj.Name, err))
		return nil
	}
	return out
}

// gatewayChecks returns, by "namespace/name", the TailscaleEndpoints that the generated ingress
// routes of a TailscaleGateway reach, with its enabled
// spec.tailnets[].routeGeneration.ingress.defaultBackend.healthCheck (tsgateway.DefaultBackendChecks).
// Where several TailscaleGateways reach one, the first by namespace and name wins. A
// TailscaleGateway that a tailnet configuration's tailnet does not admit is skipped for it.
func (c *Collector) gatewayChecks() map[string]*v1alpha1.HealthCheckConfig {
	out := map[string]*v1alpha1.HealthCheckConfig{}
	if c.gatewaysLister == nil {
		return out
	}
	gws, err := c.gatewaysLister.List(labels.Everything())
	if err != nil {
		return out
	}
	slices.SortFunc(gws, func(a, b *v1alpha1.TailscaleGateway) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, gw := range gws {
		in := tsgateway.Input{Gateway: gw, Tailnets: map[string]*v1alpha1.TailscaleTailnet{}}
		for _, t := range gw.Spec.Tailnets {
			if d := c.policy.Decide(gw.Namespace, t.TailscaleTailnetRef.Name); !d.Allowed {
				continue
			}
			if tn, err := c.tailnetLister.Get(t.TailscaleTailnetRef.Name); err == nil {
				in.Tailnets[tn.Name] = tn
			}
		}
		if len(in.Tailnets) == 0 {
			continue
		}
		in.Endpoints, _ = c.endpointsLister.TailscaleEndpoints(gw.Namespace).List(labels.Everything())
		in.Services, _ = c.servicesLister.TailscaleServices(gw.Namespace).List(labels.Everything())
		for name, hc := range tsgateway.DefaultBackendChecks(in) {
			if _, seen := out[gw.Namespace+"/"+name]; !seen {
				out[gw.Namespace+"/"+name] = hc
			}
		}
	}
	return out
}

// convert copies what status needs out of a snapshot.
func convert(s tailnet.Snapshot) livestatus.Tailnet {
	t := livestatus.Tailnet{
		Name:           s.Tailnet,
		MagicDNSSuffix: s.MagicDNSSuffix,
		Synced:         s.Status.Synced,
		Reason:         s.Status.Reason,
		Message:        s.Status.Message,
		LastSync:       s.LastSync,
		Devices:        make([]livestatus.Device, len(s.Devices)),
		Services:       make([]livestatus.Service, len(s.Services)),
	}
	for i, d := range s.Devices {
		t.Devices[i] = livestatus.Device{Name: d.Name, Addresses: d.Addresses, Tags: d.Tags, Online: d.Online, LastSeen: d.LastSeen}
	}
	for i, svc := range s.Services {
		out := livestatus.Service{Name: svc.Name, Addrs: svc.Addrs, Ports: svc.Ports, Tags: svc.Tags}
		if s.MagicDNSSuffix != "" {
			out.DNSName = svc.DNSLabel() + "." + s.MagicDNSSuffix
		}
		for _, h := range s.ServiceHosts[svc.Name] {
			out.Hosts = append(out.Hosts, livestatus.ServiceHost{Device: h.NodeID, Hostname: h.Hostname, Approved: h.Approved, Configured: h.Configured})
		}
		t.Services[i] = out
	}
	t.BuildIndex()
	return t
}

// splitKey splits a probe key "namespace/name/endpoint".
func splitKey(key string) (namespace, name string, ok bool) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return "", "", false
	}
	return parts[0], parts[1], true
}
