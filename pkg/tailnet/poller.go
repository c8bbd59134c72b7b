package tailnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// tailnetState is one tailnet's poller and last-known state.
type tailnetState struct {
	cache  *Cache
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{} // reschedules the loop after a config change or an out-of-band poll
	handle *apiHandle
	snap   atomic.Pointer[Snapshot]
	count  counters
	// pubMu serialises publishing snapshots: a poll's and an imported one.
	pubMu sync.Mutex

	mu       sync.Mutex
	cfg      Config
	inflight *flight
	nextPoll time.Time // zero: poll at once
	lastEnd  time.Time
}

// flight is one poll that callers can join.
type flight struct {
	done    chan struct{}
	waiters int // callers that joined after it started; read by tests
	snap    Snapshot
	err     error
}

func newTailnetState(c *Cache, name string, cfg Config) *tailnetState {
	ctx, cancel := context.WithCancel(context.Background())
	t := &tailnetState{cache: c, name: name, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), cfg: cfg}
	t.handle = &apiHandle{t: t}
	t.snap.Store(&Snapshot{
		Name:    name,
		Tailnet: normTailnet(cfg.Tailnet),
		Stale:   true,
		Status:  SyncStatus{Reason: ReasonPending, Message: "waiting for the first poll", Since: time.Now()},
	})
	return t
}

func (t *tailnetState) snapshot() Snapshot { return *t.snap.Load() }

func (t *tailnetState) config() Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg
}

// setConfig applies a config for the same endpoint (new interval or tags).
func (t *tailnetState) setConfig(cfg Config) {
	t.mu.Lock()
	old := t.cfg
	t.cfg = cfg
	if old.Interval != cfg.Interval && !t.lastEnd.IsZero() {
		t.nextPoll = t.lastEnd.Add(t.intervalLocked(0))
	}
	t.mu.Unlock()
	t.poke()
}

func (t *tailnetState) stop() { t.cancel() }

func (t *tailnetState) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func (t *tailnetState) stats() Stats {
	s := t.count.snapshot()
	s.HTTP = t.handle.httpStats()
	return s
}

func (t *tailnetState) resetClient() { t.handle.reset() }

// intervalLocked returns the wait after a poll, jittered, at least retryAfter. Needs t.mu.
func (t *tailnetState) intervalLocked(retryAfter time.Duration) time.Duration {
	d := t.cfg.Interval
	if d <= 0 {
		d = t.cache.opts.Interval
	}
	if j := t.cache.opts.Jitter; j > 0 {
		d += time.Duration((rand.Float64()*2 - 1) * j * float64(d))
	}
	return max(d, retryAfter)
}

// loop polls at the interval until the tailnet is removed.
func (t *tailnetState) loop() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.kick:
		case <-timer.C:
			if t.cache.Polling() && t.due() {
				f := t.join(false)
				select {
				case <-f.done:
				case <-t.ctx.Done():
					return
				}
			} else if !t.cache.Polling() {
				t.markNotPolled(time.Now())
			}
		}
		if !t.cache.Polling() {
			// Another replica polls: wait for SetPolling or an import to kick the loop, and
			// for the moment the state held turns stale without one.
			if deadline, ok := t.notPolledDeadline(); ok {
				timer.Reset(max(time.Until(deadline), 0))
			}
			continue
		}
		t.mu.Lock()
		wait := time.Until(t.nextPoll)
		t.mu.Unlock()
		timer.Reset(max(wait, 0))
	}
}

// FollowerStaleIntervals is how many intervals a Cache that does not poll serves a synced
// snapshot without a newer one arriving before it reports the tailnet not synced (ReasonNotPolled).
const FollowerStaleIntervals = 3

// notPolledDeadline returns when the synced snapshot held turns stale if no newer one arrives;
// false when the snapshot is not synced.
func (t *tailnetState) notPolledDeadline() (time.Time, bool) {
	snap := t.snap.Load()
	if !snap.Status.Synced {
		return time.Time{}, false
	}
	t.mu.Lock()
	d := t.cfg.Interval
	t.mu.Unlock()
	if d <= 0 {
		d = t.cache.opts.Interval
	}
	return snap.LastAttempt.Add(FollowerStaleIntervals * d), true
}

