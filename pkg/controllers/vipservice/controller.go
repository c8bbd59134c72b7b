// Package vipservice creates and keeps the Tailscale Services (VIP services) that
// TailscaleServices ask for in spec.vipService, with the Tailscale Kubernetes operator's
// ownership annotation so that several installations (clusters) can share one Service.
//
// Reads are memory only: the Service as the tailnet cache's last poll (or this controller's
// last answer from the API) shows it. Only when that differs from what the spec asks does the
// controller call the API, and then it reads the Service before writing it (a PUT must carry
// the Service's addresses). A steady state costs no API call however often it is resynced;
// creating a Service costs two (GET, PUT).
package vipservice

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"golang.org/x/time/rate"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/ctrlmetrics"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Finalizer keeps a TailscaleServices until its reference on the Service is released.
const Finalizer = "gateway.tailscale.com/vip-service"

// Kind is the resource kind in our owner references.
const Kind = "TailscaleServices"

// Event reasons.
const (
	ReasonCreated         = "ServiceCreated"
	ReasonUpdated         = "ServiceUpdated"
	ReasonDeleted         = "ServiceDeleted"
	ReasonAttached        = "ServiceAttached"
	ReasonReleased        = "ServiceReleased"
	ReasonExpired         = "OwnerExpired"
	ReasonConflict        = "Conflict"
	ReasonReconcileFailed = "ReconcileFailed"
	ReasonTailnetGone     = "TailnetGone"
)

// Defaults.
const (
	DefaultResync      = 5 * time.Minute
	DefaultConsumerTTL = 24 * time.Hour
	DefaultWorkers     = 4
)

// Tailnets is what the controller needs of the per-tailnet cache.
type Tailnets interface {
	// Resolve maps a TailscaleTailnet name or tailnet domain to the TailscaleTailnet's name.
	Resolve(ref string) (string, bool)
	// Snapshot is the last poll of a tailnet, from memory.
	Snapshot(name string) (tailnet.Snapshot, bool)
	// API is the tailnet's API client.
	API(name string) (tailnet.API, bool)
	// Subscribe calls fn after every poll that changed something.
	Subscribe(fn func(tailnet.Change)) (unsubscribe func())
}

// Options configure a Controller.
type Options struct {
	// OperatorID identifies this installation in owner references; required.
	OperatorID string
	Tailnets   Tailnets
	// Recorder receives an Event for every change in the tailnet and every conflict.
	Recorder record.EventRecorder
	// Resync re-checks every object against the cache this often (memory only).
	Resync time.Duration
	// ConsumerTTL expires references of other installations whose heartbeat is older.
	ConsumerTTL time.Duration
	// Workers reconcile in parallel.
	Workers int
	// Now defaults to time.Now.
	Now func() time.Time
	// Tenancy decides whether an object's tailnet admits its namespace; nil admits all. A
	// refused object's Services are released as if its spec no longer asked for them.
	Tenancy *tenancy.Policy
	// Hosts knows this installation's proxies; with vipService.autoApprove the controller
	// approves those hosting the Service whose pods are Ready and withdraws the others
	// (hosts.go). Nil (standalone, or no proxies deployed) approves none.
	Hosts Hosts
}

// Controller reconciles TailscaleServices with Tailscale Services.
type Controller struct {
	opts     Options
	client   versioned.Interface
	services listers.TailscaleServicesLister
	eps      listers.TailscaleEndpointsLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]

	mu    sync.Mutex
	known map[string]knownService // tailnet/name -> our last answer from the API
	hosts map[string]knownHosts   // tailnet/name -> the hosts as the API last answered us
	locks map[string]*sync.Mutex  // tailnet/name -> serialises writers of one Service
	// registered is when we last wrote each object's Service, until its status says so (a
	// status write that lost a conflict must not lose it).
	registered map[types.UID]metav1.Time
}

// knownService is a Service as the API last answered this controller.
type knownService struct {
	svc    tailnet.Service
	exists bool
	at     time.Time
}

