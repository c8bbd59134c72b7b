package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/grpcserve"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// MaxMessageSize bounds the messages the server accepts and sends: Envoy Gateway sends every
// cluster, listener and route of a translation to PostTranslateModify. It is the
// extensionManager.maxMessageSize of artifacts/envoy-gateway (16Mi: Envoy Gateway sends nothing
// larger); TestMessageSizes measures a translation of 1,000 custom-backend clusters at a small
// fraction of it.
const MaxMessageSize = 16 << 20

// stopGrace bounds the wait for in-flight hook calls on shutdown.
const stopGrace = 5 * time.Second

// Registrar learns the refs of the clusters the hook shapes (the xDS server).
type Registrar interface {
	Register(cluster string, refs []backends.Ref)
}

// Options configure a Server.
type Options struct {
	// Registrar is told the refs of every cluster shaped.
	Registrar Registrar
	// XDSAddress is the host:port at which Envoy reaches this project's xDS server.
	XDSAddress string
	// Gateways lists TailscaleGateways, for the settings of a route's Gateway.
	Gateways listers.TailscaleGatewayLister
	// Routes, when set, lists HTTPRoutes: a cluster's backendRef ports and weights and its
	// route's parent Gateways come from there. A cluster whose route is not (yet) in it is
	// shaped from the objects alone: every endpoint port, equal weights, no TailscaleGateway.
	Routes gwlisters.HTTPRouteLister
	// Recorder, when set, records an Event on objects that cannot be used.
	Recorder record.EventRecorder
	// Defaulter applies the API's defaults to decoded objects.
	Defaulter runtime.ObjectDefaulter
	// Creds, when set, are the server's transport credentials (TLS with client certificates);
	// without them Serve serves plaintext on a loopback listener only.
	Creds credentials.TransportCredentials
	// Grants, when set, are the ReferenceGrants that let a TailscaleGateway name a Gateway of
	// another namespace; nil permits none.
	Grants *refgrant.Grants
	// XDSTLS, when set, is how Envoy authenticates to the xDS server and verifies it: the xDS
	// cluster gets an UpstreamTlsContext from it.
	XDSTLS *XDSClientTLS
	// Endpoints, when set, lists TailscaleEndpoints: the protocols and CAs of those the
	// TailscaleServices of a rule select (and of refs Envoy Gateway did not pass).
	Endpoints listers.TailscaleEndpointsLister
}

// Server implements Envoy Gateway's extension service.
type Server struct {
	pb.UnimplementedEnvoyGatewayExtensionServer
	opts       Options
	xdsCluster *clusterv3.Cluster
}

var _ pb.EnvoyGatewayExtensionServer = &Server{}

// New returns a hook server; opts.XDSAddress must be a valid host:port.
func New(opts Options) (*Server, error) {
	c, err := XDSCluster(opts.XDSAddress)
	if err != nil {
		return nil, err
	}
	registerMetrics()
	return &Server{opts: opts, xdsCluster: c}, nil
}

// PostClusterModify shapes clusters whose custom backends are ours and returns every other
// cluster unchanged. A backend it cannot decode leaves the cluster as Envoy Gateway built it
// (without endpoints) and is reported; it never fails the call, which would stop Envoy Gateway
// from publishing any change (failOpen: false) or publish an empty cluster (failOpen: true).
func (s *Server) PostClusterModify(_ context.Context, req *pb.PostClusterModifyRequest) (*pb.PostClusterModifyResponse, error) {
	defer observe("PostClusterModify", time.Now())
	cluster := req.GetCluster()
	if cluster == nil {
		return &pb.PostClusterModifyResponse{}, nil
	}
	var objs []backends.Object
	var bad, foreign bool
	for _, r := range req.GetPostClusterContext().GetBackendExtensionResources() {
		obj, err := backends.Decode(r.GetUnstructuredBytes(), s.opts.Defaulter)
		switch {
		case errors.Is(err, backends.ErrForeign):
			foreign = true
			klog.V(4).InfoS("Ignoring a backend resource of another kind", "cluster", cluster.Name, "reason", err)
		case err != nil:
			bad = true
			klog.ErrorS(err, "Cannot use a backend resource; leaving the cluster without endpoints", "cluster", cluster.Name)
			s.warn(r.GetUnstructuredBytes(), err)
		default:
			objs = append(objs, obj)
		}
	}
	switch {
	case bad:
		clustersTotal.WithLabelValues(resultInvalid).Inc()
	case len(objs) == 0 && foreign:
		clustersTotal.WithLabelValues(resultForeign).Inc()
	case len(objs) == 0:
		clustersTotal.WithLabelValues(resultNoBackend).Inc()
	}
	if bad || len(objs) == 0 {
		return &pb.PostClusterModifyResponse{Cluster: cluster}, nil
	}
	clustersTotal.WithLabelValues(resultShaped).Inc()

	refs, settings := s.resolve(cluster.Name, objs)
	settings.Upstream = s.upstream(cluster.Name, refs, objs)
	shaped, err := ShapeCluster(cluster, objs, settings)
	if err != nil {
		klog.ErrorS(err, "Cannot shape the cluster; leaving it without endpoints")
		return &pb.PostClusterModifyResponse{Cluster: cluster}, nil
	}
	s.opts.Registrar.Register(cluster.Name, refs)
	return &pb.PostClusterModifyResponse{Cluster: shaped}, nil
}

