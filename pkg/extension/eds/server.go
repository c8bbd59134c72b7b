package eds

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/config"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/grpcserve"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// ClusterName is the name Envoy knows this xDS server by: the cluster that the Envoy Gateway
// extension adds to every translation and that custom-backend clusters name as their EDS source.
const ClusterName = "tailscale-gateway-eds"

// stopGrace bounds how long Serve waits for streams to end on shutdown; xDS streams never end by
// themselves, so after it the server closes them (clients reconnect to another replica).
const stopGrace = 2 * time.Second

// Options configure a Server.
type Options struct {
	// Addresser chooses the addresses Envoy dials; Direct when nil.
	Addresser Addresser
	// VersionPrefix starts every version this server sends, so that an Envoy reconnecting to
	// another replica is sent the full state rather than trusting a version it never saw.
	VersionPrefix string
	// Routes, when set, lists HTTPRoutes: each rule with backendRefs to this API group is a
	// cluster, with the refs' ports and weights. Without it (no Gateway API in the cluster, or
	// standalone) clusters are known only from the extension's hook calls (Register).
	// The server does not wait for that cache to sync: a rule appears as its route arrives.
	Routes gwlisters.HTTPRouteLister
	// ExternalServices is the server's rule for externalServices (--allow-external-services);
	// the zero value serves none.
	ExternalServices tenancy.ExternalServices
	// Creds, when set, are the server's transport credentials (TLS with client certificates);
	// without them Serve serves plaintext on a loopback listener only.
	Creds credentials.TransportCredentials
	// Synced are further informers Run waits for before it publishes (those Policy and Grants
	// read): a reference decided on a partial cache would withdraw endpoints for a moment.
	Synced []cache.InformerSynced
	// RoutesSynced, when set, reports whether the cache behind Routes has synced: registrations
	// are collected only then.
	RoutesSynced cache.InformerSynced
	// Grants, when set, are the ReferenceGrants that permit backendRefs to other namespaces than
	// the route's; nil means the cluster has no ReferenceGrant API (see permittedRefs).
	Grants *refgrant.Grants
	// GrantsSynced, when set, reports whether the cache behind Grants has synced: until then a
	// cluster with a backendRef to another namespace is not published (Envoy keeps what it has,
	// or waits), rather than published without that ref's endpoints; the others are.
	GrantsSynced cache.InformerSynced
	// Policy decides whether the tailnet of endpoints admits the namespace of the route that
	// reaches them; nil admits every namespace.
	Policy *tenancy.Policy
	// Recorder, when set, records a Warning Event on an HTTPRoute whose backendRefs are refused.
	Recorder record.EventRecorder
	// MaxRegistered and RegistrationTTL bound the clusters known from hook calls alone
	// (DefaultMaxRegistered and DefaultRegistrationTTL when zero).
	MaxRegistered   int
	RegistrationTTL time.Duration
	// Clock is the server's clock; the real one when nil.
	Clock clock.WithTicker
}

// MaxRequestSize bounds the xDS requests the server accepts. A request names the clusters a
// stream subscribes to (about 40 bytes each): 4 MiB (gRPC's default) is 100,000 names.
const MaxRequestSize = 4 << 20

// Server computes load assignments and serves them to Envoy.
type Server struct {
	cache     *cachev3.LinearCache
	addr      Addresser
	external  tenancy.ExternalServices
	endpoints listers.TailscaleEndpointsLister
	services  listers.TailscaleServicesLister
	routes    gwlisters.HTTPRouteLister
	synced    []cache.InformerSynced
	dirty     chan struct{}
	streams   atomic.Int64
	creds     credentials.TransportCredentials

	routesSynced    cache.InformerSynced
	grantsSynced    cache.InformerSynced
	grants          *refgrant.Grants
	policy          *tenancy.Policy
	recorder        record.EventRecorder
	clock           clock.WithTicker
	maxRegistered   int
	registrationTTL time.Duration

	mu         sync.Mutex
	registered map[string]registration // by cluster name, from hook calls
	published  map[string]*endpointv3.ClusterLoadAssignment
	refusals   map[string]string // by cluster name: why backendRefs got no endpoints
}

var _ Source = &Server{}

