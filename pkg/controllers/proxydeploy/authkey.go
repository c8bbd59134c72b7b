package proxydeploy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
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

// ensureAuthKeys keeps, for each of the first replicas that has not joined the tailnet yet (its
// state Secret records no node ID, kubestate.Enrolled), a Secret with a single-use auth key of
// its own (ensureAuthKey); the Secret of a replica that has joined is deleted, its used key
// revoked. pending reports whether some replica has not joined yet.
func (c *Controller) ensureAuthKeys(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, tags []string, replicas int) (pending bool, _ error) {
	n := NamesFor(obj.Namespace, obj.Name)
	var errs []error
	for i := range replicas {
		state, err := c.kube.CoreV1().Secrets(c.opts.Namespace).Get(ctx, n.StateSecret(i), metav1.GetOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("reading Secret %s: %w", n.StateSecret(i), err))
			continue
		}
		if kubestate.Enrolled(state.Data) {
			if err := c.deleteSecrets(ctx, obj, []string{n.AuthKeySecret(i)}, func(string) bool { return true }); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		pending = true
		if err := c.ensureAuthKey(ctx, obj, i, tags); err != nil {
			errs = append(errs, err)
		}
	}
	return pending, errors.Join(errs...)
}

// ensureAuthKey keeps the auth key Secret of replica i: minted when the Secret does not exist,
// minted again (the Secret updated in place) when the tags it was minted with are not tags any
// more or when the Tailscale API, asked every KeyCheckInterval, reports it expired, about to
// expire, used or revoked. A replaced key is revoked.
func (c *Controller) ensureAuthKey(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, i int, tags []string) error {
	name := NamesFor(obj.Namespace, obj.Name).AuthKeySecret(i)
	existing, err := c.kube.CoreV1().Secrets(c.opts.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return c.mintAuthKey(ctx, obj, i, tags, nil, "")
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s: %w", name, err)
	}
	if !IsKeptFor(existing, obj) {
		return c.conflict(obj, "Secret", name)
	}
	objKey := obj.Namespace + "/" + obj.Name
	now := c.opts.Now()
	var info *tailnet.AuthKeyInfo
	var lookupErr error
	reason := KeyRenewal(existing, tags, nil, nil, now)
	if id := existing.Annotations[AuthKeyIDAnnotation]; reason == "" && c.keys.due(objKey+"/"+strconv.Itoa(i), id, now, c.opts.KeyCheckInterval) {
		if api, tn, err := c.apiOf(obj); err != nil {
			lookupErr = err
		} else if got, err := api.AuthKeyInfo(ctx, id); err != nil {
			lookupErr = err
			if !tailnet.IsNotFound(err) {
				klog.FromContext(ctx).Error(err, "Looking up the proxy's auth key; kept until the next check",
					"endpoints", klog.KObj(obj), "tailnet", tn, "keyID", id)
			}
		} else {
			info = &got
		}
		reason = KeyRenewal(existing, tags, info, lookupErr, now)
	}
	// Looked up again after the interval without any other event.
	c.queue.AddAfter(objKey, c.opts.KeyCheckInterval)
	if reason == "" {
		return nil
	}
	if err := c.mintAuthKey(ctx, obj, i, tags, existing, reason); err != nil {
		c.keys.forget(objKey)                        // looked up again on the retry
		return fmt.Errorf("%w: %s", errRenewal, err) // one error: a deployed proxy whose key is not renewed
	}
	return nil
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

// mintAuthKey mints a key with tags for replica i and stores it: a new Secret when existing is
// nil, else existing updated (and its previous key revoked). The key is single-use (the replica
// joins once; a copy of it is refused afterwards), preauthorized and not ephemeral.
func (c *Controller) mintAuthKey(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, i int, tags []string, existing *corev1.Secret, reason string) error {
	secretName := NamesFor(obj.Namespace, obj.Name).AuthKeySecret(i)
	api, name, err := c.apiOf(obj)
	if err != nil {
		return fmt.Errorf("minting the proxy's auth key: %w", err)
	}
	key, err := api.CreateAuthKey(ctx, tailnet.AuthKeyOptions{Tags: tags, Preauthorized: true, Expiry: keyLifetime,
		Description: fmt.Sprintf("tailscale-gateway-proxy %s/%s replica %d", obj.Namespace, obj.Name, i)})
	if err != nil {
		// tailnet errors never carry credentials or keys.
		c.opts.Recorder.Eventf(obj, corev1.EventTypeWarning, ReasonMintFailed, "Minting the proxy's auth key in tailnet %s: %v", name, err)
		return fmt.Errorf("minting the proxy's auth key: %w", err)
	}
	want := AuthKeySecret(c.opts.Namespace, obj, i, key, tags)
	log := klog.FromContext(ctx)
	if existing == nil {
		if _, err := c.kube.CoreV1().Secrets(c.opts.Namespace).Create(ctx, want, metav1.CreateOptions{}); err != nil {
			c.revoke(ctx, obj, api, key.ID, "it could not be stored")
			return fmt.Errorf("storing the proxy's auth key (key %s) in Secret %s: %w", key.ID, secretName, err)
		}
		c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonKeyMinted, "Minted single-use auth key %s for proxy replica %d in tailnet %s with tags %v", key.ID, i, name, tags)
		log.Info("Minted the proxy's auth key", "endpoints", klog.KObj(obj), "replica", i, "keyID", key.ID, "tags", tags)
		return nil
	}
	upd := existing.DeepCopy()
	upd.Data = want.Data
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	for k, v := range want.Annotations {
		upd.Annotations[k] = v
	}
	if _, err := c.kube.CoreV1().Secrets(c.opts.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		c.revoke(ctx, obj, api, key.ID, "it could not be stored")
		return fmt.Errorf("storing the proxy's renewed auth key (key %s) in Secret %s: %w", key.ID, secretName, err)
	}
	old := existing.Annotations[AuthKeyIDAnnotation]
	c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonKeyRenewed,
		"Minted single-use auth key %s for proxy replica %d in tailnet %s with tags %v, replacing key %q: %s", key.ID, i, name, tags, old, reason)
	log.Info("Renewed the proxy's auth key", "endpoints", klog.KObj(obj), "replica", i, "keyID", key.ID, "previousKeyID", old, "tags", tags, "reason", reason)
	if old != "" {
		c.revoke(ctx, obj, api, old, "it was replaced")
	}
	return nil
}

