package tsgateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
	gwlistersv1b1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
)

// Condition types and reasons the controller sets. TailnetsReady is the status writer's
// (pkg/livestatus).
const (
	ConditionReady = "Ready"
	// ConditionProgrammed is Gateway API's Programmed: the generated objects are applied.
	ConditionProgrammed = "Programmed"

	ReasonConfigured       = "GatewayConfigured"
	ReasonGatewayNotFound  = "GatewayNotFound"
	ReasonTailnetNotFound  = "TailnetNotFound"
	ReasonTailnetsNotReady = "TailnetsNotReady"
	ReasonRouteConflict    = "RouteConflict"
	ReasonRouteFailed      = "RouteGenerationFailed"

	// Event reasons.
	EventRouteCreated = "RouteCreated"
	EventRouteUpdated = "RouteUpdated"
	EventRouteDeleted = "RouteDeleted"
)

// FieldManager writes the controller's changes.
const FieldManager = "tailscale-gateway-routes"

// Options configure the controller.
type Options struct {
	// Dynamic writes BackendTrafficPolicies; nil leaves retries to the extension hook and says so.
	Dynamic  dynamic.Interface
	Recorder record.EventRecorder
	Workers  int
	// Now returns the time (tests); time.Now by default.
	Now func() time.Time
	// EnvoyServices is an informer on the Services Envoy Gateway creates for Gateways (those
	// labelled EnvoyOwningGatewayName, every namespace; NewEnvoyServiceInformer); nil publishes no
	// listener on the tailnets and says so in ListenersReady.
	EnvoyServices cache.SharedIndexInformer
	// ReferenceGrants, when set, is an informer on Gateway API ReferenceGrants (v1beta1): one lets
	// TailscaleGateways of another namespace name a Gateway. Nil permits none.
	ReferenceGrants cache.SharedIndexInformer
	// ClientTrafficPolicies and EnvoyProxies, when set, are informers on Envoy Gateway's
	// (NewEnvoyGatewayInformer): a generated one changed or deleted by hand, or a user's
	// one that now conflicts, is reconciled at once instead of at the next resync.
	ClientTrafficPolicies cache.SharedIndexInformer
	EnvoyProxies          cache.SharedIndexInformer
}

// Controller generates routes for TailscaleGateways.
type Controller struct {
	client   versioned.Interface
	gwClient gwclient.Interface
	dyn      dynamic.Interface
	recorder record.EventRecorder
	workers  int
	now      func() time.Time

	gateways  listers.TailscaleGatewayLister
	tailnets  listers.TailscaleTailnetLister
	endpoints listers.TailscaleEndpointsLister
	services  listers.TailscaleServicesLister
	kgateways gwlisters.GatewayLister
	classes   gwlisters.GatewayClassLister
	routes    gwlisters.HTTPRouteLister
	envoy     corelisters.ServiceLister // nil without Options.EnvoyServices
	grants    *refgrant.Grants          // nil without Options.ReferenceGrants: same namespace only
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
}

