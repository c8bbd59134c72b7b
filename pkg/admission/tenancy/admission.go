// Package tenancy is the admission plugin that refuses TailscaleEndpoints, TailscaleServices and
// TailscaleGateways naming a tailnet whose spec.allowedNamespaces does not admit their namespace,
// proxy tags outside the tailnet's spec.proxyTags, externalServices the server does not allow
// (pkg/tenancy decides them), and TailscaleTailnets taking their OAuth Secret from outside the
// installation's namespace.
package tenancy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// PluginName is the plugin's name in admission configuration.
const PluginName = "TailscaleGatewayTenancy"

// Plugin refuses creations and updates that reach a tailnet or external address they may not.
// On update only references that are new or changed are checked: an object admitted earlier,
// whose tailnet tightened allowedNamespaces since, can still have its labels, finalizers or other
// fields edited and be deleted; the controllers mark it Accepted=False and leave it alone.
type Plugin struct {
	*admission.Handler
	policy *tenancy.Policy
	// Lookup, when set, finds a tailnet the policy's informer does not hold (yet): one created
	// a moment before the object naming it must decide as it will once the informer has it.
	Lookup func(ctx context.Context, ref string) (*v1alpha1.TailscaleTailnet, bool)
	// SecretNamespace, when set, is the only spec.oauthSecretNamespace a TailscaleTailnet may
	// name: the server holds the rights to read Secrets there, and sends what it reads to the
	// tailnet's API.
	SecretNamespace string
}

var _ admission.ValidationInterface = &Plugin{}

// New returns the plugin deciding through policy; ready reports when the policy's informers have
// synced (requests wait for it, as admission plugins do).
func New(policy *tenancy.Policy, ready admission.ReadyFunc) *Plugin {
	p := &Plugin{Handler: admission.NewHandler(admission.Create, admission.Update), policy: policy}
	p.SetReadyFunc(ready)
	return p
}

// Validate implements admission.ValidationInterface.
func (p *Plugin) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetSubresource() != "" || a.GetKind().Group != gateway.GroupName {
		return nil
	}
	if !p.WaitForReady() {
		return admission.NewForbidden(a, fmt.Errorf("not yet ready to decide tenancy"))
	}
	var errs field.ErrorList
	ns := a.GetNamespace()
	checkRef := func(path *field.Path, ref, oldRef string, hadOld bool) {
		if ref == "" || (hadOld && ref == oldRef) {
			return
		}
		if d := p.decide(ctx, ns, ref); !d.Allowed {
			errs = append(errs, field.Forbidden(path, d.Message))
		}
	}
	switch obj := a.GetObject().(type) {
	case *gateway.TailscaleTailnet:
		if ns := obj.Spec.OAuthSecretNamespace; p.SecretNamespace != "" && obj.Spec.OAuthSecretName != "" && ns != p.SecretNamespace {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "oauthSecretNamespace"),
				fmt.Sprintf("OAuth Secrets are read only from namespace %s (the installation's), not %s", p.SecretNamespace, ns)))
		}
	case *gateway.TailscaleEndpoints:
		old, hadOld := a.GetOldObject().(*gateway.TailscaleEndpoints)
		oldRef := ""
		if hadOld {
			oldRef = old.Spec.Tailnet
		}
		checkRef(field.NewPath("spec", "tailnet"), obj.Spec.Tailnet, oldRef, hadOld)
		if !hadOld || oldRef != obj.Spec.Tailnet || !slices.Equal(old.Spec.Tags, obj.Spec.Tags) {
			errs = append(errs, p.checkProxyTags(ctx, field.NewPath("spec", "tags"), obj.Spec.Tailnet, obj.Spec.Tags)...)
		}
		errs = append(errs, p.checkTargets(obj, old, isServer(a.GetUserInfo()))...)
	case *gateway.TailscaleServices:
		old, hadOld := a.GetOldObject().(*gateway.TailscaleServices)
		if t := obj.Spec.EndpointTemplate; t != nil {
			oldRef := ""
			if hadOld && old.Spec.EndpointTemplate != nil {
				oldRef = old.Spec.EndpointTemplate.Tailnet
			}
			checkRef(field.NewPath("spec", "endpointTemplate", "tailnet"), t.Tailnet, oldRef, hadOld && old.Spec.EndpointTemplate != nil)
			if !hadOld || old.Spec.EndpointTemplate == nil || oldRef != t.Tailnet || !slices.Equal(old.Spec.EndpointTemplate.Tags, t.Tags) {
				errs = append(errs, p.checkProxyTags(ctx, field.NewPath("spec", "endpointTemplate", "tags"), t.Tailnet, t.Tags)...)
			}
		}
		errs = append(errs, p.checkExternal(obj, old, isServer(a.GetUserInfo()))...)
	case *gateway.TailscaleGateway:
		old, hadOld := a.GetOldObject().(*gateway.TailscaleGateway)
		oldRefs := map[string]bool{}
		if hadOld {
			for _, t := range old.Spec.Tailnets {
				oldRefs[t.TailscaleTailnetRef.Name] = true
			}
		}
		for i, t := range obj.Spec.Tailnets {
			if t.TailscaleTailnetRef.Kind != "" && t.TailscaleTailnetRef.Kind != "TailscaleTailnet" {
				continue
			}
			name := t.TailscaleTailnetRef.Name
			checkRef(field.NewPath("spec", "tailnets").Index(i).Child("tailscaleTailnetRef", "name"), name, name, oldRefs[name])
		}
	default:
		return nil
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(a.GetKind().GroupKind(), a.GetName(), errs)
}

