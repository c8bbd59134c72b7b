package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/collector"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxypool"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/requestcounts"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/version"
)

// ProxyDeployOptions configure the controller that deploys tailscale-gateway-proxy for
// TailscaleEndpoints with spec.proxy (cluster mode only: a standalone server has no workloads).
type ProxyDeployOptions struct {
	Enabled    bool
	Image      string
	PullPolicy string
	// CPU and memory requests and limits of the proxy container; empty sets none.
	CPURequest, MemoryRequest, CPULimit, MemoryLimit string
	// MetricsInterval is how often the deployed proxies' metrics are scraped for requestCounts;
	// 0 disables it.
	MetricsInterval time.Duration
	// KeyCheckInterval is how often each proxy's auth key is looked up in the Tailscale API.
	KeyCheckInterval time.Duration
	// NetworkPolicy keeps a NetworkPolicy per proxy admitting Envoy Gateway's Envoy pods (in
	// EnvoyGatewayNamespace) and the namespaces its tailnet admits to the egress ports, and this
	// server's pods (ServerPodLabels in the namespace POD_NAMESPACE names) to the metrics port.
	NetworkPolicy         bool
	EnvoyGatewayNamespace string
	ServerPodLabels       string
	// MigrateLegacy moves the proxy objects earlier versions kept in the TailscaleEndpoints'
	// namespaces into the installation's (proxydeploy, legacy.go).
	MigrateLegacy bool
	// Pools runs each TailscaleTailnet's proxy pool (spec.proxyPool) with the same image,
	// defaults and NetworkPolicy (pkg/controllers/proxypool).
	Pools bool
}

// NewProxyDeployOptions returns the defaults. The proxy image's default tag is this server's own
// version: `make images` tags both images with the same `git describe`.
func NewProxyDeployOptions() *ProxyDeployOptions {
	return &ProxyDeployOptions{Enabled: true, Image: "ghcr.io/tailscale-gateway/tailscale-gateway-proxy:" + version.Get().GitVersion,
		PullPolicy: string(corev1.PullIfNotPresent), CPURequest: "50m", MemoryRequest: "64Mi", MemoryLimit: "512Mi",
		MetricsInterval: requestcounts.DefaultInterval, KeyCheckInterval: proxydeploy.DefaultKeyCheckInterval,
		NetworkPolicy: true, EnvoyGatewayNamespace: "envoy-gateway-system", Pools: true,
		ServerPodLabels: "app.kubernetes.io/component=apiserver,app.kubernetes.io/name=tailscale-gateway"}
}

