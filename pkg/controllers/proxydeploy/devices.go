package proxydeploy

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
)

// ReasonDeviceDeleteFailed: a replica's device could not be deleted from the tailnet; its state
// Secret (and the object's finalizer) are kept and the deletion is retried with backoff.
const ReasonDeviceDeleteFailed = "ProxyDeviceDeleteFailed"

// release runs before Secret s of obj's proxy is deleted: the key it records is revoked and the
// device its replica joined as (kubestate.NodeIDKey of a state Secret) is deleted from the
// tailnet, so that a replica scaled away, a proxy removed or an object deleted leaves no node
// behind. A failed device deletion is an error (s is kept and the caller retries with backoff:
// the finalizer holds the object meanwhile) and a Warning Event. For a parent that is gone
// (its finalizer was removed by hand), the tailnet is unknown: the device is left, and logged.
func (c *Controller) release(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, s *corev1.Secret, why string) error {
	c.revokeRecorded(ctx, obj, s, why)
	id := string(s.Data[kubestate.NodeIDKey])
	if id == "" {
		return nil
	}
	log := klog.FromContext(ctx)
	if obj.UID == "" {
		log.Info("Proxy replica's device left in the tailnet: its TailscaleEndpoints is gone", "secret", klog.KObj(s), "nodeID", id)
		return nil
	}
	api, name, err := c.apiOf(obj)
	if err == nil {
		err = api.DeleteDevice(ctx, id)
	}
	if err != nil {
		// tailnet errors never carry credentials.
		c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonDeviceDeleteFailed,
			"Deleting device %s of proxy replica %s from tailnet %s (retried): %v", id, s.Name, name, err)
		return fmt.Errorf("deleting device %s of %s: %w", id, s.Name, err)
	}
	log.Info("Deleted a proxy replica's device from the tailnet", "endpoints", klog.KObj(obj), "tailnet", name, "nodeID", id, "why", why)
	return nil
}
