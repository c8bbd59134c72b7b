package vipservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// EndpointsKind is the resource kind in owner references of Services registered for
// TailscaleEndpoints.
const EndpointsKind = "TailscaleEndpoints"

// RegisteredAnnotation on a TailscaleEndpoints lists the Services registered for it
// (JSON ["<tailnet>/svc:<name>", …]), written before they are created so that a Service
// dropped from spec.serviceDiscovery.vipServices, or left when the object goes, is released.
// LegacyRegisteredAnnotation, its key in earlier versions, is still read (so that what they
// registered is released too) and dropped on the next write.
const (
	RegisteredAnnotation       = "gateway.tailscale.com/registered-vip-services"
	LegacyRegisteredAnnotation = "tailscale-gateway.com/registered-vip-services"
)

// endpointsKeyPrefix marks TailscaleEndpoints keys in the queue.
const endpointsKeyPrefix = "TailscaleEndpoints:"

func (c *Controller) enqueueEndpoints(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	e, ok := obj.(*v1alpha1.TailscaleEndpoints)
	if !ok {
		return
	}
	// Only objects that register Services or did.
	if wantsRegistration(e) || e.Annotations[RegisteredAnnotation] != "" || e.Annotations[LegacyRegisteredAnnotation] != "" || hasFinalizerOn(e.Finalizers) {
		if key, err := cache.MetaNamespaceKeyFunc(e); err == nil {
			c.queue.Add(endpointsKeyPrefix + key)
		}
	}
}

// wantsRegistration reports whether spec.serviceDiscovery asks for Services:
// vipServices with autoRegister (default true).
func wantsRegistration(e *v1alpha1.TailscaleEndpoints) bool {
	sd := e.Spec.ServiceDiscovery
	return sd != nil && len(sd.VIPServices) > 0 && (sd.AutoRegister == nil || *sd.AutoRegister)
}

// endpointsWants are the Services a TailscaleEndpoints asks for, by name.
func endpointsWants(e *v1alpha1.TailscaleEndpoints) []want {
	if !wantsRegistration(e) || e.DeletionTimestamp != nil {
		return nil
	}
	var out []want
	for _, v := range e.Spec.ServiceDiscovery.VIPServices {
		out = append(out, want{
			Name:    "svc:" + strings.TrimPrefix(v.Name, "svc:"),
			Ports:   []string{"tcp:" + strconv.Itoa(int(v.Port))},
			Tags:    e.Spec.Tags,
			Comment: fmt.Sprintf("tailscale-gateway: %s/%s endpoint %s", e.Namespace, e.Name, v.TargetEndpoint),
		})
	}
	return out
}

func (c *Controller) endpointsRef(e *v1alpha1.TailscaleEndpoints) OwnerRef {
	return OwnerRef{OperatorID: c.opts.OperatorID, Resource: &Resource{Kind: EndpointsKind, Name: e.Namespace + "/" + e.Name, UID: string(e.UID)}}
}

// errTenancyPending marks a tenancy decision waiting for a namespace's labels.
var errTenancyPending = errors.New("tenancy pending")

