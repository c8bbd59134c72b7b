// Package tenancy decides whether the objects of a namespace may use a tailnet (TailscaleTailnet
// spec.allowedNamespaces) and whether externalServices may be dialled. Admission, the live-status
// collector and prober, the status writer, the controllers, the extension's EDS and the proxy all
// decide through it, so every part applies the same rule.
package tenancy

import (
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// The condition set on TailscaleEndpoints, TailscaleServices and TailscaleGateway status, and
// its reasons.
const (
	ConditionAccepted                = "Accepted"
	ReasonAccepted                   = "Accepted"
	ReasonNotAllowedByTailnet        = "NotAllowedByTailnet"
	ReasonExternalServicesNotAllowed = "ExternalServicesNotAllowed"
)

// Namespaces gives the labels of a namespace, from memory; ok is false when it is not known.
type Namespaces interface {
	NamespaceLabels(name string) (labels.Set, bool)
}

// StandaloneNamespaces are the namespaces of a server without a core API: each exists with the
// one label kube-apiserver gives every namespace, kubernetes.io/metadata.name=<name>.
type StandaloneNamespaces struct{}

// NamespaceLabels implements Namespaces.
func (StandaloneNamespaces) NamespaceLabels(name string) (labels.Set, bool) {
	return labels.Set{corev1.LabelMetadataName: name}, true
}

// NamespacesFunc adapts a function to Namespaces.
type NamespacesFunc func(name string) (labels.Set, bool)

// NamespaceLabels implements Namespaces.
func (f NamespacesFunc) NamespaceLabels(name string) (labels.Set, bool) { return f(name) }

// Decision is the verdict on one namespace's use of one tailnet reference.
type Decision struct {
	// Tailnet is the TailscaleTailnet the reference resolved to; empty when none matches.
	Tailnet string
	// Allowed is false when that tailnet does not admit the namespace. A reference matching no
	// TailscaleTailnet is allowed: it reaches nothing until a tailnet appears, and is decided then.
	Allowed bool
	// Unknown marks a refusal for want of the namespace's labels (its informer not synced yet,
	// or the namespace not seen): admission refuses, but controllers must not undo anything on
	// it, only wait.
	Unknown bool
	// Message says why a reference is refused, for a condition or an admission error (empty
	// when allowed: decisions run on every read, and an allowed one needs no words).
	Message string
}

// Policy decides tenancy from the TailscaleTailnet cache and a namespace source. A nil *Policy
// allows everything (tests and callers that do not enforce).
type Policy struct {
	tailnets   listers.TailscaleTailnetLister
	byDomain   cache.Indexer // with domainIndex, or nil: Resolve scans
	namespaces Namespaces
	// External is what externalServices may dial.
	External ExternalServices

	mu        sync.Mutex
	selectors map[string]compiledSelector // by TailscaleTailnet name
}

type compiledSelector struct {
	resourceVersion string
	selector        labels.Selector
	err             error
}

// New returns a policy over tailnets and namespaces with the given externalServices rule.
func New(tailnets listers.TailscaleTailnetLister, namespaces Namespaces, external ExternalServices) *Policy {
	if namespaces == nil {
		namespaces = StandaloneNamespaces{}
	}
	return &Policy{tailnets: tailnets, namespaces: namespaces, External: external, selectors: map[string]compiledSelector{}}
}

// NewForInformer returns a policy over the TailscaleTailnet informer inf, to which it adds an
// index by spec.tailnet (before inf starts): resolving a tailnet domain, on every read of an
// object naming its tailnet that way, is then a lookup rather than a scan.
func NewForInformer(inf cache.SharedIndexInformer, namespaces Namespaces, external ExternalServices) (*Policy, error) {
	if _, ok := inf.GetIndexer().GetIndexers()[domainIndex]; !ok {
		if err := inf.AddIndexers(cache.Indexers{domainIndex: indexDomain}); err != nil {
			return nil, fmt.Errorf("indexing TailscaleTailnets by spec.tailnet: %w", err)
		}
	}
	p := New(listers.NewTailscaleTailnetLister(inf.GetIndexer()), namespaces, external)
	p.byDomain = inf.GetIndexer()
	return p, nil
}

// domainIndex indexes TailscaleTailnets by spec.tailnet.
const domainIndex = "tenancy.spec.tailnet"

func indexDomain(obj any) ([]string, error) {
	if t, ok := obj.(*v1alpha1.TailscaleTailnet); ok {
		return []string{t.Spec.Tailnet}, nil
	}
	return nil, nil
}

// WithNamespaces returns a policy like p reading namespace labels from ns (admission adds a
// fallback to the core API there for namespaces its informer has not seen yet).
func (p *Policy) WithNamespaces(ns Namespaces) *Policy {
	q := New(p.tailnets, ns, p.External)
	q.byDomain = p.byDomain
	return q
}

// Resolve is the package's Resolve over p's cache, with its index when it has one.
func (p *Policy) Resolve(ref string) (*v1alpha1.TailscaleTailnet, bool) {
	if p == nil {
		return nil, false
	}
	if p.byDomain == nil || ref == "" {
		return Resolve(p.tailnets, ref)
	}
	// The indexer itself, not the lister: a miss there builds a NotFound error on every read.
	if obj, exists, err := p.byDomain.GetByKey(ref); err == nil && exists {
		if t, ok := obj.(*v1alpha1.TailscaleTailnet); ok {
			return t, true
		}
	}
	items, err := p.byDomain.ByIndex(domainIndex, ref)
	if err != nil {
		return Resolve(p.tailnets, ref)
	}
	var found *v1alpha1.TailscaleTailnet
	for _, item := range items {
		if t, ok := item.(*v1alpha1.TailscaleTailnet); ok && (found == nil || t.Name < found.Name) {
			found = t
		}
	}
	return found, found != nil
}

// ExternalServices returns p's externalServices rule; a nil policy allows every address.
func (p *Policy) ExternalServices() ExternalServices {
	if p == nil {
		return ExternalServices{Allowed: true}
	}
	return p.External
}

// Resolve maps a TailscaleTailnet name or tailnet domain (spec.tailnet) to its TailscaleTailnet,
// from memory: the object of that name, else the first by name whose spec.tailnet is ref.
func Resolve(tailnets listers.TailscaleTailnetLister, ref string) (*v1alpha1.TailscaleTailnet, bool) {
	if tailnets == nil || ref == "" {
		return nil, false
	}
	if t, err := tailnets.Get(ref); err == nil {
		return t, true
	}
	all, err := tailnets.List(labels.Everything())
	if err != nil {
		return nil, false
	}
	var found *v1alpha1.TailscaleTailnet
	for _, t := range all {
		if t.Spec.Tailnet == ref && (found == nil || t.Name < found.Name) {
			found = t
		}
	}
	return found, found != nil
}

// Decide says whether objects of namespace may use the tailnet ref names.
func (p *Policy) Decide(namespace, ref string) Decision {
	if p == nil {
		return Decision{Allowed: true}
	}
	t, ok := p.Resolve(ref)
	if !ok {
		return Decision{Allowed: true}
	}
	return p.DecideFor(namespace, t)
}

// DecideFor says whether objects of namespace may use the tailnet t, for callers that found t
// elsewhere than in the policy's informer (admission, for a tailnet created a moment ago).
func (p *Policy) DecideFor(namespace string, t *v1alpha1.TailscaleTailnet) Decision {
	d := Decision{Tailnet: t.Name, Allowed: true}
	an := t.Spec.AllowedNamespaces
	if an == nil || an.From == v1alpha1.NamespacesFromAll || an.From == "" {
		return d
	}
	switch an.From {
	case v1alpha1.NamespacesFromNames:
		d.Allowed = slices.Contains(an.Names, namespace)
	case v1alpha1.NamespacesFromSelector:
		sel, err := p.selector(t)
		if err != nil {
			d.Allowed = false
			d.Message = fmt.Sprintf("TailscaleTailnet %s has an invalid spec.allowedNamespaces.selector: %v", t.Name, err)
			return d
		}
		set, known := p.namespaces.NamespaceLabels(namespace)
		if !known {
			d.Allowed, d.Unknown = false, true
			d.Message = fmt.Sprintf("TailscaleTailnet %s admits namespaces by label and the labels of namespace %s are not known", t.Name, namespace)
			return d
		}
		d.Allowed = sel.Matches(set)
	default:
		d.Allowed = false
	}
	if !d.Allowed {
		d.Message = fmt.Sprintf("TailscaleTailnet %s does not admit namespace %s (spec.allowedNamespaces)", t.Name, namespace)
	}
	return d
}

// selector compiles t's namespace selector once per resourceVersion.
func (p *Policy) selector(t *v1alpha1.TailscaleTailnet) (labels.Selector, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.selectors[t.Name]; ok && c.resourceVersion == t.ResourceVersion && t.ResourceVersion != "" {
		return c.selector, c.err
	}
	sel, err := metav1.LabelSelectorAsSelector(t.Spec.AllowedNamespaces.Selector)
	p.selectors[t.Name] = compiledSelector{resourceVersion: t.ResourceVersion, selector: sel, err: err}
	return sel, err
}

// Refused reports whether conditions, as the status writer persisted them, say the object is not
// accepted by its tailnet: what consumers without namespace labels (the proxy, the EDS) follow.
func Refused(conditions []metav1.Condition) bool {
	c := meta.FindStatusCondition(conditions, ConditionAccepted)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == ReasonNotAllowedByTailnet
}

// AcceptedCondition is the Accepted condition for the decisions on an object's references: False
// with the first refusal's message, else True.
func AcceptedCondition(decisions ...Decision) metav1.Condition {
	for _, d := range decisions {
		if !d.Allowed {
			return metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: ReasonNotAllowedByTailnet, Message: d.Message}
		}
	}
	return metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message: "every tailnet the object names admits its namespace"}
}

// ResolveName is Resolve returning the TailscaleTailnet's name.
func (p *Policy) ResolveName(ref string) (string, bool) {
	t, ok := p.Resolve(ref)
	if !ok {
		return "", false
	}
	return t.Name, true
}
