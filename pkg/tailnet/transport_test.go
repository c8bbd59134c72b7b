package tailnet

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scripted serves the answers in order, then 200 {"ok":true}; it counts requests and keeps bodies.
type scripted struct {
	mu      sync.Mutex
	answers []func(w http.ResponseWriter)
	n       atomic.Int32
	bodies  []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.n.Add(1)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(b))
	var next func(w http.ResponseWriter)
	if len(s.answers) > 0 {
		next, s.answers = s.answers[0], s.answers[1:]
	}
	s.mu.Unlock()
	if next == nil {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
		return
	}
	next(w)
}

func (s *scripted) gotBodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

func answer(status int, contentType, body string, headers ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func always(status int, contentType, body string, headers ...string) []func(w http.ResponseWriter) {
	var out []func(w http.ResponseWriter)
	for range 100 {
		out = append(out, answer(status, contentType, body, headers...))
	}
	return out
}

// newScripted starts a server and a Transport on a fake clock whose waits are recorded
// instead of slept.
func newScripted(t *testing.T, opts TransportOptions, answers ...func(w http.ResponseWriter)) (*scripted, *httptest.Server, *Transport, *[]time.Duration) {
	t.Helper()
	s := &scripted{answers: answers}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	tr := NewTransport(opts)
	// A fake clock: waits are recorded and advance it instead of passing.
	var mu sync.Mutex
	var sleeps []time.Duration
	var slept time.Duration
	start := time.Now()
	tr.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return start.Add(slept)
	}
	tr.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		sleeps = append(sleeps, d)
		slept += d
		mu.Unlock()
		return ctx.Err()
	}
	return s, srv, tr, &sleeps
}

func doGet(t *testing.T, tr http.RoundTripper, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		t.Cleanup(func() { _ = resp.Body.Close() })
	}
	return resp, err
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *tailnet.Error", err, err)
	}
	return e
}

