package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// ConditionServiceDiscovery is the TailscaleGateway condition this controller owns (the
// tsgateway controller and the status writer carry it over).
const (
	ConditionServiceDiscovery = "ServiceDiscovery"

	ReasonDiscovered      = "ServicesDiscovered"
	ReasonConflict        = "DiscoveryConflict"
	ReasonFailed          = "DiscoveryFailed"
	ReasonTailnetNotFound = "TailnetNotFound"

	EventCreated = "DiscoveryObjectCreated"
	EventUpdated = "DiscoveryObjectUpdated"
	EventDeleted = "DiscoveryObjectDeleted"
)

// FieldManager writes the controller's changes.
const FieldManager = "tailscale-gateway-discovery"

// Tailnets is what the controller needs of the per-tailnet cache.
type Tailnets interface {
	Snapshot(name string) (tailnet.Snapshot, bool)
	Subscribe(fn func(tailnet.Change)) (unsubscribe func())
}

// Options configure the controller.
type Options struct {
	// OperatorID is this installation's ID in owner references; required.
	OperatorID string
	Tailnets   Tailnets
	// Tenancy decides which namespaces a tailnet admits; nil admits all.
	Tenancy  *tenancy.Policy
	Recorder record.EventRecorder
	Workers  int
}

// Controller generates the objects of spec.tailnets[].serviceDiscovery.
type Controller struct {
	opts      Options
	client    versioned.Interface
	gateways  listers.TailscaleGatewayLister
	tailnets  listers.TailscaleTailnetLister
	services  listers.TailscaleServicesLister
	endpoints listers.TailscaleEndpointsLister
	kube      corelisters.ServiceLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
}

// NewKubeFactory returns an informer factory on kube that lists only the Services carrying
// LabelExpose, for New.
func NewKubeFactory(kube kubernetes.Interface, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync, kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelExpose
	}))
}

// New returns a controller on factory's (this API) and kubeFactory's (NewKubeFactory) informers.
func New(client versioned.Interface, factory informers.SharedInformerFactory, kubeFactory kubeinformers.SharedInformerFactory, opts Options) (*Controller, error) {
	if opts.OperatorID == "" || opts.Tailnets == nil || opts.Recorder == nil {
		return nil, errors.New("discovery: OperatorID, Tailnets and Recorder are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	gw := factory.Gateway().V1alpha1()
	c := &Controller{
		opts: opts, client: client,
		gateways: gw.TailscaleGateways().Lister(), tailnets: gw.TailscaleTailnets().Lister(),
		services: gw.TailscaleServices().Lister(), endpoints: gw.TailscaleEndpoints().Lister(),
		kube: kubeFactory.Core().V1().Services().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "discovery"}),
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{gw.TailscaleGateways().Informer(), c.enqueueGateway},
		{gw.TailscaleTailnets().Informer(), func(any) { c.enqueueAll() }},
		{gw.TailscaleServices().Informer(), c.enqueueOwner},
		{gw.TailscaleEndpoints().Informer(), c.enqueueOwner},
		{kubeFactory.Core().V1().Services().Informer(), func(any) { c.enqueueAll() }},
	}
	for _, h := range handlers {
		fn := h.fn
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn, UpdateFunc: func(_, o any) { fn(o) }, DeleteFunc: fn,
		}); err != nil {
			return nil, err
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	return c, nil
}

func (c *Controller) enqueueGateway(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

// enqueueAll queues every TailscaleGateway with discovery on.
func (c *Controller) enqueueAll() {
	list, err := c.gateways.List(labels.Everything())
	if err != nil {
		return
	}
	for _, g := range list {
		if len(Enabled(g)) > 0 || apimeta.FindStatusCondition(g.Status.Conditions, ConditionServiceDiscovery) != nil {
			c.queue.Add(g.Namespace + "/" + g.Name)
		}
	}
}

// enqueueOwner queues the TailscaleGateway that generated obj (changed or deleted by hand).
func (c *Controller) enqueueOwner(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok || o.GetLabels()[LabelManagedBy] != ManagedBy {
		return
	}
	if gw := o.GetLabels()[LabelGateway]; gw != "" {
		c.queue.Add(o.GetNamespace() + "/" + gw)
	}
}

// Run reconciles until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	unsubscribe := c.opts.Tailnets.Subscribe(func(ch tailnet.Change) {
		if ch.ServicesChanged || ch.TailnetRemoved {
			c.enqueueAll()
		}
	})
	defer unsubscribe()
	klog.InfoS("Service discovery controller started", "workers", c.opts.Workers, "operatorID", c.opts.OperatorID)
	for range c.opts.Workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		if err := c.sync(ctx, key); err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Reconciling service discovery", "key", key)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// result is what one reconcile did, for status.
