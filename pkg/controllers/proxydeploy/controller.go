// Package proxydeploy deploys tailscale-gateway-proxy in cluster mode: for each
// TailscaleEndpoints with spec.proxy, and each auto-provisioned one, it keeps,
// in the installation's namespace (Config.Namespace; never the tenant's, where the `edit` role
// reads Secrets), a ServiceAccount, a Role and RoleBinding with the least the proxy
// needs, one state Secret per replica and, until that replica has joined the tailnet, a Secret
// with a single-use auth key of its own minted through the tailnet's Tailscale API (minted again
// when its tags change or it expires or is revoked; revoked when the replica joins, is scaled
// away, or the object or its proxy goes, which Finalizer holds the object for), a StatefulSet of
// proxy.replicas, a Service exposing the egress listeners, a NetworkPolicy that admits to them
// only Envoy Gateway's Envoy pods and the namespaces the tailnet admits (networkpolicy.go) and,
// for more than one replica, a PodDisruptionBudget. Its outcome is the ProxyDeployed condition.
// Objects are named by NamesFor (unique across tenants) and carry ParentLabels: the label
// app.kubernetes.io/managed-by=tailscale-gateway-proxydeploy and the parent's namespace, name
// and UID, which stand for the ownerReference Kubernetes refuses across namespaces. The
// controller deletes what no TailscaleEndpoints wants any more (its informers list only objects
// with the managed-by label; nothing without it is touched); an object of one of our names that
// is not ours is left alone and reported with an Event. Objects earlier versions kept in the
// tenant's namespace are migrated and removed (legacy.go).
package proxydeploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Event reasons.
const (
	ReasonConflict    = "ProxyObjectConflict"
	ReasonKeyMinted   = "ProxyAuthKeyMinted"
	ReasonMintFailed  = "ProxyAuthKeyFailed"
	ReasonInvalid     = "ProxyInvalid"
	ReasonNoServices  = "ProxyNothingToServe"
	ReasonApplyFailed = "ProxyApplyFailed"
	ReasonKeyRenewed  = "ProxyAuthKeyRenewed"
	// ReasonTagsRefused: the tags are outside the tailnet's spec.proxyTags.
	ReasonTagsRefused = "ProxyTagsNotPermitted"
)

// DefaultResync is how often every TailscaleEndpoints is reconciled again.
const DefaultResync = 10 * time.Minute

// Tailnets resolves a TailscaleEndpoints' spec.tailnet and reaches the tailnet's Tailscale API.
type Tailnets interface {
	Resolve(ref string) (name string, ok bool)
	API(name string) (tailnet.API, bool)
}

// Options configure the controller.
type Options struct {
	Config
	Tailnets Tailnets
	Recorder record.EventRecorder
	// Client writes the ProxyDeployed condition of TailscaleEndpoints; nil writes none (the
	// Events remain).
	Client versioned.Interface
	// Resync is the interval of the core informers (DefaultResync when zero).
	Resync time.Duration
	// KeyCheckInterval is how often each unused auth key is looked up in the Tailscale API
	// (expired or revoked keys are minted again); DefaultKeyCheckInterval when zero.
	KeyCheckInterval time.Duration
	// EnrollmentCheckInterval is how often the state Secrets of replicas that have not joined
	// yet are read; DefaultEnrollmentCheckInterval when zero.
	EnrollmentCheckInterval time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// NetworkPolicy, when set, has every proxy protected by a NetworkPolicy (networkpolicy.go);
	// nil keeps none and deletes ours.
	NetworkPolicy *NetworkPolicyConfig
	// MigrateLegacy moves the objects earlier versions kept in the TailscaleEndpoints' own
	// namespace (legacy.go); it needs get and delete on them there.
	MigrateLegacy bool
}

