package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// apiCall is one request the server sent to the Tailscale API, as the recorder saw it arrive.
type apiCall struct {
	at     time.Time
	method string
	path   string
	status int
}

// apiRecorder forwards to the simulated Tailscale API and records every request and its answer.
type apiRecorder struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	calls []apiCall
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (r *apiRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	sw := &statusRecorder{ResponseWriter: w}
	r.proxy.ServeHTTP(sw, req)
	r.mu.Lock()
	r.calls = append(r.calls, apiCall{at: at, method: req.Method, path: req.URL.Path, status: sw.status})
	r.mu.Unlock()
}

// since returns the calls that arrived at or after from.
func (r *apiRecorder) since(from time.Time) []apiCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []apiCall
	for _, c := range r.calls {
		if !c.at.Before(from) {
			out = append(out, c)
		}
	}
	return out
}

// postForm sends an admin request to the simulator's admin API (as cmd/tailnet-sim serves it).
func postForm(t *testing.T, base, path string, values url.Values) {
	t.Helper()
	resp, err := http.PostForm(base+path, values)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s %v: %s", path, values, resp.Status)
	}
}

// outageScale is how much faster than real time the outage test runs: every timing of the
// live status and of its API client is divided by it, so 70 s of test stand for 35 minutes.
const outageScale = 30

