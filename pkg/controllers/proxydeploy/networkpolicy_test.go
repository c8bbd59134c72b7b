package proxydeploy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

var testPolicyConfig = NetworkPolicyConfig{
	EnvoyGatewayNamespace: "envoy-gateway-system", ServerNamespace: "tailscale-gateway-system",
	ServerLabels: map[string]string{"app.kubernetes.io/name": "tailscale-gateway", "app.kubernetes.io/component": "apiserver"},
}

func tailnetAdmitting(an *v1alpha1.AllowedNamespaces) *v1alpha1.TailscaleTailnet {
	return &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "corp"}, Spec: v1alpha1.TailscaleTailnetSpec{AllowedNamespaces: an}}
}

func TestNetworkPolicyGolden(t *testing.T) {
	for _, ct := range []string{Bidirectional, Ingress} {
		t.Run(ct, func(t *testing.T) {
			in := Input{Endpoints: testEndpoints(ct, 2), Services: []string{"web"}}
			tn := tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"web", "api", "web"}})
			golden(t, "networkpolicy-"+ct, NetworkPolicy(testPolicyConfig, StatefulSet(testConfig, in), in.Endpoints, tn))
		})
	}
}

// peer is a pod that connects to a proxy pod.
type peer struct {
	namespace string
	nsLabels  map[string]string
	labels    map[string]string
}

func (p peer) namespaceLabels() labels.Set {
	set := labels.Set{corev1.LabelMetadataName: p.namespace}
	for k, v := range p.nsLabels {
		set[k] = v
	}
	return set
}

// admits evaluates np as the NetworkPolicy API defines it for a connection from p to port/proto
// of a pod np selects in np's namespace.
func admits(t *testing.T, np *networkingv1.NetworkPolicy, p peer, proto corev1.Protocol, port int32) bool {
	t.Helper()
	matches := func(sel *metav1.LabelSelector, set labels.Set) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatalf("selector %v: %v", sel, err)
		}
		return s.Matches(set)
	}
	for _, rule := range np.Spec.Ingress {
		portOK := len(rule.Ports) == 0
		for _, rp := range rule.Ports {
			if (rp.Protocol == nil || *rp.Protocol == proto) && (rp.Port == nil || rp.Port.IntVal == port) {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, f := range rule.From {
			if f.IPBlock != nil {
				t.Fatalf("the policy has an ipBlock peer %v", f.IPBlock)
			}
			nsOK := p.namespace == np.Namespace
			if f.NamespaceSelector != nil {
				nsOK = matches(f.NamespaceSelector, p.namespaceLabels())
			}
			if nsOK && (f.PodSelector == nil || matches(f.PodSelector, p.labels)) {
				return true
			}
		}
	}
	return false
}

func TestNetworkPolicyAdmitsOnlyEnvoyTenantsAndTheScraper(t *testing.T) {
	obj := testEndpoints(Bidirectional, 1)
	api := ports.EgressPort("backends", "api", 8080)
	dns := ports.EgressPort("backends", "dns", 53)
	envoy := peer{namespace: "envoy-gateway-system", labels: EnvoyProxyLabels}
	fakeEnvoy := peer{namespace: "attacker", labels: EnvoyProxyLabels}
	server := peer{namespace: "tailscale-gateway-system", labels: testPolicyConfig.ServerLabels}
	tenant := peer{namespace: "web", labels: map[string]string{"app": "client"}}
	team := peer{namespace: "team-b", nsLabels: map[string]string{"tailnet": "corp"}}
	other := peer{namespace: "attacker", labels: map[string]string{"app": "client"}}
	egressPort := func(p peer, proto corev1.Protocol, port int32) func(*networkingv1.NetworkPolicy) bool {
		return func(np *networkingv1.NetworkPolicy) bool { return admits(t, np, p, proto, port) }
	}
	for _, tc := range []struct {
		name    string
		tailnet *v1alpha1.TailscaleTailnet
		check   func(*networkingv1.NetworkPolicy) bool
		want    bool
	}{
		{"Envoy's pods reach a TCP egress port", nil, egressPort(envoy, corev1.ProtocolTCP, api), true},
		{"Envoy's pods reach a UDP egress port", nil, egressPort(envoy, corev1.ProtocolUDP, dns), true},
		{"Envoy's labels in another namespace are refused", nil, egressPort(fakeEnvoy, corev1.ProtocolTCP, api), false},
		{"Envoy's pods reach no other port", nil, egressPort(envoy, corev1.ProtocolTCP, api+1), false},
		{"the TCP port is not open on UDP", nil, egressPort(envoy, corev1.ProtocolUDP, api), false},
		{"without a known tailnet, no namespace is admitted", nil, egressPort(tenant, corev1.ProtocolTCP, api), false},
		{"a tailnet admitting all admits any namespace", tailnetAdmitting(nil), egressPort(other, corev1.ProtocolTCP, api), true},
		{"from: All admits any namespace", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromAll}),
			egressPort(other, corev1.ProtocolTCP, api), true},
		{"an admitted name is admitted", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"web"}}),
			egressPort(tenant, corev1.ProtocolTCP, api), true},
		{"a name not admitted is refused", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"web"}}),
			egressPort(other, corev1.ProtocolTCP, api), false},
		{"an admitted namespace reaches no other port", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"web"}}),
			egressPort(tenant, corev1.ProtocolTCP, MetricsPort), false},
		{"the selector's namespaces are admitted", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tailnet": "corp"}}}), egressPort(team, corev1.ProtocolUDP, dns), true},
		{"namespaces outside the selector are refused", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tailnet": "corp"}}}), egressPort(tenant, corev1.ProtocolTCP, api), false},
		{"an invalid selector admits no namespace", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tailnet", Operator: "Near"}}}}),
			egressPort(team, corev1.ProtocolTCP, api), false},
		{"an unknown from admits no namespace", tailnetAdmitting(&v1alpha1.AllowedNamespaces{From: "Friends"}), egressPort(other, corev1.ProtocolTCP, api), false},
		{"the server scrapes the metrics port", nil, egressPort(server, corev1.ProtocolTCP, MetricsPort), true},
		{"the server's labels elsewhere do not", nil, egressPort(peer{namespace: "attacker", labels: server.labels}, corev1.ProtocolTCP, MetricsPort), false},
		{"the server reaches no egress port", nil, egressPort(server, corev1.ProtocolTCP, api), false},
		{"Envoy does not reach the metrics port", nil, egressPort(envoy, corev1.ProtocolTCP, MetricsPort), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Endpoints: obj}
			np := NetworkPolicy(testPolicyConfig, StatefulSet(testConfig, in), obj, tc.tailnet)
			if got := tc.check(np); got != tc.want {
				t.Fatalf("admitted %v, want %v\n%+v", got, tc.want, np.Spec)
			}
		})
	}
}

