package server

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/collector"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
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
}

// NewProxyDeployOptions returns the defaults. The proxy image's default tag is this server's own
// version: `make images` tags both images with the same `git describe`.
func NewProxyDeployOptions() *ProxyDeployOptions {
	return &ProxyDeployOptions{Enabled: true, Image: "ghcr.io/tailscale-gateway/tailscale-gateway-proxy:" + version.Get().GitVersion,
		PullPolicy: string(corev1.PullIfNotPresent), CPURequest: "50m", MemoryRequest: "64Mi", MemoryLimit: "512Mi",
		MetricsInterval: requestcounts.DefaultInterval, KeyCheckInterval: proxydeploy.DefaultKeyCheckInterval}
}

// AddFlags adds the flags to fs.
func (o *ProxyDeployOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "proxy-deploy", o.Enabled,
		"In cluster mode, deploy tailscale-gateway-proxy (StatefulSet, Service, Secrets, ServiceAccount, Role) for every TailscaleEndpoints with spec.proxy.")
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
	return errs
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
	deploy, err := proxydeploy.New(kube, factory, proxydeploy.Options{
		Config:           proxydeploy.Config{Image: o.Image, PullPolicy: corev1.PullPolicy(o.PullPolicy), Resources: res, ControlURL: controlURL},
		Tailnets:         vipservice.CacheTailnets{Cache: col.Cache(), ResolveFunc: col.Resolve},
		Recorder:         recorder,
		KeyCheckInterval: o.KeyCheckInterval,
		Client:           client,
	})
	if err != nil {
		return nil, err
	}
	if o.MetricsInterval <= 0 {
		return func(ctx context.Context) { deploy.Run(ctx, workers) }, nil
	}
	pods := proxydeploy.PodInformers(kube, informerResync)
	podLister := pods.Core().V1().Pods().Lister()
	podsSynced := pods.Core().V1().Pods().Informer().HasSynced
	agg := requestcounts.New(requestcounts.Options{Client: client, Services: factory.Gateway().V1alpha1().TailscaleServices().Lister(),
		Interval: o.MetricsInterval, Targets: func() []requestcounts.Target { return proxydeploy.MetricsTargets(podLister, deploy.Ownership()) }})
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
