package tsgateway

import (
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Labels of the listener objects (beside LabelGateway, LabelTailnet and LabelManagedBy).
const (
	// LabelGenerated says which kind of listener object it is: GeneratedListener (a
	// TailscaleServices per listener and tailnet) or GeneratedProxy (the TailscaleEndpoints of the
	// proxy that hosts them).
	LabelGenerated    = "gateway.tailscale.com/generated"
	GeneratedListener = "gateway-listener"
	GeneratedProxy    = "gateway-proxy"
	// LabelGatewayProxy is carried by a gateway-proxy TailscaleEndpoints and selected by the
	// listener TailscaleServices it hosts; its value is the TailscaleEndpoints' name (cut with a
	// hash past 63 characters).
	LabelGatewayProxy = "gateway.tailscale.com/gateway-proxy"
	// LabelListener is the listener's name on a listener TailscaleServices (cut likewise).
	LabelListener = "gateway.tailscale.com/gateway-listener"
)

// Envoy Gateway v1.9.1's labels on the Service it creates for a Gateway
// (internal/gatewayapi.OwningGatewayNameLabel / OwningGatewayNamespaceLabel). Its ports are the
// listeners' ports (ResourceRender.Service: Port = the listener's port; only the container
// port is shifted above 1023).
const (
	EnvoyOwningGatewayName      = "gateway.envoyproxy.io/owning-gateway-name"
	EnvoyOwningGatewayNamespace = "gateway.envoyproxy.io/owning-gateway-namespace"
)

// EnvoyExternalService is the name of the external service of a listener TailscaleServices.
const EnvoyExternalService = "envoy"

// ListenerInput is what the listener objects of a TailscaleGateway are generated from.
type ListenerInput struct {
	Gateway *v1alpha1.TailscaleGateway
	// Tailnets by name (a tailnet entry whose TailscaleTailnet is missing gets nothing).
	Tailnets map[string]*v1alpha1.TailscaleTailnet
	// Listeners are the referenced Gateway's (nil when it is not found).
	Listeners []gwapiv1.Listener
	// Envoy is the Service Envoy Gateway created for the Gateway; nil when not found.
	Envoy *corev1.Service
}

// Listener is one generated Tailscale Service: a Gateway listener on one tailnet.
type Listener struct {
	Tailnet  string // spec.tailnets[].name
	Listener string
	Service  string // "svc:..."
	Port     int32
	Target   string // host:port of the Envoy Service
	Object   string // the TailscaleServices' name
}

// ListenerOutput is the generated listener objects.
type ListenerOutput struct {
	// Proxies are the gateway-proxy TailscaleEndpoints, one per tailnet with listeners.
	Proxies []*v1alpha1.TailscaleEndpoints
	// Services are the listener TailscaleServices, one per listener and tailnet.
	Services  []*v1alpha1.TailscaleServices
	Listeners []Listener
	// Problems are listeners that got no Service, with why.
	Problems []string
	// NoEnvoyService: the Gateway has listeners but Envoy Gateway's Service for it is not found.
	NoEnvoyService bool
	// Skipped are the plaintext listeners tlsMode strict keeps off the tailnets, with why.
	Skipped []string
}

// ServiceName is the Tailscale Service of a Gateway listener: "svc:gateway-<gateway>-<listener>-<port>",
// lowercased, characters a DNS label may not hold replaced by "-", cut to 63 characters with a
// hash of the whole name when longer.
func ServiceName(gateway, listener string, port int32) string {
	return "svc:" + dnsLabel(fmt.Sprintf("gateway-%s-%s-%d", gateway, listener, port))
}

// ListenerObjectName is the listener TailscaleServices' name: "<tailscalegateway>-<tailnet>-listener-<listener>".
func ListenerObjectName(gw, tailnet, listener string) string {
	return cutName(strings.Join([]string{gw, tailnet, "listener", listener}, "-"))
}

// ProxyObjectName is the gateway-proxy TailscaleEndpoints' name: "<tailscalegateway>-<tailnet>-gateway-proxy".
func ProxyObjectName(gw, tailnet string) string {
	return cutName(strings.Join([]string{gw, tailnet, "gateway-proxy"}, "-"))
}

func shortHash(s string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// dnsLabel makes s a DNS label (see ServiceName).
func dnsLabel(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			b[i] = '-'
		}
	}
	out := strings.Trim(string(b), "-")
	if len(out) <= 63 {
		return out
	}
	return strings.TrimRight(out[:54], "-") + "-" + shortHash(s)
}

