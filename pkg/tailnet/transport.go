package tailnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Transport defaults.
const (
	DefaultRequestsPerSecond = 5.0
	DefaultBurst             = 10
	DefaultMaxRetries        = 4
	DefaultMaxElapsed        = 30 * time.Second
	DefaultInitialBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff        = 8 * time.Second
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// tokenPath is the OAuth token endpoint under the API base URL.
const tokenPath = "/api/v2/oauth/token"

// TransportOptions configures a Transport. Zero values take the defaults.
type TransportOptions struct {
	// Base sends the requests. Defaults to a clone of http.DefaultTransport.
	Base http.RoundTripper
	// RequestsPerSecond limits the request rate, retries included. Negative means unlimited.
	RequestsPerSecond float64
	// Burst is the rate limiter's burst.
	Burst int
	// MaxRetries bounds the retries of one request. Negative means none.
	MaxRetries int
	// MaxElapsed bounds the total time of one request, waits included. A request never waits
	// past it (or past its context's deadline): when the next wait would, it fails at once.
	MaxElapsed time.Duration
	// InitialBackoff is the wait before the first retry when the server gave no Retry-After.
	InitialBackoff time.Duration
	// MaxBackoff caps the exponential backoff.
	MaxBackoff time.Duration
}

func (o TransportOptions) withDefaults() TransportOptions {
	if o.Base == nil {
		o.Base = http.DefaultTransport.(*http.Transport).Clone()
	}
	if o.RequestsPerSecond == 0 {
		o.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = DefaultMaxElapsed
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = DefaultInitialBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	return o
}

// TransportStats counts what a Transport sent.
type TransportStats struct {
	// Requests is every HTTP request sent, retries and token requests included.
	Requests uint64
	// TokenRequests is the subset sent to the OAuth token endpoint.
	TokenRequests uint64
	// Retries is how many requests were repeats.
	Retries uint64
	// RateLimited counts 429 answers.
	RateLimited uint64
	// Failures counts requests that ended in an error.
	Failures uint64
}

// Transport is an http.RoundTripper for the Tailscale API. It rate-limits itself, retries 429
// (after Retry-After), 5xx, 408 and any error answer whose body is not JSON (an HTML page from
// a proxy) with jittered exponential backoff, and bounds both retries and total time. POST and
// PATCH are retried only after 429, which means the server did not process them, unless the
// request carries an Idempotency-Key.
//
// Unlike a plain RoundTripper, it turns every final answer of 400 or above into an *Error with
// a scrubbed message, so the status survives any client library's parsing and no credential
// echoed by a server reaches the caller.
type Transport struct {
	opts    TransportOptions
	limiter *rate.Limiter
	red     *redactor

	// Replaceable in tests.
	sleep func(context.Context, time.Duration) error
	now   func() time.Time

	requests, tokenRequests, retries, rateLimited, failures atomic.Uint64
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport with opts.
func NewTransport(opts TransportOptions) *Transport {
	return newTransport(opts, newRedactor())
}

func newTransport(opts TransportOptions, red *redactor) *Transport {
	registerMetrics()
	opts = opts.withDefaults()
	limit := rate.Limit(opts.RequestsPerSecond)
	if opts.RequestsPerSecond < 0 {
		limit = rate.Inf
	}
	return &Transport{
		opts:    opts,
		limiter: rate.NewLimiter(limit, opts.Burst),
		red:     red,
		sleep:   sleepContext,
		now:     time.Now,
	}
}

// Stats returns the counters.
func (t *Transport) Stats() TransportStats {
	return TransportStats{
		Requests:      t.requests.Load(),
		TokenRequests: t.tokenRequests.Load(),
		Retries:       t.retries.Load(),
		RateLimited:   t.rateLimited.Load(),
		Failures:      t.failures.Load(),
	}
}

// outcome is the verdict on one attempt.
type outcome struct {
	retry bool // worth another attempt
	// unprocessed means the server said it did not act on the request (429), so even a
	// non-idempotent request may be repeated.
	unprocessed bool
	retryAfter  time.Duration
	fail        *Error // the error to return if no retry follows; nil on success
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	t.red.learnAuthorization(req.Header.Get("Authorization"))
	if strings.HasSuffix(req.URL.Path, tokenPath) {
		t.tokenRequests.Add(1)
	}
	deadline := t.now().Add(t.opts.MaxElapsed)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	repeatable := canRepeat(req)

	for attempt := 1; ; attempt++ {
		r, err := t.rewind(req, attempt)
		if err != nil {
			return nil, t.failed(&Error{Reason: ReasonAPIUnavailable, Attempts: attempt - 1, Message: err.Error()})
		}
		if err := t.limiter.Wait(ctx); err != nil {
			closeBody(r) // a RoundTripper closes the body even when it sends nothing
			return nil, t.failed(&Error{
				Reason: ReasonAPIUnavailable, Attempts: attempt - 1,
				Message: "waiting for the client-side rate limit: " + err.Error(), cause: contextCause(ctxErrOr(ctx, err)),
			})
		}
		t.requests.Add(1)
		sent := t.now()
		resp, err := t.opts.Base.RoundTrip(r)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		observeRequest(r.Method, r.URL.Path, status, err, t.now().Sub(sent))
		out := t.judge(ctx, resp, err)
		if out.fail == nil {
			return resp, nil
		}
		out.fail.Attempts = attempt
		if !out.retry || (!repeatable && !out.unprocessed) || attempt > t.opts.MaxRetries {
			return nil, t.failed(out.fail)
		}
		delay := out.retryAfter
		if delay == 0 {
			delay = backoff(attempt, t.opts.InitialBackoff, t.opts.MaxBackoff)
		}
		if t.now().Add(delay).After(deadline) {
			out.fail.Message += fmt.Sprintf("; not retrying: waiting %s would exceed the time budget", delay.Round(time.Millisecond))
			return nil, t.failed(out.fail)
		}
		t.retries.Add(1)
		if err := t.sleep(ctx, delay); err != nil {
			out.fail.cause = contextCause(err)
			out.fail.Message += "; interrupted while waiting to retry: " + err.Error()
			return nil, t.failed(out.fail)
		}
	}
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

func ctxErrOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (t *Transport) failed(e *Error) *Error {
	t.failures.Add(1)
	e.Message = t.red.redact(e.Message)
	return e
}

// rewind returns the request for an attempt: req itself first, then copies with a fresh body.
func (t *Transport) rewind(req *http.Request, attempt int) (*http.Request, error) {
	if attempt == 1 {
		return req, nil
	}
	r := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return r, nil
	}
	if req.GetBody == nil {
		return nil, fmt.Errorf("cannot retry %s: the request body cannot be replayed", req.Method)
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("cannot retry %s: %w", req.Method, err)
	}
	r.Body = body
	return r, nil
}

// judge classifies one attempt. A response of 400 or above is consumed and closed.
func (t *Transport) judge(ctx context.Context, resp *http.Response, err error) outcome {
	if err != nil {
		if cause := contextCause(err); cause != nil || ctx.Err() != nil {
			if cause == nil {
				cause = ctx.Err()
			}
			return outcome{fail: &Error{Reason: ReasonAPIUnavailable, Message: err.Error(), cause: cause}}
		}
		// Network errors: the request may or may not have reached the server.
		return outcome{retry: true, fail: &Error{Reason: ReasonAPIUnavailable, Message: err.Error()}}
	}
	if resp.StatusCode < 400 {
		return outcome{}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()

	status := resp.StatusCode
	msg, isJSON := errorMessage(resp.Header.Get("Content-Type"), body, t.red.redact)
	out := outcome{fail: &Error{StatusCode: status, Reason: reasonForStatus(status), Message: msg}}
	if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
		out.retryAfter = ra
		out.fail.RetryAfter = ra
	}
	switch {
	case status == http.StatusTooManyRequests:
		t.rateLimited.Add(1)
		out.retry, out.unprocessed = true, true
	case status >= 500, status == http.StatusRequestTimeout:
		out.retry = true
	case !isJSON && len(bytes.TrimSpace(body)) > 0:
		// Not the API talking: a proxy or load balancer in the way. Try again.
		out.retry = true
		out.fail.Reason = ReasonAPIUnavailable
	}
	return out
}

// errorMessage extracts a readable, redacted message from an error body and reports whether
// the body was JSON. Redaction happens before shortening so no credential is cut in half.
func errorMessage(contentType string, body []byte, redact func(string) string) (string, bool) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return "empty error body", false
	}
	if json.Valid(trimmed) {
		var m struct {
			Message string `json:"message"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(trimmed, &m) == nil {
			if m.Message != "" {
				return snippet(redact(m.Message)), true
			}
			if m.Error != "" {
				return snippet(redact(m.Error)), true
			}
		}
		return snippet(redact(string(trimmed))), true
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "" {
		mt = "unknown content type"
	}
	return fmt.Sprintf("non-JSON error body (%s): %s", mt, snippet(redact(string(trimmed)))), false
}

// snippet shortens s to one line of at most 200 bytes.
func snippet(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
