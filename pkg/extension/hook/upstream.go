package hook

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// SystemCAPath is the system trust store of Envoy's image (Debian), the file Envoy Gateway itself
// names for BackendTLSPolicy's wellKnownCACertificates: System.
const SystemCAPath = "/etc/ssl/certs/ca-certificates.crt"

// Transport socket names as Envoy registers them.
const (
	tlsSocketName = "envoy.transport_sockets.tls"
	rawSocketName = "envoy.transport_sockets.raw_buffer"
)

// Upstream is how a cluster's hosts are spoken to, from the endpoints its rule reaches.
type Upstream struct {
	// CAs maps the match value of each endpoint with its own caCertificate to that PEM bundle.
	CAs map[string]string
	// HTTP2 is true when every endpoint the rule reaches speaks gRPC: the cluster speaks HTTP/2
	// (prior knowledge, cleartext) to them.
	HTTP2 bool
	// MixedGRPC names the gRPC endpoints that share the cluster with HTTP/1.1 endpoints: Envoy
	// speaks one HTTP version per cluster, HTTP/1.1 here, which those endpoints do not answer.
	MixedGRPC []string
}

// UpstreamOf returns the Upstream of the endpoints refs reach: TailscaleEndpoints among objs
// (as Envoy Gateway passed them) or, for those not there and those TailscaleServices select,
// from eps (nil: objs alone).
func UpstreamOf(refs []backends.Ref, objs []backends.Object, eps listers.TailscaleEndpointsLister) Upstream {
	u := Upstream{CAs: map[string]string{}}
	var grpc, other []string
	add := func(obj *v1alpha1.TailscaleEndpoints, port int32) {
		for _, ep := range endpointset.OnPort(endpointset.Of(obj), port) {
			switch {
			case ep.Protocol == v1alpha1.ProtocolUDP:
				continue // not served to HTTP routes
			case ep.Protocol == v1alpha1.ProtocolGRPC:
				grpc = append(grpc, obj.Namespace+"/"+obj.Name+"/"+ep.Name)
			default:
				other = append(other, obj.Namespace+"/"+obj.Name+"/"+ep.Name)
			}
			if m := backends.UpstreamMatch(obj.Namespace, obj.Name, ep); m != backends.UpstreamPlaintext && m != backends.UpstreamSystemCA {
				u.CAs[m] = ep.TLS.CACertificate
			}
		}
	}
	for _, ref := range refs {
		switch ref.Kind {
		case backends.KindEndpoints:
			if obj := endpointsOf(ref.Namespace, ref.Name, objs, eps); obj != nil {
				add(obj, ref.Port)
			}
		case backends.KindServices:
			svc := servicesOf(ref.Namespace, ref.Name, objs)
			if svc == nil {
				continue
			}
			if sel, err := metav1.LabelSelectorAsSelector(svc.Spec.Selector); err == nil && svc.Spec.Selector != nil && eps != nil {
				selected, _ := eps.TailscaleEndpoints(svc.Namespace).List(sel)
				slices.SortFunc(selected, func(a, b *v1alpha1.TailscaleEndpoints) int { return strings.Compare(a.Name, b.Name) })
				for _, obj := range selected {
					add(obj, ref.Port)
				}
			}
			if sd := svc.Spec.ServiceDiscovery; sd != nil {
				for _, ext := range sd.ExternalServices {
					name := svc.Namespace + "/" + svc.Name + "/" + ext.Name
					switch ext.Protocol {
					case v1alpha1.ProtocolUDP:
					case v1alpha1.ProtocolGRPC:
						grpc = append(grpc, name)
					default:
						other = append(other, name)
					}
				}
			}
		}
	}
	u.HTTP2 = len(grpc) > 0 && len(other) == 0
	if len(grpc) > 0 && len(other) > 0 {
		u.MixedGRPC = grpc
	}
	return u
}

func endpointsOf(namespace, name string, objs []backends.Object, eps listers.TailscaleEndpointsLister) *v1alpha1.TailscaleEndpoints {
	for _, o := range objs {
		if o.Endpoints != nil && o.Endpoints.Namespace == namespace && o.Endpoints.Name == name {
			return o.Endpoints
		}
	}
	if eps == nil {
		return nil
	}
	obj, err := eps.TailscaleEndpoints(namespace).Get(name)
	if err != nil {
		return nil
	}
	return obj
}