// New returns a server reading TailscaleEndpoints and TailscaleServices through factory's
// informers; Run computes, Serve serves.
func New(factory informers.SharedInformerFactory, opts Options) *Server {
	if opts.Addresser == nil {
		opts.Addresser = Direct{}
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.MaxRegistered <= 0 {
		opts.MaxRegistered = DefaultMaxRegistered
	}
	if opts.RegistrationTTL <= 0 {
		opts.RegistrationTTL = DefaultRegistrationTTL
	}
	registerMetrics()
	gw := factory.Gateway().V1alpha1()
	s := &Server{
		cache:     cachev3.NewLinearCache(resourcev3.EndpointType, cachev3.WithVersionPrefix(opts.VersionPrefix), cachev3.WithLogger(klogAdapter{})),
		addr:      opts.Addresser,
		external:  opts.ExternalServices,
		endpoints: gw.TailscaleEndpoints().Lister(),
		services:  gw.TailscaleServices().Lister(),
		routes:    opts.Routes,
		dirty:     make(chan struct{}, 1),
		creds:     opts.Creds,

		routesSynced:    opts.RoutesSynced,
		grantsSynced:    opts.GrantsSynced,
		grants:          opts.Grants,
		policy:          opts.Policy,
		recorder:        opts.Recorder,
		clock:           opts.Clock,
		maxRegistered:   opts.MaxRegistered,
		registrationTTL: opts.RegistrationTTL,

		registered: map[string]registration{},
		published:  map[string]*endpointv3.ClusterLoadAssignment{},
		refusals:   map[string]string{},
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.markDirty() },
		UpdateFunc: func(any, any) { s.markDirty() },
		DeleteFunc: func(any) { s.markDirty() },
	}
	for _, inf := range []cache.SharedIndexInformer{gw.TailscaleEndpoints().Informer(), gw.TailscaleServices().Informer()} {
		_, err := inf.AddEventHandler(handler)
		utilruntime.Must(err)
		s.synced = append(s.synced, inf.HasSynced)
	}
	s.synced = append(s.synced, opts.Synced...)
	return s
}

// RouteHandler is the event handler to add to the HTTPRoute informer behind Options.Routes.
func (s *Server) RouteHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.markDirty() },
		UpdateFunc: func(any, any) { s.markDirty() },
		DeleteFunc: func(any) { s.markDirty() },
	}
}

// Streams returns the number of open xDS streams.
func (s *Server) Streams() int64 { return s.streams.Load() }

// LoadAssignment returns the load assignment published for cluster.
func (s *Server) LoadAssignment(cluster string) (*endpointv3.ClusterLoadAssignment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cla, ok := s.published[cluster]
	return cla, ok
}

// TailscaleEndpoints implements Source. An object its tailnet no longer admits (persisted
// Accepted=False, reason NotAllowedByTailnet) is absent.
func (s *Server) TailscaleEndpoints(namespace, name string) (*v1alpha1.TailscaleEndpoints, bool) {
	o, err := s.endpoints.TailscaleEndpoints(namespace).Get(name)
	return o, err == nil && !tenancy.Refused(o.Status.Conditions)
}

// TailscaleServices implements Source; refused objects are absent.
func (s *Server) TailscaleServices(namespace, name string) (*v1alpha1.TailscaleServices, bool) {
	o, err := s.services.TailscaleServices(namespace).Get(name)
	return o, err == nil && !tenancy.Refused(o.Status.Conditions)
}

// AllowsExternal implements Source.
func (s *Server) AllowsExternal(address string) bool { return s.external.Check(address) == nil }

// SelectEndpoints implements Source; refused objects are left out.
func (s *Server) SelectEndpoints(namespace string, selector labels.Selector) []*v1alpha1.TailscaleEndpoints {
	list, err := s.endpoints.TailscaleEndpoints(namespace).List(selector)
	if err != nil {
		return nil
	}
	list = slices.DeleteFunc(list, func(e *v1alpha1.TailscaleEndpoints) bool { return tenancy.Refused(e.Status.Conditions) })
	slices.SortFunc(list, func(a, b *v1alpha1.TailscaleEndpoints) int { return strings.Compare(a.Name, b.Name) })
	return list
}

func (s *Server) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Run recomputes the load assignments whenever an input changes, until ctx is done.
func (s *Server) Run(ctx context.Context) {
	if !cache.WaitForNamedCacheSyncWithContext(ctx, s.synced...) {
		return
	}
	s.markDirty()
	if s.grantsSynced != nil {
		// An empty ReferenceGrant cache syncs without an event: rebuild then, for the clusters
		// that waited for it.
		go func() {
			if cache.WaitForCacheSync(ctx.Done(), s.grantsSynced) {
				s.markDirty()
			}
		}()
	}
	// Registrations expire without an event: look at them a few times per TTL.
	tick := s.clock.NewTicker(s.registrationTTL / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
			s.mu.Lock()
			pending := len(s.registered) > 0
			s.mu.Unlock()
			if pending {
				s.rebuild()
			}
		case <-s.dirty:
			s.rebuild()
		}
	}
}

// clusters returns every known cluster with its refs: the rules of the cached HTTPRoutes, and
// the registrations the hook made that are still current.
func (s *Server) clusters() map[string]clusterInput {
	out := map[string]clusterInput{}
	var routes []*gwapiv1.HTTPRoute
	if s.routes != nil {
		var err error
		if routes, err = s.routes.List(labels.Everything()); err != nil {
			utilruntime.HandleError(fmt.Errorf("listing HTTPRoutes: %w", err))
		}
	}
	s.mu.Lock()
	s.collectRegistrationsLocked(func(rule backends.RouteRule) bool {
		_, err := s.routes.HTTPRoutes(rule.Namespace).Get(rule.Name)
		return err == nil
	})
	for name, r := range s.registered {
		rule, ok := backends.ParseClusterName(name)
		out[name] = clusterInput{refs: r.refs, rule: rule, ruleOK: ok, registered: true}
	}
	s.mu.Unlock()
	for _, r := range routes {
		for rule, refs := range backends.RouteRefs(r) {
			out[rule.ClusterName()] = clusterInput{refs: refs, rule: rule, ruleOK: true, route: r}
		}
	}
	return out
}

