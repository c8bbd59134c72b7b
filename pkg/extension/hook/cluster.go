// Package hook is the Envoy Gateway extension server: its PostClusterModify hook turns every
// cluster whose custom backends are TailscaleEndpoints or TailscaleServices into an EDS cluster fed
// by this project's xDS server (pkg/extension/eds), with the load-balancing policy, circuit
// breakers and outlier detection the objects and their TailscaleGateway ask for; its
// PostTranslateModify hook adds the cluster through which Envoy reaches that xDS server. Hooks
// answer from memory only.
package hook

import (
	"fmt"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
)

// httpProtocolOptionsKey is the typed_extension_protocol_options key of upstream HTTP options.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// ClusterSettings are what shapes a custom-backend cluster besides its objects.
type ClusterSettings struct {
	// Gateway is the TailscaleGateway whose gatewayRef names a parent Gateway of the route; nil
	// when there is none or the route is not known.
	Gateway *v1alpha1.TailscaleGateway
	// WeightedRefs is true when the rule's backendRefs to this API group carry unequal weights.
	WeightedRefs bool
	// Upstream is how the hosts are spoken to (TLS origination, HTTP version).
	Upstream Upstream
}

// ShapeCluster returns a copy of in made an EDS cluster served by this project's xDS server
// (service name: the cluster's name), with what objs and settings ask for:
//   - lb_policy from the first TailscaleServices' strategy (round-robin → ROUND_ROBIN,
//     least-connections → LEAST_REQUEST, weighted and failover → ROUND_ROBIN over weighted
//     localities and priorities), else from the TailscaleGateway's loadBalancing.strategy;
//   - locality-weighted load balancing for the weighted strategy or unequal backendRef weights;
//   - a healthy panic threshold of 0, so hosts that EDS marks UNHEALTHY never get traffic;
//   - circuit breakers and outlier detection from the TailscaleGateway's circuitBreaker;
//   - TLS origination and the HTTP version of settings.Upstream (see applyUpstream).
func ShapeCluster(in *clusterv3.Cluster, objs []backends.Object, settings ClusterSettings) (*clusterv3.Cluster, error) {
	c := proto.Clone(in).(*clusterv3.Cluster)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.LoadAssignment = nil
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
		ServiceName: c.Name,
		EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: eds.ClusterName},
				}}},
			}},
		},
	}

	strategy, weighted := strategyOf(objs)
	policy := clusterv3.Cluster_ROUND_ROBIN
	switch {
	case strategy == v1alpha1.StrategyLeastConnections:
		policy = clusterv3.Cluster_LEAST_REQUEST
	case strategy == "" && settings.Gateway != nil && settings.Gateway.Spec.LoadBalancing != nil:
		policy = gatewayPolicy(settings.Gateway.Spec.LoadBalancing.Strategy)
	}
	// lb_policy is ignored when load_balancing_policy is set: the policy chosen here decides.
	c.LoadBalancingPolicy = nil
	c.LbPolicy = policy
	c.LbConfig = nil

	if c.CommonLbConfig == nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: 0}
	c.CommonLbConfig.LocalityConfigSpecifier = nil
	if weighted || settings.WeightedRefs {
		c.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}
	}

	if gw := settings.Gateway; gw != nil && gw.Spec.LoadBalancing != nil {
		if cb := gw.Spec.LoadBalancing.CircuitBreaker; cb != nil && cb.Enabled {
			applyCircuitBreaker(c, cb)
		}
	}
	if err := applyUpstream(c, settings.Upstream); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
	}
	return c, nil
}

// strategyOf returns the strategy of the first TailscaleServices of objs ("" when there is
// none) and whether it needs locality weights.
func strategyOf(objs []backends.Object) (v1alpha1.LoadBalancingStrategy, bool) {
	for _, o := range objs {
		if o.Services == nil {
			continue
		}
		s := v1alpha1.StrategyRoundRobin
		if lb := o.Services.Spec.LoadBalancing; lb != nil && lb.Strategy != "" {
			s = lb.Strategy
		}
		return s, s == v1alpha1.StrategyWeighted
	}
	return "", false
}

// gatewayPolicy maps TailscaleGateway loadBalancing.strategy to an lb_policy.
func gatewayPolicy(strategy string) clusterv3.Cluster_LbPolicy {
	switch strategy {
	case "least_request":
		return clusterv3.Cluster_LEAST_REQUEST
	case "random":
		return clusterv3.Cluster_RANDOM
	case "ring_hash":
		return clusterv3.Cluster_RING_HASH
	default:
		return clusterv3.Cluster_ROUND_ROBIN
	}
}

func applyCircuitBreaker(c *clusterv3.Cluster, cb *v1alpha1.CircuitBreakerConfig) {
	th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
	set := false
	for _, f := range []struct {
		v   *int32
		dst **wrapperspb.UInt32Value
	}{{cb.MaxConnections, &th.MaxConnections}, {cb.MaxPendingRequests, &th.MaxPendingRequests},
		{cb.MaxRequests, &th.MaxRequests}, {cb.MaxRetries, &th.MaxRetries}} {
		if f.v != nil {
			*f.dst = wrapperspb.UInt32(uint32(max(*f.v, 0)))
			set = true
		}
	}
	if set {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	if cb.ConsecutiveErrors == nil && cb.Interval == nil && cb.BaseEjectionTime == nil && cb.MaxEjectionPercent == nil {
		return
	}
	od := &clusterv3.OutlierDetection{}
	if cb.ConsecutiveErrors != nil {
		od.Consecutive_5Xx = wrapperspb.UInt32(uint32(max(*cb.ConsecutiveErrors, 0)))
		od.ConsecutiveGatewayFailure = wrapperspb.UInt32(uint32(max(*cb.ConsecutiveErrors, 0)))
		od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
	}
	od.Interval = duration(cb.Interval)
	od.BaseEjectionTime = duration(cb.BaseEjectionTime)
	if cb.MaxEjectionPercent != nil {
		od.MaxEjectionPercent = wrapperspb.UInt32(uint32(min(max(*cb.MaxEjectionPercent, 0), 100)))
	}
	c.OutlierDetection = od
}

func duration(d *metav1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(d.Duration)
}

// XDSCluster is the cluster through which Envoy reaches this project's xDS server at address
// (host:port): HTTP/2 with keepalives, STATIC for an IP address, STRICT_DNS for a name.
func XDSCluster(address string) (*clusterv3.Cluster, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("xDS address %q: %w", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("xDS address %q: invalid port", address)
	}
	opts, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				ConnectionKeepalive: &corev3.KeepaliveSettings{Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(5 * time.Second)},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	discovery := clusterv3.Cluster_STRICT_DNS
	if net.ParseIP(host) != nil {
		discovery = clusterv3.Cluster_STATIC
	}
	return &clusterv3.Cluster{
		Name:                          eds.ClusterName,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:                durationpb.New(5 * time.Second),
		DnsLookupFamily:               clusterv3.Cluster_V4_PREFERRED,
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: opts},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: eds.ClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
					}}},
				}},
			}}}},
		},
	}, nil
}
