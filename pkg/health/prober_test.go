package health

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const waitTimeout = 20 * time.Second // bound on every wait; generous for a loaded machine

// probeKey runs one probe of key synchronously, as a worker would.
func probeKey(t *testing.T, p *Prober, key string) Result {
	t.Helper()
	p.mu.Lock()
	tg := p.targets[key]
	if tg != nil && tg.index >= 0 {
		heap.Remove(&p.queue, tg.index)
	}
	p.mu.Unlock()
	if tg == nil {
		t.Fatalf("no target %q", key)
	}
	p.probeTarget(context.Background(), tg)
	r, _ := p.Result(key)
	return r
}

// runProber runs p until the test ends and waits for Run to return.
func runProber(t *testing.T, p *Prober) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

// transitions records OnTransition calls.
type transitions struct {
	mu     sync.Mutex
	events []string
}

func (tr *transitions) record(key string, from, to Status) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, fmt.Sprintf("%s:%s->%s", key, from, to))
}

func (tr *transitions) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

// TestThresholdsLive flips a real handler and checks that transitions happen after exactly the
// threshold number of answers, once each, while the prober runs on its own schedule.
func TestThresholdsLive(t *testing.T) {
	h := &flipHandler{healthy: true}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	type event struct {
		from, to Status
		ok, bad  int // answers of each kind since the last flip, when the transition was seen
	}
	var mu sync.Mutex
	var events []event
	got := func() []event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}

	p := New(Options{})
	p.OnTransition(func(key string, from, to Status) {
		ok, bad := h.counts()
		mu.Lock()
		events = append(events, event{from, to, ok, bad})
		mu.Unlock()
	})
	p.Update([]Target{{Key: "ns/web/api", Address: srv.Listener.Addr().String(), Check: Check{
		Type: ProtocolHTTP, Path: "/healthz", Interval: 20 * time.Millisecond, Timeout: 5 * time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 3,
	}}})
	runProber(t, p)

	waitEvents := func(n int) []event {
		t.Helper()
		waitFor(t, waitTimeout, fmt.Sprintf("%d transitions", n), func() bool { return len(got()) >= n })
		return got()
	}
	// Probes keep going after a transition, and no second transition follows.
	settle := func(n int, enough func(ok, bad int) bool) {
		t.Helper()
		waitFor(t, waitTimeout, "more probes", func() bool { return enough(h.counts()) })
		if ev := got(); len(ev) != n {
			t.Fatalf("transitions %+v, want %d", ev, n)
		}
	}

	if ev := waitEvents(1); ev[0] != (event{StatusUnknown, StatusHealthy, 2, 0}) {
		t.Fatalf("first transition %+v, want Unknown->Healthy after exactly 2 successes", ev[0])
	}
	settle(1, func(ok, _ int) bool { return ok >= 5 })

	h.set(false)
	if ev := waitEvents(2); ev[1] != (event{StatusHealthy, StatusUnhealthy, 0, 3}) {
		t.Fatalf("second transition %+v, want Healthy->Unhealthy after exactly 3 failures", ev[1])
	}
	settle(2, func(_, bad int) bool { return bad >= 6 })
	if r, _ := p.Result("ns/web/api"); r.Status != StatusUnhealthy || r.Error != "HTTP status 500, want 200" || r.ConsecutiveFailures < 3 {
		t.Errorf("result while failing: %+v", r)
	}

	h.set(true)
	if ev := waitEvents(3); ev[2] != (event{StatusUnhealthy, StatusHealthy, 2, 0}) {
		t.Fatalf("third transition %+v, want Unhealthy->Healthy after exactly 2 successes", ev[2])
	}
	settle(3, func(ok, _ int) bool { return ok >= 5 })
	r, _ := p.Result("ns/web/api")
	if r.Status != StatusHealthy || r.Error != "" || r.LastChecked.IsZero() || r.Latency <= 0 {
		t.Errorf("result while healthy: %+v", r)
	}
}

