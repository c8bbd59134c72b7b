package publish

import (
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// WatchPools queues every TailscaleEndpoints on each event of inf, the proxy pools' Services:
// one pool Service serves the objects of its tailnet in every namespace, so a pool that
// appears, gets its cluster IP or goes changes the address of many.
func (c *Controller) WatchPools(inf cache.SharedIndexInformer) error {
	fn := func(any) {
		all, err := c.endpoints.List(labels.Everything())
		if err != nil {
			return
		}
		for _, o := range all {
			c.onEndpoints(o)
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
