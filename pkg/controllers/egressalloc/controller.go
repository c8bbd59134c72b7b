// Package egressalloc runs the egress port allocator (pkg/egressalloc) as a controller of the
// controllers' leader: it gives every TailscaleEndpoints' egress listeners ports unique on the
// proxy that serves them, records them in status.egress through the status subresource with
// condition EgressPortsAllocated, and on start rebuilds its state from those records, so an
// allocation outlives restarts and changes of leader.
package egressalloc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	alloc "github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

// ConditionAllocated is the TailscaleEndpoints condition this controller owns: whether every
// endpoint that needs an egress listener has a port. It is absent for objects needing none.
const ConditionAllocated = "EgressPortsAllocated"

// Reasons of ConditionAllocated.
const (
	ReasonAllocated = "Allocated"
	// ReasonRangeExhausted: the proxy's range has no free port for some endpoints; they are
	// not served for egress until ports are freed.
	ReasonRangeExhausted = "RangeExhausted"
)

// FieldManager writes status.egress.
const FieldManager = "tailscale-gateway-egressalloc"

// Options configure the controller.
type Options struct {
	// Scope names the proxy that serves obj's egress: ports are unique among the objects of
	// one scope. Required.
	Scope func(obj *v1alpha1.TailscaleEndpoints) string
	// Allocator options (range, quarantine, clock).
	Allocator alloc.Options
	// Workers reconcile objects in parallel (default 2).
	Workers int
}

// Controller allocates and records egress ports.
type Controller struct {
	client  versioned.Interface
	lister  listers.TailscaleEndpointsLister
	synced  cache.InformerSynced
	opts    Options
	alloc   *alloc.Allocator
	queue   workqueue.TypedRateLimitingInterface[string]
	cleanup func()
}

// New returns a controller on factory's TailscaleEndpoints informer.
func New(client versioned.Interface, factory informers.SharedInformerFactory, o Options) (*Controller, error) {
	if o.Scope == nil {
		return nil, errors.New("egressalloc: Scope is required")
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	inf := factory.Gateway().V1alpha1().TailscaleEndpoints()
	c := &Controller{client: client, lister: inf.Lister(), synced: inf.Informer().HasSynced, opts: o, alloc: alloc.New(o.Allocator),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "egressalloc"})}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	reg, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, DeleteFunc: enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("egressalloc: %w", err)
	}
	c.cleanup = func() { _ = inf.Informer().RemoveEventHandler(reg) }
	return c, nil
}

// Run seeds the allocator from the recorded allocations once the informer has synced, then
// reconciles until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	defer c.cleanup()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	objs, err := c.lister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Listing TailscaleEndpoints")
		return
	}
	c.alloc.Seed(objs, c.opts.Scope)
	klog.InfoS("Egress port allocator started", "objects", len(objs), "workers", c.opts.Workers)
	for range c.opts.Workers {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for c.next(ctx) {
			}
		}, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) next(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Allocating egress ports", "key", key)
		c.queue.AddRateLimited(key)
	} else {
		c.queue.Forget(key)
	}
	return true
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	obj, err := c.lister.TailscaleEndpoints(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.alloc.Forget(ns, name)
		return nil
	} else if err != nil {
		return err
	}
	sc := c.opts.Scope(obj)
	got, pending := c.alloc.Sync(obj, sc, alloc.Wants(obj))
	record := alloc.Record(sc, got)
	cond := condition(obj, sc, len(got), pending)
	return c.write(ctx, obj, record, cond)
}

// condition is ConditionAllocated for an allocation of n ports with pending left over; nil
// when obj needs none.
func condition(obj *v1alpha1.TailscaleEndpoints, sc string, n int, pending []ports.Key) *metav1.Condition {
	if n == 0 && len(pending) == 0 {
		return nil
	}
	c := &metav1.Condition{Type: ConditionAllocated, Status: metav1.ConditionTrue, Reason: ReasonAllocated, ObservedGeneration: obj.Generation,
		Message: fmt.Sprintf("%d egress ports allocated on proxy %s", n, sc)}
	if len(pending) > 0 {
		names := make([]string, len(pending))
		for i, k := range pending {
			names[i] = fmt.Sprintf("%s (%s %d)", k.Endpoint, k.Protocol(), k.Port)
		}
		c.Status, c.Reason = metav1.ConditionFalse, ReasonRangeExhausted
		c.Message = fmt.Sprintf("no free egress port on proxy %s for %s: they are not served for egress until ports are freed", sc, strings.Join(names, ", "))
	}
	return c
}

// write records the allocation in obj's status when it differs, re-reading obj on conflicts.
// A status someone else edited is written back to the allocation.
func (c *Controller) write(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, record *v1alpha1.EgressAllocation, cond *metav1.Condition) error {
	if upToDate(obj, record, cond) {
		return nil
	}
	client := c.client.GatewayV1alpha1().TailscaleEndpoints(obj.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh, err := client.Get(ctx, obj.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		} else if err != nil {
			return err
		}
		if fresh.UID != obj.UID || upToDate(fresh, record, cond) {
			return nil
		}
		fresh.Status.Egress = record
		if cond == nil {
			meta.RemoveStatusCondition(&fresh.Status.Conditions, ConditionAllocated)
		} else {
			meta.SetStatusCondition(&fresh.Status.Conditions, *cond)
		}
		_, err = client.UpdateStatus(ctx, fresh, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

func upToDate(obj *v1alpha1.TailscaleEndpoints, record *v1alpha1.EgressAllocation, cond *metav1.Condition) bool {
	if !equality.Semantic.DeepEqual(obj.Status.Egress, record) {
		return false
	}
	cur := meta.FindStatusCondition(obj.Status.Conditions, ConditionAllocated)
	if cond == nil || cur == nil {
		return cond == nil && cur == nil
	}
	return cur.Status == cond.Status && cur.Reason == cond.Reason && cur.Message == cond.Message && cur.ObservedGeneration == cond.ObservedGeneration
}