// TestProtocolsLive runs every protocol through the scheduler against healthy and unhealthy
// servers and waits for each target to settle.
func TestProtocolsLive(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	okHTTP := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(okHTTP.Close)
	okHTTPS := newHTTPSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(okHTTPS.Close)
	grpcAddr := grpcServer(t, hs)

	check := func(typ Protocol) Check {
		return Check{Type: typ, Interval: 20 * time.Millisecond, Timeout: 2 * time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}
	}
	withPath := func(c Check, path string) Check { c.Path = path; return c }
	want := map[string]Status{}
	var targets []Target
	add := func(key, addr string, c Check, s Status) {
		targets = append(targets, Target{Key: key, Address: addr, Check: c})
		want[key] = s
	}
	add("http/ok", okHTTP.Listener.Addr().String(), check(ProtocolHTTP), StatusHealthy)
	add("http/bad", okHTTP.Listener.Addr().String(), withPath(check(ProtocolHTTP), "/fail"), StatusUnhealthy)
	add("http/refused", closedAddr(t), check(ProtocolHTTP), StatusUnhealthy)
	add("https/ok", okHTTPS.Listener.Addr().String(), check(ProtocolHTTPS), StatusHealthy)
	add("tcp/ok", tcpServer(t), check(ProtocolTCP), StatusHealthy)
	add("tcp/refused", closedAddr(t), check(ProtocolTCP), StatusUnhealthy)
	add("tls/ok", newTLSServer(t).Addr, check(ProtocolTLS), StatusHealthy)
	add("tls/plain", tcpServer(t), check(ProtocolTLS), StatusUnhealthy)
	add("udp/echo", udpServer(t, true), check(ProtocolUDP), StatusHealthy)
	silent := check(ProtocolUDP)
	silent.Timeout = 50 * time.Millisecond
	add("udp/silent", udpServer(t, false), silent, StatusUnhealthy)
	add("grpc/ok", grpcAddr, check(ProtocolGRPC), StatusHealthy)
	add("grpc/down", grpcAddr, withPath(check(ProtocolGRPC), "/down"), StatusUnhealthy)

	p := New(Options{MaxConcurrent: 4})
	p.Update(targets)
	runProber(t, p)
	waitFor(t, waitTimeout, "every target to settle", func() bool {
		for key, r := range p.Results() {
			if r.Status != want[key] {
				return false
			}
		}
		return true
	})
	if r, _ := p.Result("grpc/down"); r.Error != `health service "down" is NOT_SERVING` {
		t.Errorf("grpc/down error %q", r.Error)
	}
}

func TestUpdate(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	other := httptest.NewServer(mux)
	t.Cleanup(other.Close)
	addr := srv.Listener.Addr().String()

	base := Check{Type: ProtocolHTTP, Path: "/ok", Interval: time.Hour, HealthyThreshold: 2, UnhealthyThreshold: 2,
		Headers: map[string]string{"X-A": "1"}}
	failing := base
	failing.Path = "/fail"
	target := func(key, addr string, c Check) Target { return Target{Key: key, Address: addr, Check: c} }
	p := New(Options{})

	// New targets start Unknown.
	p.Update([]Target{target("a", addr, base), target("b", addr, base), target("a", addr, failing)})
	if res := p.Results(); len(res) != 2 || res["a"].Status != StatusUnknown || res["b"].Status != StatusUnknown {
		t.Fatalf("after the first update: %+v", res)
	}
	if p.targets["a"].Check.Path != "/ok" {
		t.Error("a later duplicate key replaced the first")
	}
	probeKey(t, p, "a")
	if r := probeKey(t, p, "a"); r.Status != StatusHealthy || r.ConsecutiveSuccesses != 2 {
		t.Fatalf("a after two successes: %+v", r)
	}
	probeKey(t, p, "b")

	// Unchanged targets keep their state, even when the caller passes a fresh headers map.
	same := base
	same.Headers = map[string]string{"X-A": "1"}
	p.Update([]Target{target("a", addr, same), target("b", addr, base)})
	if r, _ := p.Result("a"); r.Status != StatusHealthy || r.ConsecutiveSuccesses != 2 {
		t.Errorf("unchanged a: %+v", r)
	}
	if r, _ := p.Result("b"); r.ConsecutiveSuccesses != 1 {
		t.Errorf("unchanged b: %+v", r)
	}

	// A changed check keeps the status and last probe but restarts the counts; removed
	// targets are dropped; added ones start Unknown.
	before, _ := p.Result("a")
	p.Update([]Target{target("a", addr, failing), target("c", addr, base)})
	r, _ := p.Result("a")
	if r.Status != StatusHealthy || r.ConsecutiveSuccesses != 0 || r.ConsecutiveFailures != 0 || r.LastChecked != before.LastChecked {
		t.Errorf("a after its check changed: %+v", r)
	}
	if _, ok := p.Result("b"); ok {
		t.Error("removed target b still has a result")
	}
	if _, ok := p.Results()["b"]; ok {
		t.Error("removed target b still listed")
	}
	if r, ok := p.Result("c"); !ok || r.Status != StatusUnknown {
		t.Errorf("new target c: %+v, %v", r, ok)
	}
	if r := probeKey(t, p, "a"); r.Status != StatusHealthy || r.ConsecutiveFailures != 1 {
		t.Errorf("a after one failure of its new check: %+v", r)
	}
	if r := probeKey(t, p, "a"); r.Status != StatusUnhealthy {
		t.Errorf("a after two failures of its new check: %+v", r)
	}

	// A changed address starts over.
	p.Update([]Target{target("a", other.Listener.Addr().String(), failing), target("c", addr, base)})
	if r, _ := p.Result("a"); r != (Result{Status: StatusUnknown}) {
		t.Errorf("a after its address changed: %+v", r)
	}

	// The queue holds exactly the current targets.
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) != len(p.targets) {
		t.Errorf("queue holds %d targets, want %d", len(p.queue), len(p.targets))
	}
	for i, tg := range p.queue {
		if p.targets[tg.Key] != tg || tg.index != i {
			t.Errorf("queue[%d] = %s (index %d) is stale", i, tg.Key, tg.index)
		}
	}
}

