// Package autoprovision creates the TailscaleEndpoints a TailscaleServices' endpointTemplate
// describes when its selector matches none, and deletes it when it is no longer needed: when
// other TailscaleEndpoints match, the template goes, or the TailscaleServices is deleted. The
// created object is named "<service>-auto", annotated gateway.tailscale.com/auto-provisioned,
// and owned (ownerReference) by the TailscaleServices, so that Kubernetes' garbage collector
// removes it in cluster mode; this controller deletes it itself too, since a standalone server
// has no garbage collector.
package autoprovision

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/ctrlmetrics"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Annotation marks auto-provisioned TailscaleEndpoints. LegacyAnnotation, the key of the API
// contract and of earlier versions, is still read, so that objects they provisioned stay ours;
// the controller replaces it with Annotation on its next write of such an object.
const (
	Annotation       = "gateway.tailscale.com/auto-provisioned"
	LegacyAnnotation = "tailscale-gateway.com/auto-provisioned"
)

// IsAutoProvisioned reports whether obj carries Annotation or LegacyAnnotation "true".
func IsAutoProvisioned(obj metav1.Object) bool {
	a := obj.GetAnnotations()
	return a[Annotation] == "true" || a[LegacyAnnotation] == "true"
}

// Suffix is appended to the TailscaleServices' name.
const Suffix = "-auto"

// Event reasons.
const (
	ReasonProvisioned   = "EndpointsProvisioned"
	ReasonUpdated       = "EndpointsUpdated"
	ReasonDeprovisioned = "EndpointsDeprovisioned"
	ReasonNameTaken     = "EndpointsNameTaken"
	ReasonFailed        = "ProvisioningFailed"
)

// Controller provisions TailscaleEndpoints from endpoint templates.
type Controller struct {
	policy   *tenancy.Policy
	client   versioned.Interface
	services listers.TailscaleServicesLister
	eps      listers.TailscaleEndpointsLister
	recorder record.EventRecorder
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
}

// New returns a controller on factory's informers.
// policy decides whether a template's tailnet admits the namespace (nil: every tailnet does).
func New(client versioned.Interface, factory informers.SharedInformerFactory, recorder record.EventRecorder, policy *tenancy.Policy) (*Controller, error) {
	gw := factory.Gateway().V1alpha1()
	c := &Controller{
		policy:   policy,
		client:   client,
		services: gw.TailscaleServices().Lister(),
		eps:      gw.TailscaleEndpoints().Lister(),
		recorder: recorder,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "autoprovision"}),
	}
	svcInf := gw.TailscaleServices().Informer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	}); err != nil {
		return nil, err
	}
	// Endpoints change what a selector matches; an auto-provisioned one names its owner.
	epInf := gw.TailscaleEndpoints().Informer()
	byNamespace := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		e, ok := obj.(*v1alpha1.TailscaleEndpoints)
		if !ok {
			return
		}
		for _, ref := range e.OwnerReferences {
			if ref.Kind == "TailscaleServices" {
				c.queue.Add(e.Namespace + "/" + ref.Name)
			}
		}
		items, _ := c.services.TailscaleServices(e.Namespace).List(labels.Everything())
		for _, s := range items {
			if s.Spec.EndpointTemplate != nil {
				c.queue.Add(s.Namespace + "/" + s.Name)
			}
		}
	}
	if _, err := epInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: byNamespace, UpdateFunc: func(_, o any) { byNamespace(o) }, DeleteFunc: byNamespace,
	}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{svcInf.HasSynced, epInf.HasSynced}
	return c, nil
}

