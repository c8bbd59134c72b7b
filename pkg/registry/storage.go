// Package registry stores the kinds of gateway.tailscale.com in etcd: one REST storage per kind with
// a status subresource, strategies, validation, field selectors and kubectl tables.
package registry

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// Category groups every kind of the API for `kubectl get tailscale`.
const Category = "tailscale"

// Object is a pointer to an internal API type.
type Object[T any] interface {
	*T
	runtime.Object
	metav1.Object
}

// Kind describes how one kind is stored and shown. T is the internal type.
type Kind[T any, PT Object[T]] struct {
	// Resource is the plural resource name; Singular the singular one.
	Resource, Singular string
	// GroupVersion is the external version whose fields server-side apply tracks.
	GroupVersion schema.GroupVersion
	ShortNames   []string
	Namespaced   bool
	NewList      func() runtime.Object

	// Spec and Status return pointers to the object's spec and status.
	Spec, Status func(PT) any
	// Fields returns the kind's selectable fields besides metadata.name and metadata.namespace.
	Fields func(PT) fields.Set

	// StripLive clears the status fields that are computed on read only (latency, last probe
	// time and the like) so that a client writing back a status it read persists none of them.
	StripLive func(PT)

	Validate       func(PT) field.ErrorList
	ValidateUpdate func(obj, old PT) field.ErrorList
	// Warnings, when set, returns the admission warnings of an object being created or updated.
	Warnings func(PT) []string

	// Columns and Cells make the kubectl table after NAME: the default columns first, then those
	// with priority 1 that show under -o wide. AGE is placed between the two.
	Columns []metav1.TableColumnDefinition
	Cells   func(PT) []any
}

// REST is the storage of one kind.
type REST struct {
	*genericregistry.Store
	shortNames []string
}

var (
	_ rest.ShortNamesProvider   = &REST{}
	_ rest.CategoriesProvider   = &REST{}
	_ rest.SingularNameProvider = &REST{}
)

// ShortNames implements rest.ShortNamesProvider.
func (r *REST) ShortNames() []string { return r.shortNames }

// Categories implements rest.CategoriesProvider.
func (r *REST) Categories() []string { return []string{Category} }

// StatusREST is the storage of a kind's status subresource.
type StatusREST struct {
	store *genericregistry.Store
	// overlay adds live status to the objects returned; nil serves stored status.
	overlay func(context.Context, runtime.Object)
}

var (
	_ rest.Patcher             = &StatusREST{}
	_ rest.ResetFieldsStrategy = &StatusREST{}
	_ rest.TableConvertor      = &StatusREST{}
)

// New returns an empty object.
func (r *StatusREST) New() runtime.Object { return r.store.New() }

// Destroy cleans up resources on shutdown; the main storage owns them.
func (r *StatusREST) Destroy() {}

// Get retrieves the object.
func (r *StatusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, options)
	if err == nil && r.overlay != nil {
		r.overlay(ctx, obj)
	}
	return obj, err
}

// Update changes the status of an object.
func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc,
	updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Subresources never create objects.
	obj, created, err := r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
	if err == nil && r.overlay != nil {
		r.overlay(ctx, obj)
	}
	return obj, created, err
}

// GetResetFields implements rest.ResetFieldsStrategy.
func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// ConvertToTable implements rest.TableConvertor.
func (r *StatusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}

// NewREST returns the storage of a kind and of its status subresource. A non-nil overlay adds live
// status to every object the storage returns, watch events included.
func NewREST[T any, PT Object[T]](kind *Kind[T, PT], scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter,
	groupResource func(string) schema.GroupResource, overlay Overlay[T, PT]) (rest.Storage, *StatusREST, error) {
	s := strategy[T, PT]{ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator, kind: kind}
	attrs := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		o, ok := obj.(PT)
		if !ok {
			return nil, nil, fmt.Errorf("unexpected object of type %T in %s storage", obj, kind.Resource)
		}
		set := kind.Fields(o)
		set["metadata.name"] = o.GetName()
		if kind.Namespaced {
			set["metadata.namespace"] = o.GetNamespace()
		}
		return o.GetLabels(), set, nil
	}
	store := &genericregistry.Store{
		NewFunc:     func() runtime.Object { return PT(new(T)) },
		NewListFunc: kind.NewList,
		PredicateFunc: func(label labels.Selector, field fields.Selector) storage.SelectionPredicate {
			return storage.SelectionPredicate{Label: label, Field: field, GetAttrs: attrs}
		},
		DefaultQualifiedResource:  groupResource(kind.Resource),
		SingularQualifiedResource: groupResource(kind.Singular),

		CreateStrategy:      s,
		UpdateStrategy:      s,
		DeleteStrategy:      s,
		ResetFieldsStrategy: s,

		TableConvertor: tableConvertor[T, PT]{kind: kind},
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: attrs}); err != nil {
		return nil, nil, fmt.Errorf("completing %s storage: %w", kind.Resource, err)
	}

	statusStore := *store
	status := statusStrategy[T, PT]{s}
	statusStore.UpdateStrategy = status
	statusStore.ResetFieldsStrategy = status
	main := &REST{Store: store, shortNames: kind.ShortNames}
	if overlay != nil {
		return &liveREST[T, PT]{REST: main, overlay: overlay}, &StatusREST{store: &statusStore, overlay: overlay.apply}, nil
	}
	return main, &StatusREST{store: &statusStore}, nil
}
