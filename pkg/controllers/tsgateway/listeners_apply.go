package tsgateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// The condition reporting the Gateway's listeners on the tailnets, and its reasons.
const (
	ConditionListenersReady     = "ListenersReady"
	ReasonListenersConfigured   = "ListenerServicesConfigured"
	ReasonNoListeners           = "NoListeners"
	ReasonEnvoyServiceNotFound  = "EnvoyServiceNotFound"
	ReasonListenerConflict      = "ListenerConflict"
	ReasonListenersFailed       = "ListenerServicesFailed"
	ReasonListenersNotManaged   = "ListenersNotManaged"
	EventListenerServiceCreated = "ListenerServiceCreated"
	EventListenerServiceUpdated = "ListenerServiceUpdated"
	EventListenerServiceDeleted = "ListenerServiceDeleted"
)

// listenerResult is what one reconcile of the listener objects did.
type listenerResult struct {
	out     ListenerOutput
	managed bool // an Envoy Service informer is configured
	gwFound bool
	// unboundReason and unbound say why gw is not bound to its Gateway (controller.binding):
	// nothing of the Gateway is published on gw's tailnets.
	unboundReason, unbound string
	conflicts              []string
	failures               []string
}

// owned is how applyOwned reads and writes one kind of generated object.
type owned[T metav1.Object] struct {
	kind   string
	get    func(name string) (T, error)
	list   func(labels.Selector) ([]T, error)
	create func(context.Context, T) error
	update func(context.Context, T) error
	delete func(context.Context, string, metav1.DeleteOptions) error
	// merge returns cur with want's spec, labels and annotations, and whether anything differed.
	merge func(cur, want T) (T, bool)
}

// applyOwned creates and updates want and deletes what gw generated of generated that want no
// longer holds. An object of a wanted name gw does not control is left alone and named in
// res.conflicts. Errors worth a retry (a cache behind the API) are returned.
func applyOwned[T metav1.Object](ctx context.Context, c *Controller, gw *v1alpha1.TailscaleGateway, o owned[T], generated string, want []T, res *listenerResult) error {
	var errs []error
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w.GetName()] = true
		cur, err := o.get(w.GetName())
		switch {
		case apierrors.IsNotFound(err):
			if err := o.create(ctx, w); err != nil {
				if apierrors.IsAlreadyExists(err) {
					errs = append(errs, err)
					continue
				}
				res.failures = append(res.failures, fmt.Sprintf("%s %s: %v", o.kind, w.GetName(), err))
				continue
			}
			c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceCreated, "Created %s %s", o.kind, w.GetName())
		case err != nil:
			return err
		case !controlledBy(cur, gw):
			res.conflicts = append(res.conflicts, o.kind+" "+w.GetName())
		default:
			upd, changed := o.merge(cur, w)
			if !changed {
				continue
			}
			if err := o.update(ctx, upd); err != nil {
				if apierrors.IsConflict(err) {
					errs = append(errs, err)
					continue
				}
				res.failures = append(res.failures, fmt.Sprintf("%s %s: %v", o.kind, w.GetName(), err))
				continue
			}
			c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceUpdated, "Updated %s %s", o.kind, w.GetName())
		}
	}
	existing, err := o.list(labels.SelectorFromSet(labels.Set{LabelGateway: gw.Name, LabelManagedBy: ManagedBy, LabelGenerated: generated}))
	if err != nil {
		return err
	}
	for _, e := range existing {
		if wanted[e.GetName()] || !controlledBy(e, gw) {
			continue
		}
		uid := e.GetUID()
		err := o.delete(ctx, e.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceDeleted, "Deleted %s %s", o.kind, e.GetName())
	}
	return errors.Join(errs...)
}

// mergeMeta puts want's labels over cur's and sets the access and connection-log annotations to want's (removing
// those want lacks); changed reports a difference.
func mergeMeta(cur, want metav1.Object) (lbls, annotations map[string]string, changed bool) {
	lbls = mergeLabels(cur.GetLabels(), want.GetLabels())
	annotations = maps.Clone(cur.GetAnnotations())
	for _, k := range []string{accesscontrol.AnnotationAllowedTags, accesscontrol.AnnotationDeniedTags, accesscontrol.AnnotationConnectionLog} {
		if v, ok := want.GetAnnotations()[k]; ok {
			if annotations == nil {
				annotations = map[string]string{}
			}
			annotations[k] = v
		} else {
			delete(annotations, k)
		}
	}
	changed = !labelsContain(cur.GetLabels(), want.GetLabels()) || !maps.Equal(annotations, cur.GetAnnotations())
	return lbls, annotations, changed
}