type result struct {
	out       Output
	missing   []string
	conflicts []string
	failures  []string
	// blocked names the generated objects that conflicted or failed: not counted as exposed.
	blocked map[string]bool
	// unpolled are the tailnet configurations whose tailnet has not been polled yet: their
	// remote TailscaleEndpoints are kept as they are rather than deleted.
	unpolled map[string]bool
}

// keep reports whether an existing generated object that is not wanted stays: the remote
// TailscaleEndpoints of an unpolled tailnet, and the remote groups while any tailnet is
// unpolled (their members there are kept as last discovered).
func (r result) keep(o metav1.Object) bool {
	switch o.GetLabels()[LabelRole] {
	case RoleRemote:
		return r.unpolled[o.GetLabels()[LabelTailnet]]
	case RoleRemoteGroup:
		return len(r.unpolled) > 0
	}
	return false
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	gw, err := c.gateways.TailscaleGateways(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil // the garbage collector deletes what it controlled
	}
	if err != nil {
		return err
	}
	if gw.DeletionTimestamp != nil {
		return nil
	}
	in := Input{Gateway: gw, OperatorID: c.opts.OperatorID,
		Allowed: func(namespace, ref string) bool { return c.opts.Tenancy.Decide(namespace, ref).Allowed }}
	var res result
	for _, t := range Enabled(gw) {
		ref := t.TailscaleTailnetRef.Name
		if _, err := c.tailnets.Get(ref); err != nil {
			res.missing = append(res.missing, ref)
			continue
		}
		tn := Tailnet{Config: t, Ref: ref}
		if snap, ok := c.opts.Tailnets.Snapshot(ref); ok && !snap.LastSync.IsZero() {
			tn.Snapshot = &snap
		} else {
			if res.unpolled == nil {
				res.unpolled = map[string]bool{}
			}
			res.unpolled[t.Name] = true
		}
		in.Tailnets = append(in.Tailnets, tn)
	}
	if len(in.Tailnets) > 0 {
		if in.Services, err = c.kube.List(labels.SelectorFromSet(labels.Set{LabelExpose: "true"})); err != nil {
			return err
		}
	}
	res.out = Generate(in)
	// The host first: the TailscaleServices take their tailnet from it.
	errs := []error{c.applyEndpoints(ctx, gw, &res), c.applyServices(ctx, gw, &res)}
	errs = append(errs, c.writeStatus(ctx, gw, res))
	return errors.Join(errs...)
}

func controlledBy(o metav1.Object, gw *v1alpha1.TailscaleGateway) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == gw.UID
}

func generatedSelector(gw *v1alpha1.TailscaleGateway) labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelGateway: gw.Name, LabelManagedBy: ManagedBy})
}

// store is what apply needs of one kind of generated object.
type store[T metav1.Object] struct {
	kind   string
	get    func(name string) (T, error)
	list   func(labels.Selector) ([]T, error)
	create func(context.Context, T) error
	update func(context.Context, T) error
	delete func(ctx context.Context, name string, uid types.UID) error
	// sameSpec reports whether cur's spec is want's; withSpec returns a copy of cur with want's.
	sameSpec func(cur, want T) bool
	withSpec func(cur, want T) T
}

