package backends

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
)

// How a host of a shaped cluster is connected to: the EDS server labels every host with one of
// these values under TransportSocketMatchKey in the envoy.transport_socket_match filter metadata,
// and the hook gives the cluster a transport_socket_matches entry per value it knows. A host
// whose value has no entry gets the cluster's default transport socket: TLS verified against the
// system CAs, so an unknown value never falls back to cleartext.
const (
	// TransportSocketMatchFilter is the metadata filter Envoy reads transport socket matches from.
	TransportSocketMatchFilter = "envoy.transport_socket_match"
	// TransportSocketMatchKey is this project's key in that filter.
	TransportSocketMatchKey = "gateway.tailscale.com/upstream"
	// UpstreamPlaintext: HTTP, gRPC (h2c), TCP and unknown protocols are spoken in cleartext.
	UpstreamPlaintext = "plaintext"
	// UpstreamSystemCA: HTTPS and TLS endpoints without a caCertificate.
	UpstreamSystemCA = "tls-system"
	// upstreamCAPrefix prefixes "<namespace>/<name>/<endpoint>" of an endpoint with its own CA.
	upstreamCAPrefix = "tls-ca/"
)

// OriginatesTLS reports whether Envoy connects to an endpoint of protocol p with TLS.
func OriginatesTLS(p v1alpha1.Protocol) bool {
	return p == v1alpha1.ProtocolHTTPS || p == v1alpha1.ProtocolTLS
}

// UpstreamMatch is the transport socket match value of endpoint ep of the TailscaleEndpoints
// namespace/name.
func UpstreamMatch(namespace, name string, ep endpointset.Endpoint) string {
	switch {
	case !OriginatesTLS(ep.Protocol):
		return UpstreamPlaintext
	case ep.TLS != nil && ep.TLS.CACertificate != "":
		return UpstreamCAMatch(namespace, name, ep.Name)
	default:
		return UpstreamSystemCA
	}
}

// UpstreamCAMatch is the match value of an endpoint verified against its own caCertificate.
func UpstreamCAMatch(namespace, name, endpoint string) string {
	return upstreamCAPrefix + namespace + "/" + name + "/" + endpoint
}

// UpstreamMetadata is the host metadata carrying match.
func UpstreamMetadata(match string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		TransportSocketMatchFilter: {Fields: map[string]*structpb.Value{TransportSocketMatchKey: structpb.NewStringValue(match)}},
	}}
}