// markNotPolled publishes the snapshot held as not synced when no replica has polled for
// FollowerStaleIntervals intervals: the devices are kept (last-known state), and the next
// snapshot polled or imported replaces it.
func (t *tailnetState) markNotPolled(now time.Time) {
	deadline, ok := t.notPolledDeadline()
	if !ok || now.Before(deadline) || t.cache.Polling() {
		return
	}
	t.pubMu.Lock()
	prev := t.snap.Load()
	if !prev.Status.Synced || t.cache.Polling() {
		t.pubMu.Unlock()
		return
	}
	n := *prev
	n.Stale = true
	n.Status = SyncStatus{Reason: ReasonNotPolled, Since: now,
		Message: fmt.Sprintf("no replica has polled the Tailscale API since %s", prev.LastAttempt.UTC().Format(time.RFC3339))}
	t.snap.Store(&n)
	t.pubMu.Unlock()
	syncTransitions.WithLabelValues("false").Inc()
	t.cache.log.Info("Tailnet not polled by any replica; serving last-known state", "tailnet", t.name, "lastAttempt", prev.LastAttempt)
	t.cache.notify(diff(prev, &n))
}

// due reports whether the next scheduled poll time has come.
func (t *tailnetState) due() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !time.Now().Before(t.nextPoll)
}

// refresh polls now or joins the poll in flight.
func (t *tailnetState) refresh(ctx context.Context) (Snapshot, error) {
	t.count.refreshes.Add(1)
	if minGap := t.cache.opts.MinRefreshInterval; minGap > 0 {
		t.mu.Lock()
		recent := t.inflight == nil && !t.lastEnd.IsZero() && time.Since(t.lastEnd) < minGap
		t.mu.Unlock()
		if recent {
			t.count.coalesced.Add(1)
			return t.snapshot(), nil
		}
	}
	f := t.join(true)
	select {
	case <-f.done:
		return f.snap, f.err
	case <-ctx.Done():
		return t.snapshot(), ctx.Err()
	case <-t.ctx.Done():
		return t.snapshot(), ErrUnknownTailnet
	}
}

// join returns the poll in flight, starting one if there is none.
func (t *tailnetState) join(isRefresh bool) *flight {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.inflight; f != nil {
		f.waiters++
		if isRefresh {
			t.count.coalesced.Add(1)
		}
		return f
	}
	f := &flight{done: make(chan struct{})}
	if t.ctx.Err() != nil || !t.cache.spawn(func() { t.run(f) }) {
		f.snap, f.err = *t.snap.Load(), ErrUnknownTailnet
		close(f.done)
		return f
	}
	t.inflight = f
	return f
}

func (t *tailnetState) run(f *flight) {
	snap, err := t.poll()
	t.mu.Lock()
	t.inflight = nil
	t.lastEnd = time.Now()
	t.nextPoll = t.lastEnd.Add(t.intervalLocked(snap.Status.RetryAfter))
	t.mu.Unlock()
	t.poke() // reschedule the loop from this poll's end, whoever started it
	f.snap, f.err = snap, err
	close(f.done)
}

// pollData is what one successful poll read.
type pollData struct {
	devices  []Device
	services []Service
	hosts    map[string][]ServiceHost
}

// poll reads the tailnet once, publishes the new snapshot and tells subscribers.
func (t *tailnetState) poll() (Snapshot, error) {
	t.count.polls.Add(1)
	ctx, cancel := context.WithTimeout(t.ctx, t.cache.opts.PollTimeout)
	defer cancel()
	start := time.Now()
	data, err := t.fetch(ctx)
	if t.ctx.Err() != nil { // removed while polling: publish nothing
		return t.snapshot(), ErrUnknownTailnet
	}
	if err != nil {
		t.count.pollFailures.Add(1)
	}
	t.pubMu.Lock()
	prev := t.snap.Load()
	next := t.next(prev, data, err, time.Now())
	t.snap.Store(next)
	t.pubMu.Unlock()
	if f := t.cache.opts.OnPolled; f != nil {
		f(*next)
	}

	ch := diff(prev, next)
	polls.WithLabelValues(next.Status.Reason).Inc()
	if ch.SyncChanged {
		syncTransitions.WithLabelValues(strconv.FormatBool(next.Status.Synced)).Inc()
	}
	log := t.cache.log.WithValues("tailnet", t.name)
	switch {
	case ch.SyncChanged && err != nil:
		log.Info("Tailnet out of sync; serving last-known state", "reason", next.Status.Reason, "err", err)
	case ch.SyncChanged:
		log.Info("Tailnet in sync", "devices", len(next.Devices), "services", len(next.Services))
	case err != nil:
		log.V(2).Info("Tailnet poll failed", "reason", next.Status.Reason, "err", err)
	}
	log.V(4).Info("Tailnet polled", "duration", time.Since(start), "changed", !ch.Empty(), "online", len(ch.Online))
	t.cache.notify(ch)
	return *next, err
}