// TestUpdateDiscardsStaleProbe checks that a probe in flight when its target changes does not
// count towards the new check.
func TestUpdateDiscardsStaleProbe(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	t.Cleanup(srv.Close)
	c := Check{Type: ProtocolHTTP, Interval: time.Hour, HealthyThreshold: 1}
	p := New(Options{})
	p.Update([]Target{{Key: "a", Address: srv.Listener.Addr().String(), Check: c}})

	done := make(chan Result)
	go func() { done <- probeKey(t, p, "a") }()
	<-entered
	c.UnhealthyThreshold = 5
	p.Update([]Target{{Key: "a", Address: srv.Listener.Addr().String(), Check: c}})
	close(release)
	if r := <-done; r != (Result{Status: StatusUnknown}) {
		t.Errorf("stale probe was recorded: %+v", r)
	}
}

// TestRemovedTargetIsNoLongerProbed checks that Update stops probes of dropped targets.
func TestRemovedTargetIsNoLongerProbed(t *testing.T) {
	keep, drop := &flipHandler{healthy: true}, &flipHandler{healthy: true}
	keepSrv, dropSrv := httptest.NewServer(keep), httptest.NewServer(drop)
	t.Cleanup(keepSrv.Close)
	t.Cleanup(dropSrv.Close)
	c := Check{Type: ProtocolHTTP, Interval: 20 * time.Millisecond, Timeout: 5 * time.Second}
	keepT := Target{Key: "keep", Address: keepSrv.Listener.Addr().String(), Check: c}
	p := New(Options{})
	p.Update([]Target{keepT, {Key: "drop", Address: dropSrv.Listener.Addr().String(), Check: c}})
	runProber(t, p)
	waitFor(t, waitTimeout, "both targets probed", func() bool { return keep.total.Load() >= 3 && drop.total.Load() >= 3 })

	p.Update([]Target{keepT})
	// At most one probe of "drop" can have been dispatched before the update.
	atUpdate := drop.total.Load()
	from := keep.total.Load()
	waitFor(t, waitTimeout, "more probes of the kept target", func() bool { return keep.total.Load() >= from+10 })
	if n := drop.total.Load(); n > atUpdate+1 {
		t.Errorf("dropped target probed %d more times", n-atUpdate)
	}
}

