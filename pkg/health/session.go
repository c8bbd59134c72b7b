package health

import (
	"crypto/tls"
	"sync"
)

// sessionCache is what one target's scheduled TLS probes (HTTPS, TLS) carry from one probe to
// the next: its latest TLS session, so that the next probe can resume it, and whether the
// server turned down TLS 1.2. Keeping it per target (rather than in a shared LRU) costs one
// session per TLS target and never evicts a session that is about to be used.
type sessionCache struct {
	mu      sync.Mutex
	key     string
	session *tls.ClientSessionState
	noTLS12 bool
}

var _ tls.ClientSessionCache = (*sessionCache)(nil)

// Get implements tls.ClientSessionCache.
func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil || c.key != key {
		return nil, false
	}
	return c.session, true
}

// Put implements tls.ClientSessionCache.
func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.key, c.session = key, cs
}

// maxVersion is the highest TLS version to offer: TLS 1.2, whose resumed handshakes need no
// key exchange, unless the server turned it down.
func (c *sessionCache) maxVersion() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noTLS12 {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// refuseTLS12 records that the server completes handshakes only beyond TLS 1.2.
func (c *sessionCache) refuseTLS12() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noTLS12 = true
}
