package proxydeploy

import (
	"context"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// EnvoyProxyLabels are the labels Envoy Gateway (v1.9) gives every Envoy pod of its data plane
// (EnvoyAppLabel of its internal/infrastructure/kubernetes/proxy); pod templates of an
// EnvoyProxy may add labels but these stay.
var EnvoyProxyLabels = map[string]string{
	"app.kubernetes.io/name":       "envoy",
	"app.kubernetes.io/component":  "proxy",
	"app.kubernetes.io/managed-by": "envoy-gateway",
}

// NetworkPolicyConfig says who, besides the namespaces a proxy's tailnet admits, reaches it.
type NetworkPolicyConfig struct {
	// EnvoyGatewayNamespace is where Envoy Gateway runs its Envoy pods (its own namespace in its
	// default ControllerNamespaceMode): those pods reach every egress port.
	EnvoyGatewayNamespace string
	// ServerNamespace and ServerLabels select this server's pods, which scrape the proxies'
	// metrics port (requestCounts).
	ServerNamespace string
	ServerLabels    map[string]string
}

// NetworkPolicy returns the NetworkPolicy of the proxy pods sts runs for obj, in sts's
// namespace (the installation's), labelled like sts. Ingress only (the proxy dials the tailnet and the API server
// freely): the egress listener ports admit Envoy Gateway's Envoy pods and the pods of the
// namespaces tailnet admits (spec.allowedNamespaces; none when tailnet is nil, every namespace
// when it admits all), the metrics port admits the server's pods; nothing else reaches the
// pods. Traffic from the node itself (kubelet probes) is not subject to NetworkPolicy.
func NetworkPolicy(cfg NetworkPolicyConfig, sts *appsv1.StatefulSet, obj *v1alpha1.TailscaleEndpoints, tailnet *v1alpha1.TailscaleTailnet) *networkingv1.NetworkPolicy {
	return NetworkPolicyFor(cfg, sts, EgressPorts(obj), tailnet)
}

// NetworkPolicyFor is NetworkPolicy for the proxy pods sts runs with the egress Service ports
// ports (a proxy pool's: every egress port of the objects it serves).
func NetworkPolicyFor(cfg NetworkPolicyConfig, sts *appsv1.StatefulSet, ports []corev1.ServicePort, tailnet *v1alpha1.TailscaleTailnet) *networkingv1.NetworkPolicy {
	var rules []networkingv1.NetworkPolicyIngressRule
	// A rule without ports admits every port: an ingress-only proxy gets no egress rule at all.
	if len(ports) > 0 {
		peers := []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: namespaceNamed(cfg.EnvoyGatewayNamespace),
			PodSelector:       &metav1.LabelSelector{MatchLabels: maps.Clone(EnvoyProxyLabels)},
		}}
		if sel := TailnetNamespaces(tailnet); sel != nil {
			peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: sel})
		}
		var npPorts []networkingv1.NetworkPolicyPort
		for _, p := range ports {
			npPorts = append(npPorts, policyPort(p.Protocol, p.Port))
		}
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: npPorts})
	}
	rules = append(rules, networkingv1.NetworkPolicyIngressRule{
		From: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: namespaceNamed(cfg.ServerNamespace),
			PodSelector:       &metav1.LabelSelector{MatchLabels: maps.Clone(cfg.ServerLabels)},
		}},
		Ports: []networkingv1.NetworkPolicyPort{policyPort(corev1.ProtocolTCP, MetricsPort)},
	})
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: sts.Name, Namespace: sts.Namespace, Labels: maps.Clone(sts.Labels)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *sts.Spec.Selector.DeepCopy(),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

// TailnetNamespaces is the namespace selector of the namespaces t admits (its
// spec.allowedNamespaces, as pkg/tenancy decides it): everything for All or unset, the names for
// Names, the selector for Selector; nil (no namespace) for no tailnet, an unknown from or an
// invalid selector.
func TailnetNamespaces(t *v1alpha1.TailscaleTailnet) *metav1.LabelSelector {
	if t == nil {
		return nil
	}
	an := t.Spec.AllowedNamespaces
	switch {
	case an == nil || an.From == "" || an.From == v1alpha1.NamespacesFromAll:
		return &metav1.LabelSelector{}
	case an.From == v1alpha1.NamespacesFromNames && len(an.Names) > 0:
		names := slices.Clone(an.Names)
		slices.Sort(names)
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: slices.Compact(names)}}}
	case an.From == v1alpha1.NamespacesFromSelector && an.Selector != nil:
		if _, err := metav1.LabelSelectorAsSelector(an.Selector); err != nil {
			return nil
		}
		return an.Selector.DeepCopy()
	}
	return nil
}

// namespaceNamed selects the namespace name by the label kube-apiserver gives every namespace.
func namespaceNamed(name string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: name}}
}

func policyPort(proto corev1.Protocol, port int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(proto), Port: ptr.To(intstr.FromInt32(port))}
}

// applyNetworkPolicy keeps the NetworkPolicy of the proxy sts runs, or deletes ours when the
// server keeps none (no NetworkPolicyConfig).
func (c *Controller) applyNetworkPolicy(ctx context.Context, in Input, sts *appsv1.StatefulSet) error {
	obj := in.Endpoints
	policies := c.kube.NetworkingV1().NetworkPolicies(sts.Namespace)
	lister := c.core.Networking().V1().NetworkPolicies().Lister().NetworkPolicies(sts.Namespace)
	if c.opts.NetworkPolicy == nil {
		return deleteOurs(ctx, obj, "NetworkPolicy", sts.Name, lister.Get, policies.Delete)
	}
	want := NetworkPolicy(*c.opts.NetworkPolicy, sts, obj, c.tailnetOf(obj))
	return ensure(ctx, c, obj, want, lister.Get, policies.Create, policies.Update,
		func(cur, want *networkingv1.NetworkPolicy) bool {
			if equality.Semantic.DeepEqual(cur.Spec, want.Spec) {
				return false
			}
			cur.Spec = want.Spec
			return true
		})
}
