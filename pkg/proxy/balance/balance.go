// Package balance chooses the backend of each new connection to a Tailscale Service hosted by
// tailscale-gateway-proxy, with the strategies of a TailscaleServices: round-robin,
// least-connections (on the proxy's own active connections), weighted and failover. Health and
// the active failover tier are inputs (from the objects' persisted status); nothing is probed
// or recomputed here.
package balance

import (
	"slices"
	"sync"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Tiers of the failover strategy, as status.loadBalancingStatus.failoverStatus.activeTier names them.
const (
	TierPrimary   = "primary"
	TierSecondary = "secondary"
)

// Backend is one place a connection can be sent.
type Backend struct {
	// Key identifies the backend across configuration changes: active-connection counts and
	// metrics are kept by it.
	Key string
	// Group is what weights and failover tiers name: the TailscaleEndpoints or external
	// service the backend belongs to.
	Group string
	// Network ("tcp") and Address (host:port) are dialled.
	Network, Address string
	// Tailnet backends are dialled through the proxy's tsnet node, others through the host's network.
	Tailnet bool
	// Weight is the share of traffic of Group under the weighted strategy; the backends of a
	// group share it equally. Zero takes the group out of weighted balancing.
	Weight int32
	// Secondary puts the backend in the secondary failover tier.
	Secondary bool
	// Unhealthy backends get no new connections.
	Unhealthy bool
}

// Policy is how a Balancer chooses.
type Policy struct {
	// Strategy is one of v1alpha1's; empty means round-robin.
	Strategy v1alpha1.LoadBalancingStrategy
	// ActiveTier is the failover tier that takes traffic ("primary" when empty), as the server
	// persisted it with failbackDelay applied. When it has no usable backend, the other tier
	// is used rather than refusing the connection.
	ActiveTier string
}

// Conns counts active connections by backend key. One Conns outlives the Balancers built
// from successive configurations, so least-connections keeps seeing connections opened
// before a change. It is safe for concurrent use.
type Conns struct {
	mu     sync.Mutex
	active map[string]int64
}

// NewConns returns an empty count.
func NewConns() *Conns { return &Conns{active: map[string]int64{}} }

// Active is the number of active connections to the backend key.
func (c *Conns) Active(key string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active[key]
}

func (c *Conns) inc(key string) func() {
	c.active[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.active[key]--; c.active[key] <= 0 {
				delete(c.active, key)
			}
		})
	}
}

// Balancer picks backends for new connections. It is safe for concurrent use.
type Balancer struct {
	policy   Policy
	backends []Backend
	conns    *Conns

	mu      sync.Mutex
	next    int              // round-robin position in backends
	current map[string]int64 // smooth weighted round-robin state by group
	inGroup map[string]int   // round-robin position within each group
}

// New returns a Balancer over backends; conns counts their active connections.
func New(policy Policy, backends []Backend, conns *Conns) *Balancer {
	return &Balancer{policy: policy, backends: backends, conns: conns,
		current: map[string]int64{}, inGroup: map[string]int{}}
}

// Policy returns the balancer's policy.
func (b *Balancer) Policy() Policy { return b.policy }

// Backends returns the backends the balancer chooses from.
func (b *Balancer) Backends() []Backend { return b.backends }

// Pick chooses the backend of a new connection among those whose keys are not in tried, and
// counts it as active until release is called (once the connection ends, or at once when
// dialling it fails). ok is false when no usable backend is left.
func (b *Balancer) Pick(tried []string) (be Backend, release func(), ok bool) {
	b.conns.mu.Lock()
	defer b.conns.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()

	usable := b.usable(tried)
	if len(usable) == 0 {
		return Backend{}, nil, false
	}
	var i int
	switch b.policy.Strategy {
	case v1alpha1.StrategyLeastConnections:
		i = b.leastConnections(usable)
	case v1alpha1.StrategyWeighted:
		var found bool
		if i, found = b.weighted(usable); !found {
			return Backend{}, nil, false
		}
	default: // round-robin, and round-robin within the tier under failover
		i = b.roundRobin(usable)
	}
	return b.backends[i], b.conns.inc(b.backends[i].Key), true
}

// usable marks the indexes of backends a new connection may use: healthy or unknown, not
// tried yet, and under failover in the active tier (or in the other one when the active tier
// has none).
func (b *Balancer) usable(tried []string) []bool {
	out := make([]bool, len(b.backends))
	found := false
	for i, be := range b.backends {
		if be.Unhealthy || slices.Contains(tried, be.Key) {
			continue
		}
		out[i], found = true, true
	}
	if !found {
		return nil
	}
	if b.policy.Strategy != v1alpha1.StrategyFailover {
		return out
	}
	secondaryActive := b.policy.ActiveTier == TierSecondary
	inActive := make([]bool, len(b.backends))
	found = false
	for i, be := range b.backends {
		if out[i] && be.Secondary == secondaryActive {
			inActive[i], found = true, true
		}
	}
	if found {
		return inActive
	}
	return out
}

func (b *Balancer) roundRobin(usable []bool) int {
	n := len(b.backends)
	for k := range n {
		i := (b.next + k) % n
		if usable[i] {
			b.next = i + 1
			return i
		}
	}
	panic("balance: no usable backend") // unreachable: usable holds at least one
}

// leastConnections picks the usable backend with the fewest active connections, the first
// from the round-robin position on among equals.
func (b *Balancer) leastConnections(usable []bool) int {
	n := len(b.backends)
	best, bestActive := -1, int64(0)
	for k := range n {
		i := (b.next + k) % n
		if !usable[i] {
			continue
		}
		if a := b.conns.active[b.backends[i].Key]; best < 0 || a < bestActive {
			best, bestActive = i, a
		}
	}
	b.next = best + 1
	return best
}

// weighted picks a group by smooth weighted round-robin (nginx's: over any window of
// sum(weights) picks each group gets exactly its weight, interleaved), then a backend of the
// group by round-robin.
func (b *Balancer) weighted(usable []bool) (int, bool) {
	weights := map[string]int64{}
	var order []string
	for i, be := range b.backends {
		if !usable[i] || be.Weight <= 0 {
			continue
		}
		if _, ok := weights[be.Group]; !ok {
			order = append(order, be.Group)
		}
		weights[be.Group] = int64(be.Weight)
	}
	if len(order) == 0 {
		return 0, false
	}
	var total int64
	chosen := ""
	for _, g := range order {
		total += weights[g]
		b.current[g] += weights[g]
		if chosen == "" || b.current[g] > b.current[chosen] {
			chosen = g
		}
	}
	b.current[chosen] -= total
	var members []int
	for i, be := range b.backends {
		if usable[i] && be.Group == chosen && be.Weight > 0 {
			members = append(members, i)
		}
	}
	k := b.inGroup[chosen] % len(members)
	b.inGroup[chosen] = k + 1
	return members[k], true
}
