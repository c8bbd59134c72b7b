package publish

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// Kinds published.
const (
	KindEndpoints = "TailscaleEndpoints"
	KindServices  = "TailscaleServices"
)

// EventNameTaken is the Event reason when a Service of the published name is not ours.
const EventNameTaken = "PublishedServiceNameTaken"

// FieldManager writes published objects.
const FieldManager = "tailscale-gateway-publish"

// Controller keeps the published Services and EndpointSlices.
type Controller struct {
	kube      kubernetes.Interface
	dyn       dynamic.Interface // nil: no Backends
	proxy     ProxyAddresser
	recorder  record.EventRecorder
	endpoints listers.TailscaleEndpointsLister
	services  listers.TailscaleServicesLister
	kservices corelisters.ServiceLister
	kslices   discoverylisters.EndpointSliceLister
	synced    []cache.InformerSynced
	cleanup   []func()
	queue     workqueue.TypedRateLimitingInterface[string]
}

// New returns a controller on factory's informers and kubeFactory's, which must select objects
// labelled LabelManagedBy=ManagedBy (NewKubeFactory). With dyn, it also publishes Envoy
// Gateway Backends (DesiredBackends) wherever Envoy Gateway's Backend CRD is served.
func New(kube kubernetes.Interface, dyn dynamic.Interface, factory informers.SharedInformerFactory, kubeFactory kubeinformers.SharedInformerFactory,
	proxy ProxyAddresser, recorder record.EventRecorder) (*Controller, error) {
	if proxy == nil || recorder == nil {
		return nil, errors.New("publish: proxy and recorder are required")
	}
	gw := factory.Gateway().V1alpha1()
	c := &Controller{kube: kube, dyn: dyn, proxy: proxy, recorder: recorder,
		endpoints: gw.TailscaleEndpoints().Lister(), services: gw.TailscaleServices().Lister(),
		kservices: kubeFactory.Core().V1().Services().Lister(), kslices: kubeFactory.Discovery().V1().EndpointSlices().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "publish"})}
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{gw.TailscaleEndpoints().Informer(), c.onEndpoints},
		{gw.TailscaleServices().Informer(), func(o any) { c.enqueue(KindServices, o) }},
		{kubeFactory.Core().V1().Services().Informer(), c.onPublished},
		{kubeFactory.Discovery().V1().EndpointSlices().Informer(), c.onPublished},
	} {
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

// NewKubeFactory returns the core informer factory the controller needs: published objects only.
func NewKubeFactory(kube kubernetes.Interface, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync, kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelManagedBy + "=" + ManagedBy
	}))
}

func metaOf(obj any) (metav1.Object, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	return o, ok
}

func (c *Controller) enqueue(kind string, obj any) {
	if o, ok := metaOf(obj); ok {
		c.queue.Add(kind + "/" + o.GetNamespace() + "/" + o.GetName())
	}
}

// onEndpoints queues the TailscaleEndpoints and every TailscaleServices of its namespace (they
// may select it).
func (c *Controller) onEndpoints(obj any) {
	o, ok := metaOf(obj)
	if !ok {
		return
	}
	c.enqueue(KindEndpoints, obj)
	list, err := c.services.TailscaleServices(o.GetNamespace()).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range list {
		c.queue.Add(KindServices + "/" + s.Namespace + "/" + s.Name)
	}
}

// WatchProxies queues again what is published for a TailscaleEndpoints when an object of inf
// changes that parentOf maps to it (the proxy Services a ProxyAddresser reads, in another
// namespace than the TailscaleEndpoints), until Run ends.
// Call it before Run.
func (c *Controller) WatchProxies(inf cache.SharedIndexInformer, parentOf func(metav1.Object) (types.NamespacedName, bool)) error {
	fn := func(obj any) {
		if o, ok := metaOf(obj); ok {
			if parent, ok := parentOf(o); ok {
				c.onEndpoints(&metav1.ObjectMeta{Namespace: parent.Namespace, Name: parent.Name})
			}
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: fn, UpdateFunc: func(_, o any) { fn(o) }, DeleteFunc: fn})
	if err != nil {
		return err
	}
	c.synced = append(c.synced, reg.HasSynced)
	c.cleanup = append(c.cleanup, func() { _ = inf.RemoveEventHandler(reg) })
	return nil
}

