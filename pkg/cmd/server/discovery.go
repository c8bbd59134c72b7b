package server

import (
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/collector"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// serviceDiscovery wires pkg/controllers/discovery (TailscaleGateway
// spec.tailnets[].serviceDiscovery). It runs in cluster mode only: the Services it exposes live
// in the Kubernetes API.
type serviceDiscovery struct {
	factory kubeinformers.SharedInformerFactory
}

// newServiceDiscovery requests the informers the controller needs (so that the runners start
// them) and returns nil when kube is nil (standalone).
func newServiceDiscovery(kube kubernetes.Interface, factory informers.SharedInformerFactory) *serviceDiscovery {
	if kube == nil {
		return nil
	}
	d := &serviceDiscovery{factory: discovery.NewKubeFactory(kube, informerResync)}
	d.factory.Core().V1().Services().Informer()
	factory.Gateway().V1alpha1().TailscaleGateways().Informer()
	return d
}

func (d *serviceDiscovery) start(stop <-chan struct{}) {
	if d != nil {
		d.factory.Start(stop)
	}
}

// build returns the controller, nil when d is nil.
func (d *serviceDiscovery) build(client versioned.Interface, factory informers.SharedInformerFactory, operatorID string,
	col *collector.Collector, policy *tenancy.Policy, recorder record.EventRecorder, workers int) (*discovery.Controller, error) {
	if d == nil {
		return nil, nil
	}
	return discovery.New(client, factory, d.factory, discovery.Options{OperatorID: operatorID, Tailnets: col.Cache(),
		Tenancy: policy, Recorder: recorder, Workers: workers})
}
