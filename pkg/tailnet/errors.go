package tailnet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Reasons classify why a tailnet is or is not in sync; they double as condition reasons.
const (
	// ReasonSynced means the last poll succeeded.
	ReasonSynced = "Synced"
	// ReasonPending means no poll has finished yet.
	ReasonPending = "Pending"
	// ReasonAPIUnavailable covers 5xx answers, non-JSON error bodies, timeouts and network errors.
	ReasonAPIUnavailable = "APIUnavailable"
	// ReasonRateLimited means the API answered 429 and the retry budget ran out.
	ReasonRateLimited = "RateLimited"
	// ReasonUnauthorized means the API refused the credentials (401 or 403).
	ReasonUnauthorized = "Unauthorized"
	// ReasonCredentialsUnavailable means the credentials could not be read.
	ReasonCredentialsUnavailable = "CredentialsUnavailable"
	// ReasonNotFound means the API answered 404.
	ReasonNotFound = "NotFound"
	// ReasonRequestRejected covers other 4xx answers.
	ReasonRequestRejected = "RequestRejected"
	// ReasonNotPolled means this replica does not poll (another holds the polling Lease, or none
	// does) and no snapshot has arrived for FollowerStaleIntervals intervals.
	ReasonNotPolled = "NotPolled"
)

// ErrUnknownTailnet is returned for a tailnet name the Cache does not hold.
var ErrUnknownTailnet = errors.New("unknown tailnet")

// ErrCredentialsNotFound is wrapped by credential sources when the credentials do not exist.
var ErrCredentialsNotFound = errors.New("tailnet credentials not found")

// Error is every error this package returns from an API call. Its message has been scrubbed of
// credentials, and it wraps nothing that carries them: Unwrap yields only context errors and
// ErrCredentialsNotFound, never the underlying library or HTTP error.
type Error struct {
	// Op names the operation, such as "list devices".
	Op string
	// StatusCode is the HTTP status of the last answer, or 0 if none arrived.
	StatusCode int
	// Reason is one of the Reason constants.
	Reason string
	// RetryAfter is what the server asked the client to wait, if it did.
	RetryAfter time.Duration
	// Attempts is how many HTTP requests were made, when known.
	Attempts int
	// Message is a scrubbed description.
	Message string

	cause error
}

// Error implements error.
func (e *Error) Error() string {
	s := "tailnet"
	if e.Op != "" {
		s += ": " + e.Op
	}
	if e.StatusCode != 0 {
		s += fmt.Sprintf(": HTTP %d", e.StatusCode)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return s
}

// Unwrap returns a non-sensitive cause (context.Canceled, context.DeadlineExceeded,
// ErrCredentialsNotFound) or nil.
func (e *Error) Unwrap() error { return e.cause }

// IsNotFound reports whether err is an API answer of 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// ReasonOf returns the Reason of err, or ReasonAPIUnavailable for errors not from this package.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	return ReasonAPIUnavailable
}

// reasonForStatus maps an HTTP status to a Reason.
func reasonForStatus(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return ReasonRateLimited
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ReasonUnauthorized
	case status == http.StatusNotFound:
		return ReasonNotFound
	case status >= 500 || status == http.StatusRequestTimeout:
		return ReasonAPIUnavailable
	case status >= 400:
		return ReasonRequestRejected
	}
	return ReasonAPIUnavailable
}

// contextCause returns the context error err is or wraps, or nil.
func contextCause(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	}
	return nil
}