// New returns a controller on factory's (this API) and gwFactory's (Gateway API) informers.
func New(client versioned.Interface, factory informers.SharedInformerFactory, gwClient gwclient.Interface,
	gwFactory gwinformers.SharedInformerFactory, opts Options) (*Controller, error) {
	if opts.Recorder == nil {
		return nil, errors.New("tsgateway: Recorder is required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	gw := factory.Gateway().V1alpha1()
	k := gwFactory.Gateway().V1()
	c := &Controller{
		client: client, gwClient: gwClient, dyn: opts.Dynamic, recorder: opts.Recorder, workers: opts.Workers, now: opts.Now,
		gateways: gw.TailscaleGateways().Lister(), tailnets: gw.TailscaleTailnets().Lister(),
		endpoints: gw.TailscaleEndpoints().Lister(), services: gw.TailscaleServices().Lister(),
		kgateways: k.Gateways().Lister(), classes: k.GatewayClasses().Lister(), routes: k.HTTPRoutes().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "tsgateway"}),
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{gw.TailscaleGateways().Informer(), c.enqueueGateway},
		{gw.TailscaleTailnets().Informer(), func(any) { c.enqueueAll("") }},
		{gw.TailscaleEndpoints().Informer(), c.enqueueNamespace},
		{gw.TailscaleServices().Informer(), c.enqueueNamespace},
		{k.Gateways().Informer(), c.enqueueForGateway},
		{k.HTTPRoutes().Informer(), c.enqueueForRoute},
		{k.GatewayClasses().Informer(), func(any) { c.enqueueAll("") }},
	}
	if opts.EnvoyServices != nil {
		c.envoy = corelisters.NewServiceLister(opts.EnvoyServices.GetIndexer())
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			fn  func(any)
		}{opts.EnvoyServices, c.enqueueForEnvoyService})
	}
	if opts.ReferenceGrants != nil {
		c.grants = &refgrant.Grants{Lister: gwlistersv1b1.NewReferenceGrantLister(opts.ReferenceGrants.GetIndexer())}
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			fn  func(any)
		}{opts.ReferenceGrants, func(any) { c.enqueueAll("") }})
	}
	// Generated ClientTrafficPolicies and EnvoyProxies live in the TailscaleGateway's namespace;
	// a GatewayClass's EnvoyProxy may concern TailscaleGateways of every namespace.
	if opts.ClientTrafficPolicies != nil {
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			fn  func(any)
		}{opts.ClientTrafficPolicies, c.enqueueNamespace})
	}
	if opts.EnvoyProxies != nil {
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			fn  func(any)
		}{opts.EnvoyProxies, func(any) { c.enqueueAll("") }})
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

func objectOf(obj any) (metav1.Object, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	return o, ok
}

// enqueueGateway queues a TailscaleGateway and the others naming its Gateway: which one is bound
// to it may change.
func (c *Controller) enqueueGateway(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if g, ok := obj.(*v1alpha1.TailscaleGateway); ok {
		c.enqueueReferencing(gatewayKey(g))
	}
}