// AddFlags adds the flags to fs.
func (o *ProxyDeployOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "proxy-deploy", o.Enabled,
		"In cluster mode, deploy tailscale-gateway-proxy (StatefulSet, Service, Secrets, ServiceAccount, Role) for every TailscaleEndpoints with spec.proxy, in this server's namespace (POD_NAMESPACE).")
	fs.StringVar(&o.Image, "proxy-image", o.Image, "Image of the deployed tailscale-gateway-proxy.")
	fs.StringVar(&o.PullPolicy, "proxy-image-pull-policy", o.PullPolicy, "Pull policy of --proxy-image: Always, IfNotPresent or Never.")
	fs.StringVar(&o.CPURequest, "proxy-cpu-request", o.CPURequest, "CPU request of the proxy container (empty: none).")
	fs.StringVar(&o.MemoryRequest, "proxy-memory-request", o.MemoryRequest, "Memory request of the proxy container (empty: none).")
	fs.StringVar(&o.CPULimit, "proxy-cpu-limit", o.CPULimit, "CPU limit of the proxy container (empty: none).")
	fs.StringVar(&o.MemoryLimit, "proxy-memory-limit", o.MemoryLimit, "Memory limit of the proxy container (empty: none).")
	fs.DurationVar(&o.MetricsInterval, "proxy-metrics-interval", o.MetricsInterval,
		"Interval at which the deployed proxies' /metrics are scraped for TailscaleServices status.loadBalancingStatus.requestCounts (0: never).")
	fs.DurationVar(&o.KeyCheckInterval, "proxy-auth-key-check-interval", o.KeyCheckInterval,
		"Interval at which each deployed proxy's auth key is looked up in the Tailscale API; an expired, soon expiring or revoked key is minted again.")
	fs.BoolVar(&o.NetworkPolicy, "proxy-network-policy", o.NetworkPolicy,
		"Protect every deployed proxy with a NetworkPolicy: its egress ports admit only Envoy Gateway's Envoy pods (--envoy-gateway-namespace) and pods of the namespaces its TailscaleTailnet admits, its metrics port only this server's pods (--proxy-metrics-scraper-labels in the namespace POD_NAMESPACE names).")
	fs.StringVar(&o.EnvoyGatewayNamespace, "envoy-gateway-namespace", o.EnvoyGatewayNamespace,
		"Namespace of Envoy Gateway's Envoy pods (its own namespace, unless it runs them in the Gateways' namespaces), which the proxies' NetworkPolicies admit.")
	fs.BoolVar(&o.Pools, "proxy-pools", o.Pools,
		"With --proxy-deploy, run each TailscaleTailnet's proxy pool (spec.proxyPool) in this server's namespace (POD_NAMESPACE): it serves the tailnet's TailscaleEndpoints without spec.proxy.")
	fs.StringVar(&o.ServerPodLabels, "proxy-metrics-scraper-labels", o.ServerPodLabels,
		"Labels (k=v,...) of this server's pods, which the proxies' NetworkPolicies admit to the metrics port.")
	fs.BoolVar(&o.MigrateLegacy, "proxy-migrate-legacy", o.MigrateLegacy,
		"Move the proxies earlier versions kept in the TailscaleEndpoints' namespaces into this server's namespace (POD_NAMESPACE): copy each replica's node state, then delete the old objects, revoking their keys. Needs get and delete on those objects in every namespace (chart: proxy.migrateLegacy).")
}

