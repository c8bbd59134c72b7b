package proxydeploy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Keyring keeps the single-use auth keys of a proxy's replicas, for the dedicated proxies of
// this package and the proxy pools of pkg/controllers/proxypool alike: each replica that has not
// joined gets a key of its own in a Secret, minted again when its tags change or the Tailscale
// API reports it expired, about to expire, used or revoked; the key of a replica that joined,
// and every key whose Secret is deleted, is revoked.
type Keyring struct {
	Kube     kubernetes.Interface
	Recorder record.EventRecorder
	// Now is the clock; CheckInterval how often each unused key is looked up in the API.
	Now           func() time.Time
	CheckInterval time.Duration

	checks keyChecks
}

// KeyTarget is one proxy whose replicas the Keyring keeps keys for.
type KeyTarget struct {
	// Object receives the Events; Key names it in logs and in the lookup schedule.
	Object runtime.Object
	Key    string
	// Namespace holds the state and auth key Secrets; StateSecret and AuthKeySecret name
	// replica i's.
	Namespace                  string
	StateSecret, AuthKeySecret func(i int) string
	// NewSecret builds replica i's auth key Secret holding key minted with tags.
	NewSecret func(i int, key tailnet.AuthKey, tags []string) *corev1.Secret
	// Ours reports whether an existing Secret was made for this proxy; one that is not is
	// left alone and reported through Conflict.
	Ours     func(*corev1.Secret) bool
	Conflict func(kind, name string) error
	// API reaches the proxy's tailnet (its API and the TailscaleTailnet's name).
	API func() (tailnet.API, string, error)
	// Description is written on minted keys, such as "tailscale-gateway-proxy ns/name".
	Description string
	// Requeue asks for the proxy to be reconciled again after d.
	Requeue func(d time.Duration)
	// Release, when set, is done to each Secret before Delete deletes it instead of
	// RevokeRecorded (a dedicated proxy also deletes its replica's device); an error keeps the
	// Secret.
	Release func(ctx context.Context, s *corev1.Secret, why string) error
}

// Ensure keeps, for each of the first replicas that has not joined the tailnet yet (its state
// Secret records no node ID, kubestate.Enrolled), a Secret with a single-use auth key of its own;
// the Secret of a replica that has joined is deleted, its used key revoked. pending reports
// whether some replica has not joined yet.
func (k *Keyring) Ensure(ctx context.Context, t KeyTarget, tags []string, replicas int) (pending bool, _ error) {
	var errs []error
	for i := range replicas {
		state, err := k.Kube.CoreV1().Secrets(t.Namespace).Get(ctx, t.StateSecret(i), metav1.GetOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("reading Secret %s: %w", t.StateSecret(i), err))
			continue
		}
		if kubestate.Enrolled(state.Data) {
			if err := k.Delete(ctx, t, []string{t.AuthKeySecret(i)}, func(string) bool { return true }); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		pending = true
		if err := k.ensure(ctx, t, i, tags); err != nil {
			errs = append(errs, err)
		}
	}
	return pending, errors.Join(errs...)
}

// Forget drops the lookup schedule of the proxy key.
func (k *Keyring) Forget(key string) { k.checks.forget(key) }

// ensure keeps the auth key Secret of replica i: minted when the Secret does not exist, minted
// again (the Secret updated in place) when KeyRenewal says so, the API asked every
// CheckInterval. A replaced key is revoked.
func (k *Keyring) ensure(ctx context.Context, t KeyTarget, i int, tags []string) error {
	name := t.AuthKeySecret(i)
	existing, err := k.Kube.CoreV1().Secrets(t.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return k.mint(ctx, t, i, tags, nil, "")
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s: %w", name, err)
	}
	if !t.Ours(existing) {
		return t.Conflict("Secret", name)
	}
	now := k.Now()
	var info *tailnet.AuthKeyInfo
	var lookupErr error
	reason := KeyRenewal(existing, tags, nil, nil, now)
	if id := existing.Annotations[AuthKeyIDAnnotation]; reason == "" && k.checks.due(t.Key+"/"+strconv.Itoa(i), id, now, k.CheckInterval) {
		if api, tn, err := t.API(); err != nil {
			lookupErr = err
		} else if got, err := api.AuthKeyInfo(ctx, id); err != nil {
			lookupErr = err
			if !tailnet.IsNotFound(err) {
				klog.FromContext(ctx).Error(err, "Looking up the proxy's auth key; kept until the next check",
					"proxy", t.Key, "tailnet", tn, "keyID", id)
			}
		} else {
			info = &got
		}
		reason = KeyRenewal(existing, tags, info, lookupErr, now)
	}
	// Looked up again after the interval without any other event.
	t.Requeue(k.CheckInterval)
	if reason == "" {
		return nil
	}
	if err := k.mint(ctx, t, i, tags, existing, reason); err != nil {
		k.checks.forget(t.Key)                       // looked up again on the retry
		return fmt.Errorf("%w: %s", errRenewal, err) // one error: a deployed proxy whose key is not renewed
	}
	return nil
}