// resolve returns the refs of the cluster's rule and its settings: from the HTTPRoute when the
// route cache holds it, from the objects alone otherwise.
func (s *Server) resolve(cluster string, objs []backends.Object) ([]backends.Ref, ClusterSettings) {
	if rule, ok := backends.ParseClusterName(cluster); ok && s.opts.Routes != nil {
		if route, err := s.opts.Routes.HTTPRoutes(rule.Namespace).Get(rule.Name); err == nil {
			if refs, ok := backends.RouteRefs(route)[rule]; ok {
				return refs, ClusterSettings{Gateway: s.gatewayOf(route), WeightedRefs: unequalWeights(refs)}
			}
		}
		klog.V(2).InfoS("HTTPRoute of the cluster is not in the cache: shaping it from its backends alone (all ports, equal weights, no TailscaleGateway)", "cluster", cluster)
	}
	refs := make([]backends.Ref, len(objs))
	for i, o := range objs {
		refs[i] = o.Ref
	}
	return refs, ClusterSettings{}
}

// gatewayOf returns the TailscaleGateway bound to a parent Gateway of route (refgrant.Bound: of
// those whose gatewayRef names it, in its namespace or permitted by a ReferenceGrant, the oldest);
// one its tailnets do not admit (persisted Accepted=False, NotAllowedByTailnet) shapes nothing.
func (s *Server) gatewayOf(route *gwapiv1.HTTPRoute) *v1alpha1.TailscaleGateway {
	if s.opts.Gateways == nil {
		return nil
	}
	all, err := s.opts.Gateways.List(labels.Everything())
	if err != nil {
		return nil
	}
	refused := func(g *v1alpha1.TailscaleGateway) bool { return tenancy.Refused(g.Status.Conditions) }
	for _, p := range route.Spec.ParentRefs {
		if (p.Group != nil && *p.Group != gwapiv1.GroupName) || (p.Kind != nil && *p.Kind != "Gateway") {
			continue
		}
		ns := route.Namespace
		if p.Namespace != nil {
			ns = string(*p.Namespace)
		}
		if gw := s.opts.Grants.Bound(all, ns, string(p.Name), refused); gw != nil {
			return gw
		}
	}
	return nil
}

func unequalWeights(refs []backends.Ref) bool {
	for _, r := range refs[1:] {
		if r.Weight != refs[0].Weight {
			return true
		}
	}
	return false
}

// warn records an Event on the object raw describes, when it names one.
func (s *Server) warn(raw []byte, err error) {
	if s.opts.Recorder == nil {
		return
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string    `json:"name"`
			Namespace string    `json:"namespace"`
			UID       types.UID `json:"uid"`
		} `json:"metadata"`
	}
	if json.Unmarshal(raw, &meta) != nil || meta.Metadata.Name == "" {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: meta.APIVersion, Kind: meta.Kind, Name: meta.Metadata.Name,
		Namespace: meta.Metadata.Namespace, UID: meta.Metadata.UID}
	s.opts.Recorder.Eventf(ref, corev1.EventTypeWarning, "InvalidBackend", "Envoy Gateway passed this object to the extension but it cannot be used: %v", err)
}

