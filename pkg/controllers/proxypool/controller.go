// Package proxypool runs each tailnet's proxy pool (docs/concepts/proxy-pools.md): for every
// TailscaleTailnet with spec.proxyPool.replicas above 0 it keeps, in the server's own namespace,
// a StatefulSet of tailscale-gateway-proxy started with --tailnet (serving the egress of every
// TailscaleEndpoints of the tailnet without spec.proxy, in every namespace the tailnet admits,
// and hosting the Services of the TailscaleServices selecting them), its ServiceAccount, Role
// and RoleBinding, one state Secret per replica and, until that replica has joined, a Secret
// with a single-use auth key minted with the tailnet's first proxy tag (proxydeploy.Keyring:
// revoked on join and scale-down), a Service with every served egress port, a NetworkPolicy
// (proxydeploy.NetworkPolicyFor) and, above one replica, a PodDisruptionBudget. Every object
// carries a controller ownerReference to the TailscaleTailnet and the labels ManagedByLabel and
// PoolLabel. The outcome is the TailscaleTailnet's ProxyPoolReady condition; each object the
// pool serves carries ConditionServed.
package proxypool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Conditions and their reasons.
const (
	// ConditionReady is the TailscaleTailnet condition this controller owns, absent without
	// spec.proxyPool.
	ConditionReady = "ProxyPoolReady"
	ReasonReady    = "Ready"
	// ReasonProgressing: the objects are in place, not every replica is ready yet.
	ReasonProgressing = "Progressing"
	// ReasonDisabled: spec.proxyPool.replicas is 0.
	ReasonDisabled = "Disabled"
	// ReasonFailed: an object could not be kept (an API call failed, or one of its names is
	// taken by an object that is not ours); retried.
	ReasonFailed = "DeployFailed"
	// ReasonTagsNotPermitted: the tailnet permits no proxy tag the pool could carry.
	ReasonTagsNotPermitted = "TagsNotPermitted"

	// ConditionServed, on a TailscaleEndpoints, names the proxy pool serving it; absent when
	// none does (its own proxy, or no pool).
	ConditionServed = "ServedByProxyPool"
	ReasonServed    = "ProxyPool"
)

// Event reasons.
const (
	EventFailed   = "ProxyPoolFailed"
	EventConflict = "ProxyPoolObjectConflict"
)

// Options configure the controller.
type Options struct {
	// Config is the proxy image, pull policy, default resources and control URL.
	Config proxydeploy.Config
	// Namespace is the server's own, where pools run.
	Namespace string
	Tailnets  proxydeploy.Tailnets
	Recorder  record.EventRecorder
	// Client writes the conditions; nil writes none.
	Client versioned.Interface
	// NetworkPolicy, when set, protects each pool as proxydeploy protects dedicated proxies.
	NetworkPolicy *proxydeploy.NetworkPolicyConfig
	// Resync of the core informers; KeyCheckInterval and EnrollmentCheckInterval as in
	// proxydeploy.Options (their defaults when zero).
	Resync, KeyCheckInterval, EnrollmentCheckInterval time.Duration
	Now                                               func() time.Time
}

// Controller reconciles the pools, one queue key per TailscaleTailnet.
type Controller struct {
	opts     Options
	kube     kubernetes.Interface
	eps      listers.TailscaleEndpointsLister
	tailnets listers.TailscaleTailnetLister
	core     kubeinformers.SharedInformerFactory
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	keys     *proxydeploy.Keyring
}

// ManagedInformers returns informers on the pools' objects in namespace (the server's).
func ManagedInformers(kube kubernetes.Interface, namespace string, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync, kubeinformers.WithNamespace(namespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ManagedByLabel + "=" + ManagedBy }))
}

