package proxydeploy

import (
	"net"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
)

// ServiceAddresser is the extension's `proxy` endpoint mode in a cluster (an eds.Addresser):
// Envoy dials the egress Service this controller deploys for the endpoints' TailscaleEndpoints,
// at its cluster IP and the endpoint's egress port (the Service port equals the listener's, see
// EgressPorts). A TailscaleEndpoints with no proxy of its own (not Wanted, an ingress-only
// proxy, or its Service not there yet or not ours) keeps the tailnet address (Direct).
type ServiceAddresser struct {
	// Services lists the Services this controller manages; Namespace is the installation's,
	// where they are kept.
	Services  corelisters.ServiceLister
	Namespace string
	// Direct addresses endpoints without a proxy (Address only; ProxyAddress needs none).
	Direct interface {
		Address(*v1alpha1.TailscaleEndpoints, endpointset.Endpoint) (string, uint32, bool)
	}

	ports plan.EgressAddresser // its Host is unused: only the ports are read
}

// Address implements eds.Addresser.
func (a *ServiceAddresser) Address(obj *v1alpha1.TailscaleEndpoints, ep endpointset.Endpoint) (string, uint32, bool) {
	if ip := a.serviceIP(obj); ip != "" {
		if _, port, ok := a.ports.Address(obj, ep); ok {
			return ip, port, true
		}
		return "", 0, false
	}
	return a.Direct.Address(obj, ep)
}

// ProxyAddress is the cluster IP of obj's egress Service (a publish.ProxyAddresser, for the
// published backends of pkg/controllers/publish): its ports are the egress listeners' own, TCP
// and UDP. ok is false when obj has no egress Service of ours with a cluster IP.
func (a *ServiceAddresser) ProxyAddress(obj *v1alpha1.TailscaleEndpoints) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(a.serviceIP(obj))
	return ip, err == nil
}

// DeploysEgress reports whether this controller deploys egress listeners for obj: their only
// address is then its Service's (ServiceAddresser).
func DeploysEgress(obj *v1alpha1.TailscaleEndpoints) bool { return Wanted(obj) && runsEgress(obj) }

// serviceIP is the cluster IP of obj's egress Service, empty when obj has none.
func (a *ServiceAddresser) serviceIP(obj *v1alpha1.TailscaleEndpoints) string {
	if !DeploysEgress(obj) {
		return ""
	}
	svc, err := a.Services.Services(a.Namespace).Get(NamesFor(obj.Namespace, obj.Name).Base)
	if err != nil || !IsKeptFor(svc, obj) || net.ParseIP(svc.Spec.ClusterIP) == nil {
		return ""
	}
	return svc.Spec.ClusterIP
}

// ManagedInformers returns informers limited to the objects this controller manages in the
// installation's namespace, such as the Services a ServiceAddresser reads.
func ManagedInformers(kube kubernetes.Interface, namespace string, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync, kubeinformers.WithNamespace(namespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ManagedByLabel + "=" + ManagedBy }))
}
