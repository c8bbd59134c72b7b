package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/autoprovision"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/collector"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxyhosts"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
)

// ControllerOptions configure the controllers that change the tailnet (pkg/controllers).
type ControllerOptions struct {
	Enabled bool
	// OperatorID identifies this installation in the owner references of Tailscale Services.
	// Empty: a value generated once and kept in the registry's etcd (operatorIDKey), so every
	// replica and every restart of one installation uses the same.
	OperatorID  string
	Workers     int
	Resync      time.Duration
	ConsumerTTL time.Duration

	// LeaderElect runs the controllers in one replica at a time, holding a
	// coordination.k8s.io Lease through the core API (cluster mode only; a standalone server
	// has no core API and is a single process).
	LeaderElect    bool
	LeaseNamespace string
	LeaseName      string
	LeaseDuration  time.Duration
	RenewDeadline  time.Duration
	RetryPeriod    time.Duration

	// BackendProxyAddress is the IP address of tailscale-gateway-proxy's egress listeners that
	// published backends (pkg/controllers/publish) point at for TailscaleEndpoints without a
	// deployed proxy of their own (those use its Service's cluster IP only).
	BackendProxyAddress string

	// Recorder, when set, receives the controllers' Events instead of the core API (or the
	// log, standalone); for tests.
	Recorder record.EventRecorder
}

// serverNamespace is the namespace of the server's pod (POD_NAMESPACE), tailscale-gateway-system
// outside one.
func serverNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "tailscale-gateway-system"
}

// NewControllerOptions returns the defaults.
func NewControllerOptions() *ControllerOptions {
	ns := serverNamespace()
	return &ControllerOptions{Enabled: true, Workers: vipservice.DefaultWorkers, Resync: vipservice.DefaultResync,
		ConsumerTTL: vipservice.DefaultConsumerTTL, LeaderElect: true, LeaseNamespace: ns, LeaseName: "tailscale-gateway-controllers",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
}

// AddFlags adds the controller flags to fs.
func (o *ControllerOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "controllers", o.Enabled, "Run the controllers that create Tailscale Services (needs --live-status).")
	fs.StringVar(&o.OperatorID, "operator-id", o.OperatorID,
		"ID of this installation in the tailscale.com/owner-references annotation of Tailscale Services (default: generated once and kept in etcd).")
	fs.IntVar(&o.Workers, "controller-workers", o.Workers, "Objects each controller reconciles in parallel.")
	fs.DurationVar(&o.Resync, "controller-resync", o.Resync,
		"Interval at which every object is compared again with the last poll of its tailnet (memory only; drift is also seen on every poll).")
	fs.DurationVar(&o.ConsumerTTL, "consumer-ttl", o.ConsumerTTL,
		"References of other installations on a shared Tailscale Service whose heartbeat is older than this are removed (0: never).")
	fs.StringVar(&o.BackendProxyAddress, "backend-proxy-address", o.BackendProxyAddress,
		"IP address of tailscale-gateway-proxy's egress listeners for TailscaleEndpoints without a proxy deployed by --proxy-deploy: every TailscaleEndpoints and TailscaleServices gets a Service ts-ep-<name> / ts-svc-<name> with EndpointSlices at the cluster IP of its deployed proxy's Service, else at this address, for TCPRoute, TLSRoute, UDPRoute and GRPCRoute (cluster mode; empty: only objects with a deployed proxy).")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "In cluster mode, run the controllers only in the replica holding the Lease.")
	fs.StringVar(&o.LeaseNamespace, "leader-elect-namespace", o.LeaseNamespace, "Namespace of the controllers' Lease.")
	fs.StringVar(&o.LeaseName, "leader-elect-name", o.LeaseName, "Name of the controllers' Lease.")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "Lease duration.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "Time the leader retries renewing before it gives up.")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "Interval between attempts to acquire or renew the Lease.")
}

// operatorIDKey is where the generated operator ID lives, under the registry's etcd prefix but
// outside every resource's key range.
const operatorIDKey = "/tailscale-gateway/operator-id"

// controllers are the runners that change the tailnet, run by the leader only.
type controllers struct {
	opts     *ControllerOptions
	core     kubernetes.Interface // nil standalone
	recorder record.EventRecorder
	idSource func(context.Context) (string, error)
	// build builds the controllers once the operator ID is known and returns their run loop.
	build func(operatorID string) (func(context.Context), error)
	start func(stop <-chan struct{})
	// replicas, when work is shared, is told when this replica gains and loses the Lease and
	// names it in the election.
	replicas *replicaSet
}