// Run reconciles until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return
	}
	for range workers {
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
		start := time.Now()
		err := c.sync(ctx, key)
		ctrlmetrics.Observe("autoprovision", start, err)
		if err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Provisioning TailscaleEndpoints", "object", key)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// ownedBy reports whether e is auto-provisioned for the TailscaleServices of uid (any uid when
// uid is empty).
func ownedBy(e *v1alpha1.TailscaleEndpoints, name string, uid types.UID) bool {
	if !IsAutoProvisioned(e) {
		return false
	}
	for _, r := range e.OwnerReferences {
		if r.Kind == "TailscaleServices" && r.Name == name && (uid == "" || r.UID == uid) {
			return true
		}
	}
	return false
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	autoName := name + Suffix
	existing, err := c.eps.TailscaleEndpoints(ns).Get(autoName)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apierrors.IsNotFound(err) {
		existing = nil
	}
	svc, err := c.services.TailscaleServices(ns).Get(name)
	if apierrors.IsNotFound(err) {
		svc = nil
	} else if err != nil {
		return err
	}
	if svc != nil && svc.DeletionTimestamp == nil && svc.Spec.EndpointTemplate != nil &&
		c.policy.Decide(svc.Namespace, svc.Spec.EndpointTemplate.Tailnet).Unknown {
		// The namespace's labels are not known yet: neither provision nor delete until they are.
		return fmt.Errorf("tenancy of namespace %s is not decided yet", svc.Namespace)
	}
	needed, desired := c.desired(svc)
	switch {
	case existing != nil && !ownedBy(existing, name, ""):
		if needed {
			c.recorder.Eventf(svc, corev1.EventTypeWarning, ReasonNameTaken,
				"TailscaleEndpoints %s/%s exists and was not provisioned for this TailscaleServices; not provisioning", ns, autoName)
		}
		return nil
	case !needed && existing != nil:
		return c.delete(ctx, svc, existing)
	case !needed:
		return nil
	case existing == nil:
		if _, err := c.client.GatewayV1alpha1().TailscaleEndpoints(ns).Create(ctx, desired, metav1.CreateOptions{FieldManager: "tailscale-gateway-autoprovision"}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			c.recorder.Eventf(svc, corev1.EventTypeWarning, ReasonFailed, "Creating TailscaleEndpoints %s: %v", autoName, err)
			return fmt.Errorf("creating TailscaleEndpoints %s/%s: %w", ns, autoName, err)
		}
		klog.FromContext(ctx).Info("Provisioned TailscaleEndpoints", "service", klog.KObj(svc), "endpoints", autoName)
		c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonProvisioned, "Created TailscaleEndpoints %s from spec.endpointTemplate", autoName)
		return nil
	case !ownedBy(existing, name, svc.UID):
		// Left by an earlier TailscaleServices of the same name: replace it.
		return c.delete(ctx, svc, existing)
	}
	if equality.Semantic.DeepEqual(existing.Spec, desired.Spec) && maps.Equal(existing.Labels, desired.Labels) &&
		existing.Annotations[Annotation] == "true" && existing.Annotations[LegacyAnnotation] == "" {
		return nil
	}
	out := existing.DeepCopy()
	out.Spec, out.Labels = desired.Spec, desired.Labels
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[Annotation] = "true"
	delete(out.Annotations, LegacyAnnotation)
	if _, err := c.client.GatewayV1alpha1().TailscaleEndpoints(ns).Update(ctx, out, metav1.UpdateOptions{FieldManager: "tailscale-gateway-autoprovision"}); err != nil {
		return fmt.Errorf("updating TailscaleEndpoints %s/%s: %w", ns, autoName, err)
	}
	c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonUpdated, "Updated TailscaleEndpoints %s from spec.endpointTemplate", autoName)
	return nil
}

func (c *Controller) delete(ctx context.Context, svc *v1alpha1.TailscaleServices, e *v1alpha1.TailscaleEndpoints) error {
	err := c.client.GatewayV1alpha1().TailscaleEndpoints(e.Namespace).Delete(ctx, e.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &e.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting TailscaleEndpoints %s/%s: %w", e.Namespace, e.Name, err)
	}
	klog.FromContext(ctx).Info("Deleted auto-provisioned TailscaleEndpoints", "endpoints", klog.KObj(e))
	if svc != nil {
		c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonDeprovisioned, "Deleted TailscaleEndpoints %s: no longer needed", e.Name)
	}
	return nil
}

// desired reports whether svc needs an auto-provisioned TailscaleEndpoints (a template, and no
// other TailscaleEndpoints matching the selector) and returns it.
func (c *Controller) desired(svc *v1alpha1.TailscaleServices) (bool, *v1alpha1.TailscaleEndpoints) {
	if svc == nil || svc.DeletionTimestamp != nil || svc.Spec.EndpointTemplate == nil || svc.Spec.Selector == nil {
		return false, nil
	}
	// A template naming a tailnet that does not admit the namespace provisions nothing (and
	// what it provisioned before goes).
	if !c.policy.Decide(svc.Namespace, svc.Spec.EndpointTemplate.Tailnet).Allowed {
		return false, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(svc.Spec.Selector)
	if err != nil {
		return false, nil
	}
	matching, err := c.eps.TailscaleEndpoints(svc.Namespace).List(sel)
	if err != nil {
		return false, nil
	}
	autoName := svc.Name + Suffix
	for _, e := range matching {
		if e.Name != autoName {
			return false, nil
		}
	}
	t := svc.Spec.EndpointTemplate
	e := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{
			Name: autoName, Namespace: svc.Namespace,
			Labels:      maps.Clone(t.Labels),
			Annotations: map[string]string{Annotation: "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "TailscaleServices",
				Name: svc.Name, UID: svc.UID, Controller: ptr(true)}},
		},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: t.Tailnet, Tags: t.Tags, Proxy: t.Proxy.DeepCopy(), Ports: t.Ports},
	}
	// Compare with what the server stores: its defaults applied.
	v1alpha1.SetObjectDefaults_TailscaleEndpoints(e)
	return true, e
}

func ptr[T any](v T) *T { return &v }