// TestTailscaleAPIOutage fails the Tailscale API for 70 poll intervals — 30 intervals of 429
// with a Retry-After of three intervals, then 40 of 503 — while the server polls every second
// (the default 30 s interval, and the API client's retry timings, divided by outageScale). The
// served status keeps the last-known devices with TailnetSynced=False (RateLimited, then
// APIUnavailable) and the stored status records the loss; the API sees no more requests than
// the retry policy allows (Retry-After honoured to the millisecond); and within one interval of
// the API answering again the server is in sync and shows a device change made during the
// outage. The figures are logged; docs/development.md records them.
func TestTailscaleAPIOutage(t *testing.T) {
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(sctx, tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{
		tailnetsim.AllProtocols("api-server", "tag:web"),
		tailnetsim.AllProtocols("postgres", "tag:db"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	admin := httptest.NewServer(sim.AdminHandler())
	t.Cleanup(admin.Close)
	target, err := url.Parse(sim.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	rec := &apiRecorder{proxy: httputil.NewSingleHostReverseProxy(target)}
	api := httptest.NewServer(rec)
	t.Cleanup(api.Close)

	const interval = tailnet.DefaultInterval / outageScale // 1 s
	transport := tailnet.TransportOptions{
		MaxElapsed:     tailnet.DefaultMaxElapsed / outageScale,
		InitialBackoff: tailnet.DefaultInitialBackoff / outageScale,
		MaxBackoff:     tailnet.DefaultMaxBackoff / outageScale,
	}
	creds := framework.CredentialsDir(t, sim.OAuthClientID(), sim.OAuthClientSecret())
	s := framework.Start(t, "", func(o *server.Options) {
		o.Live.CredentialsDir = creds
		o.Live.PollInterval = interval
		o.Live.APITransport = transport
		o.Live.APIRequestsPerSecond = -1
		o.Live.ControlURL = sim.ControlURL()
	})
	client := s.Clientset(t).GatewayV1alpha1()
	if _, err := client.TailscaleTailnets().Create(ctx(t), &v1alpha1.TailscaleTailnet{
		ObjectMeta: metav1.ObjectMeta{Name: "sim"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: sim.TailnetName(), OAuthSecretName: "ts-oauth",
			APIBaseURL: api.URL, Tags: []string{"tag:prober"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Probes once an interval: every probe is a TCP connection of the prober's and the device's
	// netstacks, and a netstack with more than 512 connections to reset when it closes (those
	// in TIME_WAIT count, for a minute) hangs in tsnet.Server.Close (the RSTs fill its
	// outbound queue, which no one reads any more).
	eps := simEndpoints(t, sim)
	for i := range eps.Spec.Endpoints {
		if hc := eps.Spec.Endpoints[i].HealthCheck; hc != nil {
			hc.Interval, hc.Timeout = &metav1.Duration{Duration: interval}, &metav1.Duration{Duration: interval * 8 / 10}
		}
	}
	if _, err := client.TailscaleEndpoints("sim").Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	type served struct {
		tn  *v1alpha1.TailscaleTailnet
		eps *v1alpha1.TailscaleEndpoints
	}
	read := func(c context.Context) (served, error) {
		tn, err := client.TailscaleTailnets().Get(c, "sim", metav1.GetOptions{})
		if err != nil {
			return served{}, fmt.Errorf("GET the TailscaleTailnet: %w", err)
		}
		eps, err := client.TailscaleEndpoints("sim").Get(c, "backends", metav1.GetOptions{})
		if err != nil {
			return served{}, fmt.Errorf("GET the TailscaleEndpoints: %w", err)
		}
		return served{tn, eps}, nil
	}
	synced := func(conds []metav1.Condition) *metav1.Condition {
		return meta.FindStatusCondition(conds, livestatus.ConditionTailnetSynced)
	}
	var last served
	waitServed := func(what string, timeout time.Duration, cond func(served) bool) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx(t), 20*time.Millisecond, timeout, true, func(c context.Context) (bool, error) {
			got, err := read(c)
			if err != nil {
				return false, nil
			}
			last = got
			return cond(got), nil
		})
		if err != nil {
			t.Fatalf("waiting for %s: %v\nlast tailnet status: %+v\nlast endpoints status: %+v", what, err, last.tn.Status, last.eps.Status)
		}
	}

	// In sync: the two devices and the prober's own node connected, every endpoint healthy
	// (probed through the tailnet).
	waitServed("the tailnet in sync and every endpoint healthy", 2*time.Minute, func(s served) bool {
		c := synced(s.tn.Status.Conditions)
		return c != nil && c.Status == metav1.ConditionTrue && s.tn.Status.ConnectedDeviceCount == 3 &&
			s.eps.Status.HealthyEndpoints == 3 && endpointStatus(s.eps, "db").Online != nil && *endpointStatus(s.eps, "db").Online
	})
	before := last

	// The outage: 429 with Retry-After for 30 intervals, then 503 until cleared, 40 intervals on.
	const (
		rateLimited = 30 * interval
		retryAfter  = 3 * interval
		unavailable = 40 * interval
	)
	start := time.Now()
	postForm(t, admin.URL, "/api/errors", url.Values{"status": {"429"}, "retryAfter": {retryAfter.String()}, "duration": {rateLimited.String()}})
	postForm(t, admin.URL, "/api/errors", url.Values{"status": {"503"}, "duration": {"10m"}})
	// A device leaves during the outage: the server cannot know until the API answers again.
	sim.SetAPIOnline("postgres", false)

	reasons := map[string]bool{}
	var lastSync *metav1.Time
	err = wait.PollUntilContextTimeout(ctx(t), 200*time.Millisecond, 2*time.Minute, true, func(c context.Context) (bool, error) {
		got, err := read(c)
		if err != nil {
			return false, fmt.Errorf("the server stopped serving during the outage: %w", err)
		}
		tc, ec := synced(got.tn.Status.Conditions), synced(got.eps.Status.Conditions)
		if tc != nil && tc.Status == metav1.ConditionFalse {
			reasons[tc.Reason] = true
			// Stale: the last-known devices, the time of the last good read, and conditions
			// saying so.
			if got.tn.Status.DeviceCount != before.tn.Status.DeviceCount || got.tn.Status.ConnectedDeviceCount != before.tn.Status.ConnectedDeviceCount {
				return false, fmt.Errorf("last-known devices not kept: %d devices, %d connected, before %d, %d",
					got.tn.Status.DeviceCount, got.tn.Status.ConnectedDeviceCount, before.tn.Status.DeviceCount, before.tn.Status.ConnectedDeviceCount)
			}
			if lastSync == nil {
				lastSync = got.tn.Status.LastSyncTime
			}
			if got.tn.Status.LastSyncTime == nil || !got.tn.Status.LastSyncTime.Equal(lastSync) || got.tn.Status.LastSyncTime.After(start) {
				return false, fmt.Errorf("lastSyncTime %v moved during the outage (first stale read: %v, outage from %v)", got.tn.Status.LastSyncTime, lastSync, start)
			}
			if !strings.HasPrefix(tc.Message, "serving state of ") {
				return false, fmt.Errorf("TailnetSynced message does not say the state is last-known: %q", tc.Message)
			}
			if r := meta.FindStatusCondition(got.tn.Status.Conditions, livestatus.ConditionReady); r == nil || r.Status != metav1.ConditionFalse {
				return false, fmt.Errorf("Ready while out of sync: %+v", r)
			}
			if ec == nil || ec.Status != metav1.ConditionFalse {
				return false, fmt.Errorf("the endpoints' TailnetSynced does not follow the tailnet's: %+v vs %+v", ec, tc)
			}
		}
		if db := endpointStatus(got.eps, "db"); db.Online == nil || !*db.Online {
			return false, fmt.Errorf("the last-known state of postgres was dropped or changed without the API: %+v", db)
		}
		if len(got.eps.Status.Endpoints) != 3 {
			return false, fmt.Errorf("endpoint status dropped: %+v", got.eps.Status.Endpoints)
		}
		// The outage lasts its full length: this is its duration, not a wait for a result.
		return time.Since(start) >= rateLimited+unavailable, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reasons[tailnet.ReasonRateLimited] || !reasons[tailnet.ReasonAPIUnavailable] {
		t.Errorf("TailnetSynced reasons during the outage: %v, want %s and %s", reasons, tailnet.ReasonRateLimited, tailnet.ReasonAPIUnavailable)
	}
	// The stored status recorded the loss (the status writer persists the transition).
	if c := synced(storedEndpoints(t, s, "sim", "backends").Status.Conditions); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("stored TailnetSynced during the outage: %+v", c)
	}

	postForm(t, admin.URL, "/api/errors/clear", nil)
	back := time.Now()
	waitServed("the tailnet in sync again with the device change", time.Minute, func(s served) bool {
		c := synced(s.tn.Status.Conditions)
		db := endpointStatus(s.eps, "db")
		return c != nil && c.Status == metav1.ConditionTrue && s.tn.Status.ConnectedDeviceCount == 2 && db.Online != nil && !*db.Online
	})
	recovered := time.Since(back)
	calls := rec.since(start)

	// Requests during the outage, by answer. The 429 phase: each poll fails at once (waiting
	// Retry-After would exceed the request's time budget), and the next poll waits Retry-After.
	var limited, failed []apiCall
	var firstGood *apiCall
	for i, c := range calls {
		switch {
		case c.at.Before(back) && c.status == http.StatusTooManyRequests:
			limited = append(limited, c)
		case c.at.Before(back) && c.status == http.StatusServiceUnavailable:
			failed = append(failed, c)
		case c.at.Before(back):
			t.Errorf("during the outage %s %s got %d (the injections cover every API path but the token's, and no token request was due)", c.method, c.path, c.status)
		case firstGood == nil && c.status == http.StatusOK:
			firstGood = &calls[i]
		}
	}
	for i := 1; i < len(limited); i++ {
		if gap := limited[i].at.Sub(limited[i-1].at); gap < retryAfter {
			t.Errorf("429 answers %d and %d only %s apart: Retry-After %s not honoured", i-1, i, gap, retryAfter)
		}
	}
	maxLimited := int(rateLimited/retryAfter) + 1
	// The 503 phase: each poll makes at most 1+MaxRetries attempts, and polls start at least
	// an interval less the jitter (10%) apart.
	maxFailed := (tailnet.DefaultMaxRetries + 1) * (int(unavailable/(interval*9/10)) + 1)
	if len(limited) == 0 || len(limited) > maxLimited {
		t.Errorf("%d requests answered 429 in %s; want 1..%d", len(limited), rateLimited, maxLimited)
	}
	if len(failed) == 0 || len(failed) > maxFailed {
		t.Errorf("%d requests answered 503 in %s; want 1..%d", len(failed), unavailable, maxFailed)
	}
	// Recovery: the first request after the API is back comes within one interval (plus its
	// jitter and the longest retry wait; 1 s of slack for a loaded machine) and succeeds.
	bound := interval*11/10 + transport.MaxBackoff + time.Second
	if firstGood == nil {
		t.Fatal("no successful request after the API came back")
	}
	if d := firstGood.at.Sub(back); d > bound {
		t.Errorf("the first request after the API came back was sent %s later; want within %s", d, bound)
	}
	if c := synced(storedEndpoints(t, s, "sim", "backends").Status.Conditions); c == nil || c.Status != metav1.ConditionTrue {
		// The status writer may be a moment behind the served status.
		waitForStored(t, s, "sim", "backends", func(o *v1alpha1.TailscaleEndpoints) bool {
			c := synced(o.Status.Conditions)
			return c != nil && c.Status == metav1.ConditionTrue
		})
	}
	t.Logf("outage of %s (%d intervals of %s; time scaled 1:%d, i.e. %s at the default interval): %d requests answered 429 (at most %d allowed), %d answered 503 (at most %d allowed); "+
		"first request %s after the API was back, served in sync with the new device state %s after",
		rateLimited+unavailable, int((rateLimited+unavailable)/interval), interval, outageScale, (rateLimited+unavailable)*outageScale,
		len(limited), maxLimited, len(failed), maxFailed, firstGood.at.Sub(back).Round(time.Millisecond), recovered.Round(time.Millisecond))
}