// labelValue cuts v to a label value's 63 characters, ending in a hash when cut.
func labelValue(v string) string {
	if len(v) <= 63 {
		return v
	}
	return strings.TrimRight(v[:54], "-.") + "-" + shortHash(v)
}

// FindEnvoyService returns the Service Envoy Gateway created for the Gateway namespace/name:
// the one carrying its owning-gateway labels (the first by namespace/name should there be more).
func FindEnvoyService(services []*corev1.Service, namespace, name string) *corev1.Service {
	var found []*corev1.Service
	for _, s := range services {
		if s.Labels[EnvoyOwningGatewayName] == name && s.Labels[EnvoyOwningGatewayNamespace] == namespace && s.DeletionTimestamp == nil {
			found = append(found, s)
		}
	}
	if len(found) == 0 {
		return nil
	}
	slices.SortFunc(found, func(a, b *corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return found[0]
}

// envoyAddress is where the proxy dials the Envoy Service: its cluster IP, or its cluster DNS
// name when it has none (headless).
func envoyAddress(s *corev1.Service) string {
	if ip := net.ParseIP(s.Spec.ClusterIP); ip != nil {
		return s.Spec.ClusterIP
	}
	return s.Name + "." + s.Namespace + ".svc"
}

// AccessRule is the proxy's rule for the TailscaleGateway's listeners (security.accessControl).
func AccessRule(gw *v1alpha1.TailscaleGateway) accesscontrol.Rule {
	if sec := gw.Spec.Security; sec != nil && sec.AccessControl != nil {
		return accesscontrol.Rule{Allowed: slices.Clone(sec.AccessControl.AllowedTags), Denied: slices.Clone(sec.AccessControl.DeniedTags)}
	}
	return accesscontrol.Rule{}
}

func ownerRef(gw *v1alpha1.TailscaleGateway) []metav1.OwnerReference {
	controller := true
	return []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "TailscaleGateway",
		Name: gw.Name, UID: gw.UID, Controller: &controller, BlockOwnerDeletion: &controller}}
}

func listenerLabels(gw *v1alpha1.TailscaleGateway, tailnet, generated string) map[string]string {
	return map[string]string{LabelGateway: gw.Name, LabelTailnet: tailnet, LabelManagedBy: ManagedBy, LabelGenerated: generated}
}

