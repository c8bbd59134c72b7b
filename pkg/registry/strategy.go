package registry

import (
	"context"
	"reflect"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// strategy implements create, update and delete semantics shared by every kind: status is ignored on
// writes to the main resource, and metadata.generation counts spec changes.
type strategy[T any, PT Object[T]] struct {
	runtime.ObjectTyper
	names.NameGenerator
	kind *Kind[T, PT]
}

var (
	_ rest.RESTCreateUpdateStrategy = strategy[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{}
	_ rest.ResetFieldsStrategy      = strategy[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{}
	_ rest.ResetFieldsStrategy      = statusStrategy[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{}
)

func (s strategy[T, PT]) NamespaceScoped() bool { return s.kind.Namespaced }

// GetResetFields tells server-side apply that status is owned by the status subresource.
func (s strategy[T, PT]) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.kind.GroupVersion.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

func (s strategy[T, PT]) PrepareForCreate(_ context.Context, obj runtime.Object) {
	o := obj.(PT)
	reflect.ValueOf(s.kind.Status(o)).Elem().SetZero()
	o.SetGeneration(1)
}

func (s strategy[T, PT]) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	newObj, oldObj := obj.(PT), old.(PT)
	copyInto(s.kind.Status(newObj), s.kind.Status(oldObj))
	if !equality.Semantic.DeepEqual(s.kind.Spec(newObj), s.kind.Spec(oldObj)) {
		newObj.SetGeneration(oldObj.GetGeneration() + 1)
	}
}

func (s strategy[T, PT]) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	return s.kind.Validate(obj.(PT))
}

func (s strategy[T, PT]) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return s.kind.ValidateUpdate(obj.(PT), old.(PT))
}

// WarningsOnCreate returns the kind's warnings: kubectl prints them.
func (s strategy[T, PT]) WarningsOnCreate(_ context.Context, obj runtime.Object) []string {
	if s.kind.Warnings == nil {
		return nil
	}
	return s.kind.Warnings(obj.(PT))
}

// WarningsOnUpdate returns the kind's warnings of the new object.
func (s strategy[T, PT]) WarningsOnUpdate(ctx context.Context, obj, _ runtime.Object) []string {
	return s.WarningsOnCreate(ctx, obj)
}

func (strategy[T, PT]) AllowCreateOnUpdate(context.Context) bool { return false }

func (strategy[T, PT]) AllowUnconditionalUpdate(context.Context) bool { return true }

func (strategy[T, PT]) Canonicalize(runtime.Object) {}

// statusStrategy implements updates of the status subresource: spec and all of metadata stay as
// stored (managedFields aside, which server-side apply keeps for the status writer), as the
// status strategy of custom resources does. A /status write skips admission, so without this it
// could change ownerReferences, finalizers, labels or annotations that admission never saw.
type statusStrategy[T any, PT Object[T]] struct {
	strategy[T, PT]
}

// GetResetFields tells server-side apply that spec is owned by the main resource.
func (s statusStrategy[T, PT]) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.kind.GroupVersion.String()): fieldpath.NewSet(
			fieldpath.MakePathOrDie("spec"),
			fieldpath.MakePathOrDie("metadata", "labels"),
			fieldpath.MakePathOrDie("metadata", "annotations"),
			fieldpath.MakePathOrDie("metadata", "ownerReferences"),
			fieldpath.MakePathOrDie("metadata", "finalizers"),
		),
	}
}

func (s statusStrategy[T, PT]) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	newObj, oldObj := obj.(PT), old.(PT)
	copyInto(s.kind.Spec(newObj), s.kind.Spec(oldObj))
	if s.kind.StripLive != nil {
		s.kind.StripLive(newObj)
	}
	keepMetadata(newObj, oldObj)
}

// keepMetadata sets obj's metadata to old's, keeping obj's managedFields: the generic registry
// has already checked resourceVersion preconditions, and deletion bookkeeping (deletionTimestamp,
// finalizers) belongs to the main resource.
func keepMetadata(obj, old metav1.Object) {
	dst, src := objectMeta(obj), objectMeta(old)
	managed := dst.ManagedFields
	*dst = *src.DeepCopy()
	dst.ManagedFields = managed
}

// objectMeta returns the ObjectMeta that obj embeds.
func objectMeta(obj metav1.Object) *metav1.ObjectMeta {
	return obj.(interface{ GetObjectMeta() metav1.Object }).GetObjectMeta().(*metav1.ObjectMeta)
}

// WarningsOnUpdate warns about nothing: status writes leave the spec as stored.
func (statusStrategy[T, PT]) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

// ValidateUpdate accepts any status: it is written by the server's own controllers.
func (statusStrategy[T, PT]) ValidateUpdate(context.Context, runtime.Object, runtime.Object) field.ErrorList {
	return nil
}

// copyInto sets *dst to *src; both are pointers to values of the same type.
func copyInto(dst, src any) {
	reflect.ValueOf(dst).Elem().Set(reflect.ValueOf(src).Elem())
}