// enqueueAll queues every TailscaleGateway (of namespace, when not empty).
func (c *Controller) enqueueAll(namespace string) {
	list, err := c.gateways.TailscaleGateways(namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, g := range list {
		c.queue.Add(g.Namespace + "/" + g.Name)
	}
}

func (c *Controller) enqueueNamespace(obj any) {
	if o, ok := objectOf(obj); ok {
		c.enqueueAll(o.GetNamespace())
	}
}

// enqueueReferencing queues the TailscaleGateways whose gatewayRef is namespace/name.
func (c *Controller) enqueueReferencing(namespace, name string) {
	list, err := c.gateways.List(labels.Everything())
	if err != nil {
		return
	}
	for _, g := range list {
		if ns, n := gatewayKey(g); ns == namespace && n == name {
			c.queue.Add(g.Namespace + "/" + g.Name)
		}
	}
}

// enqueueForEnvoyService queues the TailscaleGateways of the Gateway an Envoy Service is for.
func (c *Controller) enqueueForEnvoyService(obj any) {
	if o, ok := objectOf(obj); ok {
		if name := o.GetLabels()[EnvoyOwningGatewayName]; name != "" {
			c.enqueueReferencing(o.GetLabels()[EnvoyOwningGatewayNamespace], name)
		}
	}
}

func (c *Controller) enqueueForGateway(obj any) {
	if o, ok := objectOf(obj); ok {
		c.enqueueReferencing(o.GetNamespace(), o.GetName())
		// The TailscaleGateway that attached its EnvoyProxy, deleted or not (then its reference
		// is removed).
		if owner := o.GetAnnotations()[AnnotationEnvoyProxyOf]; owner != "" {
			c.queue.Add(o.GetNamespace() + "/" + owner)
		}
	}
}

// enqueueForRoute queues the TailscaleGateways of the route's namespace (its name may be one
// they generate) and those whose Gateway it attaches to (their routeCount).
func (c *Controller) enqueueForRoute(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	r, ok := obj.(*gwapiv1.HTTPRoute)
	if !ok {
		return
	}
	c.enqueueAll(r.Namespace)
	for _, p := range r.Spec.ParentRefs {
		if isGatewayParent(p) {
			c.enqueueReferencing(parentNamespace(p, r.Namespace), string(p.Name))
		}
	}
}

func isGatewayParent(p gwapiv1.ParentReference) bool {
	return (p.Group == nil || string(*p.Group) == gwapiv1.GroupName) && (p.Kind == nil || string(*p.Kind) == "Gateway")
}

func parentNamespace(p gwapiv1.ParentReference, routeNamespace string) string {
	if p.Namespace != nil && *p.Namespace != "" {
		return string(*p.Namespace)
	}
	return routeNamespace
}

func gatewayKey(g *v1alpha1.TailscaleGateway) (string, string) { return refgrant.GatewayOf(g) }

// binding says why gw is not bound to the Gateway it names (reason and message), or "" when it
// is: the Gateway must be in gw's namespace or a ReferenceGrant there must permit it, and of the
// TailscaleGateways naming one Gateway only the oldest is bound (refgrant.Bound).
func (c *Controller) binding(gw *v1alpha1.TailscaleGateway) (reason, message string) {
	if ok, msg := c.grants.GatewayPermitted(gw); !ok {
		return refgrant.ReasonRefNotPermitted, msg
	}
	all, err := c.gateways.List(labels.Everything())
	if err != nil {
		return "", ""
	}
	ns, name := gatewayKey(gw)
	if winner := c.grants.Bound(all, ns, name, nil); winner != nil && winner.UID != gw.UID {
		return refgrant.ReasonGatewayConflict, refgrant.ConflictMessage(gw, winner)
	}
	return "", ""
}

// Run reconciles until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	klog.InfoS("TailscaleGateway route controller started", "workers", c.workers)
	for range c.workers {
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
			utilruntime.HandleErrorWithContext(ctx, err, "Reconciling TailscaleGateway", "key", key)
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
	conflicts []string
	failures  []string
	// applied counts the routes of each tailnet that exist as generated.
	applied map[string]int32
	// listeners is what the Gateway's listeners got on the tailnets.
	listeners listenerResult
	// clientTLS is the ClientTrafficPolicy of security.mtls.
	clientTLS clientTLSResult
	// observability is the EnvoyProxy of spec.observability.
	observability observabilityResult
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	gw, err := c.gateways.TailscaleGateways(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// The garbage collector deletes what it owned; the Gateway's reference to its
		// EnvoyProxy is removed here.
		return c.detachEnvoyProxy(ctx, ns, name)
	}
	if err != nil {
		return err
	}
	if gw.DeletionTimestamp != nil {
		return nil
	}
	in := Input{Gateway: gw, Tailnets: map[string]*v1alpha1.TailscaleTailnet{}}
	var missingTailnets []string
	for _, t := range gw.Spec.Tailnets {
		tn, err := c.tailnets.Get(t.TailscaleTailnetRef.Name)
		if err != nil {
			missingTailnets = append(missingTailnets, t.TailscaleTailnetRef.Name)
			continue
		}
		in.Tailnets[tn.Name] = tn
	}
	if in.Endpoints, err = c.endpoints.TailscaleEndpoints(ns).List(labels.Everything()); err != nil {
		return err
	}
	if in.Services, err = c.services.TailscaleServices(ns).List(labels.Everything()); err != nil {
		return err
	}
	res := result{out: Generate(in), applied: map[string]int32{}}
	res.listeners.unboundReason, res.listeners.unbound = c.binding(gw)
	if prev := meta.FindStatusCondition(gw.Status.Conditions, ConditionReady); res.listeners.unboundReason != "" &&
		(prev == nil || prev.Reason != res.listeners.unboundReason || prev.Message != res.listeners.unbound) {
		c.recorder.Event(gw, "Warning", res.listeners.unboundReason, res.listeners.unbound)
	}
	// The listener objects first: the path routes of /gateway/ go to them (pathroutes.go).
	if err := c.applyListeners(ctx, gw, in.Tailnets, &res.listeners); err != nil {
		return err
	}
	pathConflicts, err := c.addPathRoutes(gw, in, &res)
	if err != nil {
		return err
	}
	if err := c.applyRoutes(ctx, gw, &res); err != nil {
		return err
	}
	res.conflicts = append(res.conflicts, pathConflicts...)
	if err := c.applyPolicies(ctx, gw, &res); err != nil {
		return err
	}
	if err := c.applyClientTLS(ctx, gw, &res.clientTLS); err != nil {
		return err
	}
	// Client certificates asked for and not validated make the TailscaleGateway not Ready.
	for _, p := range []string{res.clientTLS.refused, res.clientTLS.conflict, res.clientTLS.failure} {
		if p != "" {
			res.failures = append(res.failures, "client TLS: "+p)
		}
	}
	if err := c.applyEnvoyProxy(ctx, gw, res.listeners.unbound, &res.observability); err != nil {
		return err
	}
	return c.writeStatus(ctx, gw, in, res, missingTailnets)
}

// controlledBy reports whether o's controller is gw.
func controlledBy(o metav1.Object, gw *v1alpha1.TailscaleGateway) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == gw.UID
}

