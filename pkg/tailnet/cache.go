package tailnet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
)

// Cache defaults.
const (
	DefaultInterval         = 30 * time.Second
	DefaultJitter           = 0.1
	DefaultPollTimeout      = 2 * time.Minute
	DefaultHostsConcurrency = 4
)

// Options configures a Cache. Zero values take the defaults.
type Options struct {
	// Interval between the end of one poll and the start of the next.
	Interval time.Duration
	// Jitter spreads polls by up to this fraction of the interval either way. Negative: none.
	Jitter float64
	// PollTimeout bounds one poll.
	PollTimeout time.Duration
	// MinRefreshInterval makes Refresh answer from memory when a poll finished less than this
	// long ago. Zero: every Refresh with no poll in flight polls.
	MinRefreshInterval time.Duration
	// SkipServiceHosts turns off polling the hosts of every Service.
	SkipServiceHosts bool
	// HostsConcurrency bounds concurrent service-host requests within a poll.
	HostsConcurrency int
	// Credentials supplies credentials to the default client constructor.
	Credentials CredentialSource
	// SecretNamespace, when set, is the only namespace credentials are read from (the
	// installation's): a tailnet naming a Secret elsewhere gets no client, so whoever may create
	// a TailscaleTailnet cannot make the server read, and send on, another namespace's Secret.
	SecretNamespace string
	// Transport tunes the default clients' rate limiting and retries.
	Transport TransportOptions
	// UserAgent of the default clients.
	UserAgent string
	// NewAPI replaces the default client constructor (Credentials + NewClient), for tests or
	// other transports. It is called again after the API refuses the credentials.
	NewAPI func(ctx context.Context, cfg Config) (API, error)
	// Logger defaults to klog.Background().
	Logger *klog.Logger
	// Follower starts the Cache without polling: snapshots arrive through Import until
	// SetPolling(true), as in a replica that does not hold the polling Lease.
	Follower bool
	// OnPolled, when set, receives every snapshot a poll of this Cache published (not those
	// imported), e.g. to share it with other replicas. It must not block.
	OnPolled func(Snapshot)
}

func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Jitter == 0 {
		o.Jitter = DefaultJitter
	}
	if o.Jitter < 0 {
		o.Jitter = 0
	}
	o.Jitter = min(o.Jitter, 0.5)
	if o.PollTimeout <= 0 {
		o.PollTimeout = DefaultPollTimeout
	}
	if o.HostsConcurrency <= 0 {
		o.HostsConcurrency = DefaultHostsConcurrency
	}
	return o
}

// Cache polls each tailnet in the background and serves the results from memory. Snapshot
// never makes an API call; at most one poll per tailnet is in flight at any time.
type Cache struct {
	opts Options
	log  klog.Logger

	mu       sync.RWMutex
	tailnets map[string]*tailnetState
	subs     []*subscriber
	closed   bool
	// pending holds imported snapshots of tailnets not added yet.
	pending map[string]Snapshot

	paused atomic.Bool

	goMu     sync.Mutex // guards stopping and wg.Add
	stopping bool
	wg       sync.WaitGroup // every poller and poll goroutine
}

// NewCache returns an empty Cache. Add tailnets to start polling them; Close stops all.
func NewCache(opts Options) *Cache {
	opts = opts.withDefaults()
	log := klog.Background()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	registerMetrics()
	c := &Cache{opts: opts, log: log.WithName("tailnet"), tailnets: map[string]*tailnetState{}, pending: map[string]Snapshot{}}
	c.paused.Store(opts.Follower)
	caches.add(c)
	return c
}

// SetPolling starts (true) or stops (false) the scheduled polls of every tailnet. A Cache that
// starts polling again continues the schedule of the last snapshot it polled or imported, so
// handing polling from one replica to another keeps one poll per interval.
func (c *Cache) SetPolling(on bool) {
	if c.paused.Swap(!on) == !on {
		return
	}
	c.log.Info("Tailnet polling", "enabled", on)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, t := range c.tailnets {
		t.poke()
	}
}

// Polling reports whether the Cache polls on schedule.
func (c *Cache) Polling() bool { return !c.paused.Load() }