// TestDialerSelection checks that tailnet addresses go through the tailnet dialer and others
// directly, for every protocol that dials.
func TestDialerSelection(t *testing.T) {
	httpSrv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(httpSrv.Close)
	_, httpPort, _ := net.SplitHostPort(httpSrv.Listener.Addr().String())
	_, udpPort, _ := net.SplitHostPort(udpServer(t, true))
	_, grpcPort, _ := net.SplitHostPort(grpcServer(t, health.NewServer()))

	tailnet, direct := &recordingDialer{}, &recordingDialer{}
	p := New(Options{DialerFor: TailnetDialerFor(tailnet, direct)})
	one := Check{Interval: time.Hour, HealthyThreshold: 1, UnhealthyThreshold: 1}
	withType := func(typ Protocol) Check { c := one; c.Type = typ; return c }
	targets := []Target{
		{Key: "ts4", Address: "100.64.0.10:" + httpPort, Check: withType(ProtocolHTTP)},
		{Key: "ts6", Address: "[fd7a:115c:a1e0::10]:" + httpPort, Check: withType(ProtocolHTTP)},
		{Key: "ts-udp", Address: "100.100.0.1:" + udpPort, Check: withType(ProtocolUDP)},
		{Key: "ts-grpc", Address: "100.100.0.2:" + grpcPort, Check: withType(ProtocolGRPC)},
		{Key: "direct", Address: "127.0.0.1:" + httpPort, Check: withType(ProtocolHTTP)},
	}
	p.Update(targets)
	for _, tg := range targets {
		if r := probeKey(t, p, tg.Key); r.Status != StatusHealthy {
			t.Errorf("%s: %+v", tg.Key, r)
		}
	}
	wantTailnet := []string{
		"tcp 100.64.0.10:" + httpPort, "tcp [fd7a:115c:a1e0::10]:" + httpPort,
		"udp 100.100.0.1:" + udpPort, "tcp 100.100.0.2:" + grpcPort,
	}
	if got := tailnet.dialed(); !slices.Equal(got, wantTailnet) {
		t.Errorf("tailnet dialer dialled %q, want %q", got, wantTailnet)
	}
	if got, want := direct.dialed(), []string{"tcp 127.0.0.1:" + httpPort}; !slices.Equal(got, want) {
		t.Errorf("direct dialer dialled %q, want %q", got, want)
	}
}

// TestMaxConcurrent checks that no more than MaxConcurrent probes are ever in flight.
func TestMaxConcurrent(t *testing.T) {
	const workers, targets = 4, 40
	var active, served atomic.Int64
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		active.Add(1)
		defer active.Add(-1)
		served.Add(1)
		<-gate
	}))
	t.Cleanup(srv.Close)
	dialer := &countingDialer{}
	p := New(Options{MaxConcurrent: workers, DialerFor: func(string) Dialer { return dialer }})
	var ts []Target
	for i := range targets {
		ts = append(ts, Target{Key: fmt.Sprint(i), Address: srv.Listener.Addr().String(),
			Check: Check{Type: ProtocolHTTP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Second}})
	}
	p.Update(ts)
	runProber(t, p)

	// With the server holding every request, the pool fills up and stops there.
	waitFor(t, waitTimeout, "the pool to fill", func() bool { return active.Load() == workers })
	if peak := dialer.peak.Load(); peak != workers {
		t.Fatalf("%d probes in flight at the peak, want %d", peak, workers)
	}
	close(gate)
	waitFor(t, waitTimeout, "200 probes", func() bool { return served.Load() >= 200 })
	if peak := dialer.peak.Load(); peak > workers {
		t.Errorf("%d probes in flight at the peak, want at most %d", peak, workers)
	}
}

// TestGoroutinesDoNotScaleWithTargets checks that idle targets cost no goroutines.
func TestGoroutinesDoNotScaleWithTargets(t *testing.T) {
	const workers = 8
	before := runtime.NumGoroutine()
	p := New(Options{MaxConcurrent: workers})
	ts := make([]Target, 10000)
	for i := range ts {
		ts[i] = Target{Key: fmt.Sprint(i), Address: "127.0.0.1:1", Check: Check{Type: ProtocolTCP, Interval: 24 * time.Hour}}
	}
	p.Update(ts)
	runProber(t, p)
	waitFor(t, waitTimeout, "the workers to start", func() bool { return runtime.NumGoroutine()-before >= workers })
	// Workers and the dispatcher, plus slack for the runtime and probes in flight.
	if n := runtime.NumGoroutine() - before; n > workers+1+10 {
		t.Errorf("%d goroutines for 10000 targets and %d workers", n, workers)
	}
}