// mint mints a key with tags for replica i and stores it: a new Secret when existing is nil,
// else existing updated (and its previous key revoked). The key is single-use (the replica
// joins once; a copy of it is refused afterwards), preauthorized and not ephemeral.
func (k *Keyring) mint(ctx context.Context, t KeyTarget, i int, tags []string, existing *corev1.Secret, reason string) error {
	secretName := t.AuthKeySecret(i)
	api, name, err := t.API()
	if err != nil {
		return fmt.Errorf("minting the proxy's auth key: %w", err)
	}
	key, err := api.CreateAuthKey(ctx, tailnet.AuthKeyOptions{Tags: tags, Preauthorized: true, Expiry: keyLifetime,
		Description: fmt.Sprintf("%s replica %d", t.Description, i)})
	if err != nil {
		// tailnet errors never carry credentials or keys.
		k.Recorder.Eventf(t.Object, corev1.EventTypeWarning, ReasonMintFailed, "Minting the proxy's auth key in tailnet %s: %v", name, err)
		return fmt.Errorf("minting the proxy's auth key: %w", err)
	}
	want := t.NewSecret(i, key, tags)
	secrets := k.Kube.CoreV1().Secrets(t.Namespace)
	log := klog.FromContext(ctx)
	if existing == nil {
		if _, err := secrets.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			k.revoke(ctx, t, api, key.ID, "it could not be stored")
			return fmt.Errorf("storing the proxy's auth key (key %s) in Secret %s: %w", key.ID, secretName, err)
		}
		k.Recorder.Eventf(t.Object, corev1.EventTypeNormal, ReasonKeyMinted, "Minted single-use auth key %s for proxy replica %d in tailnet %s with tags %v", key.ID, i, name, tags)
		log.Info("Minted the proxy's auth key", "proxy", t.Key, "replica", i, "keyID", key.ID, "tags", tags)
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
	if _, err := secrets.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		k.revoke(ctx, t, api, key.ID, "it could not be stored")
		return fmt.Errorf("storing the proxy's renewed auth key (key %s) in Secret %s: %w", key.ID, secretName, err)
	}
	old := existing.Annotations[AuthKeyIDAnnotation]
	k.Recorder.Eventf(t.Object, corev1.EventTypeNormal, ReasonKeyRenewed,
		"Minted single-use auth key %s for proxy replica %d in tailnet %s with tags %v, replacing key %q: %s", key.ID, i, name, tags, old, reason)
	log.Info("Renewed the proxy's auth key", "proxy", t.Key, "replica", i, "keyID", key.ID, "previousKeyID", old, "tags", tags, "reason", reason)
	if old != "" {
		k.revoke(ctx, t, api, old, "it was replaced")
	}
	return nil
}

// revoke deletes key id in the Tailscale API; a failure is logged (the key then lapses at its
// expiry).
func (k *Keyring) revoke(ctx context.Context, t KeyTarget, api tailnet.API, id, why string) {
	if err := api.DeleteAuthKey(ctx, id); err != nil {
		klog.FromContext(ctx).Error(err, "Revoking an auth key of the proxy", "proxy", t.Key, "keyID", id, "why", why)
		return
	}
	klog.FromContext(ctx).V(2).Info("Revoked an auth key of the proxy", "proxy", t.Key, "keyID", id, "why", why)
}

// RevokeRecorded revokes the key whose ID Secret s records, if any, before s is deleted: a key
// that leaves the cluster leaves the tailnet too. A key that cannot be revoked (the tailnet is
// gone or its API fails) is logged and lapses at its expiry.
func (k *Keyring) RevokeRecorded(ctx context.Context, t KeyTarget, s *corev1.Secret, why string) {
	id := s.Annotations[AuthKeyIDAnnotation]
	if id == "" {
		return
	}
	api, _, err := t.API()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Revoking an auth key of the proxy", "proxy", t.Key, "keyID", id, "why", why)
		return
	}
	k.revoke(ctx, t, api, id, why)
}

// Delete deletes those of the Secrets names for which drop is true and that are ours, first
// revoking the key each records (RevokeRecorded).
func (k *Keyring) Delete(ctx context.Context, t KeyTarget, names []string, drop func(name string) bool) error {
	secrets := k.Kube.CoreV1().Secrets(t.Namespace)
	for _, name := range names {
		if !drop(name) {
			continue
		}
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
		if !t.Ours(s) {
			continue
		}
		if t.Release == nil {
			k.RevokeRecorded(ctx, t, s, "its Secret is deleted")
		} else if err := t.Release(ctx, s, "its Secret is deleted"); err != nil {
			return err
		}
		uid := s.UID
		err = secrets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting Secret %s: %w", name, err)
		}
	}
	return nil
}

// RenewalOnly reports whether err, from Ensure, is only failed renewals of existing keys: the
// proxies can run meanwhile (replicas with state need no key).
func RenewalOnly(err error) bool { return isOnly(err, errRenewal) }