// revoke deletes key id in the Tailscale API; a failure is logged (the key then lapses at its
// expiry).
func (c *Controller) revoke(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, api tailnet.API, id, why string) {
	if err := api.DeleteAuthKey(ctx, id); err != nil {
		klog.FromContext(ctx).Error(err, "Revoking an auth key of the proxy", "endpoints", klog.KObj(obj), "keyID", id, "why", why)
		return
	}
	klog.FromContext(ctx).V(2).Info("Revoked an auth key of the proxy", "endpoints", klog.KObj(obj), "keyID", id, "why", why)
}

// revokeRecorded revokes the key whose ID Secret s records, if any, before s is deleted: a key
// that leaves the cluster leaves the tailnet too. A key that cannot be revoked (the tailnet is
// gone or its API fails) is logged and lapses at its expiry.
func (c *Controller) revokeRecorded(ctx context.Context, obj *v1alpha1.TailscaleEndpoints, s *corev1.Secret, why string) {
	id := s.Annotations[AuthKeyIDAnnotation]
	if id == "" {
		return
	}
	api, _, err := c.apiOf(obj)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Revoking an auth key of the proxy", "endpoints", klog.KObj(obj), "keyID", id, "why", why)
		return
	}
	c.revoke(ctx, obj, api, id, why)
}
