// Package statuswriter persists status transitions — healthy <-> unhealthy, online <-> offline,
// tailnet synced <-> not — through the status subresource, so that watchers and informers receive
// them as real events with new resourceVersions. Fields that change on every probe or poll stay
// computed on read and are never written.
package statuswriter

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/ctrlmetrics"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// Kinds of the objects whose status the writer keeps.
const (
	KindTailnet   = "TailscaleTailnet"
	KindEndpoints = "TailscaleEndpoints"
	KindServices  = "TailscaleServices"
	KindGateway   = "TailscaleGateway"
)

// key names one object in the queue.
type key struct{ kind, namespace, name string }

// Writer keeps the persisted status of every object equal to what livestatus computes, less the
// fields that change on every probe.
type Writer struct {
	client   versioned.Interface
	sources  livestatus.Sources
	recorder record.EventRecorder // nil: no Events
	scheme   *runtime.Scheme
	now      func() time.Time

	tailnets  listers.TailscaleTailnetLister
	endpoints listers.TailscaleEndpointsLister
	services  listers.TailscaleServicesLister
	gateways  listers.TailscaleGatewayLister
	synced    []cache.InformerSynced

	queue workqueue.TypedRateLimitingInterface[key]
	// writes, when set, says which objects' status this replica writes (see SetOwnership).
	writes func(kind, namespace, name string) bool
}

// New returns a writer reading objects through informers of factory and writing through client.
func New(client versioned.Interface, factory informers.SharedInformerFactory, sources livestatus.Sources) *Writer {
	registerMetrics()
	scheme := runtime.NewScheme()
	install.Install(scheme)
	gw := factory.Gateway().V1alpha1()
	w := &Writer{
		client:    client,
		sources:   sources,
		scheme:    scheme,
		now:       time.Now,
		tailnets:  gw.TailscaleTailnets().Lister(),
		endpoints: gw.TailscaleEndpoints().Lister(),
		services:  gw.TailscaleServices().Lister(),
		gateways:  gw.TailscaleGateways().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "statuswriter"}),
	}
	for kind, inf := range map[string]cache.SharedIndexInformer{
		KindTailnet:   gw.TailscaleTailnets().Informer(),
		KindEndpoints: gw.TailscaleEndpoints().Informer(),
		KindServices:  gw.TailscaleServices().Informer(),
		KindGateway:   gw.TailscaleGateways().Informer(),
	} {
		kind := kind
		enqueue := func(obj any) { w.enqueueObject(kind, obj) }
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    enqueue,
			UpdateFunc: func(_, obj any) { enqueue(obj) },
		})
		utilruntime.Must(err)
		w.synced = append(w.synced, inf.HasSynced)
	}
	// A tailnet that appears, goes or changes its spec (allowedNamespaces) may change whether
	// the objects naming it are accepted: every status is decided again.
	_, err := gw.TailscaleTailnets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { w.TailnetChanged() },
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(metav1.Object)
			n, ok2 := obj.(metav1.Object)
			if ok1 && ok2 && o.GetGeneration() != n.GetGeneration() {
				w.TailnetChanged()
			}
		},
		DeleteFunc: func(any) { w.TailnetChanged() },
	})
	utilruntime.Must(err)
	return w
}

// SetOwnership makes the writer write only the status of the objects writes reports true for:
// with several replicas, each writes the TailscaleEndpoints of its shard and the leader the
// rest. Call Resync after the answer changes. Call it before Run.
func (w *Writer) SetOwnership(writes func(kind, namespace, name string) bool) { w.writes = writes }

// Resync requeues every object, e.g. after this replica's share of the writes changed.
func (w *Writer) Resync() { w.TailnetChanged() }

// Selector returns an EndpointsSelector over the writer's informer cache.
func (w *Writer) Selector() livestatus.EndpointsSelector { return endpointsSelector{w.endpoints} }

// EndpointsChanged requeues a TailscaleEndpoints, e.g. after a health transition of one of its
// endpoints.
func (w *Writer) EndpointsChanged(namespace, name string) {
	w.queue.Add(key{KindEndpoints, namespace, name})
}

// TailnetChanged requeues every object whose status depends on tailnet state.
func (w *Writer) TailnetChanged() {
	for kind, list := range map[string]func() ([]metav1.Object, error){
		KindTailnet:   func() ([]metav1.Object, error) { return objects(w.tailnets.List(labels.Everything())) },
		KindEndpoints: func() ([]metav1.Object, error) { return objects(w.endpoints.List(labels.Everything())) },
		KindServices:  func() ([]metav1.Object, error) { return objects(w.services.List(labels.Everything())) },
		KindGateway:   func() ([]metav1.Object, error) { return objects(w.gateways.List(labels.Everything())) },
	} {
		items, err := list()
		if err != nil {
			utilruntime.HandleError(err)
			continue
		}
		for _, o := range items {
			w.queue.Add(key{kind, o.GetNamespace(), o.GetName()})
		}
	}
}