// newControllers builds the controllers on r's informers. core is the core API's client
// configuration (nil standalone), used for Events and the Lease.
func (r *runners) newControllers(o *Options, core *rest.Config) (*controllers, error) {
	co := o.Controllers
	col, ok := r.collector.(*collector.Collector)
	if co == nil || !co.Enabled || !ok {
		// Without the tailnet cache (no live status, or a scripted collector) there is nothing
		// to reconcile against.
		return nil, nil
	}
	c := &controllers{opts: co, recorder: co.Recorder}
	if core != nil {
		kube, err := kubernetes.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating core client: %w", err)
		}
		c.core = kube
	}
	if c.recorder == nil {
		var core kubernetes.Interface
		if c.core != nil {
			core = c.core
		}
		c.recorder = newEventRecorder(core, "tailscale-gateway-controllers")
	}
	etcd := o.RecommendedOptions.Etcd.StorageConfig
	c.idSource = func(ctx context.Context) (string, error) {
		if co.OperatorID != "" {
			return co.OperatorID, nil
		}
		return persistedOperatorID(ctx, etcd.Transport.ServerList, etcd.Transport.CertFile, etcd.Transport.KeyFile,
			etcd.Transport.TrustedCAFile, etcd.Prefix+operatorIDKey)
	}
	// The operator ID is known only once etcd answers: the controller is built then, on
	// informers requested now so that the runners' factory starts them.
	gw := r.factory.Gateway().V1alpha1()
	gw.TailscaleServices().Informer()
	gw.TailscaleEndpoints().Informer()
	gw.TailscaleTailnets().Informer()
	routes, err := newGatewayRoutes(core, r.factory)
	if err != nil {
		return nil, err
	}
	pub, err := newPublisher(c.core, core, co.BackendProxyAddress, o.ProxyDeploy != nil && o.ProxyDeploy.Enabled, r.factory, r.policy.ResolveName)
	if err != nil {
		return nil, err
	}
	disc := newServiceDiscovery(c.core, r.factory)
	// The proxies hosting Tailscale Services, for vipService.autoApprove: those proxydeploy
	// runs (cluster mode, with its RBAC on pods); none otherwise.
	var hosts vipservice.Hosts
	var proxyHosts *proxyhosts.Source
	if c.core != nil && o.ProxyDeploy != nil && o.ProxyDeploy.Enabled {
		if proxyHosts, err = proxyhosts.New(c.core, serverNamespace(), gw.TailscaleEndpoints().Lister(), gw.TailscaleServices().Lister(), informerResync); err != nil {
			return nil, err
		}
		hosts = proxyHosts
	}
	c.start = func(stop <-chan struct{}) {
		r.factory.Start(stop)
		if proxyHosts != nil {
			proxyHosts.Start(stop)
		}
		routes.start(stop)
		pub.start(stop)
		disc.start(stop)
	}
	c.build = func(id string) (func(context.Context), error) {
		vip, err := vipservice.New(r.client, r.factory, vipservice.Options{
			OperatorID:  id,
			Tailnets:    vipservice.CacheTailnets{Cache: col.Cache(), ResolveFunc: col.Resolve},
			Tenancy:     r.policy,
			Recorder:    c.recorder,
			Resync:      co.Resync,
			ConsumerTTL: co.ConsumerTTL,
			Workers:     co.Workers,
			Hosts:       hosts,
		})
		if err != nil {
			return nil, err
		}
		auto, err := autoprovision.New(r.client, r.factory, c.recorder, r.policy)
		if err != nil {
			return nil, err
		}
		deploy, err := o.ProxyDeploy.newProxyDeploy(c.core, r.client, r.factory, col, c.recorder, o.Live.ControlURL, co.Workers)
		if err != nil {
			return nil, err
		}
		gwRoutes, err := routes.build(r.client, r.factory, c.recorder, co.Workers)
		if err != nil {
			return nil, err
		}
		publisher, err := pub.build(r.factory, c.recorder)
		if err != nil {
			return nil, err
		}
		discoverer, err := disc.build(r.client, r.factory, id, col, r.policy, c.recorder, co.Workers)
		if err != nil {
			return nil, err
		}
		egress, err := egressalloc.New(r.client, r.factory, egressalloc.Options{
			Scope: egressScope(o.ProxyDeploy != nil && o.ProxyDeploy.Enabled), Workers: co.Workers})
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) {
			if deploy != nil {
				go deploy(ctx)
			}
			go auto.Run(ctx, 2)
			go egress.Run(ctx)
			if gwRoutes != nil {
				go gwRoutes.Run(ctx)
			}
			if publisher != nil {
				go publisher.Run(ctx, 2)
			}
			if discoverer != nil {
				go discoverer.Run(ctx)
			}
			vip.Run(ctx)
		}, nil
	}
	return c, nil
}

