package registry

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// Overlay sets the live part of an object's status in place from memory (tailnet cache, prober
// results); it never calls out. Objects may share slices and pointers with the watch cache, so an
// overlay assigns freshly built values and never writes through what it finds in the object.
type Overlay[T any, PT Object[T]] func(PT)

// persistedOnly reports whether a request comes from the server itself (its loopback client,
// which feeds the status writer's and collector's informers). Those read status as stored: the
// status writer compares what is stored with what it computes, which an overlaid status would
// hide.
func persistedOnly(ctx context.Context) bool {
	u, ok := request.UserFrom(ctx)
	return ok && u.GetName() == user.APIServerUser
}

// apply overlays obj, or every item of a list, unless the request reads persisted status.
func (overlay Overlay[T, PT]) apply(ctx context.Context, obj runtime.Object) {
	if overlay == nil || obj == nil || persistedOnly(ctx) {
		return
	}
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

// liveREST serves a kind with its live status on GET, LIST, table output and WATCH, and in the
// objects returned by writes.
type liveREST[T any, PT Object[T]] struct {
	*REST
	overlay Overlay[T, PT]
}

// Get implements rest.Getter.
func (r *liveREST[T, PT]) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.REST.Get(ctx, name, options)
	if err == nil {
		r.overlay.apply(ctx, obj)
	}
	return obj, err
}

// List implements rest.Lister.
func (r *liveREST[T, PT]) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	obj, err := r.REST.List(ctx, options)
	if err == nil {
		r.overlay.apply(ctx, obj)
	}
	return obj, err
}

// Create implements rest.Creater.
func (r *liveREST[T, PT]) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc,
	options *metav1.CreateOptions) (runtime.Object, error) {
	out, err := r.REST.Create(ctx, obj, createValidation, options)
	if err == nil {
		r.overlay.apply(ctx, out)
	}
	return out, err
}

// Update implements rest.Updater.
func (r *liveREST[T, PT]) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc,
	updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	out, created, err := r.REST.Update(ctx, name, objInfo, createValidation, updateValidation, forceAllowCreate, options)
	if err == nil {
		r.overlay.apply(ctx, out)
	}
	return out, created, err
}

// Delete implements rest.GracefulDeleter.
func (r *liveREST[T, PT]) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc,
	options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	out, immediate, err := r.REST.Delete(ctx, name, deleteValidation, options)
	if err == nil {
		r.overlay.apply(ctx, out)
	}
	return out, immediate, err
}

// DeleteCollection implements rest.CollectionDeleter.
func (r *liveREST[T, PT]) DeleteCollection(ctx context.Context, deleteValidation rest.ValidateObjectFunc,
	options *metav1.DeleteOptions, listOptions *metainternalversion.ListOptions) (runtime.Object, error) {
	out, err := r.REST.DeleteCollection(ctx, deleteValidation, options, listOptions)
	if err == nil {
		r.overlay.apply(ctx, out)
	}
	return out, err
}

// Watch streams events whose objects carry live status. The watch cache hands out shared
// (caching) objects; each event object is copied and overlaid here.
func (r *liveREST[T, PT]) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	w, err := r.REST.Watch(ctx, options)
	if err != nil || persistedOnly(ctx) {
		return w, err
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