// Run processes the queue with the given number of workers until ctx is done.
func (w *Writer) Run(ctx context.Context, workers int) {
	defer w.queue.ShutDown()
	if !cache.WaitForNamedCacheSyncWithContext(ctx, w.synced...) {
		return
	}
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, w.work, time.Second)
	}
	<-ctx.Done()
}

func (w *Writer) work(ctx context.Context) {
	for {
		k, shutdown := w.queue.Get()
		if shutdown {
			return
		}
		start := time.Now()
		err := w.sync(ctx, k)
		ctrlmetrics.Observe("statuswriter", start, err)
		switch {
		case err == nil:
			w.queue.Forget(k)
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			// A newer version is on its way through the informer, or the object is gone.
			w.queue.Forget(k)
		default:
			utilruntime.HandleErrorWithContext(ctx, err, "Writing status", "kind", k.kind, "namespace", k.namespace, "name", k.name)
			w.queue.AddRateLimited(k)
		}
		w.queue.Done(k)
	}
}

func (w *Writer) enqueueObject(kind string, obj any) {
	o, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	w.queue.Add(key{kind, o.GetNamespace(), o.GetName()})
	if kind == KindEndpoints {
		// Services count the health of the endpoints they select.
		services, err := w.services.TailscaleServices(o.GetNamespace()).List(labels.Everything())
		if err != nil {
			return
		}
		for _, s := range services {
			w.queue.Add(key{KindServices, s.Namespace, s.Name})
		}
	}
}

func (w *Writer) sync(ctx context.Context, k key) error {
	if w.writes != nil && !w.writes(k.kind, k.namespace, k.name) {
		return nil
	}
	now := w.now()
	c := w.client.GatewayV1alpha1()
	opts := metav1.UpdateOptions{FieldManager: "tailscale-gateway-status"}
	switch k.kind {
	case KindTailnet:
		obj, err := w.tailnets.Get(k.name)
		if err != nil {
			return ignoreNotFound(err)
		}
		return reconcile(w.scheme, obj, &gateway.TailscaleTailnet{}, func(in *gateway.TailscaleTailnet) bool {
			livestatus.StripTailnet(&in.Status)
			st := livestatus.TailnetStatus(in, w.sources, now)
			livestatus.StripTailnet(&st)
			return setIfChanged(&in.Status, st)
		}, func(out *v1alpha1.TailscaleTailnet) error {
			_, err := c.TailscaleTailnets().UpdateStatus(ctx, out, opts)
			if err == nil {
				w.tailnetEvents(obj, out)
			}
			return countWrite(k.kind, err)
		})
	case KindEndpoints:
		obj, err := w.endpoints.TailscaleEndpoints(k.namespace).Get(k.name)
		if err != nil {
			return ignoreNotFound(err)
		}
		return reconcile(w.scheme, obj, &gateway.TailscaleEndpoints{}, func(in *gateway.TailscaleEndpoints) bool {
			livestatus.StripEndpoints(&in.Status)
			st := livestatus.Endpoints(in, w.sources, now)
			livestatus.StripEndpoints(&st)
			return setIfChanged(&in.Status, st)
		}, func(out *v1alpha1.TailscaleEndpoints) error {
			_, err := c.TailscaleEndpoints(k.namespace).UpdateStatus(ctx, out, opts)
			if err == nil {
				w.endpointEvents(obj, out)
			}
			return countWrite(k.kind, err)
		})
	case KindServices:
		obj, err := w.services.TailscaleServices(k.namespace).Get(k.name)
		if err != nil {
			return ignoreNotFound(err)
		}
		var computed gateway.TailscaleServicesStatus
		err = reconcile(w.scheme, obj, &gateway.TailscaleServices{}, func(in *gateway.TailscaleServices) bool {
			livestatus.StripServices(&in.Status)
			computed = livestatus.Services(in, w.sources, w.Selector(), now)
			w.scheduleFailback(k, in, computed, now)
			livestatus.StripServices(&computed)
			return setIfChanged(&in.Status, computed)
		}, func(out *v1alpha1.TailscaleServices) error {
			_, err := c.TailscaleServices(k.namespace).UpdateStatus(ctx, out, opts)
			return countWrite(k.kind, err)
		})
		return err
	case KindGateway:
		obj, err := w.gateways.TailscaleGateways(k.namespace).Get(k.name)
		if err != nil {
			return ignoreNotFound(err)
		}
		return reconcile(w.scheme, obj, &gateway.TailscaleGateway{}, func(in *gateway.TailscaleGateway) bool {
			livestatus.StripGateway(&in.Status)
			st := livestatus.Gateway(in, w.sources, now)
			livestatus.StripGateway(&st)
			return setIfChanged(&in.Status, st)
		}, func(out *v1alpha1.TailscaleGateway) error {
			_, err := c.TailscaleGateways(k.namespace).UpdateStatus(ctx, out, opts)
			return countWrite(k.kind, err)
		})
	}
	return fmt.Errorf("unknown kind %q", k.kind)
}