// Controller reconciles the proxies' objects.
type Controller struct {
	opts     Options
	kube     kubernetes.Interface
	eps      listers.TailscaleEndpointsLister
	svcs     listers.TailscaleServicesLister
	tailnets listers.TailscaleTailnetLister
	core     kubeinformers.SharedInformerFactory
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	keys     *Keyring
	// swept holds the UIDs whose predecessors' objects (same namespace and name, another UID)
	// have been deleted: that listing of Secrets runs once per object.
	swept sync.Map
}

// New returns a controller on factory's informers and core informers of its own, limited to the
// objects it manages.
func New(kube kubernetes.Interface, factory informers.SharedInformerFactory, opts Options) (*Controller, error) {
	if opts.Tailnets == nil || opts.Recorder == nil || opts.Image == "" {
		return nil, fmt.Errorf("proxydeploy: Tailnets, Recorder and Image are required")
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.KeyCheckInterval <= 0 {
		opts.KeyCheckInterval = DefaultKeyCheckInterval
	}
	if opts.EnrollmentCheckInterval <= 0 {
		opts.EnrollmentCheckInterval = DefaultEnrollmentCheckInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	gw := factory.Gateway().V1alpha1()
	if opts.Namespace == "" {
		return nil, fmt.Errorf("proxydeploy: Config.Namespace (the installation's) is required")
	}
	core := ManagedInformers(kube, opts.Namespace, opts.Resync)
	c := &Controller{
		opts: opts, kube: kube, core: core,
		keys: &Keyring{Kube: kube, Recorder: opts.Recorder, Now: opts.Now, CheckInterval: opts.KeyCheckInterval},
		eps:  gw.TailscaleEndpoints().Lister(), svcs: gw.TailscaleServices().Lister(), tailnets: gw.TailscaleTailnets().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "proxydeploy"}),
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	// A change of a TailscaleServices changes which proxies host it; a TailscaleTailnet's tags
	// the tags of its proxies.
	byNamespace := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		m, ok := obj.(metav1.Object)
		if !ok {
			return
		}
		c.enqueueAll(m.GetNamespace())
	}
	// Every event of an object of ours (a resync too) syncs its parent, which deletes it when
	// the parent is gone or wants no proxy: the garbage collection of the objects whose
	// ownership the labels hold.
	owned := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if m, ok := obj.(metav1.Object); ok {
			if parent, _, ok := ParentOf(m); ok {
				c.queue.Add(parent.String())
			}
		}
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{gw.TailscaleEndpoints().Informer(), enqueue},
		{gw.TailscaleServices().Informer(), byNamespace},
		{gw.TailscaleTailnets().Informer(), func(any) { c.enqueueAll(metav1.NamespaceAll) }},
		{core.Apps().V1().StatefulSets().Informer(), owned},
		{core.Core().V1().Services().Informer(), owned},
		{core.Core().V1().ServiceAccounts().Informer(), owned},
		{core.Rbac().V1().Roles().Informer(), owned},
		{core.Rbac().V1().RoleBindings().Informer(), owned},
		{core.Policy().V1().PodDisruptionBudgets().Informer(), owned},
		{core.Networking().V1().NetworkPolicies().Informer(), owned},
	}
	for _, h := range handlers {
		fn := h.fn
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn, UpdateFunc: func(_, o any) { fn(o) }, DeleteFunc: fn,
		}); err != nil {
			return nil, fmt.Errorf("proxydeploy: adding an event handler: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	return c, nil
}

func (c *Controller) enqueueAll(namespace string) {
	var items []*v1alpha1.TailscaleEndpoints
	if namespace == metav1.NamespaceAll {
		items, _ = c.eps.List(labels.Everything())
	} else {
		items, _ = c.eps.TailscaleEndpoints(namespace).List(labels.Everything())
	}
	for _, e := range items {
		if Wanted(e) {
			c.queue.Add(e.Namespace + "/" + e.Name)
		}
	}
}

// Run reconciles with workers in parallel until ctx is done. The caller starts factory; Run
// starts the core informers.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	c.core.Start(ctx.Done())
	defer c.core.Shutdown()
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return
	}
	// Secrets are not watched: the parents of ours are synced once (the other kinds' informers
	// sync theirs at every resync).
	c.enqueueParentsOfSecrets(ctx)
	for range max(workers, 1) {
		go wait.UntilWithContext(ctx, c.work, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) work(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		if err := c.sync(ctx, key); errors.Is(err, errConflict) {
			klog.FromContext(ctx).V(2).Info("Proxy not deployed", "object", key, "reason", err.Error())
			c.queue.Forget(key)
			c.queue.AddAfter(key, conflictRetry)
		} else if err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Deploying the proxy", "object", key)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// sync brings the objects of the TailscaleEndpoints key to what it asks for.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	obj, err := c.eps.TailscaleEndpoints(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.keys.Forget(key)
		c.swept.Range(func(uid, k any) bool {
			if k == key {
				c.swept.Delete(uid)
			}
			return true
		})
		// Its finalizer held it until its objects were deleted; these are left by a parent
		// whose finalizer was removed by hand, or by one deleted while no server ran.
		return c.deleteAll(ctx, gone(ns, name))
	}
	if err != nil {
		return err
	}
	// Objects of an earlier object of the same name (another UID) go, once.
	if _, done := c.swept.Load(obj.UID); !done {
		if err := c.deleteAll(ctx, gone(ns, name), func(m metav1.Object) bool { return !IsKeptFor(m, obj) }); err != nil {
			return err
		}
		c.swept.Store(obj.UID, key)
	}
	if !Wanted(obj) || obj.DeletionTimestamp != nil {
		if obj.DeletionTimestamp == nil {
			if err := c.report(ctx, obj, nil, false); err != nil {
				return err
			}
		}
		if err := errors.Join(c.deleteAll(ctx, obj), c.removeLegacy(ctx, obj)); err != nil {
			return err
		}
		return c.setFinalizer(ctx, obj, false)
	}
	err = c.deploy(ctx, obj)
	if rerr := c.report(ctx, obj, err, true); rerr != nil {
		utilruntime.HandleErrorWithContext(ctx, rerr, "Writing the ProxyDeployed condition", "object", key)
		if err == nil {
			err = rerr
		}
	}
	if errors.Is(err, errInvalid) {
		return nil // until the spec changes
	}
	return err
}