// TestFirstProbesSpread checks that the first probes of new targets are spread over one
// interval and later ones come an interval (±10%) apart.
func TestFirstProbesSpread(t *testing.T) {
	const n, interval = 1000, 10 * time.Second
	p := New(Options{})
	p.rng = rand.New(rand.NewPCG(1, 2))
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{Key: fmt.Sprint(i), Address: "127.0.0.1:1", Check: Check{Interval: interval}}
	}
	start := time.Now()
	p.Update(ts)
	end := time.Now()

	var deciles [10]int
	p.mu.Lock()
	for _, tg := range p.targets {
		if tg.next.Before(start) || !tg.next.Before(end.Add(interval)) {
			t.Fatalf("first probe at %s, outside [0, %s)", tg.next.Sub(start), interval)
		}
		deciles[min(9, int(tg.next.Sub(start)*10/interval))]++
	}
	var lo, hi time.Duration = interval, 0
	var sum time.Duration
	for range n {
		d := p.nextDelay(interval)
		lo, hi, sum = min(lo, d), max(hi, d), sum+d
	}
	p.mu.Unlock()
	for i, c := range deciles {
		if c < n/20 || c > 3*n/20 { // expected n/10 each
			t.Errorf("decile %d of the interval holds %d of %d first probes: %v", i, c, n, deciles)
		}
	}
	if lo < interval*9/10 || hi > interval*11/10 {
		t.Errorf("next probes %s..%s after the last, want within ±10%% of %s", lo, hi, interval)
	}
	if mean := sum / n; mean < interval*99/100 || mean > interval*101/100 {
		t.Errorf("mean delay %s, want about %s", mean, interval)
	}
}

func TestRunStopsAndRestarts(t *testing.T) {
	h := &flipHandler{healthy: true}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := New(Options{MaxConcurrent: 2})
	p.Update([]Target{{Key: "a", Address: srv.Listener.Addr().String(),
		Check: Check{Type: ProtocolHTTP, Interval: 20 * time.Millisecond, Timeout: 5 * time.Second, HealthyThreshold: 1}}})

	for round := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.Run(ctx)
		}()
		from := h.total.Load()
		waitFor(t, waitTimeout, fmt.Sprintf("probes in round %d", round), func() bool { return h.total.Load() >= from+3 })
		if round == 0 {
			func() {
				defer func() {
					if recover() == nil {
						t.Error("a second concurrent Run did not panic")
					}
				}()
				p.Run(ctx)
			}()
		}
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Fatal("Run did not return after cancel")
		}
		if r, _ := p.Result("a"); r.Status != StatusHealthy {
			t.Errorf("round %d: %+v", round, r)
		}
	}
}

func TestResultsAreCopies(t *testing.T) {
	p := New(Options{})
	p.Update([]Target{{Key: "a", Address: "127.0.0.1:1"}})
	res := p.Results()
	res["a"] = Result{Status: StatusHealthy}
	delete(res, "a")
	if r, ok := p.Result("a"); !ok || r.Status != StatusUnknown {
		t.Errorf("Results shares state with the prober: %+v", r)
	}
	if _, ok := p.Result("missing"); ok {
		t.Error("Result of an unknown key reported ok")
	}
}

func TestTransitionCallbackPrecedesNextProbe(t *testing.T) {
	// The key's next probe waits for its callbacks: a slow callback sees no probe behind it.
	h := &flipHandler{healthy: true}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := New(Options{})
	release := make(chan struct{})
	var during atomic.Int64
	p.OnTransition(func(string, Status, Status) {
		n := h.total.Load()
		<-release
		during.Store(h.total.Load() - n)
	})
	var tr transitions
	p.OnTransition(tr.record)
	p.Update([]Target{{Key: "a", Address: srv.Listener.Addr().String(),
		Check: Check{Type: ProtocolHTTP, Interval: time.Millisecond, Timeout: 5 * time.Second, HealthyThreshold: 1}}})
	runProber(t, p)
	waitFor(t, waitTimeout, "the first probe", func() bool { return h.total.Load() >= 1 })
	// Hold the callback for ~50 intervals: a probe wrongly scheduled behind it would run now.
	// (This can only miss a bug, never fail a correct prober.)
	time.Sleep(50 * time.Millisecond)
	close(release)
	waitFor(t, waitTimeout, "the recorded transition", func() bool { return len(tr.get()) == 1 })
	if n := during.Load(); n != 0 {
		t.Errorf("%d probes ran while the transition callback was blocked", n)
	}
	if got := tr.get(); !slices.Equal(got, []string{"a:Unknown->Healthy"}) {
		t.Errorf("transitions %q", got)
	}
}