// New returns a controller on factory's informers; Run starts it.
func New(client versioned.Interface, factory informers.SharedInformerFactory, opts Options) (*Controller, error) {
	if opts.OperatorID == "" {
		return nil, errors.New("vipservice: an operator ID is required")
	}
	if opts.Tailnets == nil || opts.Recorder == nil {
		return nil, errors.New("vipservice: Tailnets and Recorder are required")
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.ConsumerTTL == 0 {
		opts.ConsumerTTL = DefaultConsumerTTL
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	gw := factory.Gateway().V1alpha1()
	c := &Controller{
		opts:     opts,
		client:   client,
		services: gw.TailscaleServices().Lister(),
		eps:      gw.TailscaleEndpoints().Lister(),
		// Per object: 1s doubling to 5 min after failures (API errors, 429 beyond the client's
		// own retries), and 10 retries/s overall.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedMaxOfRateLimiter(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
		), workqueue.TypedRateLimitingQueueConfig[string]{Name: "vipservice"}),
		known:      map[string]knownService{},
		hosts:      map[string]knownHosts{},
		locks:      map[string]*sync.Mutex{},
		registered: map[types.UID]metav1.Time{},
	}
	svcInf := gw.TailscaleServices().Informer()
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	// The tailnet of a Service without endpointTemplate.tailnet is that of the endpoints it
	// selects; a new TailscaleTailnet may resolve a reference.
	epInf := gw.TailscaleEndpoints().Informer()
	if _, err := epInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.enqueueNamespaceOf(obj); c.enqueueEndpoints(obj) },
		UpdateFunc: func(_, obj any) { c.enqueueNamespaceOf(obj); c.enqueueEndpoints(obj) },
		DeleteFunc: c.enqueueNamespaceOf,
	}); err != nil {
		return nil, err
	}
	tnInf := gw.TailscaleTailnets().Informer()
	if _, err := tnInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.enqueueAll() },
		UpdateFunc: func(_, _ any) { c.enqueueAll() },
	}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{svcInf.HasSynced, epInf.HasSynced, tnInf.HasSynced}
	if opts.Hosts != nil {
		// A proxy's pod turning Ready or not, or going: its Services' approvals follow at once.
		opts.Hosts.OnChange(c.enqueueAutoApprove)
		c.synced = append(c.synced, opts.Hosts.HasSynced)
	}
	return c, nil
}

// Run reconciles until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	log := klog.FromContext(ctx).WithName("vipservice")
	ctx = klog.NewContext(ctx, log)
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return
	}
	// A poll that changed Services (someone edited or deleted one by hand) re-checks every
	// object against the new snapshot.
	unsubscribe := c.opts.Tailnets.Subscribe(func(ch tailnet.Change) {
		if ch.ServicesChanged || ch.SyncChanged || ch.TailnetRemoved {
			c.enqueueAll()
		}
	})
	defer unsubscribe()
	log.Info("Starting VIP service controller", "operatorID", c.opts.OperatorID, "workers", c.opts.Workers)
	for range c.opts.Workers {
		go wait.UntilWithContext(ctx, c.work, time.Second)
	}
	go wait.UntilWithContext(ctx, func(context.Context) { c.enqueueAll() }, c.opts.Resync)
	<-ctx.Done()
}

func (c *Controller) work(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		start := time.Now()
		err := c.sync(ctx, key)
		ctrlmetrics.Observe("vipservice", start, err)
		switch {
		case err == nil:
			c.queue.Forget(key)
		case apierrors.IsConflict(err):
			// A newer version is on its way through the informer.
			c.queue.AddRateLimited(key)
		default:
			utilruntime.HandleErrorWithContext(ctx, err, "Reconciling Tailscale Service", "object", key)
			c.queue.AddRateLimited(key)
			var te *tailnet.Error
			if errors.As(err, &te) && te.RetryAfter > 0 {
				c.queue.AddAfter(key, te.RetryAfter)
			}
		}
		c.queue.Done(key)
	}
}