// errInvalid stops a sync at a spec no proxy can be deployed for.
var errInvalid = errors.New("no proxy can be deployed for this spec")

// errTagsNotPermitted stops a sync at tags the tailnet does not permit its proxies; it is
// errInvalid too (retried when the object or the tailnet changes).
var errTagsNotPermitted = fmt.Errorf("%w: the proxy's tags are not permitted", errInvalid)

// deploy brings the proxy's objects for obj to what it asks for.
func (c *Controller) deploy(ctx context.Context, obj *v1alpha1.TailscaleEndpoints) error {
	if len(obj.Name) > MaxNameLength {
		c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonInvalid,
			"No proxy deployed: the name is longer than %d characters, the longest a label value allows", MaxNameLength)
		return fmt.Errorf("%w: the name is longer than %d characters", errInvalid, MaxNameLength)
	}
	switch ConnectionType(obj) {
	case Ingress, Egress, Bidirectional:
	default:
		c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonInvalid, "No proxy deployed: connectionType %q is not ingress, egress or bidirectional", ConnectionType(obj))
		return fmt.Errorf("%w: connectionType %q is not ingress, egress or bidirectional", errInvalid, ConnectionType(obj))
	}
	tags, err := c.tagsOf(obj)
	if errors.Is(err, errTagsNotPermitted) {
		// The proxy's tags are the tailnet admin's to bound: no key is minted, and a proxy
		// deployed before the bound narrowed goes, its unused keys revoked.
		c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonTagsRefused, "No proxy deployed: %v", err)
		return errors.Join(err, c.deleteAll(ctx, obj))
	}
	if err != nil {
		return err
	}
	in := Input{Endpoints: obj, Services: c.hostedServices(obj), Tags: tags}
	if !Serves(in) {
		c.opts.Recorder.Event(obj, corev1.EventTypeNormal, ReasonNoServices, "The ingress proxy runs no replicas: no TailscaleServices selects these endpoints")
	}
	if err := c.apply(ctx, obj); err != nil {
		return err
	}
	if err := c.setFinalizer(ctx, obj, true); err != nil {
		return err
	}
	// The policy exists before the auth keys and the pods it protects.
	if err := c.applyNetworkPolicy(ctx, in, StatefulSet(c.opts.Config, in)); err != nil {
		return err
	}
	// The node state of replicas an earlier version ran in the tenant's namespace is copied
	// before a replica here needs a key (legacy.go).
	if err := c.migrateState(ctx, obj); err != nil {
		return err
	}
	keyReplicas := Replicas(obj)
	if !Serves(in) {
		keyReplicas = 0 // no replica runs: none needs a key
	}
	pending, keyErr := c.keys.Ensure(ctx, c.keyTarget(obj), in.Tags, keyReplicas)
	if pending {
		// A replica's key is deleted once it has joined; its state Secret raises no event.
		c.queue.AddAfter(obj.Namespace+"/"+obj.Name, c.opts.EnrollmentCheckInterval)
	}
	if keyErr != nil && !isOnly(keyErr, errRenewal) {
		return keyErr
	}
	if err := c.applyWorkload(ctx, in); err != nil {
		return errors.Join(keyErr, err)
	}
	// The objects here are in place: those an earlier version kept in the tenant's namespace go.
	return errors.Join(keyErr, c.removeLegacy(ctx, obj))
}

