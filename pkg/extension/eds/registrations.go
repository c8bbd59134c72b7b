package eds

import (
	"slices"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
)

// Bounds of the clusters known from hook calls alone.
const (
	// DefaultMaxRegistered is how many registrations the server keeps; registering one more
	// forgets the least recently registered.
	DefaultMaxRegistered = 10000
	// DefaultRegistrationTTL is how long a registration whose HTTPRoute the route cache does not
	// hold is kept (Envoy Gateway may see a route before this server's informer does); after it
	// the cluster is forgotten and its load assignment withdrawn.
	DefaultRegistrationTTL = 2 * time.Minute
)

// registration is what the hook told the server about one cluster.
type registration struct {
	refs []backends.Ref
	at   time.Time
}

// Register records the refs the extension's hook found in a cluster it shaped. Refs of an
// HTTPRoute rule in the route cache take precedence over them. At most MaxRegistered are kept.
func (s *Server) Register(cluster string, refs []backends.Ref) {
	if rule, ok := backends.ParseClusterName(cluster); ok && s.routes != nil {
		if _, err := s.routes.HTTPRoutes(rule.Namespace).Get(rule.Name); err == nil {
			return // the cached route decides the cluster
		}
	}
	now := s.clock.Now()
	s.mu.Lock()
	old, ok := s.registered[cluster]
	changed := !ok || !slices.Equal(old.refs, refs)
	s.registered[cluster] = registration{refs: slices.Clone(refs), at: now}
	if !ok && len(s.registered) > s.maxRegistered {
		s.evictOldestLocked()
	}
	s.mu.Unlock()
	if changed {
		s.markDirty()
	}
}

func (s *Server) evictOldestLocked() {
	var oldest string
	var at time.Time
	for name, r := range s.registered {
		if oldest == "" || r.at.Before(at) {
			oldest, at = name, r.at
		}
	}
	delete(s.registered, oldest)
	registrationsEvicted.Inc()
}

// Registered returns how many clusters the server knows from hook calls alone.
func (s *Server) Registered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.registered)
}

// collectRegistrations forgets, once the route cache has synced, the registrations of clusters
// whose HTTPRoute it holds (the route decides them) and those older than the TTL whose route it
// does not hold. Without a route cache (standalone) registrations are the only source of
// clusters and are kept, within the bound.
func (s *Server) collectRegistrationsLocked(routeExists func(backends.RouteRule) bool) (pending bool) {
	if s.routes == nil || (s.routesSynced != nil && !s.routesSynced()) {
		return len(s.registered) > 0
	}
	now := s.clock.Now()
	for name, r := range s.registered {
		rule, ok := backends.ParseClusterName(name)
		if ok && routeExists(rule) {
			delete(s.registered, name)
			continue
		}
		if now.Sub(r.at) >= s.registrationTTL {
			delete(s.registered, name)
			continue
		}
		pending = true
	}
	return pending
}