func TestNetworkPolicyOfAnIngressProxyOpensNoEgressPort(t *testing.T) {
	obj := testEndpoints(Ingress, 1)
	np := NetworkPolicy(testPolicyConfig, StatefulSet(testConfig, Input{Endpoints: obj, Services: []string{"web"}}), obj, tailnetAdmitting(nil))
	// A rule without ports would admit every port.
	for _, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 {
			t.Fatalf("a rule without ports: %+v", r)
		}
	}
	if admits(t, np, peer{namespace: "envoy-gateway-system", labels: EnvoyProxyLabels}, corev1.ProtocolTCP, ports.EgressPort("backends", "api", 8080)) {
		t.Fatal("an ingress-only proxy admits Envoy to an egress port")
	}
}

// The policy follows the StatefulSet: its namespace (the installation's), selector and labels,
// wherever the StatefulSet lives; it has no ownerReference (its parent is in another namespace).
func TestNetworkPolicyFollowsTheStatefulSet(t *testing.T) {
	obj := testEndpoints(Egress, 1)
	sts := StatefulSet(testConfig, Input{Endpoints: obj})
	sts.Namespace = "elsewhere"
	np := NetworkPolicy(testPolicyConfig, sts, obj, nil)
	if np.Namespace != sts.Namespace || np.Name != sts.Name || !equalMaps(np.Labels, sts.Labels) ||
		!equalMaps(np.Spec.PodSelector.MatchLabels, sts.Spec.Template.Labels) || len(np.OwnerReferences) != 0 || !IsKeptFor(np, obj) {
		t.Fatalf("policy %s/%s labels %v selector %v owners %v; StatefulSet %s/%s labels %v pods %v",
			np.Namespace, np.Name, np.Labels, np.Spec.PodSelector.MatchLabels, np.OwnerReferences,
			sts.Namespace, sts.Name, sts.Labels, sts.Spec.Template.Labels)
	}
	if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress || np.Spec.Egress != nil {
		t.Fatalf("policy types %v egress %v: the proxy's egress must stay open", np.Spec.PolicyTypes, np.Spec.Egress)
	}
	// Its selector is a copy: changing it leaves the StatefulSet alone.
	np.Spec.PodSelector.MatchLabels["x"] = "y"
	np.Labels["x"] = "y"
	if sts.Spec.Selector.MatchLabels["x"] != "" || sts.Labels["x"] != "" {
		t.Fatal("the policy shares maps with the StatefulSet")
	}
}
