package server

import (
	"fmt"
	"net/netip"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxypool"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
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
	// envoy watches Envoy Gateway's Services, where the Gateway listeners' Tailscale Services forward.
	envoy cache.SharedIndexInformer
	// grants watches ReferenceGrants; nil when kube-apiserver serves none.
	grants cache.SharedIndexInformer
	// policies and proxies watch Envoy Gateway's ClientTrafficPolicies and EnvoyProxies; nil
	// when kube-apiserver served none at start (then a change waits for the next resync).
	policies, proxies cache.SharedIndexInformer
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
	kube, err := kubernetes.NewForConfig(core)
	if err != nil {
		return nil, fmt.Errorf("creating core client: %w", err)
	}
	g := &gatewayRoutes{gw: gw, dyn: dyn, factory: gwinformers.NewSharedInformerFactory(gw, informerResync),
		envoy: tsgateway.NewEnvoyServiceInformer(kube, informerResync)}
	g.factory.Gateway().V1().Gateways().Informer()
	g.factory.Gateway().V1().HTTPRoutes().Informer()
	g.factory.Gateway().V1().GatewayClasses().Informer()
	eg, err := servedEnvoyGatewayResources(kube)
	if err != nil {
		return nil, err
	}
	if eg[tsgateway.ClientTrafficPolicyGVR.Resource] {
		g.policies = tsgateway.NewEnvoyGatewayInformer(dyn, tsgateway.ClientTrafficPolicyGVR, informerResync)
	}
	if eg[tsgateway.EnvoyProxyGVR.Resource] {
		g.proxies = tsgateway.NewEnvoyGatewayInformer(dyn, tsgateway.EnvoyProxyGVR, informerResync)
	}
	served, err := servesReferenceGrants(kube)
	if err != nil {
		return nil, err
	}
	if served {
		g.grants = g.factory.Gateway().V1beta1().ReferenceGrants().Informer()
	}
	factory.Gateway().V1alpha1().TailscaleGateways().Informer()
	factory.Gateway().V1alpha1().TailscaleServices().Informer()
	factory.Gateway().V1alpha1().TailscaleEndpoints().Informer()
	return g, nil
}

func (g *gatewayRoutes) start(stop <-chan struct{}) {
	if g != nil {
		g.factory.Start(stop)
		go g.envoy.Run(stop)
		for _, inf := range []cache.SharedIndexInformer{g.policies, g.proxies} {
			if inf != nil {
				go inf.Run(stop)
			}
		}
	}
}

// build returns the controller, nil when g is nil.
func (g *gatewayRoutes) build(client versioned.Interface, factory informers.SharedInformerFactory, recorder record.EventRecorder, workers int) (*tsgateway.Controller, error) {
	if g == nil {
		return nil, nil
	}
	return tsgateway.New(client, factory, g.gw, g.factory, tsgateway.Options{Dynamic: g.dyn, Recorder: recorder, Workers: workers, EnvoyServices: g.envoy,
		ReferenceGrants: g.grants, ClientTrafficPolicies: g.policies, EnvoyProxies: g.proxies})
}

// servedEnvoyGatewayResources returns the resources of gateway.envoyproxy.io/v1alpha1 that
// kube-apiserver serves (none without Envoy Gateway's CRDs).
func servedEnvoyGatewayResources(kube kubernetes.Interface) (map[string]bool, error) {
	gv := tsgateway.EnvoyProxyGVR.GroupVersion().String()
	list, err := kube.Discovery().ServerResourcesForGroupVersion(gv)
	if apierrors.IsNotFound(err) {
		klog.InfoS("kube-apiserver serves no Envoy Gateway resources: generated policies are not watched", "groupVersion", gv)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discovering %s: %w", gv, err)
	}
	out := map[string]bool{}
	for _, r := range list.APIResources {
		out[r.Name] = true
	}
	return out, nil
}