// PostTranslateModify adds the cluster of this project's xDS server to every translation that
// holds a cluster fed by it, and returns everything else unchanged.
func (s *Server) PostTranslateModify(_ context.Context, req *pb.PostTranslateModifyRequest) (*pb.PostTranslateModifyResponse, error) {
	defer observe("PostTranslateModify", time.Now())
	clusters := req.GetClusters()
	needed, present := false, false
	for _, c := range clusters {
		if c.GetName() == s.xdsCluster.Name {
			present = true
		}
		if c.GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource().GetGrpcServices() != nil {
			for _, g := range c.GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource().GetGrpcServices() {
				if g.GetEnvoyGrpc().GetClusterName() == s.xdsCluster.Name {
					needed = true
				}
			}
		}
	}
	if needed && !present {
		c, err := s.xdsClusterNow()
		if err != nil {
			// Without the cluster Envoy would keep its last one: fail the translation
			// (failOpen: false keeps the last good configuration) rather than publish clusters
			// whose EDS source cannot connect.
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		clusters = append(clusters, c)
	}
	return &pb.PostTranslateModifyResponse{Clusters: clusters, Secrets: req.GetSecrets(),
		Listeners: req.GetListeners(), Routes: req.GetRoutes()}, nil
}

func observe(hook string, start time.Time) {
	hookDuration.WithLabelValues(hook).Observe(time.Since(start).Seconds())
}

// PostRouteModify gives routes to our backends the egress timeout and retries of the
// TailscaleGateway of their Gateway (routeGeneration.egress of the backends' tailnet), where the
// route has none of its own; every other route is returned unchanged.
func (s *Server) PostRouteModify(_ context.Context, req *pb.PostRouteModifyRequest) (*pb.PostRouteModifyResponse, error) {
	defer observe("PostRouteModify", time.Now())
	route := req.GetRoute()
	var objs []backends.Object
	for _, r := range req.GetPostRouteContext().GetExtensionResources() {
		if obj, err := backends.Decode(r.GetUnstructuredBytes(), s.opts.Defaulter); err == nil {
			objs = append(objs, obj)
		}
	}
	rule, ok := ruleOf(route)
	if len(objs) == 0 || !ok || s.opts.Routes == nil {
		return &pb.PostRouteModifyResponse{Route: route}, nil
	}
	httpRoute, err := s.opts.Routes.HTTPRoutes(rule.Namespace).Get(rule.Name)
	if err != nil {
		return &pb.PostRouteModifyResponse{Route: route}, nil
	}
	gw := s.gatewayOf(httpRoute)
	if gw == nil {
		return &pb.PostRouteModifyResponse{Route: route}, nil
	}
	return &pb.PostRouteModifyResponse{Route: ShapeRoute(route, egressConfig(gw, objs))}, nil
}

// PostVirtualHostModify returns the virtual host unchanged.
func (s *Server) PostVirtualHostModify(_ context.Context, req *pb.PostVirtualHostModifyRequest) (*pb.PostVirtualHostModifyResponse, error) {
	return &pb.PostVirtualHostModifyResponse{VirtualHost: req.GetVirtualHost()}, nil
}

// PostHTTPListenerModify returns the listener unchanged.
func (s *Server) PostHTTPListenerModify(_ context.Context, req *pb.PostHTTPListenerModifyRequest) (*pb.PostHTTPListenerModifyResponse, error) {
	return &pb.PostHTTPListenerModifyResponse{Listener: req.GetListener()}, nil
}

// PostEndpointsModify returns the load assignment unchanged.
func (s *Server) PostEndpointsModify(_ context.Context, req *pb.PostEndpointsModifyRequest) (*pb.PostEndpointsModifyResponse, error) {
	return &pb.PostEndpointsModifyResponse{LoadAssignment: req.GetLoadAssignment()}, nil
}

// Serve serves the hooks and gRPC health on l until ctx is done, then stops gracefully.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv, err := grpcserve.NewServer(l, s.opts.Creds, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
	if err != nil {
		return fmt.Errorf("serving the extension: %w", err)
	}
	pb.RegisterEnvoyGatewayExtensionServer(srv, s)
	if err := grpcserve.Serve(ctx, srv, l, stopGrace); err != nil {
		return fmt.Errorf("serving the extension: %w", err)
	}
	return nil
}
