package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/collector"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/statuswriter"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/replicas"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// snapshotsKey is the etcd key prefix of the shared tailnet snapshots, under the registry's
// prefix but outside every resource's key range.
const snapshotsKey = "/tailscale-gateway/tailnet-snapshots/"

// ReplicaOptions configure how replicas on one etcd share the live-status work.
type ReplicaOptions struct {
	// ShareWork, in cluster mode with leader election, makes the replica holding the controllers'
	// Lease the only one polling the Tailscale API (the others import its snapshots through
	// etcd) and writing the status of tailnets, services and gateways, and shards the probes
	// (and the status of TailscaleEndpoints) across the live replicas by their member Leases.
	ShareWork bool
}

// NewReplicaOptions returns the defaults: work shared.
func NewReplicaOptions() *ReplicaOptions { return &ReplicaOptions{ShareWork: true} }

// AddFlags adds the replica flags to fs.
func (o *ReplicaOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.ShareWork, "share-work", o.ShareWork,
		"In cluster mode with --leader-elect, share polls and probes across the replicas on one etcd (member Leases "+
			"<leader-elect-name>-<identity> in --leader-elect-namespace); otherwise every replica polls and probes everything.")
}

// replicaSet is this replica's part in sharing the work: its member Lease, its shard of the
// probes and of the TailscaleEndpoints status writes, and, while it holds the controllers' Lease,
// the polls it shares through etcd and the status writes of every other kind.
type replicaSet struct {
	identity   string
	members    *replicas.Membership
	leading    atomic.Bool
	etcdPrefix string
	openEtcd   func(context.Context) (*clientv3.Client, error)
	snapshots  atomic.Pointer[replicas.Snapshots]

	// Set once the collector and the writer are built.
	collector *collector.Collector
	writer    *statuswriter.Writer
}

// newReplicaSet returns the replica set of o, nil when work is not shared (standalone, no
// leader election, no controllers or no live status).
func (o *Options) newReplicaSet(core *rest.Config) (*replicaSet, error) {
	co := o.Controllers
	if o.Standalone || core == nil || o.Replicas == nil || !o.Replicas.ShareWork || co == nil || !co.Enabled || !co.LeaderElect ||
		!o.Live.Enabled || o.Collector != nil {
		return nil, nil
	}
	kube, err := kubernetes.NewForConfig(core)
	if err != nil {
		return nil, fmt.Errorf("creating core client: %w", err)
	}
	etcd := o.RecommendedOptions.Etcd.StorageConfig
	rs := &replicaSet{identity: memberIdentity(), etcdPrefix: etcd.Prefix + snapshotsKey}
	rs.members = replicas.NewMembership(replicas.MembershipOptions{
		Leases:        kube.CoordinationV1().Leases(co.LeaseNamespace),
		Group:         co.LeaseName,
		Identity:      rs.identity,
		LeaseDuration: co.LeaseDuration,
		RenewPeriod:   co.RetryPeriod,
		OnChange:      func([]string) { rs.resharded() },
	})
	rs.openEtcd = func(ctx context.Context) (*clientv3.Client, error) {
		return newEtcdClient(ctx, etcd.Transport.ServerList, etcd.Transport.CertFile, etcd.Transport.KeyFile, etcd.Transport.TrustedCAFile)
	}
	return rs, nil
}

// owns reports whether this replica probes (and writes the status of) a TailscaleEndpoints.
func (rs *replicaSet) owns(namespace, name string) bool {
	return rs.members.Owns(namespace + "/" + name)
}

// writes reports whether this replica writes an object's status.
func (rs *replicaSet) writes(kind, namespace, name string) bool {
	if kind == statuswriter.KindEndpoints {
		return rs.owns(namespace, name)
	}
	return rs.leading.Load()
}

// publish shares a snapshot this replica polled.
func (rs *replicaSet) publish(s tailnet.Snapshot) {
	if x := rs.snapshots.Load(); x != nil {
		x.Publish(s)
	}
}

// lead is called when this replica gains (true) or loses the controllers' Lease.
func (rs *replicaSet) lead(on bool) {
	rs.leading.Store(on)
	rs.collector.Cache().SetPolling(on)
	rs.writer.Resync()
}

// resharded is called when the live members change.
func (rs *replicaSet) resharded() {
	rs.collector.Resharded()
	rs.writer.Resync()
}

// run keeps the member Lease and the snapshot exchange going until ctx is done.
func (rs *replicaSet) run(ctx context.Context) {
	go rs.members.Run(ctx)
	cli, err := retryUntil(ctx, "Connecting to etcd for shared tailnet snapshots", rs.openEtcd)
	if err != nil {
		return
	}
	defer func() { _ = cli.Close() }()
	x := replicas.NewSnapshots(cli, rs.etcdPrefix, rs.identity, rs.collector.Cache())
	rs.snapshots.Store(x)
	klog.InfoS("Sharing live-status work with the other replicas", "identity", rs.identity)
	x.Run(ctx)
}

// memberIdentity names this replica: its pod (host) name and a random suffix, as a DNS label.
func memberIdentity() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	return strings.Trim(host, "-") + "-" + randomHex(4)
}
