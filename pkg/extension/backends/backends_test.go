package backends

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

func TestParseClusterName(t *testing.T) {
	for name, want := range map[string]*RouteRule{
		"httproute/web/route/rule/0":           {Namespace: "web", Name: "route", Index: 0},
		"httproute/web/route/rule/12":          {Namespace: "web", Name: "route", Index: 12},
		"grpcroute/web/route/rule/0":           nil,
		"httproute/web/route/rule/-1":          nil,
		"httproute/web/route/rule/x":           nil,
		"httproute//route/rule/0":              nil,
		"httproute/web/route/0":                nil,
		"httproute/web/route/rule/0/backend/0": nil,
	} {
		got, ok := ParseClusterName(name)
		if (want == nil) != !ok || (want != nil && got != *want) {
			t.Errorf("ParseClusterName(%q) = %+v, %v; want %+v", name, got, ok, want)
		}
		if ok && got.ClusterName() != name {
			t.Errorf("%+v.ClusterName() = %q, want %q", got, got.ClusterName(), name)
		}
	}
}

func TestRouteRefs(t *testing.T) {
	ours, other := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Group("example.com")
	eps, svcs, svc := gwapiv1.Kind(KindEndpoints), gwapiv1.Kind(KindServices), gwapiv1.Kind("Service")
	ref := func(g *gwapiv1.Group, k *gwapiv1.Kind, name string, ns *gwapiv1.Namespace, port *gwapiv1.PortNumber, w *int32) gwapiv1.HTTPBackendRef {
		return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{Weight: w, BackendObjectReference: gwapiv1.BackendObjectReference{
			Group: g, Kind: k, Name: gwapiv1.ObjectName(name), Namespace: ns, Port: port}}}
	}
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "r"}, Spec: gwapiv1.HTTPRouteSpec{Rules: []gwapiv1.HTTPRouteRule{
		{BackendRefs: []gwapiv1.HTTPBackendRef{ref(nil, &svc, "plain", nil, nil, nil)}},
		{BackendRefs: []gwapiv1.HTTPBackendRef{
			ref(&ours, &eps, "a", nil, ptr.To[gwapiv1.PortNumber](8080), ptr.To[int32](3)),
			ref(&other, &eps, "foreign", nil, nil, nil),
			ref(&ours, &svcs, "b", ptr.To(gwapiv1.Namespace("shared")), nil, ptr.To[int32](0)),
			ref(&ours, nil, "no-kind", nil, nil, nil),
		}},
	}}}
	got := RouteRefs(route)
	want := []Ref{{Kind: KindEndpoints, Namespace: "web", Name: "a", Port: 8080, Weight: 3}, {Kind: KindServices, Namespace: "shared", Name: "b", Weight: 0}}
	if len(got) != 1 || len(got[RouteRule{"web", "r", 1}]) != 2 {
		t.Fatalf("RouteRefs = %+v, want rule 1 only with two refs", got)
	}
	for i, r := range got[RouteRule{"web", "r", 1}] {
		if r != want[i] {
			t.Errorf("ref %d = %+v, want %+v", i, r, want[i])
		}
	}
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	install.Install(s)
	return s
}

func TestDecodeAppliesDefaults(t *testing.T) {
	obj, err := Decode([]byte(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices",
		"metadata":{"name":"s","namespace":"web"},"spec":{"selector":{"matchLabels":{"app":"web"}},"loadBalancing":{}}}`), scheme())
	if err != nil {
		t.Fatal(err)
	}
	if obj.Services == nil || obj.Ref != (Ref{Kind: KindServices, Namespace: "web", Name: "s", Weight: 1}) {
		t.Fatalf("Decode = %+v", obj)
	}
	if got := obj.Services.Spec.LoadBalancing.Strategy; got != v1alpha1.StrategyRoundRobin {
		t.Errorf("strategy = %q, want the default %q", got, v1alpha1.StrategyRoundRobin)
	}
}

func TestDecodeErrors(t *testing.T) {
	for raw, foreign := range map[string]bool{
		`{"apiVersion":"example.com/v1","kind":"Filter"}`:                                         true,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleGateway","metadata":{}}`: true,
		`not json`: false,
		`{"apiVersion":"gateway.tailscale.com/v1","kind":"TailscaleEndpoints"}`:                                                        false,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":"e"}}`:                          false,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":1}}`:                            false,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices","metadata":{"name":"s","namespace":"n"},"spec":[]}`: false,
	} {
		_, err := Decode([]byte(raw), scheme())
		if err == nil || errors.Is(err, ErrForeign) != foreign {
			t.Errorf("Decode(%s) = %v; want an error, foreign=%v", raw, err, foreign)
		}
	}
}

// FuzzDecode: no input makes Decode panic, and what it accepts names an object of ours.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":"e","namespace":"n"},"spec":{"endpoints":[{"name":"a","port":80}]}}`,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices","metadata":{"name":"s","namespace":"n"},"spec":{"loadBalancing":{"strategy":"failover","failoverConfig":{"failbackDelay":"1m"}}}}`,
		`{"apiVersion":"example.com/v1","kind":"X"}`, `{}`, `null`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	s := scheme()
	f.Fuzz(func(t *testing.T, raw []byte) {
		obj, err := Decode(raw, s)
		if err != nil {
			return
		}
		if obj.Ref.Name == "" || obj.Ref.Namespace == "" || (obj.Endpoints == nil) == (obj.Services == nil) {
			t.Fatalf("Decode accepted %q as %+v", raw, obj)
		}
	})
}