// New returns a controller on factory's informers and core informers of its own.
func New(kube kubernetes.Interface, factory informers.SharedInformerFactory, opts Options) (*Controller, error) {
	if opts.Tailnets == nil || opts.Recorder == nil || opts.Config.Image == "" || opts.Namespace == "" {
		return nil, errors.New("proxypool: Tailnets, Recorder, Config.Image and Namespace are required")
	}
	if opts.Resync <= 0 {
		opts.Resync = proxydeploy.DefaultResync
	}
	if opts.KeyCheckInterval <= 0 {
		opts.KeyCheckInterval = proxydeploy.DefaultKeyCheckInterval
	}
	if opts.EnrollmentCheckInterval <= 0 {
		opts.EnrollmentCheckInterval = proxydeploy.DefaultEnrollmentCheckInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	gw := factory.Gateway().V1alpha1()
	core := ManagedInformers(kube, opts.Namespace, opts.Resync)
	c := &Controller{
		opts: opts, kube: kube, core: core, eps: gw.TailscaleEndpoints().Lister(), tailnets: gw.TailscaleTailnets().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "proxypool"}),
		keys: &proxydeploy.Keyring{Kube: kube, Recorder: opts.Recorder, Now: opts.Now, CheckInterval: opts.KeyCheckInterval},
	}
	byName := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	// An endpoints object changes its tailnet's pool (ports, members); an update may have moved
	// it from one tailnet to another, and the old one's tombstone is handled alike.
	ofTailnet := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if e, ok := obj.(*v1alpha1.TailscaleEndpoints); ok {
			if name, ok := c.opts.Tailnets.Resolve(e.Spec.Tailnet); ok {
				c.queue.Add(name)
			}
		}
	}
	owned := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if m, ok := obj.(metav1.Object); ok && m.GetLabels()[PoolLabel] != "" {
			c.queue.Add(m.GetLabels()[PoolLabel])
		}
	}
	if _, err := gw.TailscaleEndpoints().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: ofTailnet, UpdateFunc: func(old, cur any) { ofTailnet(old); ofTailnet(cur) }, DeleteFunc: ofTailnet,
	}); err != nil {
		return nil, fmt.Errorf("proxypool: adding an event handler: %w", err)
	}
	c.synced = append(c.synced, gw.TailscaleEndpoints().Informer().HasSynced)
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{gw.TailscaleTailnets().Informer(), byName},
		{core.Apps().V1().StatefulSets().Informer(), owned},
		{core.Core().V1().Services().Informer(), owned},
		{core.Core().V1().ServiceAccounts().Informer(), owned},
		{core.Rbac().V1().Roles().Informer(), owned},
		{core.Rbac().V1().RoleBindings().Informer(), owned},
		{core.Policy().V1().PodDisruptionBudgets().Informer(), owned},
		{core.Networking().V1().NetworkPolicies().Informer(), owned},
	} {
		fn := h.fn
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn, UpdateFunc: func(_, o any) { fn(o) }, DeleteFunc: fn,
		}); err != nil {
			return nil, fmt.Errorf("proxypool: adding an event handler: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	return c, nil
}

// Run reconciles with workers until ctx is done; the caller starts factory.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	c.core.Start(ctx.Done())
	defer c.core.Shutdown()
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return
	}
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
		if err := c.sync(ctx, key); err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Keeping the proxy pool", "tailnet", key)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// errConflict stops a sync at an object of a pool's name that is not the pool's.
var errConflict = errors.New("an object of the pool's name is not managed for this tailnet")

// sync brings the pool of TailscaleTailnet name to what its spec asks for.
func (c *Controller) sync(ctx context.Context, name string) error {
	t, err := c.tailnets.Get(name)
	if apierrors.IsNotFound(err) {
		c.keys.Forget(name)
		return nil // the garbage collector removes what it owned
	}
	if err != nil {
		return err
	}
	members := c.members(name)
	if Replicas(t) == 0 {
		err := c.remove(ctx, t)
		return errors.Join(err, c.report(ctx, t, nil, err), c.markServed(ctx, t, nil))
	}
	p := Pool{Tailnet: t, Namespace: c.opts.Namespace}
	for _, m := range members {
		p.Ports = MergePorts(p.Ports, proxydeploy.EgressPorts(m))
	}
	tags, err := tenancy.ProxyTagsFor(t, nil)
	if err == nil {
		p.Tags = tags
		err = c.deploy(ctx, p)
	} else {
		err = fmt.Errorf("%w: %w", errTags, err)
	}
	if err != nil && !errors.Is(err, errConflict) {
		c.opts.Recorder.Eventf(t, corev1.EventTypeWarning, EventFailed, "Keeping proxy pool %s: %v", NamesOf(name).Base, err)
	}
	sts, _ := c.core.Apps().V1().StatefulSets().Lister().StatefulSets(c.opts.Namespace).Get(NamesOf(name).Base)
	if rerr := c.report(ctx, t, sts, err); rerr != nil && err == nil {
		err = rerr
	}
	served := members
	if err != nil && sts == nil {
		served = nil // nothing runs
	}
	if merr := c.markServed(ctx, t, served); merr != nil && err == nil {
		err = merr
	}
	if errors.Is(err, errConflict) {
		c.queue.AddAfter(name, time.Minute) // its removal raises no event of ours
		return nil
	}
	if errors.Is(err, errTags) {
		return nil // until the tailnet changes
	}
	return err
}