// publisher wires pkg/controllers/publish (cluster mode). The address of a TailscaleEndpoints'
// egress listeners is the cluster IP of the proxy Service deployed for it when the server
// deploys one (--proxy-deploy, proxydeploy.ServiceAddresser; none until the Service has one),
// else --backend-proxy-address. With neither, it is not published.
type publisher struct {
	kube    kubernetes.Interface
	dyn     dynamic.Interface // Envoy Gateway Backends
	proxy   publish.ProxyAddresser
	factory kubeinformers.SharedInformerFactory
	// proxies holds the deployed proxies' Services, pools the proxy pools' (nil without
	// --proxy-deploy).
	proxies, pools kubeinformers.SharedInformerFactory
}

// newPublisher returns nil when kube is nil (standalone), or when address is empty and no
// proxies are deployed.
func newPublisher(kube kubernetes.Interface, core *rest.Config, address string, deployed bool, factory informers.SharedInformerFactory,
	resolve func(ref string) (string, bool)) (*publisher, error) {
	if kube == nil || (address == "" && !deployed) {
		return nil, nil
	}
	dyn, err := dynamic.NewForConfig(core)
	if err != nil {
		return nil, fmt.Errorf("creating dynamic client: %w", err)
	}
	p := &publisher{kube: kube, dyn: dyn, factory: publish.NewKubeFactory(kube, 10*time.Minute)}
	var addr deployedOrStatic
	if deployed {
		p.proxies = proxydeploy.ManagedInformers(kube, serverNamespace(), informerResync)
		addr.deployed = &proxydeploy.ServiceAddresser{Services: p.proxies.Core().V1().Services().Lister(), Namespace: serverNamespace()}
		p.pools = proxypool.ManagedInformers(kube, serverNamespace(), informerResync)
		addr.pool = &proxypool.Addresser{Services: p.pools.Core().V1().Services().Lister(), Namespace: serverNamespace(), Resolve: resolve}
	}
	if address != "" {
		ip, err := netip.ParseAddr(address)
		if err != nil {
			return nil, fmt.Errorf("--backend-proxy-address: %q is not an IP address: %w", address, err)
		}
		if ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() {
			return nil, fmt.Errorf("--backend-proxy-address: %s: EndpointSlices may not hold loopback, unspecified or link-local addresses", ip)
		}
		addr.static = publish.StaticAddress(ip)
	}
	p.proxy = addr
	p.factory.Core().V1().Services().Informer()
	p.factory.Discovery().V1().EndpointSlices().Informer()
	factory.Gateway().V1alpha1().TailscaleEndpoints().Informer()
	factory.Gateway().V1alpha1().TailscaleServices().Informer()
	return p, nil
}

// deployedOrStatic addresses an object whose proxy the server deploys by that proxy's Service
// only, and the others by static (none when it is nil).
type deployedOrStatic struct {
	pool     *proxypool.Addresser // without Next: the objects its pools serve only
	deployed *proxydeploy.ServiceAddresser
	static   publish.ProxyAddresser
}

func (a deployedOrStatic) ProxyAddress(obj *v1alpha1.TailscaleEndpoints) (netip.Addr, bool) {
	if a.pool != nil {
		if ip, ok := a.pool.ProxyAddress(obj); ok {
			return ip, true
		}
	}
	if a.deployed != nil && proxydeploy.DeploysEgress(obj) {
		return a.deployed.ProxyAddress(obj)
	}
	if a.static == nil {
		return netip.Addr{}, false
	}
	return a.static.ProxyAddress(obj)
}

func (p *publisher) start(stop <-chan struct{}) {
	if p != nil {
		p.factory.Start(stop)
		if p.proxies != nil {
			p.proxies.Start(stop)
			p.pools.Start(stop)
		}
	}
}

func (p *publisher) build(factory informers.SharedInformerFactory, recorder record.EventRecorder) (*publish.Controller, error) {
	if p == nil {
		return nil, nil
	}
	c, err := publish.New(p.kube, p.dyn, factory, p.factory, p.proxy, recorder)
	if err != nil || p.proxies == nil {
		return c, err
	}
	// A proxy Service that appears, gets its cluster IP or goes changes the addresses.
	if err := c.WatchPools(p.pools.Core().V1().Services().Informer()); err != nil {
		return nil, err
	}
	return c, c.WatchProxies(p.proxies.Core().V1().Services().Informer(), func(m metav1.Object) (types.NamespacedName, bool) {
		parent, _, ok := proxydeploy.ParentOf(m)
		return parent, ok
	})
}