// importSnapshot publishes a snapshot another replica polled, if it is newer than the state
// held and of the configured tailnet, and schedules this replica's next poll (should it start
// polling) one interval after it.
func (t *tailnetState) importSnapshot(in Snapshot) {
	if in.Tailnet != normTailnet(t.config().Tailnet) {
		return
	}
	t.pubMu.Lock()
	prev := t.snap.Load()
	if !in.LastAttempt.After(prev.LastAttempt) {
		t.pubMu.Unlock()
		return
	}
	n := *prev
	n.LastAttempt, n.LastSync, n.LastError, n.Stale, n.Status = in.LastAttempt, in.LastSync, in.LastError, in.Stale, in.Status
	if !reflect.DeepEqual(prev.Devices, in.Devices) || !reflect.DeepEqual(prev.Services, in.Services) ||
		!reflect.DeepEqual(prev.ServiceHosts, in.ServiceHosts) {
		n.Devices, n.Services, n.ServiceHosts, n.MagicDNSSuffix = in.Devices, in.Services, in.ServiceHosts, in.MagicDNSSuffix
		n.idx = buildIndex(in.Devices, in.Services)
		n.Generation++
	}
	t.snap.Store(&n)
	t.pubMu.Unlock()

	t.mu.Lock()
	t.lastEnd = in.LastAttempt
	t.nextPoll = in.LastAttempt.Add(t.intervalLocked(in.Status.RetryAfter))
	t.mu.Unlock()
	t.count.imports.Add(1)
	t.cache.notify(diff(prev, &n))
	t.poke() // a follower's loop reschedules the moment this snapshot turns stale
}

// next computes the snapshot that follows prev after a poll.
func (t *tailnetState) next(prev *Snapshot, data pollData, err error, now time.Time) *Snapshot {
	n := *prev
	n.Tailnet = normTailnet(t.config().Tailnet)
	n.LastAttempt = now
	status := SyncStatus{Synced: true, Reason: ReasonSynced, Message: "Tailscale API read successfully"}
	if err != nil {
		status = SyncStatus{Reason: ReasonOf(err), Message: err.Error()}
		var e *Error
		if errors.As(err, &e) {
			status.RetryAfter = e.RetryAfter
		}
		n.LastError = err.Error()
		n.Stale = true
	} else {
		n.LastError = ""
		n.Stale = false
		n.LastSync = now
		if !reflect.DeepEqual(prev.Devices, data.devices) || !reflect.DeepEqual(prev.Services, data.services) ||
			!reflect.DeepEqual(prev.ServiceHosts, data.hosts) {
			n.Devices, n.Services, n.ServiceHosts = data.devices, data.services, data.hosts
			n.MagicDNSSuffix = magicDNSSuffix(data.devices)
			n.idx = buildIndex(data.devices, data.services)
			n.Generation++
		}
	}
	status.Since = prev.Status.Since
	if status.Synced != prev.Status.Synced || status.Reason != prev.Status.Reason {
		status.Since = now
	}
	n.Status = status
	return &n
}

// fetch reads devices, Services and their hosts.
func (t *tailnetState) fetch(ctx context.Context) (pollData, error) {
	var d pollData
	var err error
	if d.devices, err = t.handle.Devices(ctx); err != nil {
		return pollData{}, err
	}
	d.devices = slices.Clone(d.devices) // sorted below; the API's slice stays untouched
	slices.SortFunc(d.devices, func(a, b Device) int { return strings.Compare(a.NodeID, b.NodeID) })
	if len(d.devices) == 0 {
		d.devices = nil
	}

	services, err := t.handle.Services(ctx)
	if err != nil && !IsNotFound(err) { // 404: no Services API for this tailnet
		return pollData{}, err
	}
	services = slices.Clone(services)
	slices.SortFunc(services, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	if len(services) > 0 {
		d.services = services
	}
	if t.cache.opts.SkipServiceHosts || len(services) == 0 {
		return d, nil
	}

	hosts := make([][]ServiceHost, len(services))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(t.cache.opts.HostsConcurrency)
	for i, s := range services {
		g.Go(func() error {
			h, err := t.handle.ServiceHosts(gctx, s.Name)
			if err != nil && !IsNotFound(err) {
				return err
			}
			h = slices.Clone(h)
			slices.SortFunc(h, func(a, b ServiceHost) int { return strings.Compare(a.NodeID, b.NodeID) })
			hosts[i] = h
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return pollData{}, err
	}
	for i, s := range services {
		if len(hosts[i]) > 0 {
			if d.hosts == nil {
				d.hosts = make(map[string][]ServiceHost, len(services))
			}
			d.hosts[s.Name] = hosts[i]
		}
	}
	return d, nil
}
