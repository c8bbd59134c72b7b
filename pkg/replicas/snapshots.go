package replicas

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Snapshots shares tailnet snapshots between the replicas through etcd: the polling replica
// publishes each poll's snapshot under <prefix><tailnet>, and every replica imports the others'
// into its Cache (which ignores what is not newer than what it holds).
type Snapshots struct {
	client   *clientv3.Client
	prefix   string
	identity string
	cache    *tailnet.Cache

	mu      sync.Mutex
	pending map[string]*tailnet.Snapshot // nil: delete the key
	kick    chan struct{}
}

// sharedSnapshot is the value stored for one tailnet.
type sharedSnapshot struct {
	Publisher string           `json:"publisher"`
	Snapshot  tailnet.Snapshot `json:"snapshot"`
}

// NewSnapshots returns an exchange for cache under the etcd key prefix (ending in "/").
// Give its Publish to the Cache's OnPolled.
func NewSnapshots(client *clientv3.Client, prefix, identity string, cache *tailnet.Cache) *Snapshots {
	return &Snapshots{client: client, prefix: prefix, identity: identity, cache: cache,
		pending: map[string]*tailnet.Snapshot{}, kick: make(chan struct{}, 1)}
}

// Publish queues a snapshot this replica polled; only the latest per tailnet is written. It does
// not block.
func (s *Snapshots) Publish(snap tailnet.Snapshot) {
	s.mu.Lock()
	s.pending[snap.Name] = &snap
	s.mu.Unlock()
	s.signal()
}

func (s *Snapshots) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run writes published snapshots and imports the others' until ctx is done.
func (s *Snapshots) Run(ctx context.Context) {
	unsubscribe := s.cache.Subscribe(func(ch tailnet.Change) {
		// The poller forgets a removed tailnet's key, so that none outlives its object.
		if ch.TailnetRemoved && s.cache.Polling() {
			s.mu.Lock()
			s.pending[ch.Name] = nil
			s.mu.Unlock()
			s.signal()
		}
	})
	defer unsubscribe()
	go s.write(ctx)
	for delay := time.Second; ctx.Err() == nil; delay = min(2*delay, 30*time.Second) {
		if err := s.follow(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Following shared tailnet snapshots; retrying", "in", delay)
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			continue
		}
		delay = time.Second
	}
}

// write puts the latest published snapshots, retrying failed writes at the next publication.
func (s *Snapshots) write(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = map[string]*tailnet.Snapshot{}
		s.mu.Unlock()
		for name, snap := range batch {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var err error
			if snap == nil {
				_, err = s.client.Delete(wctx, s.prefix+name)
			} else {
				var raw []byte
				if raw, err = json.Marshal(sharedSnapshot{Publisher: s.identity, Snapshot: *snap}); err == nil {
					_, err = s.client.Put(wctx, s.prefix+name, string(raw))
				}
			}
			cancel()
			if err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "Sharing a tailnet snapshot", "tailnet", name)
			}
		}
	}
}

// follow imports every shared snapshot, then those written later, until the watch ends.
func (s *Snapshots) follow(ctx context.Context) error {
	resp, err := s.client.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading shared snapshots: %w", err)
	}
	for _, kv := range resp.Kvs {
		s.importValue(string(kv.Key), kv.Value)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.client.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("watching shared snapshots: %w", err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				s.importValue(string(ev.Kv.Key), ev.Kv.Value)
			}
		}
	}
	return ctx.Err()
}

func (s *Snapshots) importValue(key string, value []byte) {
	var v sharedSnapshot
	if err := json.Unmarshal(value, &v); err != nil {
		klog.ErrorS(err, "Decoding a shared tailnet snapshot", "key", key)
		return
	}
	if v.Publisher == s.identity || v.Snapshot.Name != strings.TrimPrefix(key, s.prefix) {
		return
	}
	s.cache.Import(v.Snapshot)
}
