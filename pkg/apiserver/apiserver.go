// Package apiserver assembles the generic API server that serves gateway.tailscale.com.
package apiserver

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/statuswriter"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/registry"
)

var (
	// Scheme knows the internal and external versions of the API group.
	Scheme = runtime.NewScheme()
	// Codecs encodes and decodes the types of Scheme.
	Codecs = serializer.NewCodecFactory(Scheme)
)

func init() {
	install.Install(Scheme)
	// Options such as ListOptions and the unversioned discovery types.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	Scheme.AddUnversionedTypes(schema.GroupVersion{Group: "", Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
}

// Config is the configuration of the server.
type Config struct {
	GenericConfig *genericapiserver.RecommendedConfig
	// Collector, when set, supplies live status for reads and transitions; without it the
	// server serves stored status only.
	Collector Collector
}

// Collector gathers live tailnet and health state in the background and answers livestatus
// reads from memory.
type Collector interface {
	livestatus.Sources
	// Configure registers the collector's informer handlers (which tailnets to poll, which
	// endpoints to probe) and the receiver of its change notifications. It is called once,
	// before the informers start.
	Configure(factory informers.SharedInformerFactory, notify Notifier) error
	// Run collects until ctx is done.
	Run(ctx context.Context)
}

// Notifier receives the collector's transitions.
type Notifier interface {
	// EndpointsChanged reports a health transition of an endpoint of a TailscaleEndpoints.
	EndpointsChanged(namespace, name string)
	// TailnetChanged reports a change of devices' online state or of a tailnet's sync state.
	TailnetChanged()
}

// CompletedConfig is a Config with defaults filled in.
type CompletedConfig struct {
	GenericConfig genericapiserver.CompletedConfig
	Collector     Collector
}

// Server serves gateway.tailscale.com.
type Server struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// Complete fills in defaults.
func (c *Config) Complete() CompletedConfig {
	return CompletedConfig{GenericConfig: c.GenericConfig.Complete(), Collector: c.Collector}
}

// New returns a server with every kind of the API group installed.
func (c CompletedConfig) New() (*Server, error) {
	genericServer, err := c.GenericConfig.New("tailscale-gateway-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("creating generic server: %w", err)
	}
	var overlays *Overlays
	if c.Collector != nil {
		if overlays, err = c.startLiveStatus(genericServer); err != nil {
			return nil, err
		}
	}
	storage, err := NewStorage(c.GenericConfig.RESTOptionsGetter, overlays)
	if err != nil {
		return nil, err
	}
	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(gateway.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	apiGroupInfo.NegotiatedSerializer = withoutProtobuf{apiGroupInfo.NegotiatedSerializer}
	apiGroupInfo.VersionedResourcesStorageMap[v1alpha1.SchemeGroupVersion.Version] = storage
	if err := genericServer.InstallAPIGroup(&apiGroupInfo); err != nil {
		return nil, fmt.Errorf("installing %s: %w", gateway.GroupName, err)
	}
	return &Server{GenericAPIServer: genericServer}, nil
}

// startLiveStatus wires the collector and the status writer to informers on the loopback client
// and starts them once the server serves. It returns the overlays of the read paths.
func (c CompletedConfig) startLiveStatus(server *genericapiserver.GenericAPIServer) (*Overlays, error) {
	client, err := versioned.NewForConfig(c.GenericConfig.LoopbackClientConfig)
	if err != nil {
		return nil, fmt.Errorf("creating loopback client: %w", err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithTransform(dropManagedFields))
	writer := statuswriter.New(client, factory, c.Collector)
	if err := c.Collector.Configure(factory, writer); err != nil {
		return nil, fmt.Errorf("configuring live status: %w", err)
	}
	// The hook returns once the informers have synced, so /readyz (which reports it as
	// poststarthook/tailscale-gateway-live-status) says ready only when the collector knows every
	// tailnet and endpoint: before, reads would show status computed from a partial picture.
	err = server.AddPostStartHook("tailscale-gateway-live-status", func(hook genericapiserver.PostStartHookContext) error {
		factory.Start(hook.Done())
		go c.Collector.Run(hook)
		go writer.Run(hook, 2)
		factory.WaitForCacheSync(hook.Done()) // returns early only when the server stops
		return nil
	})
	if err != nil {
		return nil, err
	}
	return NewOverlays(c.Collector, writer.Selector()), nil
}

// NewStorage returns the REST storage of every resource and status subresource of v1alpha1;
// overlays, when not nil, add live status to what it serves.
func NewStorage(optsGetter generic.RESTOptionsGetter, overlays *Overlays) (map[string]rest.Storage, error) {
	if overlays == nil {
		overlays = &Overlays{}
	}
	storage := map[string]rest.Storage{}
	for _, err := range []error{
		addStorage(storage, registry.TailscaleTailnets, optsGetter, overlays.Tailnet),
		addStorage(storage, registry.TailscaleEndpoints, optsGetter, overlays.Endpoints),
		addStorage(storage, registry.TailscaleServices, optsGetter, overlays.Services),
		addStorage(storage, registry.TailscaleGateways, optsGetter, overlays.Gateway),
	} {
		if err != nil {
			return nil, err
		}
	}
	return storage, nil
}

func addStorage[T any, PT registry.Object[T]](storage map[string]rest.Storage, kind *registry.Kind[T, PT],
	optsGetter generic.RESTOptionsGetter, overlay registry.Overlay[T, PT]) error {
	main, status, err := registry.NewREST(kind, Scheme, optsGetter, gateway.Resource, overlay)
	if err != nil {
		return err
	}
	storage[kind.Resource] = main
	storage[kind.Resource+"/status"] = status
	return nil
}

// dropManagedFields empties the managed fields of objects entering the server's own informers:
// neither the collector nor the status writer reads them (a status update without them keeps the
// stored ones), and they are about a third of what a cached object holds.
func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}