// rebuild computes every load assignment and publishes those that changed.
func (s *Server) rebuild() {
	start := time.Now()
	defer func() { rebuildDuration.Observe(time.Since(start).Seconds()) }()
	clusters := s.clusters()
	update := map[string]cachetypes.Resource{}
	var remove []string
	counts := map[string]int{}
	grantsSynced := s.grantsSynced == nil || s.grantsSynced()
	for name, in := range clusters {
		if !grantsSynced && in.crossNamespace() {
			continue // decided once the ReferenceGrants are known; what is published stays
		}
		refs, refused := s.permittedRefs(in)
		view := &routeView{Server: s, namespace: in.rule.Namespace}
		cla := LoadAssignment(name, refs, view, s.addr)
		s.reportRefusals(name, in, append(refused, view.refused...), counts)
		s.mu.Lock()
		if old, ok := s.published[name]; !ok || !proto.Equal(old, cla) {
			s.published[name] = cla
			update[name] = cla
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	for name := range s.published {
		if _, ok := clusters[name]; !ok {
			delete(s.published, name)
			delete(s.refusals, name)
			remove = append(remove, name)
		}
	}
	published := len(s.published)
	s.mu.Unlock()
	loadAssignmentsGauge.Set(float64(published))
	for _, reason := range []string{ReasonRefNotPermitted, ReasonNotAllowedByTailnet} {
		refusedRefsGauge.WithLabelValues(reason).Set(float64(counts[reason]))
	}
	if len(update) == 0 && len(remove) == 0 {
		return
	}
	if err := s.cache.UpdateResources(update, remove); err != nil {
		utilruntime.HandleError(fmt.Errorf("publishing load assignments: %w", err))
		return
	}
	pushesTotal.Add(float64(len(update)))
	klog.V(2).InfoS("Published load assignments", "updated", len(update), "removed", len(remove), "clusters", len(clusters))
}

// Serve serves EDS and ADS (SotW and delta) and gRPC health on l until ctx is done. Streams
// subscribe to load assignments by name, as Envoy does for EDS (the service names of its
// clusters): a wildcard ("*") or a request for another resource type ends the stream with
// InvalidArgument, and an empty subscription is a subscription to nothing (go-control-plane's
// legacy wildcard is off).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	opened := func(_ context.Context, id int64, typeURL string) error {
		s.streams.Add(1)
		streamsGauge.Inc()
		klog.V(2).InfoS("xDS stream opened", "stream", id, "type", typeURL)
		return nil
	}
	closed := func(id int64, node *corev3.Node) {
		s.streams.Add(-1)
		streamsGauge.Dec()
		klog.V(2).InfoS("xDS stream closed", "stream", id, "node", node.GetId())
	}
	callbacks := serverv3.CallbackFuncs{StreamOpenFunc: opened, StreamClosedFunc: closed,
		DeltaStreamOpenFunc: opened, DeltaStreamClosedFunc: closed,
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			return checkSubscription(req.GetTypeUrl(), req.GetResourceNames())
		},
		StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			return checkSubscription(req.GetTypeUrl(), req.GetResourceNamesSubscribe())
		},
	}
	xds := serverv3.NewServer(ctx, s.cache, callbacks, config.DeactivateLegacyWildcard())
	srv, err := grpcserve.NewServer(l, s.creds, grpc.MaxConcurrentStreams(1<<20), grpc.MaxRecvMsgSize(MaxRequestSize))
	if err != nil {
		return fmt.Errorf("serving xDS: %w", err)
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(srv, xds)
	if err := grpcserve.Serve(ctx, srv, l, stopGrace); err != nil {
		return fmt.Errorf("serving xDS: %w", err)
	}
	return nil
}

// checkSubscription refuses a request for another type than load assignments and a wildcard.
func checkSubscription(typeURL string, names []string) error {
	if typeURL != resourcev3.EndpointType {
		subscriptionsRefused.WithLabelValues("type").Inc()
		return status.Errorf(codes.InvalidArgument, "this server serves %s only", resourcev3.EndpointType)
	}
	if slices.Contains(names, "*") {
		subscriptionsRefused.WithLabelValues("wildcard").Inc()
		return status.Error(codes.InvalidArgument, "wildcard subscriptions are not served: name the load assignments")
	}
	return nil
}

// klogAdapter routes go-control-plane's logs to klog: its per-watch messages at V(4).
type klogAdapter struct{}

var _ log.Logger = klogAdapter{}

func (klogAdapter) Debugf(format string, args ...any) { klog.V(5).Infof(format, args...) }
func (klogAdapter) Infof(format string, args ...any)  { klog.V(4).Infof(format, args...) }
func (klogAdapter) Warnf(format string, args ...any)  { klog.Warningf(format, args...) }
func (klogAdapter) Errorf(format string, args ...any) { klog.Errorf(format, args...) }