func (c *Controller) enqueue(obj any) {
	if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

// enqueueAutoApprove enqueues every TailscaleServices with vipService.autoApprove.
func (c *Controller) enqueueAutoApprove() {
	items, err := c.services.List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range items {
		if autoApprove(s) {
			c.enqueue(s)
		}
	}
}

func (c *Controller) enqueueNamespaceOf(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	items, err := c.services.TailscaleServices(o.GetNamespace()).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range items {
		c.enqueue(s)
	}
}

func (c *Controller) enqueueAll() {
	items, err := c.services.List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range items {
		c.enqueue(s)
	}
	eps, err := c.eps.List(labels.Everything())
	if err != nil {
		return
	}
	for _, e := range eps {
		c.enqueueEndpoints(e)
	}
}

// ref is this installation's reference for obj.
func (c *Controller) ref(obj *v1alpha1.TailscaleServices) OwnerRef {
	return OwnerRef{OperatorID: c.opts.OperatorID, Resource: &Resource{Kind: Kind, Name: obj.Namespace + "/" + obj.Name, UID: string(obj.UID)}}
}

// TailnetRef is the tailnet a TailscaleServices' Service lives in: endpointTemplate.tailnet, or
// that of the first TailscaleEndpoints it selects (as livestatus reports it).
func TailnetRef(obj *v1alpha1.TailscaleServices, eps listers.TailscaleEndpointsLister) string {
	if t := obj.Spec.EndpointTemplate; t != nil && t.Tailnet != "" {
		return t.Tailnet
	}
	sel, err := metav1.LabelSelectorAsSelector(obj.Spec.Selector)
	if err != nil || obj.Spec.Selector == nil {
		return ""
	}
	items, err := eps.TailscaleEndpoints(obj.Namespace).List(sel)
	if err != nil {
		return ""
	}
	first := ""
	for _, e := range items {
		if e.Spec.Tailnet != "" && (first == "" || e.Name < first) {
			first = e.Spec.Tailnet
		}
	}
	return first
}

// result is what one reconcile found, for status.
type result struct {
	tailnet string
	plan    plan
	wrote   bool
	err     error
	// unresolved: the tailnet reference (tailnetRef, maybe empty) names no TailscaleTailnet.
	unresolved bool
	tailnetRef string
	// released: our reference on the Service named by status.serviceInfo is gone.
	released bool
	// pending: tenancy cannot be decided yet (why); the Service is left as it is.
	pending string
	// hosts is the HostsApproved condition, when autoApprove asked for approvals.
	hosts *metav1.Condition
}

func (c *Controller) sync(ctx context.Context, key string) error {
	if k, ok := strings.CutPrefix(key, endpointsKeyPrefix); ok {
		return c.syncEndpoints(ctx, k)
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	obj, err := c.services.TailscaleServices(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	log := klog.FromContext(ctx).WithValues("object", klog.KObj(obj))
	ctx = klog.NewContext(ctx, log)

	ref := TailnetRef(obj, c.eps)
	decision := c.opts.Tenancy.Decide(obj.Namespace, ref)
	wantName := ""
	if obj.Spec.VIPService != nil && obj.DeletionTimestamp == nil && (decision.Allowed || decision.Unknown) {
		wantName = obj.Spec.VIPService.Name
	}
	tn, resolved := c.opts.Tailnets.Resolve(ref)

	// Release a Service we no longer want: on deletion, after a rename, a tailnet change or a
	// tailnet's refusal of the namespace. Only explicit states release: a tailnet reference
	// that resolves to nothing (the selected endpoints briefly absent, a tailnet not loaded
	// yet) or a namespace whose labels are not known yet keeps the Service and degrades status.
	prevTailnet, prevName, hadService := registryKey(obj.Status.ServiceInfo)
	if !hadService && obj.DeletionTimestamp != nil && obj.Spec.VIPService != nil && resolved && hasFinalizer(obj) {
		// The status naming the Service may not have been written: release what the spec names.
		prevTailnet, prevName, hadService = tn, obj.Spec.VIPService.Name, true
	}
	moved := resolved && prevTailnet != tn
	if hadService && (prevName != wantName || moved) {
		if err := c.release(ctx, obj, c.ref(obj), prevTailnet, prevName); err != nil {
			return errors.Join(err, c.writeStatus(ctx, obj, result{tailnet: prevTailnet, err: err}))
		}
		if obj.Status.ServiceInfo == nil {
			_, err := c.setFinalizer(ctx, obj, wantName != "")
			return err
		}
		// The status update brings the object back through the informer.
		return c.writeStatus(ctx, obj, result{released: true})
	}
	if wantName == "" {
		c.mu.Lock()
		delete(c.registered, obj.UID)
		c.mu.Unlock()
		obj, err := c.setFinalizer(ctx, obj, false)
		if err != nil || obj.DeletionTimestamp != nil {
			return err
		}
		// No vipService (any more): none of our conditions apply.
		return c.writeStatus(ctx, obj, result{})
	}
	if !resolved {
		return c.writeStatus(ctx, obj, result{unresolved: true, tailnetRef: ref})
	}
	if decision.Unknown {
		return c.writeStatus(ctx, obj, result{pending: decision.Message})
	}
	if obj, err = c.setFinalizer(ctx, obj, true); err != nil {
		return err
	}
	r := c.ensure(ctx, obj, wantService(obj), c.ref(obj), tn)
	if r.err == nil && autoApprove(obj) && r.plan.action != actionConflict {
		cond, err := c.approveHosts(ctx, obj, tn)
		r.hosts, r.err = &cond, err
	}
	if err := c.writeStatus(ctx, obj, r); err != nil {
		return errors.Join(r.err, err)
	}
	return r.err
}

// ensure makes the Service follow obj, calling the API only when the known state differs.
func (c *Controller) ensure(ctx context.Context, obj runtime.Object, spec want, ref OwnerRef, tn string) result {
	w := spec
	unlock := c.lock(tn, spec.Name)
	defer unlock()
	r := result{tailnet: tn}
	now := c.opts.Now()

	if cur, exists, ok := c.view(tn, spec.Name); ok {
		p := planFor(w, cur, exists, ref, now, c.opts.ConsumerTTL)
		if p.action == actionNone || p.action == actionConflict || p.action == actionAttachReadOnly {
			r.plan = p
			return r
		}
	}
	api, ok := c.opts.Tailnets.API(tn)
	if !ok {
		r.err = fmt.Errorf("tailnet %s is not polled: %w", tn, tailnet.ErrUnknownTailnet)
		return r
	}
	cur, err := api.Service(ctx, spec.Name)
	exists := err == nil
	if err != nil && !tailnet.IsNotFound(err) {
		r.err = fmt.Errorf("reading Tailscale Service %s: %w", spec.Name, err)
		return r
	}
	c.remember(tn, spec.Name, cur, exists)
	p := planFor(w, cur, exists, ref, now, c.opts.ConsumerTTL)
	r.plan = p
	if p.action != actionCreate && p.action != actionUpdate {
		return r
	}
	if err := api.CreateOrUpdateService(ctx, p.next); err != nil {
		r.err = fmt.Errorf("writing Tailscale Service %s: %w", spec.Name, err)
		return r
	}
	r.wrote = true
	if m, err := meta.Accessor(obj); err == nil {
		c.mu.Lock()
		c.registered[m.GetUID()] = metav1.NewTime(now.Truncate(time.Second))
		c.mu.Unlock()
	}
	// After a create, the addresses the API allocated are unknown until the next poll: the
	// copy serves to see that nothing is to be done; any write reads the Service first.
	c.remember(tn, spec.Name, p.next, true)
	log := klog.FromContext(ctx)
	switch {
	case p.action == actionCreate:
		log.Info("Created Tailscale Service", "service", spec.Name, "tailnet", tn)
		c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonCreated, "Created Tailscale Service %s in tailnet %s", spec.Name, tn)
	case p.attached:
		log.Info("Attached to Tailscale Service as a consumer", "service", spec.Name, "tailnet", tn, "owner", p.owners.owner())
		c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonAttached, "Attached to Tailscale Service %s owned by operator %s", spec.Name, p.owners.owner())
	default:
		log.Info("Updated Tailscale Service", "service", spec.Name, "tailnet", tn)
		c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonUpdated, "Updated Tailscale Service %s in tailnet %s", spec.Name, tn)
	}
	for _, e := range p.expired {
		c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonExpired,
			"Removed the reference of operator %s from Tailscale Service %s: not renewed for %s", e.OperatorID, spec.Name, c.opts.ConsumerTTL)
	}
	return r
}

