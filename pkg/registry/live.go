package registry

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// Overlay sets the live part of an object's status in place from memory (tailnet cache, prober
// results); it never calls out. Objects may share slices and pointers with the watch cache, so an
// overlay assigns freshly built values and never writes through what it finds in the object.
type Overlay[T any, PT Object[T]] func(PT)

// decorate applies overlay to an object or to every item of a list.
func decorate[T any, PT Object[T]](overlay Overlay[T, PT]) func(runtime.Object) {
	return func(obj runtime.Object) {
		if o, ok := obj.(PT); ok {
			overlay(o)
			return
		}
		if meta.IsListType(obj) {
			_ = meta.EachListItem(obj, func(item runtime.Object) error {
				if o, ok := item.(PT); ok {
					overlay(o)
				}
				return nil
			})
		}
	}
}

// liveREST serves a kind with its live status on GET, LIST, table output and WATCH.
type liveREST[T any, PT Object[T]] struct {
	*REST
	overlay Overlay[T, PT]
}

// Watch streams events whose objects carry live status. The watch cache hands out shared
// (caching) objects, which the store's Decorator does not see; each event object is copied and
// overlaid here instead.
func (r *liveREST[T, PT]) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	w, err := r.REST.Watch(ctx, options)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		if ev.Type == watch.Bookmark || ev.Type == watch.Error {
			return ev, true
		}
		var obj runtime.Object
		if cacheable, ok := ev.Object.(runtime.CacheableObject); ok {
			obj = cacheable.GetObject()
		} else {
			obj = ev.Object.DeepCopyObject()
		}
		if o, ok := obj.(PT); ok {
			r.overlay(o)
		}
		ev.Object = obj
		return ev, true
	}), nil
}
