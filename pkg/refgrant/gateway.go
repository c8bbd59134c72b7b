package refgrant

import (
	"fmt"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Reasons of a TailscaleGateway that is not bound to the Gateway it names.
const (
	// ReasonGatewayConflict: another TailscaleGateway is bound to the Gateway.
	ReasonGatewayConflict = "GatewayConflict"
)

// GatewayOf returns the namespace and name of the Gateway g's gatewayRef names (its own namespace
// when the ref has none).
func GatewayOf(g *v1alpha1.TailscaleGateway) (string, string) {
	ns := g.Spec.GatewayRef.Namespace
	if ns == "" {
		ns = g.Namespace
	}
	return ns, g.Spec.GatewayRef.Name
}

// names reports whether g's gatewayRef names the Gateway ns/name.
func names(g *v1alpha1.TailscaleGateway, ns, name string) bool {
	refNS, refName := GatewayOf(g)
	kind := g.Spec.GatewayRef.Kind
	return refNS == ns && refName == name && (kind == "" || kind == "Gateway")
}

// fromTailscaleGateway is a TailscaleGateway of namespace as a ReferenceGrant's spec.from sees it.
func fromTailscaleGateway(namespace string) From {
	return From{Group: v1alpha1.GroupName, Kind: "TailscaleGateway", Namespace: namespace}
}

// GatewayPermitted reports whether g may name its Gateway: one of its own namespace, or of a
// namespace whose ReferenceGrant lets TailscaleGateways of g's namespace refer to Gateways
// (gateway.networking.k8s.io), that one or all. The message says why not.
func (gr *Grants) GatewayPermitted(g *v1alpha1.TailscaleGateway) (bool, string) {
	ns, name := GatewayOf(g)
	from := fromTailscaleGateway(g.Namespace)
	to := To{Group: gwapiv1.GroupName, Kind: "Gateway", Namespace: ns, Name: name}
	if gr.Permitted(from, to) {
		return true, ""
	}
	return false, NotPermittedMessage(from, to)
}

// older orders TailscaleGateways by creationTimestamp, then namespace and name.
func older(a, b *v1alpha1.TailscaleGateway) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// Bound returns the TailscaleGateway of all bound to the Gateway ns/name: of those whose
// gatewayRef names it, may name it (GatewayPermitted) and are not skipped (e.g. refused by their
// tailnets), the oldest by creationTimestamp, then namespace and name. Nil when none.
func (gr *Grants) Bound(all []*v1alpha1.TailscaleGateway, ns, name string, skip func(*v1alpha1.TailscaleGateway) bool) *v1alpha1.TailscaleGateway {
	var bound *v1alpha1.TailscaleGateway
	for _, g := range all {
		if !names(g, ns, name) || (skip != nil && skip(g)) || (bound != nil && !older(g, bound)) {
			continue
		}
		if ok, _ := gr.GatewayPermitted(g); ok {
			bound = g
		}
	}
	return bound
}

// ConflictMessage says that g is not bound to its Gateway because winner is.
func ConflictMessage(g, winner *v1alpha1.TailscaleGateway) string {
	ns, name := GatewayOf(g)
	return fmt.Sprintf("Gateway %s/%s is bound to TailscaleGateway %s/%s (the oldest that may name it); this one configures nothing on it",
		ns, name, winner.Namespace, winner.Name)
}