// apply creates and updates want and deletes the generated objects of gw no longer wanted;
// objects gw does not control are never changed.
func apply[T metav1.Object](ctx context.Context, c *Controller, gw *v1alpha1.TailscaleGateway, s store[T], want []T, res *result) error {
	var errs []error
	wanted := map[string]bool{}
	for _, o := range want {
		wanted[o.GetName()] = true
		cur, err := s.get(o.GetName())
		switch {
		case apierrors.IsNotFound(err):
			if err := s.create(ctx, o); err != nil {
				if apierrors.IsAlreadyExists(err) {
					errs = append(errs, err) // the cache is behind; retry
				} else {
					res.failures = append(res.failures, fmt.Sprintf("%s %s: %v", s.kind, o.GetName(), err))
				}
				res.block(o.GetName())
				continue
			}
			c.opts.Recorder.Eventf(gw, corev1.EventTypeNormal, EventCreated, "Created %s %s", s.kind, o.GetName())
		case err != nil:
			return err
		case !controlledBy(cur, gw):
			res.conflicts = append(res.conflicts, s.kind+" "+o.GetName())
			res.block(o.GetName())
		case !s.sameSpec(cur, o) || !contains(cur.GetLabels(), o.GetLabels()) || !contains(cur.GetAnnotations(), o.GetAnnotations()):
			upd := s.withSpec(cur, o)
			upd.SetLabels(merge(cur.GetLabels(), o.GetLabels()))
			upd.SetAnnotations(merge(cur.GetAnnotations(), o.GetAnnotations()))
			if err := s.update(ctx, upd); err != nil {
				if apierrors.IsConflict(err) {
					errs = append(errs, err)
				} else {
					res.failures = append(res.failures, fmt.Sprintf("%s %s: %v", s.kind, o.GetName(), err))
				}
				res.block(o.GetName())
				continue
			}
			c.opts.Recorder.Eventf(gw, corev1.EventTypeNormal, EventUpdated, "Updated %s %s", s.kind, o.GetName())
		}
	}
	existing, err := s.list(generatedSelector(gw))
	if err != nil {
		return err
	}
	for _, o := range existing {
		if wanted[o.GetName()] || !controlledBy(o, gw) || o.GetDeletionTimestamp() != nil || res.keep(o) {
			continue
		}
		if err := s.delete(ctx, o.GetName(), o.GetUID()); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		c.opts.Recorder.Eventf(gw, corev1.EventTypeNormal, EventDeleted, "Deleted %s %s: no longer needed", s.kind, o.GetName())
	}
	return errors.Join(errs...)
}

func (r *result) block(name string) {
	if r.blocked == nil {
		r.blocked = map[string]bool{}
	}
	r.blocked[name] = true
}

// counts are the generated objects of each tailnet configuration that exist as generated.
func (r result) counts() map[string]Counts {
	out := make(map[string]Counts, len(r.out.Counts))
	for name := range r.out.Counts {
		out[name] = Counts{}
	}
	for _, o := range r.out.Services {
		if !r.blocked[o.Name] && o.Labels[LabelRole] == RoleLocal {
			k := out[o.Labels[LabelTailnet]]
			k.Local++
			out[o.Labels[LabelTailnet]] = k
		}
	}
	for _, o := range r.out.Endpoints {
		if !r.blocked[o.Name] && o.Labels[LabelRole] == RoleRemote {
			k := out[o.Labels[LabelTailnet]]
			k.Remote++
			out[o.Labels[LabelTailnet]] = k
		}
	}
	return out
}

func deleteOptions(uid types.UID) metav1.DeleteOptions {
	return metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
}

func (c *Controller) applyServices(ctx context.Context, gw *v1alpha1.TailscaleGateway, res *result) error {
	client := c.client.GatewayV1alpha1().TailscaleServices(gw.Namespace)
	lister := c.services.TailscaleServices(gw.Namespace)
	return apply(ctx, c, gw, store[*v1alpha1.TailscaleServices]{
		kind: "TailscaleServices", get: lister.Get, list: lister.List,
		create: func(ctx context.Context, o *v1alpha1.TailscaleServices) error {
			_, err := client.Create(ctx, o, metav1.CreateOptions{FieldManager: FieldManager})
			return err
		},
		update: func(ctx context.Context, o *v1alpha1.TailscaleServices) error {
			_, err := client.Update(ctx, o, metav1.UpdateOptions{FieldManager: FieldManager})
			return err
		},
		delete: func(ctx context.Context, name string, uid types.UID) error {
			return client.Delete(ctx, name, deleteOptions(uid))
		},
		sameSpec: func(cur, want *v1alpha1.TailscaleServices) bool {
			return equality.Semantic.DeepEqual(cur.Spec, want.Spec)
		},
		withSpec: func(cur, want *v1alpha1.TailscaleServices) *v1alpha1.TailscaleServices {
			out := cur.DeepCopy()
			out.Spec = want.Spec
			return out
		},
	}, res.out.Services, res)
}