// hostedServices are the TailscaleServices obj's proxies host: those of its namespace with a
// VIP service whose selector matches obj, and the one that auto-provisioned it.
func (c *Controller) hostedServices(obj *v1alpha1.TailscaleEndpoints) []string {
	return hostedServices(obj, c.svcs)
}

// HostedServices names the TailscaleServices whose Tailscale Service the proxies of obj host:
// the one that auto-provisioned obj and those in its namespace whose selector matches it.
func HostedServices(obj *v1alpha1.TailscaleEndpoints, svcs listers.TailscaleServicesLister) []string {
	return hostedServices(obj, svcs)
}

func hostedServices(obj *v1alpha1.TailscaleEndpoints, svcs listers.TailscaleServicesLister) []string {
	var out []string
	for _, ref := range obj.OwnerReferences {
		if ref.Kind == "TailscaleServices" {
			out = append(out, ref.Name)
		}
	}
	items, _ := svcs.TailscaleServices(obj.Namespace).List(labels.Everything())
	for _, s := range items {
		if s.Spec.Selector == nil || s.Spec.VIPService == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(obj.Labels)) {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tagsOf are the tags obj's proxy carries: obj's spec.tags when its TailscaleTailnet's
// spec.proxyTags permit them all, else the tailnet's first proxy tag when obj names none
// (tenancy.ProxyTagsFor). A tailnet not known yet is an error to retry; tags the tailnet does
// not permit are errTagsNotPermitted.
func (c *Controller) tagsOf(obj *v1alpha1.TailscaleEndpoints) ([]string, error) {
	name, ok := c.opts.Tailnets.Resolve(obj.Spec.Tailnet)
	if !ok {
		return nil, fmt.Errorf("tailnet %q is not known yet", obj.Spec.Tailnet)
	}
	t, err := c.tailnets.Get(name)
	if err != nil {
		return nil, fmt.Errorf("reading TailscaleTailnet %s: %w", name, err)
	}
	tags, err := tenancy.ProxyTagsFor(t, obj.Spec.Tags)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTagsNotPermitted, err)
	}
	return tags, nil
}