// Import publishes a snapshot polled elsewhere (another replica) as this Cache's state of the
// tailnet, telling subscribers what changed, as a poll would. It is ignored when it is not newer
// than the state already held, or when it is of another tailnet than the one configured.
func (c *Cache) Import(s Snapshot) {
	c.mu.Lock()
	t, ok := c.tailnets[s.Name]
	if !ok {
		if p, had := c.pending[s.Name]; !had || s.LastAttempt.After(p.LastAttempt) {
			c.pending[s.Name] = s
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	t.importSnapshot(s)
}

// Add starts polling the tailnet of a TailscaleTailnet named name, or updates its
// configuration if it is already known. A change of tailnet, base URL or credentials discards
// the last-known state and polls again at once; other changes keep it.
func (c *Cache) Add(name string, cfg Config) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if t, ok := c.tailnets[name]; ok {
		if t.config().sameEndpoint(cfg) {
			c.mu.Unlock()
			t.setConfig(cfg)
			return
		}
		t.stop()
		c.log.Info("Tailnet endpoint changed, polling again", "tailnet", name)
	}
	t := newTailnetState(c, name, cfg)
	c.tailnets[name] = t
	p, imported := c.pending[name]
	delete(c.pending, name)
	c.spawn(t.loop)
	c.mu.Unlock()
	if imported {
		t.importSnapshot(p)
	}
}

// Update is Add.
func (c *Cache) Update(name string, cfg Config) { c.Add(name, cfg) }

// Remove stops polling a tailnet and forgets its state. Subscribers get a Change with
// TailnetRemoved.
func (c *Cache) Remove(name string) {
	c.mu.Lock()
	t, ok := c.tailnets[name]
	if ok {
		delete(c.tailnets, name)
		t.stop()
	}
	delete(c.pending, name)
	c.mu.Unlock()
	if ok {
		c.notify(Change{Name: name, Snapshot: t.snapshot(), TailnetRemoved: true})
	}
}

// Snapshot returns the last-known state of a tailnet from memory; false if the tailnet is not
// known. Before the first poll finishes, the snapshot is empty with reason Pending.
func (c *Cache) Snapshot(name string) (Snapshot, bool) {
	t := c.get(name)
	if t == nil {
		return Snapshot{}, false
	}
	return t.snapshot(), true
}

// Refresh polls a tailnet now and returns the result, or joins the poll in flight (which may
// have started before the caller's last write). The poll runs on the Cache's own context; ctx
// only bounds the wait. On a failed poll the snapshot still holds the last-known data.
func (c *Cache) Refresh(ctx context.Context, name string) (Snapshot, error) {
	t := c.get(name)
	if t == nil {
		return Snapshot{}, fmt.Errorf("refresh %q: %w", name, ErrUnknownTailnet)
	}
	return t.refresh(ctx)
}

// Subscribe calls fn with every non-empty Change, in order, on a goroutine of its own.
// The returned function unsubscribes.
func (c *Cache) Subscribe(fn func(Change)) (unsubscribe func()) {
	s := newSubscriber(fn)
	c.mu.Lock()
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.subs = slices.DeleteFunc(c.subs, func(x *subscriber) bool { return x == s })
		c.mu.Unlock()
		s.close()
	}
}

// API returns the API of a tailnet, sharing the poller's client, rate limit and counters.
// The client is built on first use and rebuilt after the API refuses the credentials.
func (c *Cache) API(name string) (API, bool) {
	t := c.get(name)
	if t == nil {
		return nil, false
	}
	return t.handle, true
}

// Stats returns a tailnet's counters.
func (c *Cache) Stats(name string) (Stats, bool) {
	t := c.get(name)
	if t == nil {
		return Stats{}, false
	}
	return t.stats(), true
}

// ResetClient drops a tailnet's client so that the next call re-reads its credentials, for
// callers that watch the credentials' Secret.
func (c *Cache) ResetClient(name string) {
	if t := c.get(name); t != nil {
		t.resetClient()
	}
}

// Tailnets lists the names of the known tailnets, sorted.
func (c *Cache) Tailnets() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.tailnets))
	for n := range c.tailnets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Close stops every poller and subscriber and waits for the pollers and polls to return.
func (c *Cache) Close() {
	c.goMu.Lock()
	c.stopping = true
	c.goMu.Unlock()
	caches.remove(c)
	c.mu.Lock()
	c.closed = true
	for name, t := range c.tailnets {
		t.stop()
		delete(c.tailnets, name)
	}
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
	c.wg.Wait()
}

// spawn runs fn on a goroutine that Close waits for; false once Close has begun.
func (c *Cache) spawn(fn func()) bool {
	c.goMu.Lock()
	defer c.goMu.Unlock()
	if c.stopping {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

func (c *Cache) get(name string) *tailnetState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tailnets[name]
}

// notify hands ch to every subscriber.
func (c *Cache) notify(ch Change) {
	if ch.Empty() {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, s := range c.subs {
		s.push(ch)
	}
}

// newAPI builds the API for cfg.
func (c *Cache) newAPI(ctx context.Context, cfg Config) (API, error) {
	if c.opts.NewAPI != nil {
		return c.opts.NewAPI(ctx, cfg)
	}
	if c.opts.Credentials == nil {
		return nil, errors.New("no credential source configured")
	}
	if err := c.opts.checkConfig(cfg); err != nil {
		return nil, err
	}
	creds, err := c.opts.Credentials.Credentials(ctx, cfg.Secret)
	if err != nil {
		return nil, err
	}
	return NewClient(ClientOptions{
		Tailnet:     cfg.Tailnet,
		BaseURL:     cfg.BaseURL,
		Credentials: creds,
		Transport:   c.opts.Transport,
		UserAgent:   c.opts.UserAgent,
	})
}

// checkConfig refuses, before any credential is read, a Secret outside SecretNamespace and an
// API URL the credentials would travel to in clear (objects stored before validation refused it).
func (o Options) checkConfig(cfg Config) error {
	if o.SecretNamespace != "" && cfg.Secret.Namespace != o.SecretNamespace {
		return fmt.Errorf("secret %s: OAuth Secrets are read only from namespace %s: %w", cfg.Secret, o.SecretNamespace, ErrCredentialsNotFound)
	}
	if cfg.BaseURL != "" {
		if errs := validation.ValidateAPIBaseURL(cfg.BaseURL, field.NewPath("spec", "apiBaseURL")); len(errs) > 0 {
			return fmt.Errorf("not sending credentials: %w", errs.ToAggregate())
		}
	}
	return nil
}
