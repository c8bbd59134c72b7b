package health

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// DefaultMaxConcurrent is the default bound on probes in flight.
const DefaultMaxConcurrent = 128

// Options configure a Prober.
type Options struct {
	// DialerFor picks the dialer for a target address (host:port); see TailnetDialerFor.
	// Nil dials every address directly.
	DialerFor func(address string) Dialer
	// MaxConcurrent bounds the probes in flight, which is also the number of worker goroutines.
	// Defaults to DefaultMaxConcurrent. When probes are due faster than the workers finish
	// them, they start late rather than being dropped.
	MaxConcurrent int
}

// TransitionFunc is told that the target key went from one status to another.
type TransitionFunc func(key string, from, to Status)

// Prober probes a set of targets and keeps their health in memory. Its methods are safe for
// concurrent use.
type Prober struct {
	dialerFor func(string) Dialer
	workers   int
	wake      chan struct{} // the earliest due time may have moved

	mu          sync.Mutex
	targets     map[string]*target
	queue       queue // targets waiting for their next probe, earliest first
	rng         *rand.Rand
	transitions []TransitionFunc
	running     bool
}

// target is a Target with its probing state. A new target value replaces it whenever its
// Address or Check changes, so a probe still in flight for the old value is ignored.
type target struct {
	Target
	result   Result
	next     time.Time // when the next probe is due
	index    int       // position in queue, -1 while in flight or outside it
	sessions sessionCache
}

// New returns a Prober with no targets. Call Run to start probing.
func New(opts Options) *Prober {
	registerMetrics()
	p := &Prober{
		dialerFor: opts.DialerFor,
		workers:   opts.MaxConcurrent,
		wake:      make(chan struct{}, 1),
		targets:   map[string]*target{},
		rng:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	if p.dialerFor == nil {
		direct := newDirectDialer()
		p.dialerFor = func(string) Dialer { return direct }
	}
	if p.workers < 1 {
		p.workers = DefaultMaxConcurrent
	}
	return p
}

// Update replaces the set of targets. New targets start Unknown and are first probed at a
// random point within their interval, so a large set does not probe all at once. Targets
// missing from targets are dropped. A target whose Check changed keeps its Status but restarts
// its consecutive counts and is probed again within its new interval; a target whose Address
// changed starts over as Unknown. Unchanged targets keep their state and schedule. Of several
// targets with the same Key, the first wins.
func (p *Prober) Update(targets []Target) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make(map[string]*target, len(targets))
	for _, t := range targets {
		if _, dup := next[t.Key]; dup {
			klog.V(2).InfoS("Ignoring duplicate health target", "key", t.Key)
			continue
		}
		t.Check = t.Check.withDefaults()
		old := p.targets[t.Key]
		if old != nil && old.Address == t.Address && old.Via == t.Via && old.Check.equal(t.Check) {
			next[t.Key] = old
			continue
		}
		nt := &target{Target: t, result: Result{Status: StatusUnknown}, index: -1}
		if old != nil && old.Address == t.Address {
			nt.result = old.result
			nt.result.ConsecutiveSuccesses, nt.result.ConsecutiveFailures = 0, 0
		}
		nt.next = now.Add(p.firstDelay(t.Check.Interval))
		heap.Push(&p.queue, nt)
		next[t.Key] = nt
	}
	for key, old := range p.targets {
		if next[key] != old && old.index >= 0 {
			heap.Remove(&p.queue, old.index)
		}
	}
	p.targets = next
	p.poke()
}

// Result returns the health of the target key, or false if there is no such target.
func (p *Prober) Result(key string) (Result, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[key]
	if !ok {
		return Result{}, false
	}
	return t.result, true
}

// Results returns the health of every target, by key.
func (p *Prober) Results() map[string]Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Result, len(p.targets))
	for key, t := range p.targets {
		out[key] = t.result
	}
	return out
}

// OnTransition registers fn to be called whenever a target becomes Healthy or Unhealthy
// (never Unknown). fn runs on a probe worker: calls for different keys may be concurrent,
// calls for one key are in order and the key's next probe waits for them. fn should be quick
// (hand off to a queue); it may call the Prober's methods.
func (p *Prober) OnTransition(fn TransitionFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.transitions = append(slices.Clip(p.transitions), fn)
}

// Probe probes t once, bounded by its Check's Timeout, without touching the Prober's targets.
// It returns nil when t is healthy. The error never contains header values.
func (p *Prober) Probe(ctx context.Context, t Target) error {
	t.Check = t.Check.withDefaults()
	return runProbe(ctx, env{dialer: p.dialerFor(t.Address)}, t)
}

// probeTarget runs one scheduled probe of t and records its outcome, unless t has been
// replaced or ctx ended meanwhile.
func (p *Prober) probeTarget(ctx context.Context, t *target) {
	if !p.current(t) {
		return
	}
	start := time.Now()
	err := runProbe(ctx, env{dialer: p.dialerFor(t.Address), sessions: &t.sessions}, t.Target)
	latency := time.Since(start)
	if ctx.Err() != nil {
		return // shutting down: the outcome says nothing about the target
	}
	proto, result := protocolLabel(t.Check.Type), "success"
	if err != nil {
		result = "failure"
	}
	probesTotal.WithLabelValues(proto, result).Inc()
	probeDuration.WithLabelValues(proto, result).Observe(latency.Seconds())

	p.mu.Lock()
	if p.targets[t.Key] != t {
		p.mu.Unlock()
		return
	}
	from, changed := t.result.observe(err, start, latency, t.Check)
	to, errText := t.result.Status, t.result.Error
	fns := p.transitions
	if !changed {
		p.requeue(t, start)
	}
	p.mu.Unlock()
	if !changed {
		return
	}

	transitionsTotal.WithLabelValues(proto, statusLabel(to)).Inc()
	klog.V(2).InfoS("Health status changed", "target", t.Key, "address", t.Address, "from", from, "to", to, "error", errText)
	for _, fn := range fns {
		fn(t.Key, from, to)
	}
	p.mu.Lock()
	if p.targets[t.Key] == t {
		p.requeue(t, start)
	}
	p.mu.Unlock()
}

func (p *Prober) current(t *target) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.targets[t.Key] == t
}

// requeue schedules t's next probe an interval after its last one started, or was due if it
// started early (see batchWindow), with ±10% jitter. p.mu must be held.
func (p *Prober) requeue(t *target, started time.Time) {
	if t.next.After(started) {
		started = t.next
	}
	t.next = started.Add(p.nextDelay(t.Check.Interval))
	heap.Push(&p.queue, t)
	if t.index == 0 {
		p.poke()
	}
}

// firstDelay spreads first probes uniformly over one interval. p.mu must be held.
func (p *Prober) firstDelay(interval time.Duration) time.Duration {
	return time.Duration(p.rng.Int64N(int64(interval)))
}

// nextDelay is interval ±10%. p.mu must be held.
func (p *Prober) nextDelay(interval time.Duration) time.Duration {
	spread := int64(interval) / 5
	if spread == 0 {
		return interval
	}
	return interval - time.Duration(spread/2) + time.Duration(p.rng.Int64N(spread+1))
}

// poke wakes the dispatcher to look at the queue again.
func (p *Prober) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