// scheduleFailback requeues a TailscaleServices that serves from its secondary tier while its
// primaries are healthy again, for when failbackDelay has passed.
func (w *Writer) scheduleFailback(k key, obj *gateway.TailscaleServices, st gateway.TailscaleServicesStatus, now time.Time) {
	ls, lb := st.LoadBalancingStatus, obj.Spec.LoadBalancing
	if ls == nil || ls.FailoverStatus == nil || ls.FailoverStatus.ActiveTier != livestatus.TierSecondary || lb == nil {
		return
	}
	if due, ok := livestatus.FailbackDue(lb.FailoverConfig, st.Conditions); ok && due.After(now) {
		w.queue.AddAfter(k, due.Sub(now))
	}
}

// reconcile converts a cached object to its internal version, lets compute set its status, and
// writes it back through update when compute reports a change. The informers read status as
// stored (the server does not overlay live status for its own loopback client), and compute
// strips the cached status to its persisted form before comparing, so that a live-only field
// never costs a write the server would turn into a no-op.
func reconcile[V interface {
	runtime.Object
	metav1.Object
}, I runtime.Object](scheme *runtime.Scheme, cached V, internal I, compute func(I) bool, update func(V) error) error {
	if err := scheme.Convert(cached, internal, nil); err != nil {
		return fmt.Errorf("converting to internal: %w", err)
	}
	if !compute(internal) {
		return nil
	}
	out := cached.DeepCopyObject().(V)
	if err := scheme.Convert(internal, out, nil); err != nil {
		return fmt.Errorf("converting from internal: %w", err)
	}
	klog.V(4).InfoS("Writing status transition", "object", klog.KObj(out))
	return update(out)
}

// setIfChanged sets *dst to src and reports whether they differed.
func setIfChanged[S any](dst *S, src S) bool {
	if equality.Semantic.DeepEqual(*dst, src) {
		return false
	}
	*dst = src
	return true
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func objects[T metav1.Object](items []T, err error) ([]metav1.Object, error) {
	out := make([]metav1.Object, len(items))
	for i, o := range items {
		out[i] = o
	}
	return out, err
}

// endpointsSelector answers livestatus with the persisted health counts of TailscaleEndpoints.
type endpointsSelector struct {
	lister listers.TailscaleEndpointsLister
}

func (s endpointsSelector) SelectEndpoints(namespace string, selector labels.Selector) []livestatus.SelectedEndpoints {
	items, err := s.lister.TailscaleEndpoints(namespace).List(selector)
	if err != nil {
		return nil
	}
	out := make([]livestatus.SelectedEndpoints, 0, len(items))
	for _, e := range items {
		sel := livestatus.SelectedEndpoints{Name: e.Name, Namespace: e.Namespace, Tailnet: e.Spec.Tailnet, Labels: e.Labels,
			Total: max(int32(len(e.Spec.Endpoints)), e.Status.TotalEndpoints), Healthy: e.Status.HealthyEndpoints}
		for _, ep := range e.Spec.Endpoints {
			sel.Machines = append(sel.Machines, strings.TrimSuffix(ep.TailscaleFQDN, "."))
			sel.Endpoints = append(sel.Endpoints, ep.Name)
		}
		// Endpoints discovered by tag are in status only (after the declared ones).
		for _, st := range e.Status.Endpoints[min(len(e.Spec.Endpoints), len(e.Status.Endpoints)):] {
			sel.Machines = append(sel.Machines, st.Name)
			sel.Endpoints = append(sel.Endpoints, st.Name)
		}
		sel.Pending = pendingEndpoints(e)
		out = append(out, sel)
	}
	return out
}

// pendingEndpoints counts e's endpoints without a probe result yet: declared ones its status does
// not list, and those whose status is Unknown.
func pendingEndpoints(e *v1alpha1.TailscaleEndpoints) int32 {
	n := max(len(e.Spec.Endpoints)-len(e.Status.Endpoints), 0)
	for _, st := range e.Status.Endpoints {
		if st.Status != livestatus.Healthy && st.Status != livestatus.Unhealthy {
			n++
		}
	}
	return int32(n)
}
