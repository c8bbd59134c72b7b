package proxydeploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Annotations of the auth key Secret: what the key was minted with, never the key.
const (
	// AuthKeyIDAnnotation is the key's ID in the Tailscale API.
	AuthKeyIDAnnotation = "gateway.tailscale.com/auth-key-id"
	// AuthKeyExpiresAnnotation is the key's expiry (RFC 3339) as the API answered it.
	AuthKeyExpiresAnnotation = "gateway.tailscale.com/auth-key-expires"
)

// DefaultKeyCheckInterval is how often a proxy's auth key is looked up in the Tailscale API.
const DefaultKeyCheckInterval = 10 * time.Minute

// RenewBefore is how long before its expiry an unused key is replaced, so that a replica
// starting late still finds a usable key.
const RenewBefore = time.Hour

// keyLifetime is the expiry requested for minted keys: a key is needed only until its replica
// has joined, seconds after it starts.
const keyLifetime = 24 * time.Hour

// DefaultEnrollmentCheckInterval is how often the state Secrets of replicas that have not
// joined yet are read, to delete their used keys.
const DefaultEnrollmentCheckInterval = 5 * time.Second

// KeyRenewal returns why the auth key recorded in s must be replaced by one minted with tags,
// or "" when it is kept. info is the API's answer for the recorded key ID when it was looked
// up (nil otherwise) and lookupErr the lookup's error.
func KeyRenewal(s *corev1.Secret, tags []string, info *tailnet.AuthKeyInfo, lookupErr error, now time.Time) string {
	if want, had := strings.Join(tags, ","), s.Annotations[AuthKeyTagsAnnotation]; want != had {
		return fmt.Sprintf("the tags changed from [%s] to [%s]", had, want)
	}
	if s.Annotations[AuthKeyIDAnnotation] == "" || len(s.Data[AuthKeyKey]) == 0 {
		return "the Secret records no key ID"
	}
	switch {
	case tailnet.IsNotFound(lookupErr):
		return "the Tailscale API no longer has the key (revoked)"
	case lookupErr != nil || info == nil:
		return ""
	case !info.Revoked.IsZero() || info.Invalid:
		return "the Tailscale API reports the key revoked or invalid"
	case !info.Usable(now):
		return "the key expired at " + info.Expires.UTC().Format(time.RFC3339)
	case !info.Usable(now.Add(RenewBefore)):
		return "the key expires at " + info.Expires.UTC().Format(time.RFC3339)
	}
	return ""
}

// keyChecks remembers when each object's key was last looked up in the API.
type keyChecks struct {
	mu   sync.Mutex
	last map[string]time.Time // "namespace/name/keyID"
}

// due reports whether the key id of object key is to be looked up at now, and if so records it.
func (k *keyChecks) due(key, id string, now time.Time, every time.Duration) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.last == nil {
		k.last = map[string]time.Time{}
	}
	at, ok := k.last[key+"/"+id]
	if ok && now.Sub(at) < every {
		return false
	}
	for other := range k.last {
		if strings.HasPrefix(other, key+"/") {
			delete(k.last, other)
		}
	}
	k.last[key+"/"+id] = now
	return true
}

// forget drops what is remembered of object key.
func (k *keyChecks) forget(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for other := range k.last {
		if strings.HasPrefix(other, key+"/") {
			delete(k.last, other)
		}
	}
}

// keyTarget is obj's proxy for the Keyring.
func (c *Controller) keyTarget(obj *v1alpha1.TailscaleEndpoints) KeyTarget {
	n := NamesFor(obj.Namespace, obj.Name)
	key := obj.Namespace + "/" + obj.Name
	return KeyTarget{
		Object: obj, Key: key, Namespace: c.opts.Namespace,
		StateSecret: n.StateSecret, AuthKeySecret: n.AuthKeySecret,
		NewSecret: func(i int, k tailnet.AuthKey, tags []string) *corev1.Secret {
			return AuthKeySecret(c.opts.Namespace, obj, i, k, tags)
		},
		Ours:        func(s *corev1.Secret) bool { return IsKeptFor(s, obj) },
		Conflict:    func(kind, name string) error { return c.conflict(obj, kind, name) },
		API:         func() (tailnet.API, string, error) { return c.apiOf(obj) },
		Description: fmt.Sprintf("tailscale-gateway-proxy %s/%s", obj.Namespace, obj.Name),
		Requeue:     func(d time.Duration) { c.queue.AddAfter(key, d) },
		Release: func(ctx context.Context, s *corev1.Secret, why string) error {
			return c.release(ctx, obj, s, why)
		},
	}
}

// errRenewal marks a failure to replace an existing key: the proxies are deployed meanwhile
// (replicas with state need no key).
var errRenewal = errors.New("renewing the proxy's auth key")

// apiOf returns the Tailscale API of obj's tailnet.
func (c *Controller) apiOf(obj *v1alpha1.TailscaleEndpoints) (tailnet.API, string, error) {
	name, ok := c.opts.Tailnets.Resolve(obj.Spec.Tailnet)
	if !ok {
		return nil, "", fmt.Errorf("tailnet %q is not known yet", obj.Spec.Tailnet)
	}
	api, ok := c.opts.Tailnets.API(name)
	if !ok {
		return nil, name, fmt.Errorf("tailnet %s is not polled yet", name)
	}
	return api, name, nil
}

// revokeRecorded revokes the key whose ID Secret s records, if any, before s is deleted
// (Keyring.RevokeRecorded).
func (c *Controller) revokeRecorded(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, s *corev1.Secret, why string) {
	c.keys.RevokeRecorded(ctx, c.keyTarget(obj), s, why)
}
