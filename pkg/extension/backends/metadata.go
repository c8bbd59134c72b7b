package backends

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// EndpointMetadataFilter is the filter metadata namespace under which the EDS server puts a
// TailscaleEndpoints endpoint's spec.endpoints[].metadata on its host: Envoy's access logs and
// header formatters read it as %UPSTREAM_METADATA(gateway.tailscale.com/metadata:KEY)%.
const EndpointMetadataFilter = "gateway.tailscale.com/metadata"

// AddEndpointMetadata adds an endpoint's metadata to md under EndpointMetadataFilter; nothing when
// it is empty.
func AddEndpointMetadata(md *corev3.Metadata, metadata map[string]string) {
	if len(metadata) == 0 {
		return
	}
	fields := make(map[string]*structpb.Value, len(metadata))
	for k, v := range metadata {
		fields[k] = structpb.NewStringValue(v)
	}
	md.FilterMetadata[EndpointMetadataFilter] = &structpb.Struct{Fields: fields}
}
