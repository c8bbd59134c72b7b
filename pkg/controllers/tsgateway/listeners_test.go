package tsgateway

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/discovery"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// envoyService is the Service Envoy Gateway v1.9.1 creates for Gateway envoy-gateway-system/envoy-gateway.
func envoyService(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "envoy-gateway-system", Name: "envoy-envoy-gateway-system-envoy-gateway-3b9e6ae2",
			Labels: map[string]string{EnvoyOwningGatewayName: "envoy-gateway", EnvoyOwningGatewayNamespace: "envoy-gateway-system",
				"app.kubernetes.io/managed-by": "envoy-gateway"}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.12.34", Ports: ports},
	}
}

func listenersInput() ListenerInput {
	gw := advancedGateway()
	gw.Spec.Security = &v1alpha1.SecurityConfig{AccessControl: &v1alpha1.AccessControlConfig{
		AllowedTags: []string{"tag:prod-server", "enterprise-user"}, DeniedTags: []string{"tag:dev-testing"}}}
	return ListenerInput{
		Gateway:  gw,
		Tailnets: input(gw).Tailnets,
		Listeners: []gwapiv1.Listener{
			{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType},
			{Name: "https", Port: 443, Protocol: gwapiv1.HTTPSProtocolType},
			{Name: "dns", Port: 53, Protocol: gwapiv1.UDPProtocolType},
		},
		Envoy: envoyService(
			corev1.ServicePort{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80},
			corev1.ServicePort{Name: "https-443", Protocol: corev1.ProtocolTCP, Port: 443},
			corev1.ServicePort{Name: "udp-53", Protocol: corev1.ProtocolUDP, Port: 53}),
	}
}

func TestGenerateListenersGolden(t *testing.T) {
	out := GenerateListeners(listenersInput())
	assertGolden(t, "listeners-proxies", out.Proxies)
	assertGolden(t, "listeners-services", out.Services)
	if len(out.Problems) != 1 || !strings.Contains(out.Problems[0], "dns (UDP, port 53)") {
		t.Errorf("problems %q, want the UDP listener only", out.Problems)
	}
	var got []string
	for _, l := range out.Listeners {
		got = append(got, l.Service+" "+l.Target)
	}
	if strings.Join(got, ",") != "svc:gateway-envoy-gateway-http-80 10.96.12.34:80,svc:gateway-envoy-gateway-https-443 10.96.12.34:443" {
		t.Errorf("listeners %v", got)
	}
	// Every listener object is controlled by the TailscaleGateway, so its externalServices pass.
	for _, s := range out.Services {
		if !tenancy.GeneratedByGateway(s) || s.Spec.Selector.MatchLabels[LabelGatewayProxy] != out.Proxies[0].Labels[LabelGatewayProxy] {
			t.Errorf("%s: not controlled by the TailscaleGateway or not selecting its proxy", s.Name)
		}
		if r := accesscontrol.FromAnnotations(s.Annotations); !r.Equal(AccessRule(listenersInput().Gateway)) {
			t.Errorf("%s: access rule %+v", s.Name, r)
		}
	}
}

func TestGenerateListenersWithoutEnvoyServiceOrPort(t *testing.T) {
	in := listenersInput()
	in.Envoy = nil
	if out := GenerateListeners(in); !out.NoEnvoyService || len(out.Services) != 0 || len(out.Proxies) != 0 {
		t.Errorf("no Envoy Service: %+v", out)
	}
	in = listenersInput()
	in.Envoy = envoyService(corev1.ServicePort{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80})
	out := GenerateListeners(in)
	if len(out.Services) != 1 || len(out.Problems) != 2 || !strings.Contains(out.Problems[0], "has no TCP port 443") {
		t.Errorf("Envoy Service without 443: services %d, problems %q", len(out.Services), out.Problems)
	}
	in.Listeners = nil
	if out := GenerateListeners(in); len(out.Services)+len(out.Proxies)+len(out.Problems) != 0 {
		t.Errorf("no listeners: %+v", out)
	}
	// A tailnet whose TailscaleTailnet is missing gets nothing.
	in = listenersInput()
	in.Tailnets = nil
	if out := GenerateListeners(in); len(out.Services) != 0 {
		t.Errorf("missing tailnet: %d services", len(out.Services))
	}
	// A headless Envoy Service is dialled by its cluster DNS name.
	in = listenersInput()
	in.Envoy.Spec.ClusterIP = corev1.ClusterIPNone
	if out := GenerateListeners(in); out.Services[0].Spec.ServiceDiscovery.ExternalServices[0].Address != in.Envoy.Name+".envoy-gateway-system.svc" {
		t.Errorf("headless: %+v", out.Services[0].Spec.ServiceDiscovery.ExternalServices)
	}
}