// release removes our reference from a Service, deleting it when ours was the last one. A
// Service without our reference is never touched.
func (c *Controller) release(ctx context.Context, obj runtime.Object, ref OwnerRef, tn, name string) error {
	unlock := c.lock(tn, name)
	defer unlock()
	api, ok := c.opts.Tailnets.API(tn)
	if !ok {
		// The TailscaleTailnet is gone: nothing can reach the Service any more.
		c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonTailnetGone,
			"Tailnet %s is no longer configured; Tailscale Service %s was left as it is", tn, name)
		return nil
	}
	cur, err := api.Service(ctx, name)
	if tailnet.IsNotFound(err) {
		c.remember(tn, name, tailnet.Service{}, false)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Tailscale Service %s: %w", name, err)
	}
	own, err := parseOwners(cur.Annotations)
	if err != nil || own.index(ref) < 0 {
		c.remember(tn, name, cur, true)
		return nil
	}
	rest := own.without(ref)
	log := klog.FromContext(ctx)
	if len(rest.refs) == 0 {
		if err := api.DeleteService(ctx, name); err != nil {
			return fmt.Errorf("deleting Tailscale Service %s: %w", name, err)
		}
		c.remember(tn, name, tailnet.Service{}, false)
		log.Info("Deleted Tailscale Service", "service", name, "tailnet", tn)
		c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonDeleted, "Deleted Tailscale Service %s from tailnet %s", name, tn)
		return nil
	}
	next := cur
	next.Annotations = rest.annotations(cur.Annotations, ref, c.opts.Now(), renewAfter(c.opts.ConsumerTTL))
	if err := api.CreateOrUpdateService(ctx, next); err != nil {
		return fmt.Errorf("releasing Tailscale Service %s: %w", name, err)
	}
	c.remember(tn, name, next, true)
	log.Info("Released Tailscale Service shared with other owners", "service", name, "tailnet", tn, "owner", rest.owner())
	c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonReleased,
		"Removed this installation's reference from Tailscale Service %s; operator %s keeps it", name, rest.owner())
	return nil
}