// tailnetOf is the TailscaleTailnet obj's spec.tailnet names, or nil when none is known.
func (c *Controller) tailnetOf(obj *v1alpha1.TailscaleEndpoints) *v1alpha1.TailscaleTailnet {
	name, ok := c.opts.Tailnets.Resolve(obj.Spec.Tailnet)
	if !ok {
		return nil
	}
	t, err := c.tailnets.Get(name)
	if err != nil {
		return nil
	}
	return t
}

// apply keeps the ServiceAccount, Role, RoleBinding and state Secrets.
func (c *Controller) apply(ctx context.Context, obj *v1alpha1.TailscaleEndpoints) error {
	core, rbac := c.kube.CoreV1(), c.kube.RbacV1()
	lister, ns := c.core, c.opts.Namespace
	// The state Secrets of the previous scale, read before the Role changes.
	previous := c.secretsOf(obj)
	if err := ensure(ctx, c, obj, ServiceAccount(ns, obj), lister.Core().V1().ServiceAccounts().Lister().ServiceAccounts(ns).Get,
		core.ServiceAccounts(ns).Create, core.ServiceAccounts(ns).Update,
		func(cur, want *corev1.ServiceAccount) bool { return false }); err != nil {
		return err
	}
	if err := ensure(ctx, c, obj, Role(ns, obj), lister.Rbac().V1().Roles().Lister().Roles(ns).Get,
		rbac.Roles(ns).Create, rbac.Roles(ns).Update,
		func(cur, want *rbacv1.Role) bool {
			if equality.Semantic.DeepEqual(cur.Rules, want.Rules) {
				return false
			}
			cur.Rules = want.Rules
			return true
		}); err != nil {
		return err
	}
	if err := ensure(ctx, c, obj, RoleBinding(ns, obj), lister.Rbac().V1().RoleBindings().Lister().RoleBindings(ns).Get,
		rbac.RoleBindings(ns).Create, rbac.RoleBindings(ns).Update,
		func(cur, want *rbacv1.RoleBinding) bool {
			if equality.Semantic.DeepEqual(cur.Subjects, want.Subjects) {
				return false
			}
			cur.Subjects = want.Subjects
			return true
		}); err != nil {
		return err
	}
	// Secrets are read by name (and listed by label only to collect ours, deleteAll).
	getSecret := func(name string) (*corev1.Secret, error) {
		return core.Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	}
	replicas := Replicas(obj)
	for i := range replicas {
		// The proxy owns the content: the controller only creates the Secret.
		if err := ensure(ctx, c, obj, StateSecret(ns, obj, i), getSecret, core.Secrets(ns).Create, core.Secrets(ns).Update,
			func(cur, want *corev1.Secret) bool { return false }); err != nil {
			return err
		}
	}
	// The state and auth key Secrets of replicas scaled away go with them (a later scale-up
	// enrolls new nodes), the keys revoked: the Role of the previous scale names them. So does
	// the key Secret earlier versions shared among replicas.
	n := NamesFor(obj.Namespace, obj.Name)
	return c.deleteSecrets(ctx, obj, previous, func(name string) bool { return isReplicaSecretOf(n, name, replicas) })
}

// secretsOf returns the names of the Secrets obj's current Role names (state and auth key
// Secrets).
func (c *Controller) secretsOf(obj *v1alpha1.TailscaleEndpoints) []string {
	n := NamesFor(obj.Namespace, obj.Name)
	var names []string
	if role, err := c.core.Rbac().V1().Roles().Lister().Roles(c.opts.Namespace).Get(n.Base); err == nil && IsKeptFor(role, obj) {
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "secrets") {
				names = append(names, r.ResourceNames...)
			}
		}
	}
	return names
}

// deleteSecrets deletes those of names for which drop is true and that are kept for obj, each
// released first (its key revoked, its replica's device deleted: Keyring.Delete, release).
func (c *Controller) deleteSecrets(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, names []string, drop func(name string) bool) error {
	return c.keys.Delete(ctx, c.keyTarget(obj), names, drop)
}