var errTags = errors.New("no proxy tag for the pool")

// members are the TailscaleEndpoints the pool of tailnet serves (plan.PooledBy), by namespace
// and name.
func (c *Controller) members(tailnet string) []*v1alpha1.TailscaleEndpoints {
	all, _ := c.eps.List(labels.Everything())
	out := slices.DeleteFunc(all, func(o *v1alpha1.TailscaleEndpoints) bool { return !plan.PooledBy(o, tailnet, c.opts.Tailnets.Resolve) })
	slices.SortFunc(out, func(a, b *v1alpha1.TailscaleEndpoints) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// keyTarget is the pool of p for the Keyring.
func (c *Controller) keyTarget(t *v1alpha1.TailscaleTailnet, p Pool) proxydeploy.KeyTarget {
	n := NamesOf(t.Name)
	return proxydeploy.KeyTarget{
		Object: t, Key: t.Name, Namespace: c.opts.Namespace,
		StateSecret: n.StateSecret, AuthKeySecret: n.AuthKeySecret,
		NewSecret: func(i int, key tailnet.AuthKey, tags []string) *corev1.Secret { return AuthKeySecret(p, i, key, tags) },
		Ours:      func(s *corev1.Secret) bool { return ours(s, t) },
		Conflict:  func(kind, name string) error { return c.conflict(t, kind, name) },
		API: func() (tailnet.API, string, error) {
			api, ok := c.opts.Tailnets.API(t.Name)
			if !ok {
				return nil, t.Name, fmt.Errorf("tailnet %s is not polled yet", t.Name)
			}
			return api, t.Name, nil
		},
		Description: "tailscale-gateway-proxy pool " + n.Base,
		Requeue:     func(d time.Duration) { c.queue.AddAfter(t.Name, d) },
	}
}

// ours reports whether o was made for t's pool: our labels and a controller reference to t.
func ours(o metav1.Object, t *v1alpha1.TailscaleTailnet) bool {
	return o.GetLabels()[ManagedByLabel] == ManagedBy && o.GetLabels()[PoolLabel] == t.Name && metav1.IsControlledBy(o, t)
}

func (c *Controller) conflict(t *v1alpha1.TailscaleTailnet, kind, name string) error {
	c.opts.Recorder.Eventf(t, corev1.EventTypeWarning, EventConflict,
		"%s %s/%s exists and is not this tailnet's proxy pool's: it is left alone and the pool is not deployed until it is gone", kind, c.opts.Namespace, name)
	return fmt.Errorf("%s %s: %w", kind, name, errConflict)
}

// deploy keeps the pool's objects.
func (c *Controller) deploy(ctx context.Context, p Pool) error {
	t, ns := p.Tailnet, c.opts.Namespace
	core, rbac, l := c.kube.CoreV1(), c.kube.RbacV1(), c.core
	replicas := Replicas(t)
	previous := c.secretsOf(t)
	if err := apply(ctx, c, t, ServiceAccount(p), l.Core().V1().ServiceAccounts().Lister().ServiceAccounts(ns).Get,
		core.ServiceAccounts(ns).Create, core.ServiceAccounts(ns).Update, func(cur, want *corev1.ServiceAccount) bool { return false }); err != nil {
		return err
	}
	if err := apply(ctx, c, t, Role(p), l.Rbac().V1().Roles().Lister().Roles(ns).Get, rbac.Roles(ns).Create, rbac.Roles(ns).Update,
		func(cur, want *rbacv1.Role) bool { return set(&cur.Rules, want.Rules) }); err != nil {
		return err
	}
	if err := apply(ctx, c, t, RoleBinding(p), l.Rbac().V1().RoleBindings().Lister().RoleBindings(ns).Get, rbac.RoleBindings(ns).Create, rbac.RoleBindings(ns).Update,
		func(cur, want *rbacv1.RoleBinding) bool { return set(&cur.Subjects, want.Subjects) }); err != nil {
		return err
	}
	// Secrets are read by name, never listed.
	getSecret := func(name string) (*corev1.Secret, error) { return core.Secrets(ns).Get(ctx, name, metav1.GetOptions{}) }
	for i := range replicas {
		if err := apply(ctx, c, t, StateSecret(p, i), getSecret, core.Secrets(ns).Create, core.Secrets(ns).Update,
			func(cur, want *corev1.Secret) bool { return false }); err != nil {
			return err
		}
	}
	target := c.keyTarget(t, p)
	n := NamesOf(t.Name)
	if err := c.keys.Delete(ctx, target, previous, func(name string) bool { return replicaOf(n, name) >= replicas }); err != nil {
		return err
	}
	sts := StatefulSet(c.opts.Config, p)
	// The policy exists before the auth keys and the pods it protects.
	if err := c.applyNetworkPolicy(ctx, p, sts); err != nil {
		return err
	}
	pending, keyErr := c.keys.Ensure(ctx, target, p.Tags, replicas)
	if pending {
		c.queue.AddAfter(t.Name, c.opts.EnrollmentCheckInterval)
	}
	if keyErr != nil && !proxydeploy.RenewalOnly(keyErr) {
		return keyErr
	}
	apps := c.kube.AppsV1()
	if err := apply(ctx, c, t, Service(p), l.Core().V1().Services().Lister().Services(ns).Get, core.Services(ns).Create, core.Services(ns).Update,
		func(cur, want *corev1.Service) bool {
			return set(&cur.Spec.Ports, want.Spec.Ports) || set(&cur.Spec.Selector, want.Spec.Selector)
		}); err != nil {
		return errors.Join(keyErr, err)
	}
	if err := apply(ctx, c, t, sts, l.Apps().V1().StatefulSets().Lister().StatefulSets(ns).Get, apps.StatefulSets(ns).Create, apps.StatefulSets(ns).Update,
		func(cur, want *appsv1.StatefulSet) bool {
			if *cur.Spec.Replicas == *want.Spec.Replicas &&
				cur.Spec.Template.Annotations[proxydeploy.ConfigHashAnnotation] == want.Spec.Template.Annotations[proxydeploy.ConfigHashAnnotation] {
				return false
			}
			cur.Spec.Replicas, cur.Spec.Template = want.Spec.Replicas, want.Spec.Template
			return true
		}); err != nil {
		return errors.Join(keyErr, err)
	}
	pdbs := c.kube.PolicyV1().PodDisruptionBudgets(ns)
	pdbLister := l.Policy().V1().PodDisruptionBudgets().Lister().PodDisruptionBudgets(ns)
	if want := PodDisruptionBudget(p); want != nil {
		err := apply(ctx, c, t, want, pdbLister.Get, pdbs.Create, pdbs.Update, func(cur, want *policyv1.PodDisruptionBudget) bool {
			return set(&cur.Spec, want.Spec)
		})
		return errors.Join(keyErr, err)
	}
	return errors.Join(keyErr, deleteOurs(ctx, t, n.Base, pdbLister.Get, pdbs.Delete))
}

// applyNetworkPolicy keeps the pool's NetworkPolicy, or deletes ours without a configuration.
func (c *Controller) applyNetworkPolicy(ctx context.Context, p Pool, sts *appsv1.StatefulSet) error {
	t, ns := p.Tailnet, c.opts.Namespace
	policies := c.kube.NetworkingV1().NetworkPolicies(ns)
	lister := c.core.Networking().V1().NetworkPolicies().Lister().NetworkPolicies(ns)
	if c.opts.NetworkPolicy == nil {
		return deleteOurs(ctx, t, sts.Name, lister.Get, policies.Delete)
	}
	want := NetworkPolicy(*c.opts.NetworkPolicy, p, sts)
	return apply(ctx, c, t, want, lister.Get, policies.Create, policies.Update,
		func(cur, want *networkingv1.NetworkPolicy) bool { return set(&cur.Spec, want.Spec) })
}

// remove deletes the pool's objects (replicas 0), revoking the keys its Secrets record.
func (c *Controller) remove(ctx context.Context, t *v1alpha1.TailscaleTailnet) error {
	ns, n, l := c.opts.Namespace, NamesOf(t.Name), c.core
	// Secrets first: the Role names them.
	p := Pool{Tailnet: t, Namespace: ns}
	if err := c.keys.Delete(ctx, c.keyTarget(t, p), c.secretsOf(t), func(string) bool { return true }); err != nil {
		return err
	}
	k := c.kube
	return errors.Join(
		deleteOurs(ctx, t, n.Base, l.Apps().V1().StatefulSets().Lister().StatefulSets(ns).Get, k.AppsV1().StatefulSets(ns).Delete),
		deleteOurs(ctx, t, n.Base, l.Policy().V1().PodDisruptionBudgets().Lister().PodDisruptionBudgets(ns).Get, k.PolicyV1().PodDisruptionBudgets(ns).Delete),
		deleteOurs(ctx, t, n.Base, l.Core().V1().Services().Lister().Services(ns).Get, k.CoreV1().Services(ns).Delete),
		deleteOurs(ctx, t, n.Base, l.Networking().V1().NetworkPolicies().Lister().NetworkPolicies(ns).Get, k.NetworkingV1().NetworkPolicies(ns).Delete),
		deleteOurs(ctx, t, n.Base, l.Rbac().V1().RoleBindings().Lister().RoleBindings(ns).Get, k.RbacV1().RoleBindings(ns).Delete),
		deleteOurs(ctx, t, n.Base, l.Rbac().V1().Roles().Lister().Roles(ns).Get, k.RbacV1().Roles(ns).Delete),
		deleteOurs(ctx, t, n.Base, l.Core().V1().ServiceAccounts().Lister().ServiceAccounts(ns).Get, k.CoreV1().ServiceAccounts(ns).Delete),
	)
}

// secretsOf are the Secrets the pool's current Role names (state and auth key Secrets).
func (c *Controller) secretsOf(t *v1alpha1.TailscaleTailnet) []string {
	role, err := c.core.Rbac().V1().Roles().Lister().Roles(c.opts.Namespace).Get(NamesOf(t.Name).Base)
	if err != nil || !ours(role, t) {
		return nil
	}
	var names []string
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "secrets") {
			names = append(names, r.ResourceNames...)
		}
	}
	return names
}