// view is the Service as last known: the controller's own last answer from the API unless a
// poll finished after it. ok is false when nothing is known yet.
func (c *Controller) view(tn, name string) (svc tailnet.Service, exists, ok bool) {
	snap, haveSnap := c.opts.Tailnets.Snapshot(tn)
	c.mu.Lock()
	k, haveKnown := c.known[tn+"/"+name]
	c.mu.Unlock()
	if haveKnown && (!haveSnap || !snap.LastSync.After(k.at)) {
		return k.svc, k.exists, true
	}
	if !haveSnap || snap.LastSync.IsZero() {
		return tailnet.Service{}, false, false
	}
	if haveKnown {
		c.forget(tn, name)
	}
	svc, exists = snap.Service(name)
	return svc, exists, true
}

func (c *Controller) remember(tn, name string, svc tailnet.Service, exists bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known[tn+"/"+name] = knownService{svc: svc, exists: exists, at: time.Now()}
}

func (c *Controller) forget(tn, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.known, tn+"/"+name)
}

// lock serialises the writers of one Service (several TailscaleServices may share it).
func (c *Controller) lock(tn, name string) func() {
	c.mu.Lock()
	l, ok := c.locks[tn+"/"+name]
	if !ok {
		l = &sync.Mutex{}
		c.locks[tn+"/"+name] = l
	}
	c.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func hasFinalizer(obj *v1alpha1.TailscaleServices) bool { return hasFinalizerOn(obj.Finalizers) }

// withFinalizer returns fs with our finalizer present or absent.
func withFinalizer(fs []string, want bool) []string {
	out := slices.DeleteFunc(slices.Clone(fs), func(f string) bool { return f == Finalizer })
	if want {
		out = append(out, Finalizer)
	}
	return out
}

// setFinalizer adds or removes our finalizer through the main resource, returning the object
// as stored after.
func (c *Controller) setFinalizer(ctx context.Context, obj *v1alpha1.TailscaleServices, want bool) (*v1alpha1.TailscaleServices, error) {
	if hasFinalizer(obj) == want {
		return obj, nil
	}
	out := obj.DeepCopy()
	out.Finalizers = withFinalizer(obj.Finalizers, want)
	stored, err := c.client.GatewayV1alpha1().TailscaleServices(obj.Namespace).Update(ctx, out, metav1.UpdateOptions{FieldManager: "tailscale-gateway-vipservice"})
	if apierrors.IsNotFound(err) {
		return obj, nil
	}
	if err != nil {
		return nil, fmt.Errorf("updating finalizers: %w", err)
	}
	return stored, nil
}

// registryKey splits status.serviceInfo.serviceRegistryKey, "<tailnet>/<service>".
func registryKey(si *v1alpha1.ServiceInfo) (tn, name string, ok bool) {
	if si == nil {
		return "", "", false
	}
	tn, name, ok = strings.Cut(si.ServiceRegistryKey, "/")
	return tn, name, ok && name != ""
}

// writeStatus sets the controller-owned status of obj (conditions Conflict and Degraded,
// vipServiceStatus.lastRegistration, serviceInfo) and writes it when it changed. The rest of
// the status, computed by pkg/livestatus and written by the status writer, is kept.
func (c *Controller) writeStatus(ctx context.Context, obj *v1alpha1.TailscaleServices, r result) error {
	now := c.opts.Now()
	out := obj.DeepCopy()
	st := &out.Status
	gen := obj.Generation
	nowT := metav1.NewTime(now.Truncate(time.Second))

	degraded := metav1.Condition{Type: livestatus.ConditionDegraded, Status: metav1.ConditionFalse, Reason: "Reconciled",
		Message: "the Tailscale Service follows the spec", ObservedGeneration: gen, LastTransitionTime: nowT}
	conflict := metav1.Condition{Type: livestatus.ConditionConflict, Status: metav1.ConditionFalse, Reason: "NoConflict",
		Message: "no conflicting Tailscale Service", ObservedGeneration: gen, LastTransitionTime: nowT}
	switch {
	case r.unresolved && r.tailnetRef == "":
		degraded.Status, degraded.Reason = metav1.ConditionTrue, "TailnetNotFound"
		degraded.Message = "no tailnet: set endpointTemplate.tailnet or select TailscaleEndpoints"
	case r.unresolved:
		degraded.Status, degraded.Reason = metav1.ConditionTrue, "TailnetNotFound"
		degraded.Message = fmt.Sprintf("no TailscaleTailnet named %q or with spec.tailnet %q", r.tailnetRef, r.tailnetRef)
	case r.pending != "":
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, "TenancyPending", r.pending
	case r.err != nil:
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, tailnet.ReasonOf(r.err), r.err.Error()
	}
	if r.plan.action == actionConflict {
		conflict.Status, conflict.Reason, conflict.Message = metav1.ConditionTrue, "OwnedByAnotherOperator", r.plan.message
		if !r.plan.owners.present {
			conflict.Reason = "NotManaged"
		}
	}
	if obj.Spec.VIPService == nil {
		meta.RemoveStatusCondition(&st.Conditions, livestatus.ConditionConflict)
		meta.RemoveStatusCondition(&st.Conditions, livestatus.ConditionDegraded)
		meta.RemoveStatusCondition(&st.Conditions, ConditionHostsApproved)
		st.ServiceInfo = nil
	} else {
		wasConflict := meta.IsStatusConditionTrue(st.Conditions, livestatus.ConditionConflict)
		prevConflict := meta.FindStatusCondition(st.Conditions, livestatus.ConditionConflict)
		if conflict.Status == metav1.ConditionTrue && (!wasConflict || prevConflict.Message != conflict.Message) {
			c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonConflict, "%s", conflict.Message)
		}
		if r.err != nil {
			c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonReconcileFailed, "%s", r.err.Error())
		}
		meta.SetStatusCondition(&st.Conditions, conflict)
		meta.SetStatusCondition(&st.Conditions, degraded)
		switch {
		case !autoApprove(obj):
			meta.RemoveStatusCondition(&st.Conditions, ConditionHostsApproved)
		case r.hosts != nil && r.hosts.Reason != "":
			h := *r.hosts
			h.LastTransitionTime = nowT
			if prev := meta.FindStatusCondition(st.Conditions, ConditionHostsApproved); h.Reason == ReasonNoReadyHost &&
				(prev == nil || prev.Reason != ReasonNoReadyHost) {
				c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonNoReadyHost, "%s", h.Message)
			}
			meta.SetStatusCondition(&st.Conditions, h)
		}
		if r.tailnet != "" && r.err == nil {
			st.ServiceInfo = c.serviceInfo(st.ServiceInfo, r, obj.Spec.VIPService.Name, nowT)
		}
	}
	c.mu.Lock()
	reg, wrote := c.registered[obj.UID]
	c.mu.Unlock()
	if wrote && obj.Spec.VIPService != nil {
		if st.VIPServiceStatus == nil {
			st.VIPServiceStatus = &v1alpha1.VIPServiceState{ServiceName: obj.Spec.VIPService.Name}
		}
		if st.VIPServiceStatus.LastRegistration == nil || st.VIPServiceStatus.LastRegistration.Before(&reg) {
			st.VIPServiceStatus.LastRegistration = &reg
		}
	}
	if r.released {
		// The registry key no longer names a Service of ours.
		st.ServiceInfo = nil
	}
	if equality.Semantic.DeepEqual(obj.Status, out.Status) {
		return nil
	}
	_, err := c.client.GatewayV1alpha1().TailscaleServices(obj.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: "tailscale-gateway-vipservice"})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// serviceInfo is status.serviceInfo after a reconcile; lastCoordination moves only when the
