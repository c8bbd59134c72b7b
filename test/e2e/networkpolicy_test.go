package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
)

// checkProxyNetworkPolicy checks the NetworkPolicy the server keeps for the proxy of obj (issue
// 20 finding 6): in the installation's namespace, labelled like the StatefulSet, selecting its pods, the egress port only; a
// tampered policy is restored, and a change of the tailnet's allowedNamespaces reaches it. The
// real-node cluster suite (test/cluster, TestChart/networkpolicy) checks what an enforcer makes
// of it.
func checkProxyNetworkPolicy(t *testing.T, obj *v1alpha1.TailscaleEndpoints, tailnetName string, egressPort int32) {
	ns, name := obj.Namespace, proxydeploy.NamesFor(obj.Namespace, obj.Name).Base
	policies := env.Kube.NetworkingV1().NetworkPolicies(framework.Namespace)
	var np *networkingv1.NetworkPolicy
	eventually(t, "the proxy's NetworkPolicy", func(c context.Context) (bool, error) {
		var err error
		np, err = policies.Get(c, name, metav1.GetOptions{})
		return err == nil, nil
	})
	sts, err := env.Kube.AppsV1().StatefulSets(framework.Namespace).Get(ctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !proxydeploy.IsKeptFor(np, obj) {
		t.Errorf("NetworkPolicy not ours: labels %v, owners %v", np.Labels, np.OwnerReferences)
	}
	if fmt.Sprint(np.Spec.PodSelector.MatchLabels) != fmt.Sprint(sts.Spec.Selector.MatchLabels) ||
		!slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("NetworkPolicy selects %v for %v, StatefulSet's pods %v", np.Spec.PodSelector.MatchLabels, np.Spec.PolicyTypes, sts.Spec.Selector.MatchLabels)
	}
	egressRule := func(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicyIngressRule {
		for i, r := range np.Spec.Ingress {
			if len(r.Ports) == 1 && r.Ports[0].Port.IntVal == egressPort {
				return &np.Spec.Ingress[i]
			}
		}
		return nil
	}
	if egressRule(np) == nil {
		t.Fatalf("NetworkPolicy has no rule for the egress port %d alone: %+v", egressPort, np.Spec.Ingress)
	}

	// Opened by hand (a rule without peers or ports admits everything): the controller restores it.
	open := np.DeepCopy()
	open.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
	if _, err := policies.Update(ctx(t), open, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the opened NetworkPolicy restored", func(c context.Context) (bool, error) {
		cur, err := policies.Get(c, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return egressRule(cur) != nil && !slices.ContainsFunc(cur.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool {
			return len(r.Ports) == 0
		}), nil
	})

	// The tailnet now admits this namespace by name: the policy admits it by name.
	tailnets := viaKube(t).TailscaleTailnets()
	tn, err := tailnets.Get(ctx(t), tailnetName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tn.Spec.AllowedNamespaces = &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{ns}}
	if _, err := tailnets.Update(ctx(t), tn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{ns}}}}}
	eventually(t, "the NetworkPolicy admitting the tailnet's namespaces by name", func(c context.Context) (bool, error) {
		cur, err := policies.Get(c, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		r := egressRule(cur)
		return r != nil && slices.ContainsFunc(r.From, func(p networkingv1.NetworkPolicyPeer) bool {
			return p.PodSelector == nil && fmt.Sprint(p.NamespaceSelector) == fmt.Sprint(want.NamespaceSelector)
		}), nil
	})
}
