package proxydeploy

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// ConditionProxyDeployed is the TailscaleEndpoints condition this controller owns: whether the
// proxy's objects are in place. It is absent for objects without a proxy.
const ConditionProxyDeployed = "ProxyDeployed"

// Reasons of ConditionProxyDeployed.
const (
	// ReasonDeployed: every object is in place (the pods' readiness is the StatefulSet's).
	ReasonDeployed = "Deployed"
	// ReasonObjectConflict: an object of one of the proxy's names is not ours; nothing after it
	// is deployed until it is gone.
	ReasonObjectConflict = "ObjectConflict"
	// ReasonInvalidSpec: no proxy can be deployed for the spec.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonTagsNotPermitted: the object's tags are outside its tailnet's spec.proxyTags; no
	// key is minted and no proxy deployed.
	ReasonTagsNotPermitted = "TagsNotPermitted"
	// ReasonDeployFailed: an API call failed; it is retried.
	ReasonDeployFailed = "DeployFailed"
)

// DeployedCondition is the condition reporting the outcome err of a deployment of obj.
func DeployedCondition(obj *v1alpha1.TailscaleEndpoints, err error) metav1.Condition {
	c := metav1.Condition{Type: ConditionProxyDeployed, Status: metav1.ConditionTrue, Reason: ReasonDeployed,
		ObservedGeneration: obj.Generation,
		Message:            fmt.Sprintf("StatefulSet %s and its objects are in place", NamesFor(obj.Namespace, obj.Name).Base)}
	switch {
	case err == nil, isOnly(err, errRenewal):
		// A failed key renewal leaves a deployed proxy (its Events say so).
	case errors.Is(err, errConflict):
		c.Status, c.Reason = metav1.ConditionFalse, ReasonObjectConflict
		c.Message = err.Error() + ": it is left alone and the proxy is not deployed until it is gone"
	case errors.Is(err, errTagsNotPermitted):
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonTagsNotPermitted, err.Error()
	case errors.Is(err, errInvalid):
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonInvalidSpec, err.Error()
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonDeployFailed, err.Error()
	}
	return c
}

// isOnly reports whether err is target alone (not joined with another error).
func isOnly(err, target error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e != nil && !isOnly(e, target) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, target)
}

// report writes ConditionProxyDeployed of obj for the outcome err when wanted, or removes it
// when not; nothing is written when the status already says so or without a Client.
func (c *Controller) report(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, err error, wanted bool) error {
	if c.opts.Client == nil {
		return nil
	}
	want := DeployedCondition(obj, err)
	cur := meta.FindStatusCondition(obj.Status.Conditions, ConditionProxyDeployed)
	if !wanted && cur == nil {
		return nil
	}
	if wanted && cur != nil && cur.Status == want.Status && cur.Reason == want.Reason && cur.Message == want.Message &&
		cur.ObservedGeneration == want.ObservedGeneration {
		return nil
	}
	client := c.opts.Client.GatewayV1alpha1().TailscaleEndpoints(obj.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh, err := client.Get(ctx, obj.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if fresh.UID != obj.UID {
			return nil
		}
		if wanted {
			meta.SetStatusCondition(&fresh.Status.Conditions, want)
		} else if !meta.RemoveStatusCondition(&fresh.Status.Conditions, ConditionProxyDeployed) {
			return nil
		}
		_, err = client.UpdateStatus(ctx, fresh, metav1.UpdateOptions{FieldManager: "tailscale-gateway-proxydeploy"})
		return err
	})
}