func servicesOf(namespace, name string, objs []backends.Object) *v1alpha1.TailscaleServices {
	for _, o := range objs {
		if o.Services != nil && o.Services.Namespace == namespace && o.Services.Name == name {
			return o.Services
		}
	}
	return nil
}

// applyUpstream gives c its transport sockets and HTTP version:
//   - default transport socket: TLS, SNI = the host's hostname (the endpoint's tailscaleFQDN),
//     the certificate's DNS names checked against it, chain verified by the system CAs;
//   - a "plaintext" match (raw buffer) for the hosts EDS labels plaintext (HTTP, gRPC, TCP);
//   - a match per endpoint with its own caCertificate, verified by that bundle;
//   - HTTP/2 (explicit, prior knowledge) when u.HTTP2, keeping Envoy Gateway's other options.
func applyUpstream(c *clusterv3.Cluster, u Upstream) error {
	system, err := tlsSocket(&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: SystemCAPath}})
	if err != nil {
		return err
	}
	raw, err := anypb.New(&rawbufferv3.RawBuffer{})
	if err != nil {
		return err
	}
	c.TransportSocket = system
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name:            backends.UpstreamPlaintext,
		Match:           matchOf(backends.UpstreamPlaintext),
		TransportSocket: &corev3.TransportSocket{Name: rawSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: raw}},
	}}
	for _, m := range slices.Sorted(maps.Keys(u.CAs)) {
		ts, err := tlsSocket(&corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: u.CAs[m]}})
		if err != nil {
			return err
		}
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{Name: m, Match: matchOf(m), TransportSocket: ts})
	}
	if !u.HTTP2 {
		return nil
	}
	opts := &httpv3.HttpProtocolOptions{}
	if existing, ok := c.TypedExtensionProtocolOptions[httpProtocolOptionsKey]; ok {
		if err := existing.UnmarshalTo(opts); err != nil {
			return fmt.Errorf("Envoy Gateway's %s: %w", httpProtocolOptionsKey, err)
		}
	}
	opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
	}}
	packed, err := anypb.New(opts)
	if err != nil {
		return err
	}
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions[httpProtocolOptionsKey] = packed
	return nil
}

// tlsSocket is a TLS transport socket whose SNI is the host's hostname, checked against the
// certificate's DNS names, with the chain verified by the CAs of ca.
func tlsSocket(ca *corev3.DataSource) (*corev3.TransportSocket, error) {
	ctx, err := anypb.New(&tlsv3.UpstreamTlsContext{
		AutoHostSni:          true,
		AutoSniSanValidation: true,
		CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: proto.Clone(ca).(*corev3.DataSource)},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}}, nil
}

func matchOf(value string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{backends.TransportSocketMatchKey: structpb.NewStringValue(value)}}
}

// upstream returns the Upstream of cluster's refs and warns on the objects of gRPC endpoints
// that share it with HTTP/1.1 ones.
func (s *Server) upstream(cluster string, refs []backends.Ref, objs []backends.Object) Upstream {
	u := UpstreamOf(refs, objs, s.opts.Endpoints)
	if len(u.MixedGRPC) == 0 {
		return u
	}
	klog.InfoS("gRPC endpoints share a cluster with HTTP/1.1 endpoints: the cluster speaks HTTP/1.1", "cluster", cluster, "grpcEndpoints", u.MixedGRPC)
	if s.opts.Recorder == nil {
		return u
	}
	for _, o := range objs {
		s.opts.Recorder.Eventf(objectRef(o), corev1.EventTypeWarning, "MixedUpstreamProtocols",
			"HTTPRoute rule cluster %s reaches gRPC endpoints %s and HTTP/1.1 endpoints; Envoy speaks one HTTP version per cluster, "+
				"so it speaks HTTP/1.1 to all of them: give the gRPC endpoints a rule of their own (a backendRef port that only they serve)",
			cluster, strings.Join(u.MixedGRPC, ", "))
	}
	return u
}

// objectRef references o for an Event.
func objectRef(o backends.Object) *corev1.ObjectReference {
	ref := &corev1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: o.Ref.Kind, Namespace: o.Ref.Namespace, Name: o.Ref.Name}
	switch {
	case o.Endpoints != nil:
		ref.UID = o.Endpoints.UID
	case o.Services != nil:
		ref.UID = o.Services.UID
	}
	return ref
}
