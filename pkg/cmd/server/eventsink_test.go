package server

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// failingSink answers every write with err.
type failingSink struct{ err error }

func (s failingSink) Create(*corev1.Event) (*corev1.Event, error)        { return nil, s.err }
func (s failingSink) Update(*corev1.Event) (*corev1.Event, error)        { return nil, s.err }
func (s failingSink) Patch(*corev1.Event, []byte) (*corev1.Event, error) { return nil, s.err }

// Refusals that pass (a kube-apiserver just started, overloaded) reach client-go as errors it
// retries, that is not as a *StatusError; the others stay Statuses, which it abandons or (not
// found on a patch) answers by creating the Event.
func TestRetryingSinkRetriesTransientRefusals(t *testing.T) {
	events := schema.GroupResource{Resource: "events"}
	terminating := apierrors.NewForbidden(events, "e", errors.New("namespace is terminating"))
	terminating.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause}}
	for _, c := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"forbidden (RBAC caches not synced)", apierrors.NewForbidden(events, "e", errors.New(`clusterrole "system:basic-user" not found`)), true},
		{"unauthorized", apierrors.NewUnauthorized("token not yet known"), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"service unavailable", apierrors.NewServiceUnavailable("shutting down"), true},
		{"internal error", apierrors.NewInternalError(errors.New("etcd")), true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true},
		{"already exists", apierrors.NewAlreadyExists(events, "e"), false},
		{"not found", apierrors.NewNotFound(events, "e"), false},
		{"invalid", apierrors.NewBadRequest("malformed"), false},
		{"namespace terminating", terminating, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink := retryingSink{failingSink{c.err}}
			_, createErr := sink.Create(&corev1.Event{})
			_, updateErr := sink.Update(&corev1.Event{})
			_, patchErr := sink.Patch(&corev1.Event{}, nil)
			for _, err := range []error{createErr, updateErr, patchErr} {
				var status *apierrors.StatusError
				isStatus := errors.As(err, &status)
				if isStatus == c.retry {
					t.Errorf("%v: a StatusError: %v; want retried: %v", err, isStatus, c.retry)
				}
				if c.retry && !errors.Is(err, errTransient) {
					t.Errorf("%v does not say it is transient", err)
				}
			}
		})
	}
	if _, err := (retryingSink{failingSink{nil}}).Create(&corev1.Event{}); err != nil {
		t.Errorf("success: %v", err)
	}
}
