// Package apiserver assembles the generic API server that serves gateway.tailscale.com.
package apiserver

import (
	"fmt"

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
	// Overlays, when set, add live status to every read; without them the server serves stored
	// status only. What fills their sources runs elsewhere (pkg/cmd/server starts it).
	Overlays *Overlays
}

// CompletedConfig is a Config with defaults filled in.
type CompletedConfig struct {
	GenericConfig genericapiserver.CompletedConfig
	Overlays      *Overlays
}

// Server serves gateway.tailscale.com.
type Server struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// Complete fills in defaults.
func (c *Config) Complete() CompletedConfig {
	return CompletedConfig{GenericConfig: c.GenericConfig.Complete(), Overlays: c.Overlays}
}

// New returns a server with every kind of the API group installed.
func (c CompletedConfig) New() (*Server, error) {
	genericServer, err := c.GenericConfig.New("tailscale-gateway-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("creating generic server: %w", err)
	}
	storage, err := NewStorage(c.GenericConfig.RESTOptionsGetter, c.Overlays)
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