// onPublished queues the owner of a published Service or EndpointSlice (drift repair).
func (c *Controller) onPublished(obj any) {
	o, ok := metaOf(obj)
	if !ok {
		return
	}
	svc := o.GetName()
	if s, ok := o.GetLabels()[discoveryv1.LabelServiceName]; ok {
		got, err := c.kservices.Services(o.GetNamespace()).Get(s)
		if err != nil {
			return
		}
		o, svc = got, got.Name
	}
	l := o.GetLabels()
	if kind, name := l[LabelKind], l[LabelObject]; kind != "" && name != "" && ServiceName(kind, name) == svc {
		c.queue.Add(kind + "/" + o.GetNamespace() + "/" + name)
	}
}

// Run reconciles until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	defer func() {
		for _, f := range c.cleanup {
			f()
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	klog.InfoS("Backend publisher started", "workers", workers)
	for range workers {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for {
				key, shutdown := c.queue.Get()
				if shutdown {
					return
				}
				if err := c.sync(ctx, key); err != nil {
					utilruntime.HandleErrorWithContext(ctx, err, "Publishing backend", "key", key)
					c.queue.AddRateLimited(key)
				} else {
					c.queue.Forget(key)
				}
				c.queue.Done(key)
			}
		}, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) sync(ctx context.Context, key string) error {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return nil
	}
	kind, ns, name := parts[0], parts[1], parts[2]
	var owner Owner
	var members []*v1alpha1.TailscaleEndpoints
	var ownerObj runtime.Object
	switch kind {
	case KindEndpoints:
		e, err := c.endpoints.TailscaleEndpoints(ns).Get(name)
		if apierrors.IsNotFound(err) {
			return nil // the garbage collector deletes its Service and EndpointSlices
		} else if err != nil {
			return err
		}
		owner, members, ownerObj = Owner{kind, ns, name, string(e.UID)}, []*v1alpha1.TailscaleEndpoints{e}, e
	case KindServices:
		s, err := c.services.TailscaleServices(ns).Get(name)
		if apierrors.IsNotFound(err) {
			return nil
		} else if err != nil {
			return err
		}
		owner, ownerObj = Owner{kind, ns, name, string(s.UID)}, s
		if s.Spec.Selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
			if err == nil && !sel.Empty() {
				if members, err = c.endpoints.TailscaleEndpoints(ns).List(sel); err != nil {
					return err
				}
			}
		}
	default:
		return nil
	}
	backendsErr := c.applyBackends(ctx, owner, ownerObj, members)
	svc, slices := Desired(owner, members, c.proxy)
	if len(svc.Spec.Ports) == 0 {
		return errors.Join(backendsErr, c.deletePublished(ctx, ns, svc.Name, owner.UID))
	}
	cur, err := c.kservices.Services(ns).Get(svc.Name)
	switch {
	case apierrors.IsNotFound(err):
		if _, err := c.kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Service %s/%s: %w", ns, svc.Name, err)
		}
	case err != nil:
		return err
	case !controlledBy(cur, owner.UID):
		c.recorder.Eventf(ownerObj, corev1.EventTypeWarning, EventNameTaken, "Service %s exists and is not published for this object: left alone", svc.Name)
		return nil
	case !equality.Semantic.DeepEqual(cur.Spec.Ports, svc.Spec.Ports):
		upd := cur.DeepCopy()
		upd.Spec.Ports = svc.Spec.Ports
		if _, err := c.kube.CoreV1().Services(ns).Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("updating Service %s/%s: %w", ns, svc.Name, err)
		}
	}
	if cur == nil {
		if cur, err = c.kube.CoreV1().Services(ns).Get(ctx, svc.Name, metav1.GetOptions{}); err != nil {
			return err
		}
	}
	return errors.Join(backendsErr, c.applySlices(ctx, cur, slices))
}

func controlledBy(o metav1.Object, uid string) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && string(ref.UID) == uid
}