// isReplicaSecretOf reports whether name is the state or auth key Secret of a replica at or
// beyond replicas.
func isReplicaSecretOf(n Names, name string, replicas int) bool {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(name, authKeySuffix), n.Base+"-")
	if !ok {
		return false
	}
	var i int
	if _, err := fmt.Sscanf(rest, "%d", &i); err != nil || fmt.Sprint(i) != rest {
		return false
	}
	return i >= replicas
}

// applyWorkload keeps the Service and the StatefulSet.
func (c *Controller) applyWorkload(ctx context.Context, in Input) error {
	obj, ns := in.Endpoints, c.opts.Namespace
	core, apps := c.kube.CoreV1(), c.kube.AppsV1()
	if err := ensure(ctx, c, obj, Service(ns, obj), c.core.Core().V1().Services().Lister().Services(ns).Get,
		core.Services(ns).Create, core.Services(ns).Update,
		func(cur, want *corev1.Service) bool {
			if equality.Semantic.DeepEqual(cur.Spec.Ports, want.Spec.Ports) && equality.Semantic.DeepEqual(cur.Spec.Selector, want.Spec.Selector) {
				return false
			}
			cur.Spec.Ports, cur.Spec.Selector = want.Spec.Ports, want.Spec.Selector
			return true
		}); err != nil {
		return err
	}
	if err := ensure(ctx, c, obj, StatefulSet(c.opts.Config, in), c.core.Apps().V1().StatefulSets().Lister().StatefulSets(ns).Get,
		apps.StatefulSets(ns).Create, apps.StatefulSets(ns).Update,
		func(cur, want *appsv1.StatefulSet) bool {
			if ptrEq(cur.Spec.Replicas, want.Spec.Replicas) &&
				cur.Spec.Template.Annotations[ConfigHashAnnotation] == want.Spec.Template.Annotations[ConfigHashAnnotation] {
				return false
			}
			cur.Spec.Replicas, cur.Spec.Template = want.Spec.Replicas, want.Spec.Template
			return true
		}); err != nil {
		return err
	}
	return c.applyBudget(ctx, in)
}

// applyBudget keeps the PodDisruptionBudget of a proxy with several replicas and deletes ours
// when it runs one or none.
func (c *Controller) applyBudget(ctx context.Context, in Input) error {
	obj, ns := in.Endpoints, c.opts.Namespace
	pdbs := c.kube.PolicyV1().PodDisruptionBudgets(ns)
	lister := c.core.Policy().V1().PodDisruptionBudgets().Lister().PodDisruptionBudgets(ns)
	want := PodDisruptionBudget(ns, in)
	if want == nil {
		return deleteOurs(ctx, obj, "PodDisruptionBudget", NamesFor(obj.Namespace, obj.Name).Base, lister.Get, pdbs.Delete)
	}
	return ensure(ctx, c, obj, want, lister.Get, pdbs.Create, pdbs.Update,
		func(cur, want *policyv1.PodDisruptionBudget) bool {
			if equality.Semantic.DeepEqual(cur.Spec.MaxUnavailable, want.Spec.MaxUnavailable) &&
				cur.Spec.MinAvailable == nil && equality.Semantic.DeepEqual(cur.Spec.Selector, want.Spec.Selector) {
				return false
			}
			cur.Spec.MaxUnavailable, cur.Spec.MinAvailable, cur.Spec.Selector = want.Spec.MaxUnavailable, nil, want.Spec.Selector
			return true
		})
}

// deleteOurs deletes the object name of kind when it exists and is kept for obj.
func deleteOurs[T metav1.Object](ctx context.Context, obj *v1alpha1.TailscaleEndpoints, kind, name string,
	get func(string) (T, error), del func(context.Context, string, metav1.DeleteOptions) error) error {
	cur, err := get(name)
	if apierrors.IsNotFound(err) || (err == nil && !IsKeptFor(cur, obj)) {
		return nil
	}
	if err != nil {
		return err
	}
	uid := cur.GetUID()
	if err := del(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil &&
		!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting %s %s: %w", kind, name, err)
	}
	return nil
}