// applyListeners makes the listener TailscaleServices and gateway-proxy TailscaleEndpoints match
// GenerateListeners. Without an Envoy Service informer nothing is generated (and nothing deleted).
func (c *Controller) applyListeners(ctx context.Context, gw *v1alpha1.TailscaleGateway, tailnets map[string]*v1alpha1.TailscaleTailnet, res *listenerResult) error {
	if c.envoy == nil {
		return nil
	}
	res.managed = true
	in := ListenerInput{Gateway: gw, Tailnets: tailnets}
	gwNS, gwName := gatewayKey(gw)
	if kgw, err := c.kgateways.Gateways(gwNS).Get(gwName); err == nil && res.unboundReason == "" {
		res.gwFound = true
		in.Listeners = kgw.Spec.Listeners
		svcs, err := c.envoy.List(labels.SelectorFromSet(labels.Set{EnvoyOwningGatewayName: gwName}))
		if err != nil {
			return err
		}
		in.Envoy = FindEnvoyService(svcs, gwNS, gwName)
	}
	res.out = GenerateListeners(in)
	client := c.client.GatewayV1alpha1()
	// The proxies first: the vipservice controller finds a listener's tailnet through them.
	errProxies := applyOwned(ctx, c, gw, owned[*v1alpha1.TailscaleEndpoints]{
		kind: "TailscaleEndpoints",
		get:  c.endpoints.TailscaleEndpoints(gw.Namespace).Get,
		list: c.endpoints.TailscaleEndpoints(gw.Namespace).List,
		create: func(ctx context.Context, o *v1alpha1.TailscaleEndpoints) error {
			_, err := client.TailscaleEndpoints(gw.Namespace).Create(ctx, o, metav1.CreateOptions{FieldManager: FieldManager})
			return err
		},
		update: func(ctx context.Context, o *v1alpha1.TailscaleEndpoints) error {
			_, err := client.TailscaleEndpoints(gw.Namespace).Update(ctx, o, metav1.UpdateOptions{FieldManager: FieldManager})
			return err
		},
		delete: client.TailscaleEndpoints(gw.Namespace).Delete,
		merge: func(cur, want *v1alpha1.TailscaleEndpoints) (*v1alpha1.TailscaleEndpoints, bool) {
			l, a, changed := mergeMeta(cur, want)
			if !changed && equality.Semantic.DeepEqual(cur.Spec, want.Spec) {
				return cur, false
			}
			upd := cur.DeepCopy()
			upd.Spec, upd.Labels, upd.Annotations = want.Spec, l, a
			return upd, true
		},
	}, GeneratedProxy, res.out.Proxies, res)
	errServices := applyOwned(ctx, c, gw, owned[*v1alpha1.TailscaleServices]{
		kind: "TailscaleServices",
		get:  c.services.TailscaleServices(gw.Namespace).Get,
		list: c.services.TailscaleServices(gw.Namespace).List,
		create: func(ctx context.Context, o *v1alpha1.TailscaleServices) error {
			_, err := client.TailscaleServices(gw.Namespace).Create(ctx, o, metav1.CreateOptions{FieldManager: FieldManager})
			return err
		},
		update: func(ctx context.Context, o *v1alpha1.TailscaleServices) error {
			_, err := client.TailscaleServices(gw.Namespace).Update(ctx, o, metav1.UpdateOptions{FieldManager: FieldManager})
			return err
		},
		delete: client.TailscaleServices(gw.Namespace).Delete,
		merge: func(cur, want *v1alpha1.TailscaleServices) (*v1alpha1.TailscaleServices, bool) {
			l, a, changed := mergeMeta(cur, want)
			if !changed && equality.Semantic.DeepEqual(cur.Spec, want.Spec) {
				return cur, false
			}
			upd := cur.DeepCopy()
			upd.Spec, upd.Labels, upd.Annotations = want.Spec, l, a
			return upd, true
		},
	}, GeneratedListener, res.out.Services, res)
	if len(res.conflicts) > 0 {
		c.recorder.Eventf(gw, corev1.EventTypeWarning, ReasonListenerConflict, "Not generated, the name is taken by an object this TailscaleGateway does not control: %s",
			strings.Join(res.conflicts, ", "))
	}
	return errors.Join(errProxies, errServices)
}

// listenersCondition reports the listener objects of res.
func listenersCondition(gw *v1alpha1.TailscaleGateway, res listenerResult) metav1.Condition {
	cond := metav1.Condition{Type: ConditionListenersReady, Status: metav1.ConditionTrue, Reason: ReasonListenersConfigured, ObservedGeneration: gw.Generation}
	gwNS, gwName := gatewayKey(gw)
	var served []string
	for _, l := range res.out.Listeners {
		served = append(served, fmt.Sprintf("%s tcp:%d on %s -> %s (TailscaleServices %s)", l.Service, l.Port, l.Tailnet, l.Target, l.Object))
	}
	cond.Message = "Listeners on the tailnet: " + strings.Join(served, "; ")
	problems := append(append([]string(nil), res.out.Problems...), res.failures...)
	switch {
	case !res.managed:
		cond.Status, cond.Reason = metav1.ConditionUnknown, ReasonListenersNotManaged
		cond.Message = "No Envoy Service informer configured: Gateway listeners are not published on the tailnets"
	case res.unboundReason != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, res.unboundReason, res.unbound
	case !res.gwFound:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonGatewayNotFound
		cond.Message = fmt.Sprintf("Gateway %s/%s not found", gwNS, gwName)
	case len(res.conflicts) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonListenerConflict
		cond.Message = "Names taken by objects this TailscaleGateway does not control (left alone): " + strings.Join(res.conflicts, ", ")
	case res.out.NoEnvoyService:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonEnvoyServiceNotFound, problems[0]
	case len(problems) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonListenersFailed
		cond.Message = strings.Join(problems, "; ")
		if len(served) > 0 {
			cond.Message += "; served: " + strings.Join(served, "; ")
		}
	case len(res.out.Listeners) == 0:
		cond.Reason, cond.Message = ReasonNoListeners, fmt.Sprintf("Gateway %s/%s has no listeners, or no tailnet of spec.tailnets exists", gwNS, gwName)
	}
	if len(res.out.Skipped) > 0 && res.managed && res.unboundReason == "" && res.gwFound {
		cond.Message += "; not published (tlsMode strict publishes HTTPS and TLS listeners only): " + strings.Join(res.out.Skipped, "; ")
	}
	return cond
}
