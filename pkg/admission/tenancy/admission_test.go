package tenancy

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

func plugin(t *testing.T) *Plugin {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, tn := range []*v1alpha1.TailscaleTailnet{
		{ObjectMeta: metav1.ObjectMeta{Name: "open"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "closed"}, Spec: v1alpha1.TailscaleTailnetSpec{
			AllowedNamespaces: &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"ok"}}}},
	} {
		if err := idx.Add(tn); err != nil {
			t.Fatal(err)
		}
	}
	return New(tenancy.New(listers.NewTailscaleTailnetLister(idx), nil, tenancy.ExternalServices{}), func() bool { return true })
}

func endpoints(ns, tailnet string) *gateway.TailscaleEndpoints {
	return &gateway.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "e"}, Spec: gateway.TailscaleEndpointsSpec{Tailnet: tailnet}}
}

func validate(p *Plugin, obj, old runtime.Object, ns, subresource string) error {
	op := admission.Create
	if old != nil {
		op = admission.Update
	}
	kind := gateway.Kind("TailscaleEndpoints").WithVersion("")
	attrs := admission.NewAttributesRecord(obj, old, kind, ns, "e", gateway.Resource("tailscaleendpoints").WithVersion(""),
		subresource, op, nil, false, nil)
	return p.Validate(context.Background(), attrs, nil)
}

func TestValidate(t *testing.T) {
	p := plugin(t)
	for _, tc := range []struct {
		name        string
		obj, old    runtime.Object
		ns, sub     string
		wantRefused bool
	}{
		{name: "open tailnet", obj: endpoints("any", "open"), ns: "any"},
		{name: "admitted namespace", obj: endpoints("ok", "closed"), ns: "ok"},
		{name: "refused namespace", obj: endpoints("any", "closed"), ns: "any", wantRefused: true},
		{name: "unknown tailnet", obj: endpoints("any", "nosuch"), ns: "any"},
		{name: "update keeping the reference", obj: endpoints("any", "closed"), old: endpoints("any", "closed"), ns: "any"},
		{name: "update moving to the tailnet", obj: endpoints("any", "closed"), old: endpoints("any", "open"), ns: "any", wantRefused: true},
		{name: "status subresource", obj: endpoints("any", "closed"), old: endpoints("any", "open"), ns: "any", sub: "status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(p, tc.obj, tc.old, tc.ns, tc.sub)
			if tc.wantRefused != (err != nil) {
				t.Fatalf("err = %v, want refused %v", err, tc.wantRefused)
			}
			if err != nil && !apierrors.IsInvalid(err) {
				t.Fatalf("refusal is not 422 Invalid: %v", err)
			}
		})
	}
}

// A tailnet the informer does not hold yet (created a moment ago) is looked up and decides.
func TestValidateLooksUpTailnetsTheInformerLacks(t *testing.T) {
	p := plugin(t)
	fresh := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}, Spec: v1alpha1.TailscaleTailnetSpec{
		AllowedNamespaces: &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"ok"}}}}
	var looked []string
	p.Lookup = func(_ context.Context, ref string) (*v1alpha1.TailscaleTailnet, bool) {
		looked = append(looked, ref)
		return fresh, ref == "fresh"
	}
	if err := validate(p, endpoints("any", "fresh"), nil, "any", ""); !apierrors.IsInvalid(err) {
		t.Fatalf("err = %v, want 422 from the looked-up tailnet", err)
	}
	if err := validate(p, endpoints("ok", "fresh"), nil, "ok", ""); err != nil {
		t.Fatalf("admitted namespace refused: %v", err)
	}
	if err := validate(p, endpoints("any", "nosuch"), nil, "any", ""); err != nil {
		t.Fatalf("a tailnet that exists nowhere is decided when it does: %v", err)
	}
	if err := validate(p, endpoints("any", "closed"), nil, "any", ""); err == nil {
		t.Fatal("informer's tailnet not used")
	}
	if len(looked) != 3 {
		t.Fatalf("looked up %v; want only the tailnets the informer lacks", looked)
	}
}

// externalServicesOf is a TailscaleServices with one external service at address, controlled by
// a TailscaleGateway when generated.
func externalServicesOf(address string, generated bool) *gateway.TailscaleServices {
	s := &gateway.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "any", Name: "s"},
		Spec: gateway.TailscaleServicesSpec{ServiceDiscovery: &gateway.ServiceDiscoverySpec{
			ExternalServices: []gateway.ExternalService{{Name: "tcp-80", Address: address, Port: 80}}}}}
	if generated {
		yes := true
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "gw", UID: "u", Controller: &yes}}
	}
	return s
}

// With externalServices off, only the server itself stores a TailscaleGateway-controlled object
// with them; a user claiming that controller gets the rule, for every entry once it claims it.
func TestValidateExternalServicesOfGeneratedObjects(t *testing.T) {
	p := plugin(t) // externalServices disabled
	server := &user.DefaultInfo{Name: user.APIServerUser, Groups: []string{user.SystemPrivilegedGroup}}
	someone := &user.DefaultInfo{Name: "alice"}
	for _, tc := range []struct {
		name        string
		obj, old    *gateway.TailscaleServices
		who         user.Info
		wantRefused bool
	}{
		{name: "user, not generated", obj: externalServicesOf("10.0.0.1", false), who: someone, wantRefused: true},
		{name: "server, not generated", obj: externalServicesOf("10.0.0.1", false), who: server, wantRefused: true},
		{name: "server, generated", obj: externalServicesOf("10.0.0.1", true), who: server},
		{name: "user claiming the controller", obj: externalServicesOf("10.0.0.1", true), who: someone, wantRefused: true},
		{name: "user adding the controller to a stored object", obj: externalServicesOf("10.0.0.1", true), old: externalServicesOf("10.0.0.1", false), who: someone, wantRefused: true},
		{name: "user relabelling a generated object", obj: externalServicesOf("10.0.0.1", true), old: externalServicesOf("10.0.0.1", true), who: someone},
		{name: "user changing a generated address", obj: externalServicesOf("10.0.0.2", true), old: externalServicesOf("10.0.0.1", true), who: someone, wantRefused: true},
		{name: "server changing a generated address", obj: externalServicesOf("10.0.0.2", true), old: externalServicesOf("10.0.0.1", true), who: server},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := admission.Create
			var old runtime.Object
			if tc.old != nil {
				op, old = admission.Update, tc.old
			}
			attrs := admission.NewAttributesRecord(tc.obj, old, gateway.Kind("TailscaleServices").WithVersion(""), "any", "s",
				gateway.Resource("tailscaleservices").WithVersion(""), "", op, nil, false, tc.who)
			err := p.Validate(context.Background(), attrs, nil)
			if tc.wantRefused != (err != nil) {
				t.Fatalf("err = %v, want refused %v", err, tc.wantRefused)
			}
		})
	}
}