// syncEndpoints registers the Services of spec.serviceDiscovery.vipServices and releases those
// no longer asked for.
func (c *Controller) syncEndpoints(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	e, err := c.eps.TailscaleEndpoints(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ref := c.endpointsRef(e)
	tn, resolved := c.opts.Tailnets.Resolve(e.Spec.Tailnet)
	wants := endpointsWants(e)
	switch d := c.opts.Tenancy.Decide(e.Namespace, e.Spec.Tailnet); {
	case d.Unknown:
		// The namespace's labels are not known yet: undo nothing, decide once they are.
		return c.writeEndpointsStatus(ctx, e, nil, fmt.Errorf("%s: %w", d.Message, errTenancyPending))
	case !d.Allowed:
		wants = nil // refused by its tailnet: release what it registered
	}
	var wantKeys []string
	if resolved {
		for _, w := range wants {
			wantKeys = append(wantKeys, tn+"/"+w.Name)
		}
	}
	recorded := registeredOf(e)
	// Record what we are about to create, with the finalizer, before creating it.
	next := union(recorded, wantKeys)
	if e, err = c.setRegistered(ctx, e, next, len(next) > 0); err != nil {
		return err
	}

	var errs []error
	var conflicts []string
	if len(wants) > 0 && !resolved {
		return c.writeEndpointsStatus(ctx, e, nil, fmt.Errorf("no TailscaleTailnet named %q or with spec.tailnet %q: %w", e.Spec.Tailnet, e.Spec.Tailnet, tailnet.ErrUnknownTailnet))
	}
	for _, w := range wants {
		r := c.ensure(ctx, e, w, ref, tn)
		if r.err != nil {
			errs = append(errs, r.err)
		}
		if r.plan.action == actionConflict {
			conflicts = append(conflicts, r.plan.message)
		}
	}
	var kept []string
	for _, k := range recorded {
		if slices.Contains(wantKeys, k) {
			kept = append(kept, k)
			continue
		}
		t, n, _ := strings.Cut(k, "/")
		if err := c.release(ctx, e, ref, t, n); err != nil {
			errs = append(errs, err)
			kept = append(kept, k)
		}
	}
	err = errors.Join(errs...)
	for _, k := range wantKeys {
		if !slices.Contains(kept, k) {
			kept = append(kept, k)
		}
	}
	if _, serr := c.setRegistered(ctx, e, kept, len(kept) > 0); serr != nil {
		return errors.Join(err, serr)
	}
	return errors.Join(err, c.writeEndpointsStatus(ctx, e, conflicts, err))
}

// registeredOf reads RegisteredAnnotation and LegacyRegisteredAnnotation.
func registeredOf(e *v1alpha1.TailscaleEndpoints) []string {
	var out []string
	for _, k := range []string{RegisteredAnnotation, LegacyRegisteredAnnotation} {
		var keys []string
		if raw := e.Annotations[k]; raw != "" {
			_ = json.Unmarshal([]byte(raw), &keys)
		}
		out = union(out, keys)
	}
	return out
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func hasFinalizerOn(fs []string) bool { return slices.Contains(fs, Finalizer) }

// setRegistered writes RegisteredAnnotation and our finalizer (present when finalize) through
// the main resource when they differ, returning the object as stored.
func (c *Controller) setRegistered(ctx context.Context, e *v1alpha1.TailscaleEndpoints, keys []string, finalize bool) (*v1alpha1.TailscaleEndpoints, error) {
	slices.Sort(keys)
	val := ""
	if len(keys) > 0 {
		b, _ := json.Marshal(keys)
		val = string(b)
	}
	_, legacy := e.Annotations[LegacyRegisteredAnnotation]
	if e.Annotations[RegisteredAnnotation] == val && !legacy && hasFinalizerOn(e.Finalizers) == finalize {
		return e, nil
	}
	out := e.DeepCopy()
	delete(out.Annotations, LegacyRegisteredAnnotation)
	if val == "" {
		delete(out.Annotations, RegisteredAnnotation)
	} else {
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[RegisteredAnnotation] = val
	}
	out.Finalizers = withFinalizer(out.Finalizers, finalize)
	stored, err := c.client.GatewayV1alpha1().TailscaleEndpoints(e.Namespace).Update(ctx, out, metav1.UpdateOptions{FieldManager: "tailscale-gateway-vipservice"})
	if apierrors.IsNotFound(err) {
		return e, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recording registered Services: %w", err)
	}
	return stored, nil
}

// writeEndpointsStatus sets the Conflict and Degraded conditions of a TailscaleEndpoints that
// registers Services (status.vipServices is computed by livestatus from the tailnet).
func (c *Controller) writeEndpointsStatus(ctx context.Context, e *v1alpha1.TailscaleEndpoints, conflicts []string, err error) error {
	if e.DeletionTimestamp != nil {
		return nil
	}
	out := e.DeepCopy()
	nowT := metav1.NewTime(c.opts.Now().Truncate(time.Second))
	if !wantsRegistration(e) {
		meta.RemoveStatusCondition(&out.Status.Conditions, livestatus.ConditionConflict)
		meta.RemoveStatusCondition(&out.Status.Conditions, livestatus.ConditionDegraded)
	} else {
		conflict := metav1.Condition{Type: livestatus.ConditionConflict, Status: metav1.ConditionFalse, Reason: "NoConflict",
			Message: "no conflicting Tailscale Service", ObservedGeneration: e.Generation, LastTransitionTime: nowT}
		if len(conflicts) > 0 {
			conflict.Status, conflict.Reason, conflict.Message = metav1.ConditionTrue, "OwnedByAnotherOperator", strings.Join(conflicts, "; ")
			if prev := meta.FindStatusCondition(e.Status.Conditions, livestatus.ConditionConflict); prev == nil || prev.Message != conflict.Message {
				c.opts.Recorder.Eventf(e, "Warning", ReasonConflict, "%s", conflict.Message)
			}
		}
		degraded := metav1.Condition{Type: livestatus.ConditionDegraded, Status: metav1.ConditionFalse, Reason: "Reconciled",
			Message: "the Tailscale Services follow spec.serviceDiscovery", ObservedGeneration: e.Generation, LastTransitionTime: nowT}
		if err != nil {
			degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, tailnet.ReasonOf(err), err.Error()
			c.opts.Recorder.Eventf(e, "Warning", ReasonReconcileFailed, "%s", err.Error())
		}
		meta.SetStatusCondition(&out.Status.Conditions, conflict)
		meta.SetStatusCondition(&out.Status.Conditions, degraded)
	}
	if equality.Semantic.DeepEqual(e.Status, out.Status) {
		return nil
	}
	_, uerr := c.client.GatewayV1alpha1().TailscaleEndpoints(e.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: "tailscale-gateway-vipservice"})
	if apierrors.IsNotFound(uerr) {
		return nil
	}
	if uerr != nil {
		return fmt.Errorf("writing status: %w", uerr)
	}
	return nil
}