func ptrEq(a, b *int32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// errConflict stops a sync at an object of ours' name that is not ours.
var errConflict = errors.New("an object of the proxy's name is not managed for these endpoints")

// conflictRetry is how soon a sync stopped by a foreign object is tried again (its removal
// raises no event of ours).
const conflictRetry = time.Minute

// conflict reports an object of ours' name that is not ours; it is left alone and nothing
// after it is deployed.
func (c *Controller) conflict(obj *v1alpha1.TailscaleEndpoints, kind, name string) error {
	c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonConflict,
		"%s %s exists and is not managed for these endpoints: it is left alone and the proxy is not deployed until it is gone", kind, name)
	return fmt.Errorf("%s %s: %w", kind, name, errConflict)
}

// ensure creates want, or updates the existing object of its name when it is ours and change
// (which edits cur in place) says it differs. An object of that name that is not ours is left
// alone and reported.
func ensure[T interface {
	metav1.Object
	runtime.Object
}](ctx context.Context, c *Controller, obj *v1alpha1.TailscaleEndpoints, want T,
	get func(string) (T, error),
	create func(context.Context, T, metav1.CreateOptions) (T, error),
	update func(context.Context, T, metav1.UpdateOptions) (T, error),
	change func(cur, want T) bool) error {
	kind := fmt.Sprintf("%T", want)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	cur, err := get(want.GetName())
	if apierrors.IsNotFound(err) {
		_, err = create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Not in the cache of ours: someone else's (or ours, not seen yet; the informer
			// event of it requeues this object then).
			return c.conflict(obj, kind, want.GetName())
		}
		if err != nil {
			c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonApplyFailed, "Creating %s %s: %v", kind, want.GetName(), err)
			return fmt.Errorf("creating %s %s: %w", kind, want.GetName(), err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !IsKeptFor(cur, obj) {
		return c.conflict(obj, kind, want.GetName())
	}
	cur = cur.DeepCopyObject().(T)
	changed := change(cur, want)
	if !equality.Semantic.DeepEqual(cur.GetLabels(), want.GetLabels()) {
		cur.SetLabels(want.GetLabels())
		changed = true
	}
	if !changed {
		return nil
	}
	if _, err := update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating %s %s: %w", kind, want.GetName(), err)
	}
	return nil
}

// gone stands for a TailscaleEndpoints namespace/name that no longer exists, to delete what
// was kept for it.
func gone(namespace, name string) *v1alpha1.TailscaleEndpoints {
	return &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
}