func (c *Controller) applySlices(ctx context.Context, svc *corev1.Service, want []*discoveryv1.EndpointSlice) error {
	ns := svc.Namespace
	controller := true
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: &controller}
	have, err := c.kslices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name}))
	if err != nil {
		return err
	}
	have = slices.DeleteFunc(have, func(s *discoveryv1.EndpointSlice) bool {
		m := s.Labels[discoveryv1.LabelManagedBy]
		return m != SliceManager && m != LegacySliceManager
	})
	byName := map[string]*discoveryv1.EndpointSlice{}
	for _, s := range have {
		byName[s.Name] = s
	}
	client := c.kube.DiscoveryV1().EndpointSlices(ns)
	var errs []error
	wanted := map[string]bool{}
	for _, s := range want {
		wanted[s.Name] = true
		s.OwnerReferences = []metav1.OwnerReference{owner}
		cur, ok := byName[s.Name]
		if !ok {
			if _, err := client.Create(ctx, s, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("creating EndpointSlice %s/%s: %w", ns, s.Name, err))
			}
			continue
		}
		if equality.Semantic.DeepEqual(cur.Endpoints, s.Endpoints) && equality.Semantic.DeepEqual(cur.Ports, s.Ports) &&
			cur.AddressType == s.AddressType && cur.Labels[discoveryv1.LabelManagedBy] == SliceManager {
			continue
		}
		if cur.AddressType != s.AddressType { // immutable
			if err := client.Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue // recreated on the requeue its deletion causes
		}
		upd := cur.DeepCopy()
		upd.Endpoints, upd.Ports = s.Endpoints, s.Ports
		upd.Labels[discoveryv1.LabelManagedBy] = SliceManager // a slice of an earlier version
		if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			errs = append(errs, fmt.Errorf("updating EndpointSlice %s/%s: %w", ns, s.Name, err))
		}
	}
	for name := range byName {
		if !wanted[name] {
			if err := client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// deletePublished deletes the Service name (and so, through the garbage collector, its
// EndpointSlices) when it is published for the owner uid: the object has no endpoints to publish.
func (c *Controller) deletePublished(ctx context.Context, ns, name, uid string) error {
	cur, err := c.kservices.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || !controlledBy(cur, uid) {
		return err
	}
	if err := c.kube.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// EventBackendNameTaken is the Event reason when a Backend of a published name is not ours.
const EventBackendNameTaken = "PublishedBackendNameTaken"

// applyBackends creates, updates and deletes owner's Envoy Gateway Backends. Nothing is done
// without a dynamic client or where the Backend CRD is not served (Envoy Gateway not installed,
// or installed without it).
func (c *Controller) applyBackends(ctx context.Context, owner Owner, ownerObj runtime.Object, members []*v1alpha1.TailscaleEndpoints) error {
	if c.dyn == nil {
		return nil
	}
	client := c.dyn.Resource(BackendGVR).Namespace(owner.Namespace)
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelKind: owner.Kind, LabelObject: owner.Name}).String()
	existing, err := client.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing Backends: %w", err)
	}
	want, err := DesiredBackends(owner, members, c.proxy)
	if err != nil {
		return err
	}
	have := map[string]*unstructured.Unstructured{}
	for i := range existing.Items {
		if controlledBy(&existing.Items[i], owner.UID) {
			have[existing.Items[i].GetName()] = &existing.Items[i]
		}
	}
	var errs []error
	wanted := map[string]bool{}
	for _, b := range want {
		wanted[b.GetName()] = true
		cur, ok := have[b.GetName()]
		if !ok {
			_, err := client.Create(ctx, b, metav1.CreateOptions{FieldManager: FieldManager})
			if apierrors.IsAlreadyExists(err) {
				c.recorder.Eventf(ownerObj, corev1.EventTypeWarning, EventBackendNameTaken, "Backend %s exists and is not published for this object: left alone", b.GetName())
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("creating Backend %s/%s: %w", owner.Namespace, b.GetName(), err))
			}
			continue
		}
		if equality.Semantic.DeepEqual(cur.Object["spec"], b.Object["spec"]) {
			continue
		}
		upd := cur.DeepCopy()
		upd.Object["spec"] = b.Object["spec"]
		if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			errs = append(errs, fmt.Errorf("updating Backend %s/%s: %w", owner.Namespace, b.GetName(), err))
		}
	}
	for name, cur := range have {
		if wanted[name] {
			continue
		}
		uid := cur.GetUID()
		if err := client.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
