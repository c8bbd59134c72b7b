package server

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apiserver"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/statuswriter"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// informerResync is the resync period of the runners' informers.
const informerResync = 10 * time.Minute

// runners are the parts of the binary besides the API server: the live-status collector and the
// status writer. Each reads the registry through one informer factory on the server's loopback
// client, so every consumer sees the same objects and validation as users do, and each is
// started by a post-start hook once the server serves.
type runners struct {
	client    versioned.Interface
	factory   informers.SharedInformerFactory
	collector livestatus.Collector
	writer    *statuswriter.Writer
	extension *extension
	// controllers change the tailnet (controllers.go); nil when off.
	controllers *controllers
	// replicas shares the live-status work with other replicas (replicas.go); nil when not.
	replicas *replicaSet
	// policy decides tenancy for every runner and admission (tenancy.go).
	policy *tenancy.Policy
	// standalone: no Kubernetes API, so the TailscaleGateway controller does not run.
	standalone bool
}

// newRunners builds the runners on the loopback client of loopback. collector may be nil (no
// live status); core is the Kubernetes API's client configuration, nil standalone.
func newRunners(loopback, core *rest.Config, collector livestatus.Collector, ext *ExtensionOptions, ten tenancyInputs) (_ *runners, err error) {
	client, err := versioned.NewForConfig(loopback)
	if err != nil {
		return nil, fmt.Errorf("creating loopback client: %w", err)
	}
	r := &runners{
		standalone: core == nil,
		client:     client,
		factory:    informers.NewSharedInformerFactoryWithOptions(client, informerResync, informers.WithTransform(dropManagedFields)),
		collector:  collector,
	}
	if r.policy, err = newPolicy(r.factory, ten); err != nil {
		return nil, err
	}
	if collector != nil {
		r.writer = statuswriter.New(client, r.factory, collector)
		if err := collector.Configure(r.factory, r.writer, r.policy); err != nil {
			return nil, fmt.Errorf("configuring live status: %w", err)
		}
	}
	if ext != nil && ext.Enabled {
		if r.extension, err = ext.newExtension(r.factory, core, apiserver.Scheme, r.policy, ten.synced(r.factory)); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// overlays returns the live-status overlays of the read paths, nil without a collector.
func (r *runners) overlays() *apiserver.Overlays {
	if r.collector == nil {
		return nil
	}
	return apiserver.NewOverlays(r.collector, r.writer.Selector(), r.standalone)
}

// install adds the post-start hooks that start the runners.
func (r *runners) install(server *genericapiserver.GenericAPIServer) error {
	// Admission decides tenancy from the TailscaleTailnet informer whatever else runs.
	if err := server.AddPostStartHook("tailscale-gateway-tenancy", func(hook genericapiserver.PostStartHookContext) error {
		r.factory.Start(hook.Done())
		return nil
	}); err != nil {
		return err
	}
	if r.collector != nil {
		// The hook returns once the informers have synced, so /readyz (which reports it as
		// poststarthook/tailscale-gateway-live-status) says ready only when the collector knows
		// every tailnet and endpoint: before, reads would show status computed from a partial
		// picture.
		err := server.AddPostStartHook("tailscale-gateway-live-status", func(hook genericapiserver.PostStartHookContext) error {
			r.factory.Start(hook.Done())
			go r.collector.Run(hook)
			go r.writer.Run(hook, 2)
			if r.controllers != nil {
				go r.controllers.run(hook)
			}
			if r.replicas != nil {
				go r.replicas.run(hook)
			}
			r.factory.WaitForCacheSync(hook.Done()) // returns early only when the server stops
			return nil
		})
		if err != nil {
			return err
		}
	}
	if r.extension != nil {
		// Envoy Gateway may call the hooks before the informers have synced; a cluster whose
		// objects are not cached yet gets its endpoints once they are.
		err := server.AddPostStartHook("tailscale-gateway-extension", func(hook genericapiserver.PostStartHookContext) error {
			r.factory.Start(hook.Done())
			go func() {
				if err := r.extension.run(hook); err != nil {
					klog.ErrorS(err, "Envoy Gateway extension stopped")
				}
			}()
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// dropManagedFields empties the managed fields of objects entering the runners' informers: no
// runner reads them (a status update without them keeps the stored ones), and they are about a
// third of what a cached object holds.
func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}
