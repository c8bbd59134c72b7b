// +k8s:deepcopy-gen=package
// +k8s:conversion-gen=github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway
// +k8s:defaulter-gen=TypeMeta
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=com.tailscale.gateway.v1alpha1
// +groupName=gateway.tailscale.com

// Package v1alpha1 is version v1alpha1 of the gateway.tailscale.com API group.
package v1alpha1