// run starts the controllers once this process leads, until ctx is done.
func (c *controllers) run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	id, err := c.waitForOperatorID(ctx)
	if err != nil {
		return
	}
	c.start(ctx.Done())
	if c.core == nil || !c.opts.LeaderElect {
		runControllers, err := c.build(id)
		if err != nil {
			klog.ErrorS(err, "Building the controllers")
			return
		}
		klog.InfoS("Running controllers without leader election", "operatorID", id)
		runControllers(ctx)
		return
	}
	host, _ := os.Hostname()
	identity := host + "_" + randomHex(4)
	if c.replicas != nil {
		identity = c.replicas.identity
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.opts.LeaseNamespace, Name: c.opts.LeaseName},
		Client:     c.core.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity, EventRecorder: c.recorder},
	}
	// Each term of leadership runs controllers built afresh (new queues, nothing carried over
	// from a term that ended); a replica that loses the Lease stops them and joins the
	// election again.
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   c.opts.LeaseDuration,
			RenewDeadline:   c.opts.RenewDeadline,
			RetryPeriod:     c.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            c.opts.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					if c.replicas != nil {
						c.replicas.lead(true)
					}
					runControllers, err := c.build(id)
					if err != nil {
						klog.ErrorS(err, "Building the controllers")
						return
					}
					klog.InfoS("Leading: starting controllers", "lease", klog.KRef(c.opts.LeaseNamespace, c.opts.LeaseName),
						"identity", identity, "operatorID", id)
					runControllers(ctx)
				},
				OnStoppedLeading: func() {
					if c.replicas != nil {
						c.replicas.lead(false)
					}
					klog.InfoS("No longer leading: controllers stopped", "identity", identity)
				},
				OnNewLeader: func(current string) {
					if current != identity {
						klog.InfoS("Another replica leads the controllers", "leader", current)
					}
				},
			},
		})
	}
}

// waitForOperatorID retries reading (or creating) the operator ID until it succeeds or ctx ends.
func (c *controllers) waitForOperatorID(ctx context.Context) (string, error) {
	return retryUntil(ctx, "Reading the operator ID", c.idSource)
}

// persistedOperatorID returns the operator ID stored at key, storing a new random one first if
// there is none. Concurrent replicas agree: only the first create succeeds.
func persistedOperatorID(ctx context.Context, servers []string, certFile, keyFile, caFile, key string) (string, error) {
	if len(servers) == 0 {
		return "", errors.New("no etcd servers to keep the operator ID in; set --operator-id")
	}
	cli, err := newEtcdClient(ctx, servers, certFile, keyFile, caFile)
	if err != nil {
		return "", err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fresh := "tsgw-" + randomHex(8)
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, fresh)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", fmt.Errorf("storing the operator ID in etcd: %w", err)
	}
	if resp.Succeeded {
		klog.InfoS("Generated this installation's operator ID", "operatorID", fresh, "etcdKey", key)
		return fresh, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || len(kvs[0].Value) == 0 {
		return "", fmt.Errorf("etcd key %s is empty", key)
	}
	return string(kvs[0].Value), nil
}

// newEtcdClient connects to the registry's etcd, for the little state kept outside resources.
func newEtcdClient(ctx context.Context, servers []string, certFile, keyFile, caFile string) (*clientv3.Client, error) {
	if len(servers) == 0 {
		return nil, errors.New("no etcd servers")
	}
	cfg := clientv3.Config{Endpoints: servers, DialTimeout: 10 * time.Second, Context: ctx, Logger: zap.NewNop()}
	if certFile != "" || caFile != "" {
		tlsCfg, err := (transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS configuration: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd: %w", err)
	}
	return cli, nil
}

// retryUntil calls f with growing delays until it succeeds or ctx is done.
func retryUntil[T any](ctx context.Context, what string, f func(context.Context) (T, error)) (T, error) {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		v, err := f(ctx)
		if err == nil {
			return v, nil
		}
		klog.ErrorS(err, what+"; retrying", "in", delay)
		select {
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		case <-time.After(delay):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SharedEgressProxy is the allocation scope (status.egress.proxy) of the TailscaleEndpoints
// without a proxy of their own: the proxy run at --backend-proxy-address or
// --extension-proxy-address serves them all, so their ports are unique across namespaces.
const SharedEgressProxy = "shared"

// egressScope names the proxy serving an object's egress: the one --proxy-deploy deploys for
// it ("<namespace>/<name>-proxy", the scope recorded in status.egress.proxy since before the
// proxies moved to the installation's namespace: kept, so are the ports), else the shared one.
func egressScope(deploys bool) func(*v1alpha1.TailscaleEndpoints) string {
	return func(obj *v1alpha1.TailscaleEndpoints) string {
		if deploys && proxydeploy.DeploysEgress(obj) {
			return obj.Namespace + "/" + proxydeploy.LegacyNamesOf(obj.Name).Base
		}
		return SharedEgressProxy
	}
}
