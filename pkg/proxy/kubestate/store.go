// Package kubestate is an ipn.StateStore kept in one Kubernetes Secret through client-go, so that a
// tailscale-gateway-proxy replica keeps its node identity across restarts in a cluster. The Secret
// must exist (the controller that deploys the proxy creates it); the store only gets and updates
// it, which is all the RBAC the proxy holds on it.
package kubestate

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"tailscale.com/ipn"
)

// requestTimeout bounds one read or write of the Secret.
const requestTimeout = 30 * time.Second

// Store is an ipn.StateStore in the data of one Secret. Reads are served from memory, filled
// once by New; writes update the Secret, then memory.
type Store struct {
	client          kubernetes.Interface
	namespace, name string

	mu   sync.Mutex
	data map[string][]byte
}

var _ ipn.StateStore = (*Store)(nil)

// New reads the Secret namespace/name and returns a store on it.
func New(ctx context.Context, client kubernetes.Interface, namespace, name string) (*Store, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the state Secret %s/%s: %w", namespace, name, err)
	}
	data := maps.Clone(s.Data)
	if data == nil {
		data = map[string][]byte{}
	}
	return &Store{client: client, namespace: namespace, name: name, data: data}, nil
}

// Empty reports whether the Secret holds no state: the node has not enrolled yet.
func (s *Store) Empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data) == 0
}

// String names the Secret.
func (s *Store) String() string { return "kubestate.Store(" + s.namespace + "/" + s.name + ")" }

// ReadState implements ipn.StateStore.
func (s *Store) ReadState(id ipn.StateKey) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[Key(id)]
	if !ok {
		return nil, ipn.ErrStateNotExist
	}
	return v, nil
}

// WriteState implements ipn.StateStore; nil bs deletes the key.
func (s *Store) WriteState(id ipn.StateKey, bs []byte) error {
	key := Key(id)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	secrets := s.client.CoreV1().Secrets(s.namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := secrets.Get(ctx, s.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if bs == nil {
			if _, ok := cur.Data[key]; !ok {
				return nil
			}
			delete(cur.Data, key)
		} else {
			if cur.Data == nil {
				cur.Data = map[string][]byte{}
			}
			cur.Data[key] = bs
		}
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		// The error names the Secret and the key, never the value.
		return fmt.Errorf("writing %q to the state Secret %s/%s: %w", key, s.namespace, s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bs == nil {
		delete(s.data, key)
	} else {
		s.data[key] = bs
	}
	return nil
}

// NodeIDKey is the data key of the state Secret under which the proxy records its node's stable
// ID once the node has joined: the controller that deploys the proxy deletes the replica's auth
// key then (tailscale's own state keys never take this name).
const NodeIDKey = "tailscale-gateway-node-id"

// AuthKeyKey is the data key of the auth key in its Secret.
const AuthKeyKey = "authkey"

// MarkEnrolled records id, the node's stable ID, under NodeIDKey.
func (s *Store) MarkEnrolled(id string) error {
	return s.WriteState(ipn.StateKey(NodeIDKey), []byte(id))
}

// Enrolled reports whether the Secret data records a node that has joined (NodeIDKey).
func Enrolled(data map[string][]byte) bool { return len(data[NodeIDKey]) > 0 }

// ReadAuthKey reads the auth key (AuthKeyKey) of the Secret namespace/name. Its value never
// appears in errors.
func ReadAuthKey(ctx context.Context, client kubernetes.Interface, namespace, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading the auth key Secret %s/%s: %w", namespace, name, err)
	}
	key := strings.TrimSpace(string(s.Data[AuthKeyKey]))
	if key == "" {
		return "", fmt.Errorf("the auth key Secret %s/%s holds no %q", namespace, name, AuthKeyKey)
	}
	return key, nil
}

// Key maps a state key to a valid Secret data key ([-._a-zA-Z0-9]+): every other byte becomes '_'.
func Key(id ipn.StateKey) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			return r
		}
		return '_'
	}, string(id))
}
