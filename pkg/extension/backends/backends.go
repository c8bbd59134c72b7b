// Package backends names what an Envoy Gateway cluster built for custom backends is made of: the
// TailscaleEndpoints and TailscaleServices of one HTTPRoute rule. It parses Envoy Gateway's
// cluster names, decodes the objects Envoy Gateway passes to the extension, and reads the
// backendRefs of HTTPRoutes.
package backends

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
)

// Kinds of this API group that HTTPRoute backendRefs may name.
const (
	KindEndpoints = "TailscaleEndpoints"
	KindServices  = "TailscaleServices"
)

// Ref is one backendRef of a rule to an object of this API group.
type Ref struct {
	Kind      string
	Namespace string
	Name      string
	// Port is the backendRef's port; zero when unknown or unset.
	Port int32
	// Weight is the backendRef's weight (Gateway API's default is 1).
	Weight uint32
}

// String is "Kind namespace/name".
func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// RouteRule names one rule of an HTTPRoute, as Envoy Gateway names the rule's cluster.
type RouteRule struct {
	Namespace, Name string
	Index           int
}

// ClusterName is Envoy Gateway's name of the rule's cluster: httproute/<ns>/<name>/rule/<i>.
func (r RouteRule) ClusterName() string {
	return "httproute/" + r.Namespace + "/" + r.Name + "/rule/" + strconv.Itoa(r.Index)
}

// ParseClusterName parses Envoy Gateway's name of an HTTPRoute rule's cluster.
func ParseClusterName(name string) (RouteRule, bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 5 || parts[0] != "httproute" || parts[3] != "rule" || parts[1] == "" || parts[2] == "" {
		return RouteRule{}, false
	}
	i, err := strconv.Atoi(parts[4])
	if err != nil || i < 0 {
		return RouteRule{}, false
	}
	return RouteRule{Namespace: parts[1], Name: parts[2], Index: i}, true
}

// RouteRefs returns, for every rule of route with backendRefs to this API group, the rule and
// those refs in order. Refs without a namespace take the route's.
func RouteRefs(route *gwapiv1.HTTPRoute) map[RouteRule][]Ref {
	out := map[RouteRule][]Ref{}
	for i, rule := range route.Spec.Rules {
		for _, br := range rule.BackendRefs {
			if br.Group == nil || string(*br.Group) != v1alpha1.GroupName || br.Kind == nil {
				continue
			}
			kind := string(*br.Kind)
			if kind != KindEndpoints && kind != KindServices {
				continue
			}
			ref := Ref{Kind: kind, Namespace: route.Namespace, Name: string(br.Name), Weight: 1}
			if br.Namespace != nil && *br.Namespace != "" {
				ref.Namespace = string(*br.Namespace)
			}
			if br.Port != nil {
				ref.Port = int32(*br.Port)
			}
			if br.Weight != nil {
				ref.Weight = uint32(max(*br.Weight, 0))
			}
			rr := RouteRule{Namespace: route.Namespace, Name: route.Name, Index: i}
			out[rr] = append(out[rr], ref)
		}
	}
	return out
}

// Object is one decoded backend resource.
type Object struct {
	Ref       Ref
	Endpoints *v1alpha1.TailscaleEndpoints
	Services  *v1alpha1.TailscaleServices
}

// ErrForeign is returned by Decode for a resource of another group or kind, such as an
// extension filter of another extension.
var ErrForeign = errors.New("not a backend of gateway.tailscale.com")

// typeMeta is what Decode reads first.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Decode decodes one backend resource as Envoy Gateway passes it (the object's JSON, as it read
// it through the Kubernetes API) and applies the API's defaults. Resources of other groups or
// kinds return ErrForeign; malformed ones a descriptive error.
func Decode(raw []byte, defaulter runtime.ObjectDefaulter) (Object, error) {
	var tm typeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return Object{}, fmt.Errorf("decoding backend resource: %w", err)
	}
	group, _, _ := strings.Cut(tm.APIVersion, "/")
	if group != v1alpha1.GroupName {
		return Object{}, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, ErrForeign)
	}
	if tm.APIVersion != v1alpha1.SchemeGroupVersion.String() {
		return Object{}, fmt.Errorf("backend resource %s %s: only %s is served", tm.APIVersion, tm.Kind, v1alpha1.SchemeGroupVersion)
	}
	var obj Object
	var decoded runtime.Object
	switch tm.Kind {
	case KindEndpoints:
		obj.Endpoints = &v1alpha1.TailscaleEndpoints{}
		if err := json.Unmarshal(raw, obj.Endpoints); err != nil {
			return Object{}, fmt.Errorf("decoding %s: %w", tm.Kind, err)
		}
		decoded = obj.Endpoints
		obj.Ref = Ref{Kind: tm.Kind, Namespace: obj.Endpoints.Namespace, Name: obj.Endpoints.Name, Weight: 1}
	case KindServices:
		obj.Services = &v1alpha1.TailscaleServices{}
		if err := json.Unmarshal(raw, obj.Services); err != nil {
			return Object{}, fmt.Errorf("decoding %s: %w", tm.Kind, err)
		}
		decoded = obj.Services
		obj.Ref = Ref{Kind: tm.Kind, Namespace: obj.Services.Namespace, Name: obj.Services.Name, Weight: 1}
	default:
		return Object{}, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, ErrForeign)
	}
	if obj.Ref.Name == "" || obj.Ref.Namespace == "" {
		return Object{}, fmt.Errorf("%s without metadata.name or metadata.namespace", tm.Kind)
	}
	if defaulter != nil {
		defaulter.Default(decoded)
	}
	return obj, nil
}

// To is the object ref names, as a ReferenceGrant's spec.to sees it.
func (r Ref) To() refgrant.To {
	return refgrant.To{Group: v1alpha1.GroupName, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}
