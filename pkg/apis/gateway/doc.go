// +k8s:deepcopy-gen=package
// +groupName=gateway.tailscale.com

// Package gateway holds the internal (hub) version of the gateway.tailscale.com API group.
package gateway