// deleteAll deletes the objects of ours in the installation's namespace labelled for obj's
// namespace and name (any UID), or only those of them for which each of only is true. Secrets
// go first, released (their keys revoked, their replicas' devices deleted; the Role names the
// state Secrets).
func (c *Controller) deleteAll(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, only ...func(metav1.Object) bool) error {
	sel := labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedBy, ParentNamespaceLabel: obj.Namespace, ParentNameLabel: obj.Name})
	ns := c.opts.Namespace
	var objs []metav1.Object
	var dels []func(context.Context, string, metav1.DeleteOptions) error
	add := func(del func(context.Context, string, metav1.DeleteOptions) error, items ...metav1.Object) {
		for _, o := range items {
			objs, dels = append(objs, o), append(dels, del)
		}
	}
	l := c.core
	if items, err := l.Apps().V1().StatefulSets().Lister().StatefulSets(ns).List(sel); err == nil {
		add(c.kube.AppsV1().StatefulSets(ns).Delete, asObjects(items)...)
	}
	if items, err := l.Policy().V1().PodDisruptionBudgets().Lister().PodDisruptionBudgets(ns).List(sel); err == nil {
		add(c.kube.PolicyV1().PodDisruptionBudgets(ns).Delete, asObjects(items)...)
	}
	if items, err := l.Core().V1().Services().Lister().Services(ns).List(sel); err == nil {
		add(c.kube.CoreV1().Services(ns).Delete, asObjects(items)...)
	}
	if items, err := l.Networking().V1().NetworkPolicies().Lister().NetworkPolicies(ns).List(sel); err == nil {
		add(c.kube.NetworkingV1().NetworkPolicies(ns).Delete, asObjects(items)...)
	}
	if items, err := l.Rbac().V1().RoleBindings().Lister().RoleBindings(ns).List(sel); err == nil {
		add(c.kube.RbacV1().RoleBindings(ns).Delete, asObjects(items)...)
	}
	if items, err := l.Rbac().V1().Roles().Lister().Roles(ns).List(sel); err == nil {
		add(c.kube.RbacV1().Roles(ns).Delete, asObjects(items)...)
	}
	if items, err := l.Core().V1().ServiceAccounts().Lister().ServiceAccounts(ns).List(sel); err == nil {
		add(c.kube.CoreV1().ServiceAccounts(ns).Delete, asObjects(items)...)
	}
	wanted := func(m metav1.Object) bool {
		for _, f := range only {
			if !f(m) {
				return false
			}
		}
		return true
	}
	secrets := c.kube.CoreV1().Secrets(ns)
	list, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return fmt.Errorf("listing the proxy's Secrets: %w", err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		if !wanted(s) {
			continue
		}
		if err := c.release(ctx, obj, s, "its Secret is deleted"); err != nil {
			return err
		}
		uid := s.UID
		if err := secrets.Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil &&
			!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting Secret %s: %w", s.Name, err)
		}
	}
	for i, o := range objs {
		if _, _, ok := ParentOf(o); !ok || !wanted(o) {
			continue
		}
		uid := o.GetUID()
		err := dels[i](ctx, o.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting %s: %w", o.GetName(), err)
		}
	}
	return nil
}

// enqueueParentsOfSecrets syncs the parent of every Secret of ours in the installation's
// namespace (listed by label, read once: Secrets are not watched).
func (c *Controller) enqueueParentsOfSecrets(ctx context.Context) {
	list, err := c.kube.CoreV1().Secrets(c.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedBy})
	if err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Listing the proxies' Secrets")
		return
	}
	for i := range list.Items {
		if parent, _, ok := ParentOf(&list.Items[i]); ok {
			c.queue.Add(parent.String())
		}
	}
}

func asObjects[T metav1.Object](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i, o := range items {
		out[i] = o
	}
	return out
}

// Finalizer holds a TailscaleEndpoints with a proxy until the auth keys minted for it are
// revoked in the Tailscale API (the garbage collector would delete their Secrets, not the keys).
const Finalizer = "gateway.tailscale.com/proxy-auth-keys"

// setFinalizer adds (on) or removes Finalizer on obj; without a Client it does nothing.
func (c *Controller) setFinalizer(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, on bool) error {
	if c.opts.Client == nil || slices.Contains(obj.Finalizers, Finalizer) == on {
		return nil
	}
	client := c.opts.Client.GatewayV1alpha1().TailscaleEndpoints(obj.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh, err := client.Get(ctx, obj.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if fresh.UID != obj.UID || slices.Contains(fresh.Finalizers, Finalizer) == on {
			return nil
		}
		if on {
			fresh.Finalizers = append(fresh.Finalizers, Finalizer)
		} else {
			fresh.Finalizers = slices.DeleteFunc(fresh.Finalizers, func(f string) bool { return f == Finalizer })
		}
		if _, err := client.Update(ctx, fresh, metav1.UpdateOptions{FieldManager: "tailscale-gateway-proxydeploy"}); err != nil {
			return fmt.Errorf("setting finalizer %s: %w", Finalizer, err)
		}
		return nil
	})
}
