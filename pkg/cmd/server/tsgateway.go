package server

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
)

// gatewayRoutes wires the TailscaleGateway controller (pkg/controllers/tsgateway). It runs in
// cluster mode only: the Gateways it reads and the HTTPRoutes and BackendTrafficPolicies it
// writes live in the Kubernetes API.
type gatewayRoutes struct {
	gw      gwclient.Interface
	dyn     dynamic.Interface
	factory gwinformers.SharedInformerFactory
}

// newGatewayRoutes requests the informers the controller needs (so that the runners start them)
// and returns nil when core is nil (standalone).
func newGatewayRoutes(core *rest.Config, factory informers.SharedInformerFactory) (*gatewayRoutes, error) {
	if core == nil {
		return nil, nil
	}
	gw, err := gwclient.NewForConfig(core)
	if err != nil {
		return nil, fmt.Errorf("creating Gateway API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(core)
	if err != nil {
		return nil, fmt.Errorf("creating dynamic client: %w", err)
	}
	g := &gatewayRoutes{gw: gw, dyn: dyn, factory: gwinformers.NewSharedInformerFactory(gw, informerResync)}
	g.factory.Gateway().V1().Gateways().Informer()
	g.factory.Gateway().V1().HTTPRoutes().Informer()
	factory.Gateway().V1alpha1().TailscaleGateways().Informer()
	return g, nil
}

func (g *gatewayRoutes) start(stop <-chan struct{}) {
	if g != nil {
		g.factory.Start(stop)
	}
}

// build returns the controller, nil when g is nil.
func (g *gatewayRoutes) build(client versioned.Interface, factory informers.SharedInformerFactory, recorder record.EventRecorder, workers int) (*tsgateway.Controller, error) {
	if g == nil {
		return nil, nil
	}
	return tsgateway.New(client, factory, g.gw, g.factory, tsgateway.Options{Dynamic: g.dyn, Recorder: recorder, Workers: workers})
}