// decide decides through the policy, looking the tailnet up when its informer does not know it.
func (p *Plugin) decide(ctx context.Context, namespace, ref string) tenancy.Decision {
	if _, known := p.policy.Resolve(ref); known || p.Lookup == nil {
		return p.policy.Decide(namespace, ref)
	}
	if t, ok := p.Lookup(ctx, ref); ok {
		return p.policy.DecideFor(namespace, t)
	}
	return tenancy.Decision{Allowed: true} // decided once the tailnet exists
}

// checkProxyTags refuses those of tags (a proxy's, at path) that the tailnet ref does not permit
// its proxies (spec.proxyTags). A tailnet not known yet decides nothing here: the controller
// deploying the proxy checks again and deploys none.
func (p *Plugin) checkProxyTags(ctx context.Context, path *field.Path, ref string, tags []string) field.ErrorList {
	if ref == "" || len(tags) == 0 {
		return nil
	}
	t, known := p.policy.Resolve(ref)
	if !known && p.Lookup != nil {
		t, known = p.Lookup(ctx, ref)
	}
	if !known {
		return nil
	}
	var errs field.ErrorList
	bound := tenancy.ProxyTags(t)
	for i, tag := range tags {
		if !slices.Contains(bound, tag) {
			errs = append(errs, field.Forbidden(path.Index(i),
				fmt.Sprintf("%s is not among the tags TailscaleTailnet %s permits its proxies (spec.proxyTags: %s)", tag, t.Name, strings.Join(bound, ", "))))
		}
	}
	return errs
}

// isServer reports whether u is this server's own loopback identity (its controllers' writes).
func isServer(u user.Info) bool {
	return u != nil && u.GetName() == user.APIServerUser
}

// errGatewayExternal refuses externalServices on an object controlled by a TailscaleGateway from
// anyone but the server: the proxy dials those without --allow-external-services.
const errGatewayExternal = "externalServices of a TailscaleServices controlled by a TailscaleGateway are written by the server's TailscaleGateway controller only"

// checkTargets refuses endpoints' externalTargets outside the tailnet that the externalServices
// rule does not allow (the proxy would dial them from its host); on update only targets that are
// new. The server's own writes of objects a TailscaleGateway controls pass, as for
// externalServices.
func (p *Plugin) checkTargets(obj, old *gateway.TailscaleEndpoints, server bool) field.ErrorList {
	if server && tenancy.GeneratedByGateway(obj) {
		return nil
	}
	known := map[string]bool{}
	if old != nil {
		for _, ep := range old.Spec.Endpoints {
			known[ep.ExternalTarget] = true
		}
	}
	rule := p.policy.ExternalServices()
	var errs field.ErrorList
	for i, ep := range obj.Spec.Endpoints {
		if ep.ExternalTarget == "" || known[ep.ExternalTarget] {
			continue
		}
		host, _, err := net.SplitHostPort(ep.ExternalTarget)
		if err != nil || endpointset.IsTailnetHost(host) {
			continue // validation reports a malformed one
		}
		if err := rule.Check(host); err != nil {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "endpoints").Index(i).Child("externalTarget"), err.Error()))
		}
	}
	return errs
}

// checkExternal refuses externalServices the server does not allow; on update only those whose
// address is new. On an object controlled by a TailscaleGateway (tenancy.GeneratedByGateway)
// the server's own writes pass whatever the rule, and anyone else's new addresses, or a
// controller reference to a TailscaleGateway added to an object with externalServices, are
// refused whatever the rule.
func (p *Plugin) checkExternal(obj, old *gateway.TailscaleServices, server bool) field.ErrorList {
	sd := obj.Spec.ServiceDiscovery
	if sd == nil || len(sd.ExternalServices) == 0 {
		return nil
	}
	generated := tenancy.GeneratedByGateway(obj)
	if generated && server {
		return nil
	}
	path := field.NewPath("spec", "serviceDiscovery", "externalServices")
	if generated && (old == nil || !tenancy.GeneratedByGateway(old)) {
		return field.ErrorList{field.Forbidden(path, errGatewayExternal)}
	}
	known := map[string]bool{}
	if old != nil && old.Spec.ServiceDiscovery != nil {
		for _, es := range old.Spec.ServiceDiscovery.ExternalServices {
			known[es.Address] = true
		}
	}
	rule := p.policy.ExternalServices()
	var errs field.ErrorList
	for i, es := range sd.ExternalServices {
		if known[es.Address] {
			continue
		}
		if generated {
			errs = append(errs, field.Forbidden(path.Index(i).Child("address"), errGatewayExternal))
			continue
		}
		if err := rule.Check(es.Address); err != nil {
			errs = append(errs, field.Forbidden(path.Index(i).Child("address"), err.Error()))
		}
	}
	return errs
}