func (c *Controller) applyRoutes(ctx context.Context, gw *v1alpha1.TailscaleGateway, res *result) error {
	client := c.gwClient.GatewayV1().HTTPRoutes(gw.Namespace)
	want := map[string]bool{}
	var errs []error
	for _, r := range res.out.Routes {
		want[r.Name] = true
		cur, err := c.routes.HTTPRoutes(gw.Namespace).Get(r.Name)
		switch {
		case apierrors.IsNotFound(err):
			if _, err := client.Create(ctx, r, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
				if apierrors.IsAlreadyExists(err) {
					errs = append(errs, err) // the cache is behind; retry
					continue
				}
				res.failures = append(res.failures, fmt.Sprintf("HTTPRoute %s: %v", r.Name, err))
				continue
			}
			c.recorder.Eventf(gw, "Normal", EventRouteCreated, "Created HTTPRoute %s", r.Name)
		case err != nil:
			return err
		case !controlledBy(cur, gw):
			res.conflicts = append(res.conflicts, "HTTPRoute "+r.Name)
			continue
		case !equality.Semantic.DeepEqual(cur.Spec, r.Spec) || !labelsContain(cur.Labels, r.Labels):
			upd := cur.DeepCopy()
			upd.Spec = r.Spec
			upd.Labels = mergeLabels(cur.Labels, r.Labels)
			if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
				if apierrors.IsConflict(err) {
					errs = append(errs, err)
					continue
				}
				res.failures = append(res.failures, fmt.Sprintf("HTTPRoute %s: %v", r.Name, err))
				continue
			}
			c.recorder.Eventf(gw, "Normal", EventRouteUpdated, "Updated HTTPRoute %s", r.Name)
		}
		res.applied[r.Labels[LabelTailnet]]++
	}
	// Routes this TailscaleGateway generated that the spec no longer asks for.
	sel := labels.SelectorFromSet(labels.Set{LabelGateway: gw.Name, LabelManagedBy: ManagedBy})
	existing, err := c.routes.HTTPRoutes(gw.Namespace).List(sel)
	if err != nil {
		return err
	}
	for _, r := range existing {
		if want[r.Name] || !controlledBy(r, gw) {
			continue
		}
		uid := r.UID
		err := client.Delete(ctx, r.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		c.recorder.Eventf(gw, "Normal", EventRouteDeleted, "Deleted HTTPRoute %s", r.Name)
	}
	if len(res.conflicts) > 0 {
		c.recorder.Eventf(gw, "Warning", ReasonRouteConflict, "Not generated, the name is taken by an object this TailscaleGateway does not control: %s",
			strings.Join(res.conflicts, ", "))
	}
	return errors.Join(errs...)
}

