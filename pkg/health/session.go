package health

import (
	"crypto/tls"
	"sync"
)

// sessionCache keeps the latest TLS session of one target, so that its next HTTPS probe can
// resume it and skip the certificate exchange. Keeping it per target (rather than in a shared
// LRU) costs one session per TLS target and never evicts a session that is about to be used.
type sessionCache struct {
	mu      sync.Mutex
	key     string
	session *tls.ClientSessionState
}

var _ tls.ClientSessionCache = (*sessionCache)(nil)

func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil || c.key != key {
		return nil, false
	}
	return c.session, true
}

func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.key, c.session = key, cs
}
