package server

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
)

// retryingSink is an EventSink that makes client-go's broadcaster retry (up to 12 times, 10 s
// apart) an Event the core API refused for a reason that passes: client-go abandons every Event
// answered with a Status, and a kube-apiserver that has just started answers 403 until its RBAC
// caches have synced (or 429 and 5xx while overloaded), so Events recorded during a
// kube-apiserver restart — the transitions users care about — were lost.
type retryingSink struct{ record.EventSink }

func (s retryingSink) Create(e *corev1.Event) (*corev1.Event, error) {
	out, err := s.EventSink.Create(e)
	return out, transient(err)
}

func (s retryingSink) Update(e *corev1.Event) (*corev1.Event, error) {
	out, err := s.EventSink.Update(e)
	return out, transient(err)
}

func (s retryingSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out, err := s.EventSink.Patch(e, data)
	return out, transient(err)
}

// errTransient marks a refusal worth retrying; it is not an *apierrors.StatusError, which
// client-go never retries.
var errTransient = errors.New("transient refusal")

// transient returns err as an error client-go retries when the API's answer may change without
// the Event changing, else err itself (a Status client-go abandons: invalid, already exists,
// namespace terminating, not found — which makes it create an Event it failed to patch).
func transient(err error) error {
	var status *apierrors.StatusError
	if !errors.As(err, &status) {
		return err
	}
	switch {
	case apierrors.IsForbidden(err) && !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause),
		apierrors.IsUnauthorized(err), apierrors.IsTooManyRequests(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsInternalError(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err):
		return fmt.Errorf("%w (%s): %s", errTransient, status.Status().Reason, status.Error())
	}
	return err
}