// owners change.
func (c *Controller) serviceInfo(prev *v1alpha1.ServiceInfo, r result, name string, now metav1.Time) *v1alpha1.ServiceInfo {
	own := r.plan.owners
	si := &v1alpha1.ServiceInfo{
		OwnerOperator:      own.owner(),
		ConsumerOperators:  own.consumers(),
		ServiceRegistryKey: r.tailnet + "/" + name,
	}
	if r.plan.action == actionAttachReadOnly {
		si.ConsumerOperators = []string{c.opts.OperatorID}
	}
	si.MultiOperatorService = len(si.ConsumerOperators) > 0 && si.OwnerOperator != ""
	if prev != nil && prev.OwnerOperator == si.OwnerOperator && equality.Semantic.DeepEqual(prev.ConsumerOperators, si.ConsumerOperators) &&
		prev.ServiceRegistryKey == si.ServiceRegistryKey && prev.LastCoordination != nil {
		si.LastCoordination = prev.LastCoordination
	} else {
		si.LastCoordination = &now
	}
	return si
}

// CacheTailnets is Tailnets on a tailnet.Cache and a resolver of references.
type CacheTailnets struct {
	*tailnet.Cache
	ResolveFunc func(ref string) (string, bool)
}

var _ Tailnets = CacheTailnets{}

// Resolve implements Tailnets.
func (t CacheTailnets) Resolve(ref string) (string, bool) { return t.ResolveFunc(ref) }