// Validate checks the options.
func (o *ProxyDeployOptions) Validate() []error {
	if o == nil || !o.Enabled {
		return nil
	}
	var errs []error
	if o.Image == "" {
		errs = append(errs, fmt.Errorf("--proxy-image is required with --proxy-deploy"))
	}
	switch corev1.PullPolicy(o.PullPolicy) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("--proxy-image-pull-policy: %q is not Always, IfNotPresent or Never", o.PullPolicy))
	}
	if _, err := o.resources(); err != nil {
		errs = append(errs, err)
	}
	if o.KeyCheckInterval <= 0 {
		errs = append(errs, fmt.Errorf("--proxy-auth-key-check-interval must be positive, got %s", o.KeyCheckInterval))
	}
	if o.NetworkPolicy {
		if _, err := o.networkPolicy(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// networkPolicy is the proxies' NetworkPolicy configuration, nil without --proxy-network-policy.
func (o *ProxyDeployOptions) networkPolicy() (*proxydeploy.NetworkPolicyConfig, error) {
	if !o.NetworkPolicy {
		return nil, nil
	}
	if errs := validation.IsDNS1123Label(o.EnvoyGatewayNamespace); len(errs) > 0 {
		return nil, fmt.Errorf("--envoy-gateway-namespace %q: %s", o.EnvoyGatewayNamespace, strings.Join(errs, "; "))
	}
	set, err := labels.ConvertSelectorToLabelsMap(o.ServerPodLabels)
	if err == nil && len(set) == 0 {
		err = errors.New("no label")
	}
	if err != nil {
		return nil, fmt.Errorf("--proxy-metrics-scraper-labels %q: want k=v[,k=v...]: %w", o.ServerPodLabels, err)
	}
	return &proxydeploy.NetworkPolicyConfig{EnvoyGatewayNamespace: o.EnvoyGatewayNamespace, ServerNamespace: serverNamespace(), ServerLabels: set}, nil
}

func (o *ProxyDeployOptions) resources() (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	for _, q := range []struct {
		flag, value string
		name        corev1.ResourceName
		list        *corev1.ResourceList
	}{
		{"--proxy-cpu-request", o.CPURequest, corev1.ResourceCPU, &r.Requests},
		{"--proxy-memory-request", o.MemoryRequest, corev1.ResourceMemory, &r.Requests},
		{"--proxy-cpu-limit", o.CPULimit, corev1.ResourceCPU, &r.Limits},
		{"--proxy-memory-limit", o.MemoryLimit, corev1.ResourceMemory, &r.Limits},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return r, fmt.Errorf("%s: %w", q.flag, err)
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = v
	}
	return r, nil
}

// newProxyDeploy builds the controller and the requestCounts aggregator and returns their run
// loop, or nil when it is off or there is no core API.
func (o *ProxyDeployOptions) newProxyDeploy(kube kubernetes.Interface, client versioned.Interface, factory informers.SharedInformerFactory,
	col *collector.Collector, recorder record.EventRecorder, controlURL string, workers int) (func(context.Context), error) {
	if o == nil || !o.Enabled || kube == nil {
		return nil, nil
	}
	res, err := o.resources()
	if err != nil {
		return nil, err
	}
	np, err := o.networkPolicy()
	if err != nil {
		return nil, err
	}
	cfg := proxydeploy.Config{Image: o.Image, PullPolicy: corev1.PullPolicy(o.PullPolicy), Resources: res, ControlURL: controlURL,
		Namespace: serverNamespace()}
	tailnets := vipservice.CacheTailnets{Cache: col.Cache(), ResolveFunc: col.Resolve}
	dedicated, err := proxydeploy.New(kube, factory, proxydeploy.Options{
		Config:           cfg,
		MigrateLegacy:    o.MigrateLegacy,
		Tailnets:         tailnets,
		Recorder:         recorder,
		KeyCheckInterval: o.KeyCheckInterval,
		Client:           client,
		NetworkPolicy:    np,
	})
	if err != nil {
		return nil, err
	}
	var pools *proxypool.Controller
	if o.Pools {
		if pools, err = proxypool.New(kube, factory, proxypool.Options{Config: cfg, Namespace: serverNamespace(), Tailnets: tailnets,
			Recorder: recorder, Client: client, NetworkPolicy: np, KeyCheckInterval: o.KeyCheckInterval}); err != nil {
			return nil, err
		}
	}
	deploy := runBoth{dedicated, pools}
	if o.MetricsInterval <= 0 {
		return func(ctx context.Context) { deploy.Run(ctx, workers) }, nil
	}
	pods := proxydeploy.PodInformers(kube, serverNamespace(), informerResync)
	podLister := pods.Core().V1().Pods().Lister()
	podsSynced := pods.Core().V1().Pods().Informer().HasSynced
	agg := requestcounts.New(requestcounts.Options{Client: client, Services: factory.Gateway().V1alpha1().TailscaleServices().Lister(),
		Interval: o.MetricsInterval, Targets: func() []requestcounts.Target { return proxydeploy.MetricsTargets(podLister, dedicated.Ownership()) }})
	return func(ctx context.Context) {
		pods.Start(ctx.Done())
		defer pods.Shutdown()
		go func() {
			if cache.WaitForNamedCacheSyncWithContext(ctx, podsSynced) {
				agg.Run(ctx)
			}
		}()
		deploy.Run(ctx, workers)
	}, nil
}

// runBoth runs the dedicated proxies' controller and, when set, the pools'.
type runBoth struct {
	dedicated *proxydeploy.Controller
	pools     *proxypool.Controller
}

func (r runBoth) Run(ctx context.Context, workers int) {
	if r.pools != nil {
		go r.pools.Run(ctx, workers)
	}
	r.dedicated.Run(ctx, workers)
}