func TestListenerNamesAreValid(t *testing.T) {
	long := strings.Repeat("a", 60)
	for _, tc := range []struct{ gateway, listener string }{
		{"eg", "http"}, {"My.Gateway", "web.v2"}, {long, long}, {long, long + "b"},
	} {
		n := ServiceName(tc.gateway, tc.listener, 8443)
		label := strings.TrimPrefix(n, "svc:")
		if errs := validation.IsDNS1123Label(label); len(errs) > 0 {
			t.Errorf("ServiceName(%q, %q) = %q: %v", tc.gateway, tc.listener, n, errs)
		}
		obj := ListenerObjectName(tc.gateway+tc.gateway+tc.gateway+tc.gateway, "t", tc.listener)
		if len(obj) > 253 {
			t.Errorf("object name %d characters", len(obj))
		}
	}
	if ServiceName(long, long, 1) == ServiceName(long, long+"b", 1) {
		t.Error("cut names collide")
	}
	if got := ServiceName("eg", "http", 80); got != "svc:gateway-eg-http-80" {
		t.Errorf("ServiceName = %q", got)
	}
}

// The listener objects are not backends of generated routes.
func TestGenerateSkipsListenerObjects(t *testing.T) {
	lin := listenersInput()
	lout := GenerateListeners(lin)
	in := input(lin.Gateway)
	in.Endpoints = append(in.Endpoints, lout.Proxies...)
	in.Services = append(in.Services, lout.Services...)
	for _, r := range Generate(in).Routes {
		if strings.Contains(r.Name, "gateway-proxy") || strings.Contains(r.Name, "-listener-") {
			t.Errorf("route %s generated for a listener object", r.Name)
		}
	}
}

// Of discovery's objects only the remote services are route backends: a host and a local
// Service's object are not.
func TestGenerateRoutesOnlyForRemoteDiscoveredServices(t *testing.T) {
	lin := listenersInput()
	in := input(lin.Gateway)
	if len(in.Endpoints) == 0 {
		t.Fatal("the input has no TailscaleEndpoints to copy")
	}
	yes := true
	discovered := func(name, role string) *v1alpha1.TailscaleEndpoints {
		e := in.Endpoints[0].DeepCopy()
		e.Name = name
		e.Labels = map[string]string{discovery.LabelRole: role}
		e.OwnerReferences = []metav1.OwnerReference{{APIVersion: "gateway.tailscale.com/v1alpha1", Kind: "TailscaleGateway", Name: "gw", UID: "u", Controller: &yes}}
		return e
	}
	in.Endpoints = append(in.Endpoints, discovered("found-remote", discovery.RoleRemote), discovered("found-host", discovery.RoleHost))
	var remote bool
	for _, r := range Generate(in).Routes {
		remote = remote || strings.HasSuffix(r.Name, "-found-remote")
		if strings.HasSuffix(r.Name, "-found-host") {
			t.Errorf("route %s generated for a discovery host", r.Name)
		}
	}
	if !remote {
		t.Error("no route for the remote service discovery found")
	}
}

func TestFindEnvoyService(t *testing.T) {
	other := envoyService()
	other.Name, other.Labels = "other", map[string]string{EnvoyOwningGatewayName: "envoy-gateway", EnvoyOwningGatewayNamespace: "elsewhere"}
	want := envoyService()
	if got := FindEnvoyService([]*corev1.Service{other, want}, "envoy-gateway-system", "envoy-gateway"); got != want {
		t.Errorf("found %v", got)
	}
	if got := FindEnvoyService([]*corev1.Service{other}, "envoy-gateway-system", "envoy-gateway"); got != nil {
		t.Errorf("found %v for another namespace's Gateway", got.Name)
	}
}

func TestUnsupportedNoLongerListsSecurity(t *testing.T) {
	gw := listenersInput().Gateway
	gw.Spec.Security.TLSMode = "strict"
	gw.Spec.Security.MTLS = &v1alpha1.MTLSConfig{Enabled: true, CertificateRef: &v1alpha1.SecretReference{Name: "ca"}}
	got := strings.Join(Unsupported(gw), ",")
	if strings.Contains(got, "spec.security") {
		t.Errorf("Unsupported = %s", got)
	}
}