func TestTransportRetryAfterSeconds(t *testing.T) {
	s, srv, tr, sleeps := newScripted(t, TransportOptions{RequestsPerSecond: -1},
		answer(http.StatusTooManyRequests, "application/json", `{"message":"slow down"}`, "Retry-After", "2"))
	resp, err := doGet(t, tr, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || s.n.Load() != 2 {
		t.Fatalf("status %d after %d requests, want 200 after 2", resp.StatusCode, s.n.Load())
	}
	if len(*sleeps) != 1 || (*sleeps)[0] != 2*time.Second {
		t.Fatalf("waits %v, want [2s] from Retry-After", *sleeps)
	}
	if st := tr.Stats(); st.RateLimited != 1 || st.Retries != 1 || st.Requests != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTransportRetryAfterHTTPDate(t *testing.T) {
	date := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	s, srv, tr, sleeps := newScripted(t, TransportOptions{RequestsPerSecond: -1},
		answer(http.StatusTooManyRequests, "application/json", `{"message":"slow down"}`, "Retry-After", date))
	if _, err := doGet(t, tr, srv.URL); err != nil {
		t.Fatal(err)
	}
	// The date has one-second resolution: the wait is between 2s and 3s, less the time elapsed.
	if s.n.Load() != 2 || len(*sleeps) != 1 || (*sleeps)[0] <= time.Second || (*sleeps)[0] > 3*time.Second {
		t.Fatalf("requests %d, waits %v; want 2 requests and one wait in (1s, 3s]", s.n.Load(), *sleeps)
	}
}

// TestTransportRetryAfterRealWait checks that the wait really happens (a lower bound only).
func TestTransportRetryAfterRealWait(t *testing.T) {
	s := &scripted{answers: []func(http.ResponseWriter){
		answer(http.StatusTooManyRequests, "", "", "Retry-After", "1"),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	start := time.Now()
	if _, err := doGet(t, NewTransport(TransportOptions{RequestsPerSecond: -1}), srv.URL); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < time.Second || s.n.Load() != 2 {
		t.Fatalf("took %s for %d requests; want at least 1s and 2 requests", el, s.n.Load())
	}
}

func TestTransportRetryAfterBeyondBudgetFailsAtOnce(t *testing.T) {
	s, srv, tr, sleeps := newScripted(t, TransportOptions{RequestsPerSecond: -1, MaxElapsed: 10 * time.Second},
		answer(http.StatusTooManyRequests, "application/json", `{"message":"slow down"}`, "Retry-After", "3600"))
	_, err := doGet(t, tr, srv.URL)
	e := asError(t, err)
	if e.Reason != ReasonRateLimited || e.StatusCode != 429 || e.RetryAfter != time.Hour {
		t.Fatalf("error %+v; want RateLimited 429 with RetryAfter 1h", e)
	}
	if s.n.Load() != 1 || len(*sleeps) != 0 {
		t.Fatalf("requests %d, waits %v; want 1 request and no wait", s.n.Load(), *sleeps)
	}
}

func TestTransport5xxBackoffThenSuccess(t *testing.T) {
	opts := TransportOptions{RequestsPerSecond: -1, MaxRetries: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	s, srv, tr, sleeps := newScripted(t, opts,
		answer(500, "application/json", `{"message":"internal"}`),
		answer(502, "application/json", `{"message":"bad gateway"}`),
		answer(503, "application/json", `{"message":"unavailable"}`),
		answer(504, "application/json", `{"message":"timeout"}`))
	resp, err := doGet(t, tr, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || s.n.Load() != 5 {
		t.Fatalf("status %d after %d requests; want 200 after 5", resp.StatusCode, s.n.Load())
	}
	if len(*sleeps) != 4 {
		t.Fatalf("waits %v; want 4", *sleeps)
	}
	for i, d := range *sleeps {
		full := min(opts.InitialBackoff<<i, opts.MaxBackoff)
		if d < full/2 || d > full {
			t.Errorf("wait %d = %s; want within [%s, %s]", i+1, d, full/2, full)
		}
	}
}

func TestTransportNonJSONErrorIsRetried(t *testing.T) {
	s, srv, tr, _ := newScripted(t, fastTransport(),
		answer(http.StatusForbidden, "text/html", "<html><body>Blocked by proxy</body></html>"),
		answer(http.StatusBadRequest, "text/plain", "upstream connect error"))
	resp, err := doGet(t, tr, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || s.n.Load() != 3 {
		t.Fatalf("status %d after %d requests; want 200 after 3", resp.StatusCode, s.n.Load())
	}
}

func TestTransportJSONClientErrorIsNotRetried(t *testing.T) {
	s, srv, tr, _ := newScripted(t, fastTransport(),
		answer(http.StatusBadRequest, "application/json", `{"message":"invalid tag"}`))
	_, err := doGet(t, tr, srv.URL)
	e := asError(t, err)
	if s.n.Load() != 1 || e.StatusCode != 400 || e.Reason != ReasonRequestRejected || e.Message != "invalid tag" {
		t.Fatalf("after %d requests: %+v", s.n.Load(), e)
	}
}

func TestTransportRetryBudgetExhausted(t *testing.T) {
	opts := fastTransport()
	opts.MaxRetries = 3
	s, srv, tr, _ := newScripted(t, opts, always(503, "text/html", "<html>503 Service Unavailable</html>")...)
	_, err := doGet(t, tr, srv.URL)
	e := asError(t, err)
	if s.n.Load() != 4 || e.Attempts != 4 || e.StatusCode != 503 || e.Reason != ReasonAPIUnavailable {
		t.Fatalf("after %d requests: %+v; want 4 attempts ending in 503 APIUnavailable", s.n.Load(), e)
	}
	if !strings.Contains(err.Error(), "non-JSON error body (text/html)") {
		t.Fatalf("error %q does not describe the body", err)
	}
	if st := tr.Stats(); st.Failures != 1 || st.Retries != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTransportTimeBudgetBoundsWaits(t *testing.T) {
	opts := TransportOptions{RequestsPerSecond: -1, MaxRetries: 10, InitialBackoff: 4 * time.Second, MaxElapsed: 5 * time.Second}
	s, srv, tr, sleeps := newScripted(t, opts, always(503, "application/json", `{"message":"down"}`)...)
	_, err := doGet(t, tr, srv.URL)
	e := asError(t, err)
	// Backoffs are at least 2s, 4s, 8s: the first fits in 5s, the second cannot.
	if s.n.Load() != 2 || len(*sleeps) != 1 || !strings.Contains(e.Message, "time budget") {
		t.Fatalf("requests %d, waits %v, error %v", s.n.Load(), *sleeps, err)
	}
}

func TestTransportPOSTRetriedOnlyAfter429(t *testing.T) {
	s, srv, tr, _ := newScripted(t, fastTransport(),
		answer(429, "application/json", `{"message":"slow"}`, "Retry-After", "0"),
		answer(503, "application/json", `{"message":"down"}`))
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, srv.URL, strings.NewReader(`{"a":1}`))
	_, err := (&http.Client{Transport: tr}).Do(req)
	e := asError(t, err)
	if s.n.Load() != 2 || e.StatusCode != 503 {
		t.Fatalf("after %d requests: %v; want a retry after 429 and none after 503", s.n.Load(), err)
	}
	if b := s.gotBodies(); b[0] != `{"a":1}` || b[1] != `{"a":1}` {
		t.Fatalf("bodies %q: retried POST must resend the body", b)
	}
}

func TestTransportRetryResendsBody(t *testing.T) {
	s, srv, tr, _ := newScripted(t, fastTransport(), answer(502, "text/html", "<html>bad gateway</html>"))
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPut, srv.URL, strings.NewReader(`{"name":"svc:web"}`))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if b := s.gotBodies(); s.n.Load() != 2 || b[0] != b[1] || b[1] != `{"name":"svc:web"}` {
		t.Fatalf("requests %d, bodies %q", s.n.Load(), b)
	}
}

func TestTransportContextCancelledWhileWaiting(t *testing.T) {
	got := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		got <- struct{}{}
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	tr := NewTransport(TransportOptions{RequestsPerSecond: -1, MaxElapsed: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-got:
	case <-time.After(waitTimeout):
		t.Fatal("no request arrived")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v; want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("request did not return after its context was cancelled")
	}
}

func TestTransportRateLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	tr := NewTransport(TransportOptions{RequestsPerSecond: 20, Burst: 1})
	start := time.Now()
	for range 5 {
		if _, err := doGet(t, tr, srv.URL); err != nil {
			t.Fatal(err)
		}
	}
	// 20/s with a burst of 1: five requests need at least four intervals of 50ms.
	if el := time.Since(start); el < 190*time.Millisecond {
		t.Fatalf("5 requests took %s; the limiter allows no less than 200ms", el)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second, true},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