func (c *Controller) applyEndpoints(ctx context.Context, gw *v1alpha1.TailscaleGateway, res *result) error {
	client := c.client.GatewayV1alpha1().TailscaleEndpoints(gw.Namespace)
	lister := c.endpoints.TailscaleEndpoints(gw.Namespace)
	return apply(ctx, c, gw, store[*v1alpha1.TailscaleEndpoints]{
		kind: "TailscaleEndpoints", get: lister.Get, list: lister.List,
		create: func(ctx context.Context, o *v1alpha1.TailscaleEndpoints) error {
			_, err := client.Create(ctx, o, metav1.CreateOptions{FieldManager: FieldManager})
			return err
		},
		update: func(ctx context.Context, o *v1alpha1.TailscaleEndpoints) error {
			_, err := client.Update(ctx, o, metav1.UpdateOptions{FieldManager: FieldManager})
			return err
		},
		delete: func(ctx context.Context, name string, uid types.UID) error {
			return client.Delete(ctx, name, deleteOptions(uid))
		},
		sameSpec: func(cur, want *v1alpha1.TailscaleEndpoints) bool {
			return equality.Semantic.DeepEqual(cur.Spec, want.Spec)
		},
		withSpec: func(cur, want *v1alpha1.TailscaleEndpoints) *v1alpha1.TailscaleEndpoints {
			out := cur.DeepCopy()
			out.Spec = want.Spec
			return out
		},
	}, res.out.Endpoints, res)
}

func contains(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func merge(have, want map[string]string) map[string]string {
	out := maps.Clone(have)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, want)
	return out
}

// writeStatus sets the ServiceDiscovery condition, or removes it when no tailnet has discovery.
func (c *Controller) writeStatus(ctx context.Context, gw *v1alpha1.TailscaleGateway, res result) error {
	st := gw.Status.DeepCopy()
	if len(Enabled(gw)) == 0 {
		if !apimeta.RemoveStatusCondition(&st.Conditions, ConditionServiceDiscovery) {
			return nil
		}
	} else {
		apimeta.SetStatusCondition(&st.Conditions, condition(gw, res))
	}
	if equality.Semantic.DeepEqual(*st, gw.Status) {
		return nil
	}
	out := gw.DeepCopy()
	out.Status = *st
	if _, err := c.client.GatewayV1alpha1().TailscaleGateways(gw.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// condition is the ServiceDiscovery condition of a reconcile.
func condition(gw *v1alpha1.TailscaleGateway, res result) metav1.Condition {
	cond := metav1.Condition{Type: ConditionServiceDiscovery, Status: metav1.ConditionTrue, Reason: ReasonDiscovered, ObservedGeneration: gw.Generation}
	counts := res.counts()
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		k := counts[n]
		parts = append(parts, fmt.Sprintf("tailnet %s: %d local Services exposed, %d Tailscale Services of other installations discovered", n, k.Local, k.Remote))
	}
	cond.Message = strings.Join(parts, "; ")
	switch {
	case len(res.missing) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonTailnetNotFound
		cond.Message = join("TailscaleTailnet not found: "+strings.Join(res.missing, ", "), cond.Message)
	case len(res.conflicts) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonConflict
		cond.Message = join("Names taken by objects this TailscaleGateway does not control (left alone): "+strings.Join(res.conflicts, ", "), cond.Message)
	case len(res.failures) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonFailed
		cond.Message = join(strings.Join(res.failures, "; "), cond.Message)
	}
	for _, n := range names {
		if res.unpolled[n] {
			cond.Message = join(cond.Message, fmt.Sprintf("tailnet %s not polled yet: Tailscale Services of other installations kept as last discovered", n))
		}
	}
	var groups []string
	for _, o := range res.out.Services {
		if o.Labels[LabelRole] == RoleRemoteGroup && !res.blocked[o.Name] {
			groups = append(groups, fmt.Sprintf("%s (svc:%s, primary %s)", o.Name, o.Labels[LabelRemoteService],
				strings.Join(o.Spec.LoadBalancing.FailoverConfig.PrimaryEndpoints, ", ")))
		}
	}
	if len(groups) > 0 {
		cond.Message = join(cond.Message, "found on several tailnets, grouped for failover by priority: "+strings.Join(groups, "; "))
	}
	if len(res.out.Skipped) > 0 {
		cond.Message = join(cond.Message, "not used: "+strings.Join(res.out.Skipped, "; "))
	}
	return cond
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}