func labelsContain(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

// applyPolicies creates, updates and deletes the BackendTrafficPolicies of egress retries.
// Without a dynamic client, or when Envoy Gateway's CRD is not installed, desired policies are
// reported as failures (the extension hook then applies the retries itself).
func (c *Controller) applyPolicies(ctx context.Context, gw *v1alpha1.TailscaleGateway, res *result) error {
	if c.dyn == nil {
		if len(res.out.Policies) > 0 {
			res.failures = append(res.failures, "BackendTrafficPolicies for egress retries: no client configured")
		}
		return nil
	}
	client := c.dyn.Resource(BackendTrafficPolicyGVR).Namespace(gw.Namespace)
	sel := labels.SelectorFromSet(labels.Set{LabelGateway: gw.Name, LabelManagedBy: ManagedBy}).String()
	existing, err := client.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		if len(res.out.Policies) > 0 {
			res.failures = append(res.failures, "BackendTrafficPolicies for egress retries: gateway.envoyproxy.io/v1alpha1 is not served (Envoy Gateway's CRDs are not installed)")
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing BackendTrafficPolicies: %w", err)
	}
	have := map[string]*unstructured.Unstructured{}
	for i := range existing.Items {
		have[existing.Items[i].GetName()] = &existing.Items[i]
	}
	var errs []error
	want := map[string]bool{}
	for _, p := range res.out.Policies {
		want[p.GetName()] = true
		cur, ok := have[p.GetName()]
		if !ok {
			got, err := client.Get(ctx, p.GetName(), metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				if _, err := client.Create(ctx, p, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
					res.failures = append(res.failures, fmt.Sprintf("BackendTrafficPolicy %s: %v", p.GetName(), err))
				}
				continue
			case err != nil:
				errs = append(errs, err)
				continue
			}
			cur = got
		}
		if !controlledBy(cur, gw) {
			res.conflicts = append(res.conflicts, "BackendTrafficPolicy "+p.GetName())
			continue
		}
		if subset(p.Object["spec"], cur.Object["spec"]) && labelsContain(cur.GetLabels(), p.GetLabels()) {
			continue
		}
		upd := cur.DeepCopy()
		upd.Object["spec"] = p.Object["spec"]
		upd.SetLabels(mergeLabels(cur.GetLabels(), p.GetLabels()))
		if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			errs = append(errs, err)
		}
	}
	for name, cur := range have {
		if want[name] || !controlledBy(cur, gw) {
			continue
		}
		uid := types.UID(cur.GetUID())
		if err := client.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeStatus sets the fields the controller owns (see livestatus.Gateway for the others).
func (c *Controller) writeStatus(ctx context.Context, gw *v1alpha1.TailscaleGateway, in Input, res result, missingTailnets []string) error {
	st := gw.Status.DeepCopy()
	now := metav1.NewTime(c.now().Truncate(time.Second))

	// Per tailnet: routes that exist as generated.
	for _, t := range gw.Spec.Tailnets {
		i := slices.IndexFunc(st.Tailnets, func(s v1alpha1.TailnetStatus) bool { return s.Name == t.Name })
		if i < 0 {
			st.Tailnets = append(st.Tailnets, v1alpha1.TailnetStatus{Name: t.Name, Status: "Unknown"})
			i = len(st.Tailnets) - 1
		}
		st.Tailnets[i].RoutesGenerated = res.applied[t.Name]
	}
	st.Tailnets = slices.DeleteFunc(st.Tailnets, func(s v1alpha1.TailnetStatus) bool {
		return !slices.ContainsFunc(gw.Spec.Tailnets, func(t v1alpha1.TailnetConfiguration) bool { return t.Name == s.Name })
	})

	st.ServiceInfo = c.serviceInfo(in, res.out.Backends)

	gwNS, gwName := gatewayKey(gw)
	info := &v1alpha1.GatewayInfo{}
	kgw, gwErr := c.kgateways.Gateways(gwNS).Get(gwName)
	if gwErr == nil {
		info.ListenerCount = int32(len(kgw.Spec.Listeners))
	}
	info.RouteCount = c.routeCount(gwNS, gwName)

	cond := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonConfigured, ObservedGeneration: gw.Generation}
	var total int32
	for _, n := range res.applied {
		total += n
	}
	cond.Message = fmt.Sprintf("Gateway %s/%s has %d listeners; %d routes generated", gwNS, gwName, info.ListenerCount, total)
	generated := cond
	tailnetsReady := meta.FindStatusCondition(gw.Status.Conditions, "TailnetsReady")
	switch {
	case res.listeners.unboundReason != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, res.listeners.unboundReason, res.listeners.unbound
	case gwErr != nil:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonGatewayNotFound
		cond.Message = fmt.Sprintf("Gateway %s/%s not found", gwNS, gwName)
	case len(missingTailnets) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonTailnetNotFound
		cond.Message = "TailscaleTailnet not found: " + strings.Join(missingTailnets, ", ")
	case len(res.conflicts) > 0 || len(res.listeners.conflicts) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonRouteConflict
		cond.Message = "Names taken by objects this TailscaleGateway does not control (left alone): " +
			strings.Join(append(slices.Clone(res.conflicts), res.listeners.conflicts...), ", ")
	case len(res.failures) > 0 || len(res.out.Problems) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonRouteFailed
		cond.Message = strings.Join(append(slices.Clone(res.out.Problems), res.failures...), "; ")
	case tailnetsReady != nil && tailnetsReady.Status != metav1.ConditionTrue:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonTailnetsNotReady
		cond.Message = tailnetsReady.Message
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	// Programmed (Gateway API's): what this TailscaleGateway generates is in place; unlike Ready,
	// tailnets still connecting do not make it False.
	programmed := cond
	if cond.Reason == ReasonTailnetsNotReady {
		programmed = generated
	}
	programmed.Type = ConditionProgrammed
	meta.SetStatusCondition(&st.Conditions, programmed)
	supported := metav1.Condition{Type: ConditionSupported, Status: metav1.ConditionTrue, Reason: ReasonAllSupported,
		Message: "Every set field takes effect", ObservedGeneration: gw.Generation}
	if u := Unsupported(gw); len(u) > 0 {
		supported.Status, supported.Reason = metav1.ConditionFalse, ReasonFieldsNotSupported
		supported.Message = "Set but not supported yet (no effect): " + strings.Join(u, ", ")
	}
	meta.SetStatusCondition(&st.Conditions, supported)
	meta.SetStatusCondition(&st.Conditions, listenersCondition(gw, res.listeners))
	meta.SetStatusCondition(&st.Conditions, clientTLSCondition(gw, res.clientTLS))
	meta.SetStatusCondition(&st.Conditions, observabilityCondition(gw, res.observability))

	// lastReconciled moves only with a change, or the status would be rewritten on every pass.
	if old := gw.Status.GatewayInfo; old != nil {
		info.LastReconciled = old.LastReconciled
	}
	probe := st.DeepCopy()
	probe.GatewayInfo = info
	if equality.Semantic.DeepEqual(*probe, gw.Status) && info.LastReconciled != nil {
		return nil
	}
	info.LastReconciled = &now
	st.GatewayInfo = info
	out := gw.DeepCopy()
	out.Status = *st
	_, err := c.client.GatewayV1alpha1().TailscaleGateways(gw.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// serviceInfo counts the backends routes were generated for: healthy when a TailscaleEndpoints
// has a healthy endpoint or a TailscaleServices is Ready, unhealthy when it has endpoints and
// none is healthy (or is not Ready), neither while unknown.
func (c *Controller) serviceInfo(in Input, generated map[string]bool) *v1alpha1.GatewayServiceInfo {
	info := &v1alpha1.GatewayServiceInfo{}
	for _, e := range in.Endpoints {
		if !generated[backends.KindEndpoints+"/"+e.Name] {
			continue
		}
		info.TotalServices++
		switch {
		case e.Status.HealthyEndpoints > 0:
			info.HealthyServices++
		case e.Status.TotalEndpoints > 0:
			info.UnhealthyServices++
		}
	}
	for _, s := range in.Services {
		if !generated[backends.KindServices+"/"+s.Name] {
			continue
		}
		info.TotalServices++
		if r := meta.FindStatusCondition(s.Status.Conditions, ConditionReady); r != nil {
			switch r.Status {
			case metav1.ConditionTrue:
				info.HealthyServices++
			case metav1.ConditionFalse:
				info.UnhealthyServices++
			}
		}
	}
	return info
}

// routeCount counts the HTTPRoutes attached to the Gateway namespace/name, generated or not.
func (c *Controller) routeCount(namespace, name string) int32 {
	list, err := c.routes.List(labels.Everything())
	if err != nil {
		return 0
	}
	var n int32
	for _, r := range list {
		if slices.ContainsFunc(r.Spec.ParentRefs, func(p gwapiv1.ParentReference) bool {
			return isGatewayParent(p) && string(p.Name) == name && parentNamespace(p, r.Namespace) == namespace
		}) {
			n++
		}
	}
	return n
}

// subset reports whether every field of want is in have with the same value (maps recursively;
// have may hold more fields, such as defaults the API server added).
func subset(want, have any) bool {
	wm, ok := want.(map[string]any)
	if !ok {
		return equality.Semantic.DeepEqual(want, have)
	}
	hm, ok := have.(map[string]any)
	if !ok {
		return false
	}
	for k, v := range wm {
		if !subset(v, hm[k]) {
			return false
		}
	}
	return true
}