// replicaOf is the replica whose state or auth key Secret name is, or -1.
func replicaOf(n Names, name string) int {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(name, "-authkey"), n.Base+"-")
	i, err := strconv.Atoi(rest)
	if !ok || err != nil || strconv.Itoa(i) != rest {
		return -1
	}
	return i
}

// set makes *cur want, reporting whether it changed.
func set[T any](cur *T, want T) bool {
	if equality.Semantic.DeepEqual(*cur, want) {
		return false
	}
	*cur = want
	return true
}

// apply creates want, or updates the object of its name when it is ours and change (editing
// cur) reports a difference; one that is not ours is left alone and reported.
func apply[T interface {
	metav1.Object
	runtime.Object
}](ctx context.Context, c *Controller, t *v1alpha1.TailscaleTailnet, want T,
	get func(string) (T, error),
	create func(context.Context, T, metav1.CreateOptions) (T, error),
	update func(context.Context, T, metav1.UpdateOptions) (T, error),
	change func(cur, want T) bool) error {
	kind := fmt.Sprintf("%T", want)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	cur, err := get(want.GetName())
	if apierrors.IsNotFound(err) {
		if _, err := create(ctx, want, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			return c.conflict(t, kind, want.GetName())
		} else if err != nil {
			return fmt.Errorf("creating %s %s: %w", kind, want.GetName(), err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !ours(cur, t) {
		return c.conflict(t, kind, want.GetName())
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

// deleteOurs deletes the object name when it exists and is ours.
func deleteOurs[T metav1.Object](ctx context.Context, t *v1alpha1.TailscaleTailnet, name string,
	get func(string) (T, error), del func(context.Context, string, metav1.DeleteOptions) error) error {
	cur, err := get(name)
	if apierrors.IsNotFound(err) || (err == nil && !ours(cur, t)) {
		return nil
	}
	if err != nil {
		return err
	}
	uid := cur.GetUID()
	if err := del(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil &&
		!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// ReadyCondition is the ProxyPoolReady condition of t, whose pool runs sts (nil when absent)
// and whose last sync ended with err.
func ReadyCondition(t *v1alpha1.TailscaleTailnet, sts *appsv1.StatefulSet, err error) metav1.Condition {
	want := Replicas(t)
	c := metav1.Condition{Type: ConditionReady, ObservedGeneration: t.Generation, Status: metav1.ConditionFalse}
	ready := 0
	if sts != nil && sts.Status.ObservedGeneration >= sts.Generation {
		ready = int(sts.Status.ReadyReplicas)
	}
	name := NamesOf(t.Name).Base
	switch {
	case want == 0:
		c.Reason, c.Message = ReasonDisabled, "spec.proxyPool.replicas is 0: no pool runs"
	case errors.Is(err, errTags):
		c.Reason, c.Message = ReasonTagsNotPermitted, err.Error()
	case err != nil:
		c.Reason, c.Message = ReasonFailed, err.Error()
	case ready < want:
		c.Reason, c.Message = ReasonProgressing, fmt.Sprintf("StatefulSet %s: %d of %d replicas ready", name, ready, want)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, ReasonReady, fmt.Sprintf("StatefulSet %s: %d of %d replicas ready", name, ready, want)
	}
	return c
}

// report writes t's ProxyPoolReady condition (removes it without spec.proxyPool).
func (c *Controller) report(ctx context.Context, t *v1alpha1.TailscaleTailnet, sts *appsv1.StatefulSet, err error) error {
	if c.opts.Client == nil {
		return nil
	}
	want := ReadyCondition(t, sts, err)
	wanted := t.Spec.ProxyPool != nil
	cur := meta.FindStatusCondition(t.Status.Conditions, ConditionReady)
	if (!wanted && cur == nil) || (wanted && cur != nil && cur.Status == want.Status && cur.Reason == want.Reason &&
		cur.Message == want.Message && cur.ObservedGeneration == want.ObservedGeneration) {
		return nil
	}
	client := c.opts.Client.GatewayV1alpha1().TailscaleTailnets()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh, err := client.Get(ctx, t.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil || fresh.UID != t.UID {
			return err
		}
		if !wanted {
			if !meta.RemoveStatusCondition(&fresh.Status.Conditions, ConditionReady) {
				return nil
			}
		} else {
			meta.SetStatusCondition(&fresh.Status.Conditions, want)
		}
		_, err = client.UpdateStatus(ctx, fresh, metav1.UpdateOptions{FieldManager: "tailscale-gateway-proxypool"})
		return err
	})
}

// ServedCondition is the condition of an object served by t's pool.
func ServedCondition(t *v1alpha1.TailscaleTailnet, namespace string, generation int64) metav1.Condition {
	return metav1.Condition{Type: ConditionServed, Status: metav1.ConditionTrue, Reason: ReasonServed, ObservedGeneration: generation,
		Message: fmt.Sprintf("served by the proxy pool of TailscaleTailnet %s (StatefulSet %s/%s)", t.Name, namespace, NamesOf(t.Name).Base)}
}

// markServed sets ConditionServed on served and removes it from the other objects of t's
// tailnet that carry it (moved to a proxy of their own, or the pool removed).
func (c *Controller) markServed(ctx context.Context, t *v1alpha1.TailscaleTailnet, served []*v1alpha1.TailscaleEndpoints) error {
	if c.opts.Client == nil {
		return nil
	}
	in := map[string]bool{}
	for _, o := range served {
		in[o.Namespace+"/"+o.Name] = true
	}
	all, _ := c.eps.List(labels.Everything())
	var errs []error
	for _, o := range all {
		cur := meta.FindStatusCondition(o.Status.Conditions, ConditionServed)
		if in[o.Namespace+"/"+o.Name] {
			want := ServedCondition(t, c.opts.Namespace, o.Generation)
			if cur == nil || cur.Message != want.Message || cur.ObservedGeneration != want.ObservedGeneration {
				errs = append(errs, c.writeServed(ctx, o, &want))
			}
			continue
		}
		if name, ok := c.opts.Tailnets.Resolve(o.Spec.Tailnet); cur != nil && (!ok || name == t.Name) {
			errs = append(errs, c.writeServed(ctx, o, nil))
		}
	}
	return errors.Join(errs...)
}

// writeServed sets (want) or removes (nil) ConditionServed on o.
func (c *Controller) writeServed(ctx context.Context, o *v1alpha1.TailscaleEndpoints, want *metav1.Condition) error {
	client := c.opts.Client.GatewayV1alpha1().TailscaleEndpoints(o.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh, err := client.Get(ctx, o.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil || fresh.UID != o.UID {
			return err
		}
		if want != nil {
			meta.SetStatusCondition(&fresh.Status.Conditions, *want)
		} else if !meta.RemoveStatusCondition(&fresh.Status.Conditions, ConditionServed) {
			return nil
		}
		_, err = client.UpdateStatus(ctx, fresh, metav1.UpdateOptions{FieldManager: "tailscale-gateway-proxypool"})
		if err != nil {
			klog.FromContext(ctx).V(2).Info("Writing the proxy pool condition", "endpoints", klog.KObj(o), "err", err)
		}
		return err
	})
}
