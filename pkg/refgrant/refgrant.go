// Package refgrant decides cross-namespace references with Gateway API ReferenceGrants, as Envoy
// Gateway does, and which TailscaleGateway a Gateway is bound to.
package refgrant

import (
	"fmt"

	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwlistersv1b1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"
)

// ReasonRefNotPermitted is Gateway API's reason for a cross-namespace reference no ReferenceGrant
// allows.
const ReasonRefNotPermitted = string(gwapiv1.RouteReasonRefNotPermitted)

// From is the referring side of a cross-namespace reference.
type From struct {
	Group, Kind, Namespace string
}

// To is the referred object.
type To struct {
	Group, Kind, Namespace, Name string
}

// FromHTTPRoute is an HTTPRoute of namespace.
func FromHTTPRoute(namespace string) From {
	return From{Group: gwapiv1.GroupName, Kind: "HTTPRoute", Namespace: namespace}
}

// Grants decides cross-namespace references from ReferenceGrants, as Envoy Gateway does for a
// route's backendRefs to Services: a reference within one namespace is always permitted; one to
// another namespace only when a ReferenceGrant in the target's namespace lists the referrer's
// group, kind and namespace in spec.from and the target's group and kind, and its name or no
// name, in spec.to. A nil *Grants (no ReferenceGrant API) permits no cross-namespace reference.
type Grants struct {
	Lister gwlistersv1b1.ReferenceGrantLister
}

// Permitted reports whether from may refer to to.
func (g *Grants) Permitted(from From, to To) bool {
	if from.Namespace == to.Namespace {
		return true
	}
	if g == nil || g.Lister == nil {
		return false
	}
	list, err := g.Lister.ReferenceGrants(to.Namespace).List(labels.Everything())
	if err != nil {
		return false
	}
	return permittedBy(list, from, to)
}

func permittedBy(grants []*gwapiv1b1.ReferenceGrant, from From, to To) bool {
	for _, rg := range grants {
		if rg.Namespace != to.Namespace {
			continue
		}
		fromAllowed := false
		for _, f := range rg.Spec.From {
			if string(f.Namespace) == from.Namespace && string(f.Group) == from.Group && string(f.Kind) == from.Kind {
				fromAllowed = true
				break
			}
		}
		if !fromAllowed {
			continue
		}
		for _, t := range rg.Spec.To {
			if string(t.Group) == to.Group && string(t.Kind) == to.Kind && (t.Name == nil || *t.Name == "" || string(*t.Name) == to.Name) {
				return true
			}
		}
	}
	return false
}

// NotPermittedMessage says why from may not refer to to.
func NotPermittedMessage(from From, to To) string {
	return fmt.Sprintf("%s in namespace %s may not refer to %s %s/%s: no ReferenceGrant in namespace %s allows it",
		from.Kind, from.Namespace, to.Kind, to.Namespace, to.Name, to.Namespace)
}
