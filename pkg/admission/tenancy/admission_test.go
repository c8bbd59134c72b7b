package tenancy

import (
	"context"
	"fmt"
	"strings"
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

// servicesWithExternal is a TailscaleServices with one external service, controlled by a
// TailscaleGateway when gateway is set.
func servicesWithExternal(address string, controlled bool) *gateway.TailscaleServices {
	s := &gateway.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "any", Name: "s"},
		Spec: gateway.TailscaleServicesSpec{ServiceDiscovery: &gateway.ServiceDiscoverySpec{
			ExternalServices: []gateway.ExternalService{{Name: "envoy", Address: address, Port: 80}}}}}
	if controlled {
		yes := true
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "gw", UID: "u", Controller: &yes}}
	}
	return s
}

func validateServices(p *Plugin, obj, old runtime.Object, u user.Info) error {
	op := admission.Create
	if old != nil {
		op = admission.Update
	}
	attrs := admission.NewAttributesRecord(obj, old, gateway.Kind("TailscaleServices").WithVersion(""), "any", "s",
		gateway.Resource("tailscaleservices").WithVersion(""), "", op, nil, false, u)
	return p.Validate(context.Background(), attrs, nil)
}

// externalServices stay closed to users (the plugin's rule refuses all): only the server's own
// identity writes them, and only on objects a TailscaleGateway controls.
func TestExternalServicesOfGatewayListeners(t *testing.T) {
	p := plugin(t)
	server := &user.DefaultInfo{Name: user.APIServerUser, Groups: []string{user.SystemPrivilegedGroup}}
	admin := &user.DefaultInfo{Name: "admin", Groups: []string{user.SystemPrivilegedGroup}}
	for _, tc := range []struct {
		name        string
		obj, old    *gateway.TailscaleServices
		u           user.Info
		wantRefused bool
	}{
		{name: "server, controlled by a TailscaleGateway", obj: servicesWithExternal("10.96.0.10", true), u: server},
		{name: "server, not controlled", obj: servicesWithExternal("10.96.0.10", false), u: server, wantRefused: true},
		{name: "user, controlled by a TailscaleGateway", obj: servicesWithExternal("10.96.0.10", true), u: admin, wantRefused: true},
		{name: "user, plain", obj: servicesWithExternal("10.96.0.10", false), u: admin, wantRefused: true},
		{name: "user edits a generated object keeping its addresses", obj: servicesWithExternal("10.96.0.10", true),
			old: servicesWithExternal("10.96.0.10", true), u: admin},
		{name: "user changes a generated object's address", obj: servicesWithExternal("10.96.0.11", true),
			old: servicesWithExternal("10.96.0.10", true), u: admin, wantRefused: true},
		{name: "user adds a TailscaleGateway controller to an object with externalServices", obj: servicesWithExternal("10.96.0.10", true),
			old: servicesWithExternal("10.96.0.10", false), u: admin, wantRefused: true},
		{name: "server changes a generated object's address", obj: servicesWithExternal("10.96.0.11", true),
			old: servicesWithExternal("10.96.0.10", true), u: server},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var old runtime.Object
			if tc.old != nil {
				old = tc.old
			}
			err := validateServices(p, tc.obj, old, tc.u)
			if tc.wantRefused != (err != nil) {
				t.Fatalf("err = %v, want refused %v", err, tc.wantRefused)
			}
		})
	}
}

// An endpoint's externalTarget outside the tailnet is an address the proxy dials from its host:
// refused (422, naming the field) while externalServices are off, as an externalServices address
// is; tailnet targets pass, and an update keeping a target admitted earlier passes.
func TestExternalTargetOutsideTheTailnet(t *testing.T) {
	p := plugin(t)
	withTargets := func(targets ...string) *gateway.TailscaleEndpoints {
		obj := endpoints("any", "open")
		for i, tg := range targets {
			obj.Spec.Endpoints = append(obj.Spec.Endpoints, gateway.TailscaleEndpoint{Name: fmt.Sprintf("e%d", i), ExternalTarget: tg})
		}
		return obj
	}
	if err := validate(p, withTargets("db.corp.ts.net:5432", "100.64.0.9:80", "[fd7a:115c:a1e0::9]:80"), nil, "any", ""); err != nil {
		t.Errorf("tailnet targets refused: %v", err)
	}
	err := validate(p, withTargets("db.corp.ts.net:5432", "api.internal.example.com:8080", "10.0.0.5:443"), nil, "any", "")
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.endpoints[1].externalTarget") ||
		!strings.Contains(err.Error(), "spec.endpoints[2].externalTarget") || strings.Contains(err.Error(), "spec.endpoints[0]") {
		t.Fatalf("targets outside the tailnet: err = %v, want 422 naming endpoints[1] and [2] only", err)
	}
	old := withTargets("10.0.0.5:443")
	if err := validate(p, withTargets("10.0.0.5:443"), old, "any", ""); err != nil {
		t.Errorf("update keeping an admitted target: %v", err)
	}
	allowed := New(tenancy.New(listers.NewTailscaleTailnetLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})), nil,
		tenancy.ExternalServices{Allowed: true}), func() bool { return true })
	if err := validate(allowed, withTargets("api.internal.example.com:8080"), nil, "any", ""); err != nil {
		t.Errorf("externalServices allowed: %v", err)
	}
}