// TestHTTPSResumesSessions checks that scheduled HTTPS probes of a target resume its TLS
// session, while one-off probes do not keep sessions.
func TestHTTPSResumesSessions(t *testing.T) {
	var mu sync.Mutex
	var resumed []bool
	srv := newHTTPSServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.TLS.DidResume)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	tg := Target{Key: "a", Address: srv.Listener.Addr().String(), Check: Check{Type: ProtocolHTTPS, Interval: time.Hour}}
	p := New(Options{})
	p.Update([]Target{tg})
	for range 3 {
		if r := probeKey(t, p, "a"); r.Error != "" {
			t.Fatal(r.Error)
		}
	}
	if err := p.Probe(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []bool{false, true, true, false}; !slices.Equal(resumed, want) {
		t.Errorf("sessions resumed: %v, want %v", resumed, want)
	}
}

// TestRunSpreadsOverdueTargets checks that targets which fell due before Run started are not
// all probed at once.
func TestRunSpreadsOverdueTargets(t *testing.T) {
	const n, interval = 1000, time.Hour
	p := New(Options{})
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{Key: fmt.Sprint(i), Address: "127.0.0.1:1", Check: Check{Type: ProtocolTCP, Interval: interval}}
	}
	p.Update(ts)
	p.mu.Lock()
	for _, tg := range p.targets {
		tg.next = tg.next.Add(-2 * interval) // as if Run started long after Update
	}
	p.mu.Unlock()

	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx) // queues the targets again, then stops at once

	p.mu.Lock()
	defer p.mu.Unlock()
	late := 0
	for _, tg := range p.targets {
		if tg.next.Before(start) {
			late++
		}
	}
	if late > 0 || len(p.queue) != n {
		t.Errorf("%d of %d targets still overdue, %d queued", late, n, len(p.queue))
	}
	for i, tg := range p.queue {
		if tg.index != i {
			t.Fatalf("queue[%d] has index %d", i, tg.index)
		}
	}
}

// TestDispatchBatches checks that the dispatcher hands out, with a due target, the targets due
// within their batch window, and waits for the others.
func TestDispatchBatches(t *testing.T) {
	now := time.Now()
	queued := func(keyDue map[string]time.Duration, interval time.Duration) *Prober {
		p := New(Options{})
		for key, due := range keyDue {
			heap.Push(&p.queue, &target{Target: Target{Key: key, Check: Check{Interval: interval}}, next: now.Add(due)})
		}
		return p
	}
	p := queued(map[string]time.Duration{"due": 0, "soon": 40 * time.Millisecond, "later": 60 * time.Millisecond}, 10*time.Second)
	var got []string
	for {
		tg, wait := p.nextDue(now)
		if tg == nil {
			if wait != 60*time.Millisecond {
				t.Errorf("wait %s for the next target, want 60ms", wait)
			}
			break
		}
		got = append(got, tg.Key)
	}
	if want := []string{"due", "soon"}; !slices.Equal(got, want) {
		t.Errorf("dispatched %q, want %q", got, want)
	}

	// A short interval has a short window: 2ms is beyond a twentieth of 20ms.
	p = queued(map[string]time.Duration{"short": 2 * time.Millisecond}, 20*time.Millisecond)
	if tg, wait := p.nextDue(now); tg != nil || wait != 2*time.Millisecond {
		t.Errorf("nextDue = %v, %s; want nil, 2ms", tg, wait)
	}
	if tg, wait := New(Options{}).nextDue(now); tg != nil || wait != -1 {
		t.Errorf("empty queue: nextDue = %v, %s; want nil, -1", tg, wait)
	}
}

// TestRequeueFromDueTime checks that a probe started early by batching is followed an
// interval after it was due, and one started late an interval after it started.
func TestRequeueFromDueTime(t *testing.T) {
	const interval = 10 * time.Second
	p := New(Options{})
	now := time.Now()
	for _, tc := range []struct {
		name     string
		due      time.Time
		wantFrom time.Time
	}{
		{"early", now.Add(30 * time.Millisecond), now.Add(30 * time.Millisecond)},
		{"late", now.Add(-time.Second), now},
	} {
		tg := &target{Target: Target{Key: tc.name, Check: Check{Interval: interval}}, next: tc.due, index: -1}
		p.mu.Lock()
		p.requeue(tg, now)
		p.mu.Unlock()
		if d := tg.next.Sub(tc.wantFrom); d < interval*9/10 || d > interval*11/10 {
			t.Errorf("%s: next probe %s after %s, want within ±10%% of %s", tc.name, d, tc.wantFrom.Sub(now), interval)
		}
	}
}
