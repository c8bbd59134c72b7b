package server

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/admission"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/admission/limits"
	tenancyadmission "github.com/tailscale-gateway/tailscale-gateway/pkg/admission/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// TenancyOptions configure what namespaces may reach: externalServices (tailnets decide the rest
// through spec.allowedNamespaces).
type TenancyOptions struct {
	External tenancy.ExternalFlags
	// Limits bound what one object may cost the prober and Envoy (admission).
	Limits limits.Limits
}

// AddFlags adds the tenancy flags to fs.
func (o *TenancyOptions) AddFlags(fs *pflag.FlagSet) {
	o.External.AddFlags(fs)
	fs.DurationVar(&o.Limits.MinInterval, "health-check-min-interval", o.Limits.MinInterval,
		"Shortest health-check interval an object may ask for (0: no bound).")
	fs.DurationVar(&o.Limits.MinTimeout, "health-check-min-timeout", o.Limits.MinTimeout,
		"Shortest health-check timeout an object may ask for (0: no bound).")
	fs.IntVar(&o.Limits.MaxEndpoints, "max-endpoints-per-object", o.Limits.MaxEndpoints,
		"Most spec.endpoints of one TailscaleEndpoints (0: no bound).")
}

// Validate checks the options.
func (o *TenancyOptions) Validate() []error {
	if _, err := o.External.Rule(); err != nil {
		return []error{err}
	}
	return nil
}

// tenancyInputs are what the policy needs besides the runners' TailscaleTailnet informer.
type tenancyInputs struct {
	external tenancy.ExternalServices
	// namespaces gives labels from memory: the core API's namespace informer in cluster mode,
	// tenancy.StandaloneNamespaces otherwise.
	namespaces tenancy.Namespaces
	// nsInformer is that informer, nil standalone.
	nsInformer cache.SharedIndexInformer
	// kube reads a namespace admission has not seen in the informer yet; nil standalone.
	kube kubernetes.Interface
	// secretNamespace is the only namespace of OAuth Secrets (--oauth-secret-namespace).
	secretNamespace string
	// limits bound objects' cost (limits admission plugin).
	limits limits.Limits
}

// synced are the informers the policy reads from memory: the TailscaleTailnets of factory and,
// in cluster mode, the namespaces.
func (in tenancyInputs) synced(factory informers.SharedInformerFactory) []cache.InformerSynced {
	out := []cache.InformerSynced{factory.Gateway().V1alpha1().TailscaleTailnets().Informer().HasSynced}
	if in.nsInformer != nil {
		out = append(out, in.nsInformer.HasSynced)
	}
	return out
}

// tenancyInputs builds the inputs from the server configuration.
func (o *Options) tenancyInputs(cfg *genericapiserver.RecommendedConfig) (tenancyInputs, error) {
	ext, err := o.Tenancy.External.Rule()
	if err != nil {
		return tenancyInputs{}, err
	}
	in := tenancyInputs{external: ext, namespaces: tenancy.StandaloneNamespaces{}, secretNamespace: o.Live.SecretNamespace,
		limits: o.Tenancy.Limits}
	if o.Standalone || cfg.SharedInformerFactory == nil || cfg.ClientConfig == nil {
		return in, nil
	}
	nsInformer := cfg.SharedInformerFactory.Core().V1().Namespaces()
	lister := nsInformer.Lister()
	in.nsInformer = nsInformer.Informer()
	in.namespaces = tenancy.NamespacesFunc(func(name string) (labels.Set, bool) {
		ns, err := lister.Get(name)
		if err != nil {
			return nil, false
		}
		return labels.Set(ns.Labels), true
	})
	if in.kube, err = kubernetes.NewForConfig(cfg.ClientConfig); err != nil {
		return tenancyInputs{}, fmt.Errorf("creating the core client: %w", err)
	}
	return in, nil
}

// installAdmission adds the tenancy admission plugin after the configured ones (NamespaceLifecycle
// in cluster mode; none standalone). It decides with r.policy, reading a namespace the informer
// does not hold yet (just created) from the core API.
func (r *runners) installAdmission(cfg *genericapiserver.RecommendedConfig, in tenancyInputs) {
	policy := r.policy
	if in.kube != nil {
		namespaces := in.namespaces
		policy = policy.WithNamespaces(tenancy.NamespacesFunc(func(name string) (labels.Set, bool) {
			if set, ok := namespaces.NamespaceLabels(name); ok {
				return set, true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ns, err := in.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				if !apierrors.IsNotFound(err) {
					klog.ErrorS(err, "Reading a namespace for tenancy admission", "namespace", name)
				}
				return nil, false
			}
			return labels.Set(ns.Labels), true
		}))
	}
	tailnets := r.factory.Gateway().V1alpha1().TailscaleTailnets().Informer()
	ready := func() bool { return tailnets.HasSynced() && (in.nsInformer == nil || in.nsInformer.HasSynced()) }
	plugin := tenancyadmission.New(policy, ready)
	plugin.Lookup = r.lookupTailnet
	plugin.SecretNamespace = in.secretNamespace
	chain := admission.NewChainHandler(plugin, limits.New(in.limits))
	if cfg.AdmissionControl == nil {
		cfg.AdmissionControl = chain
		return
	}
	cfg.AdmissionControl = admission.NewChainHandler(cfg.AdmissionControl, chain)
}

// lookupTailnet reads a tailnet through the loopback client, by name or else by tailnet domain
// (the first by name, as the policy resolves), for admission of objects naming a tailnet the
// informer has not seen yet.
func (r *runners) lookupTailnet(ctx context.Context, ref string) (*v1alpha1.TailscaleTailnet, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tailnets := r.client.GatewayV1alpha1().TailscaleTailnets()
	t, err := tailnets.Get(ctx, ref, metav1.GetOptions{})
	if err == nil {
		return t, true
	}
	if !apierrors.IsNotFound(err) {
		klog.ErrorS(err, "Reading a tailnet for tenancy admission", "tailnet", ref)
		return nil, false
	}
	list, err := tailnets.List(ctx, metav1.ListOptions{})
	if err != nil {
		klog.ErrorS(err, "Listing tailnets for tenancy admission", "tailnet", ref)
		return nil, false
	}
	var found *v1alpha1.TailscaleTailnet
	for i := range list.Items {
		if t := &list.Items[i]; t.Spec.Tailnet == ref && (found == nil || t.Name < found.Name) {
			found = t
		}
	}
	return found, found != nil
}

// watchNamespaces re-decides tenancy when a namespace's labels change: the status writer
// rewrites Accepted and the collector its probe targets.
func (r *runners) watchNamespaces(in tenancyInputs) error {
	if in.nsInformer == nil {
		return nil
	}
	_, err := in.nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(metav1.Object)
			n, ok2 := obj.(metav1.Object)
			if ok1 && ok2 && labels.Equals(o.GetLabels(), n.GetLabels()) {
				return
			}
			if r.writer != nil {
				r.writer.TailnetChanged()
			}
			if c, ok := r.collector.(interface{ TenancyChanged() }); ok {
				c.TenancyChanged()
			}
		},
	})
	return err
}

// newPolicy is the policy every runner and the admission plugin decide with.
func newPolicy(factory informers.SharedInformerFactory, in tenancyInputs) (*tenancy.Policy, error) {
	return tenancy.NewForInformer(factory.Gateway().V1alpha1().TailscaleTailnets().Informer(), in.namespaces, in.external)
}