// GenerateListeners returns, for every spec.tailnets[] entry whose TailscaleTailnet exists and
// every TCP-based listener of the Gateway (HTTP, HTTPS, TLS, TCP; tsnet hosts TCP Service ports
// only, so UDP listeners are reported), a listener TailscaleServices — vipService
// ServiceName(...) on the listener's port, its one external service the Envoy Service on the same
// port, the access rule as annotations — and per tailnet one gateway-proxy TailscaleEndpoints
// (spec.proxy ingress-only, in that tailnet) that its selector picks, so that the proxy deployed
// for it hosts them all. With tlsMode strict only HTTPS and TLS listeners are published; the
// others are named in Skipped. It is pure: the same input gives the same output, in a stable order.
func GenerateListeners(in ListenerInput) ListenerOutput {
	gw := in.Gateway
	var out ListenerOutput
	if len(in.Listeners) == 0 {
		return out
	}
	if in.Envoy == nil {
		out.NoEnvoyService = true
		ns, name := gatewayKey(gw)
		out.Problems = append(out.Problems, fmt.Sprintf("no Service of Envoy Gateway for Gateway %s/%s (labels %s, %s) yet", ns, name,
			EnvoyOwningGatewayName, EnvoyOwningGatewayNamespace))
		return out
	}
	envoyPorts := map[int32]bool{}
	for _, p := range in.Envoy.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			envoyPorts[p.Port] = true
		}
	}
	gwNS, gwName := gatewayKey(gw)
	rule := AccessRule(gw)
	address := envoyAddress(in.Envoy)
	for _, t := range gw.Spec.Tailnets {
		if _, ok := in.Tailnets[t.TailscaleTailnetRef.Name]; !ok {
			continue
		}
		proxyName := ProxyObjectName(gw.Name, t.Name)
		var services []*v1alpha1.TailscaleServices
		for _, l := range in.Listeners {
			if StrictTLS(gw) && l.Protocol != gwapiv1.HTTPSProtocolType && l.Protocol != gwapiv1.TLSProtocolType {
				out.Skipped = append(out.Skipped, fmt.Sprintf("listener %s (%s, port %d) on %s", l.Name, l.Protocol, l.Port, t.Name))
				continue
			}
			if l.Protocol == gwapiv1.UDPProtocolType {
				out.Problems = append(out.Problems, fmt.Sprintf("listener %s (UDP, port %d) is not served on the tailnet: tsnet hosts TCP Service ports only", l.Name, l.Port))
				continue
			}
			if !envoyPorts[l.Port] {
				out.Problems = append(out.Problems, fmt.Sprintf("listener %s: Envoy Service %s/%s has no TCP port %d (yet)", l.Name, in.Envoy.Namespace, in.Envoy.Name, l.Port))
				continue
			}
			name := ListenerObjectName(gw.Name, t.Name, string(l.Name))
			svcName := ServiceName(gwName, string(l.Name), l.Port)
			labels := listenerLabels(gw, t.Name, GeneratedListener)
			labels[LabelListener] = labelValue(string(l.Name))
			s := &v1alpha1.TailscaleServices{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: gw.Namespace, Labels: labels, OwnerReferences: ownerRef(gw)},
				Spec: v1alpha1.TailscaleServicesSpec{
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{LabelGatewayProxy: labelValue(proxyName)}},
					VIPService: &v1alpha1.VIPServiceSpec{Name: svcName, Ports: []string{"tcp:" + strconv.Itoa(int(l.Port))},
						Comment: fmt.Sprintf("Gateway %s/%s listener %s, by TailscaleGateway %s/%s", gwNS, gwName, l.Name, gw.Namespace, gw.Name)},
					ServiceDiscovery: &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{{
						Name: EnvoyExternalService, Address: address, Port: l.Port, Protocol: v1alpha1.ProtocolTCP}}},
				},
			}
			if a := rule.Annotations(); len(a) > 0 {
				s.Annotations = a
			}
			if ConnectionLog(gw) {
				s.Annotations = mergeLabels(s.Annotations, map[string]string{accesscontrol.AnnotationConnectionLog: "true"})
			}
			v1alpha1.SetObjectDefaults_TailscaleServices(s)
			services = append(services, s)
			out.Listeners = append(out.Listeners, Listener{Tailnet: t.Name, Listener: string(l.Name), Service: svcName, Port: l.Port,
				Target: net.JoinHostPort(address, strconv.Itoa(int(l.Port))), Object: name})
		}
		if len(services) == 0 {
			continue
		}
		labels := listenerLabels(gw, t.Name, GeneratedProxy)
		labels[LabelGatewayProxy] = labelValue(proxyName)
		p := &v1alpha1.TailscaleEndpoints{
			ObjectMeta: metav1.ObjectMeta{Name: proxyName, Namespace: gw.Namespace, Labels: labels, OwnerReferences: ownerRef(gw)},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: t.TailscaleTailnetRef.Name,
				Proxy: &v1alpha1.ProxyConfig{ConnectionType: "ingress"}},
		}
		v1alpha1.SetObjectDefaults_TailscaleEndpoints(p)
		out.Proxies = append(out.Proxies, p)
		out.Services = append(out.Services, services...)
	}
	return out
}

// NewEnvoyServiceInformer returns an informer on the Services of every namespace that carry
// EnvoyOwningGatewayName (Options.EnvoyServices); run it before the controller.
func NewEnvoyServiceInformer(kube kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
	return coreinformers.NewFilteredServiceInformer(kube, metav1.NamespaceAll, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
		func(o *metav1.ListOptions) { o.LabelSelector = EnvoyOwningGatewayName })
}
