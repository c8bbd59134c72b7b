package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
)

// Names of the NetworkPolicy test: the namespace of the proxy's TailscaleEndpoints (the proxy
// itself runs in the installation's, namespace) and another one its tailnet admits, one it does
// not, and Envoy Gateway's (the chart's envoyGateway.namespace, which the server's
// --envoy-gateway-namespace follows).
const (
	npProxyNS    = "np-proxy"
	npAdmittedNS = "np-admitted"
	npOtherNS    = "np-other"
	npTailnet    = "np-corp"
	envoyNS      = "envoy-gateway-system"
)

// testProxyNetworkPolicy checks, with the cluster's NetworkPolicy enforcer (kube-router,
// hack/cluster-up.sh), the NetworkPolicy the server generates for a proxy (issue 20 finding 6):
// a pod in a namespace the tailnet does not admit is refused at the proxy's egress port, with or
// without Envoy's labels, while Envoy Gateway's Envoy pods (a stand-in with their labels in
// Envoy Gateway's namespace) and pods of a namespace the tailnet admits are served.
//
// The proxy is the real one: its tailnet is the simulated one (tailnet-sim in the node's network
// namespace, the server connected to it as in testProxy), its pod joins with the key proxydeploy
// minted and runs in the installation's namespace; a client served gets the simulated device's
// answer through the proxy. Its readiness probe is an HTTP GET from the kubelet, which the policy
// does not name: the node's own traffic is not subject to NetworkPolicy. A server without the
// proxy's labels shows that the refused pod's packets reach the node: the refusal is the policy's.
func testProxyNetworkPolicy(t *testing.T) {
	ctx := t.Context()
	sim := startSim(t)
	connectServerToSim(t, ctx, sim)
	if out, err := run(ctx, time.Minute, "nsenter", "--net=/run/netns/tsgw-node", "--", "iptables", "-w", "-S", "FORWARD"); err != nil ||
		!strings.Contains(out, "-j KUBE-ROUTER-FORWARD\n") {
		t.Fatalf("the cluster runs no NetworkPolicy enforcer (FORWARD does not jump to kube-router's chain; an older "+
			"hack/cluster-up.sh made it: run hack/cluster-down.sh): %v\n%s", err, out)
	}
	createdEnvoyNS := false
	if _, err := kubectl(ctx, "get", "namespace", envoyNS); err != nil {
		createdEnvoyNS = true
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = kubectl(ctx, "delete", "tailscaleendpoints", "web", "-n", npProxyNS, "--ignore-not-found", "--wait=true")
		_, _ = kubectl(ctx, "delete", "pod", "np-envoy", "-n", envoyNS, "--ignore-not-found", "--wait=true")
		_, _ = kubectl(ctx, "delete", "pod", "np-open", "np-install", "-n", namespace, "--ignore-not-found", "--wait=true")
		names := []string{npProxyNS, npAdmittedNS, npOtherNS}
		if createdEnvoyNS {
			names = append(names, envoyNS)
		}
		_, _ = kubectl(ctx, append([]string{"delete", "namespace", "--ignore-not-found", "--wait=false"}, names...)...)
		_, _ = kubectl(ctx, "delete", "tailscaletailnet", npTailnet, "--ignore-not-found")
		// The next test starts on a clean cluster.
		args := []string{"wait", "--for=delete", "--timeout=110s"}
		for _, ns := range names {
			args = append(args, "namespace/"+ns)
		}
		if out, err := kubectl(ctx, args...); err != nil && !strings.Contains(out, "not found") {
			t.Errorf("the test's namespaces not gone: %v\n%s", err, out)
		}
	})
	for _, ns := range []string{npProxyNS, npAdmittedNS, npOtherNS, envoyNS} {
		if out, err := kubectl(ctx, "create", "namespace", ns); err != nil && !strings.Contains(out, "AlreadyExists") {
			t.Fatalf("creating namespace %s: %v\n%s", ns, err, out)
		}
	}
	fqdn, ip, devPort := sim.device(t, "api-server")
	applyManifest(t, fmt.Sprintf(`apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleTailnet
metadata:
  name: %[1]s
spec:
  tailnet: %[4]s
  apiBaseURL: %[5]s
  oauthSecretName: %[6]s
  oauthSecretNamespace: %[7]s
  tags: ["tag:np-proxy"]
  allowedNamespaces:
    from: Names
    names: [%[2]s, %[3]s]
---
apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleEndpoints
metadata:
  name: web
  namespace: %[2]s
spec:
  tailnet: %[1]s
  proxy:
    connectionType: egress
  endpoints:
    - name: http
      tailscaleIP: %[8]s
      tailscaleFQDN: %[9]s
      port: %[10]d
      protocol: HTTP
`, npTailnet, npProxyNS, npAdmittedNS, sim.Tailnet, sim.APIURL, simOAuth, namespace, ip, fqdn, devPort))

	// The policy the server generated in the installation's namespace, labelled for the
	// TailscaleEndpoints.
	var np networkingv1.NetworkPolicy
	npName := proxydeploy.NamesFor(npProxyNS, "web").Base
	// Its egress rule comes with the egress port, once the allocator has recorded it.
	waitFor(t, 3*time.Minute, "the proxy's NetworkPolicy with its egress rule", func() (bool, string) {
		out, err := kubectl(ctx, "get", "networkpolicy", npName, "-n", namespace, "-o", "json")
		if err != nil {
			return false, out
		}
		return json.Unmarshal([]byte(out), &np) == nil && envoyRule(&np) != nil, out
	})
	if parent, _, ok := proxydeploy.ParentOf(&np); !ok || parent.Namespace != npProxyNS || parent.Name != "web" {
		t.Fatalf("NetworkPolicy %s is not the controller's for %s/web: labels %v", npName, npProxyNS, np.Labels)
	}
	port := egressPortOf(t, &np)
	podLabels := np.Spec.PodSelector.MatchLabels
	if podLabels["app.kubernetes.io/name"] != "tailscale-gateway-proxy" || podLabels[proxydeploy.ParentNameLabel] != "web" ||
		podLabels[proxydeploy.ParentNamespaceLabel] != npProxyNS {
		t.Fatalf("the policy selects %v, not the proxy pods of %s/web", podLabels, npProxyNS)
	}

	// The protected stand-in of the proxy pod, an unprotected server, and the clients.
	serve := func(ns, name string, lbls map[string]string, port int32, probe bool) string {
		b, _ := json.Marshal(lbls)
		readiness := ""
		if probe {
			readiness = fmt.Sprintf(`
      readinessProbe:
        httpGet: {path: /, port: %d}
        periodSeconds: 2`, port)
		}
		return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels: %s
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: netcheck
      image: %s
      imagePullPolicy: Never
      args: [serve, -addr, ":%d"]%s
`, name, ns, b, netcheckImage(), port, readiness)
	}
	plain := map[string]string{"app": "np-client"}
	proxyPod := waitProxyPodReady(t, ctx, "web", "")
	if proxyPod.Namespace != namespace {
		t.Fatalf("the proxy pod runs in %s, not the installation's namespace %s", proxyPod.Namespace, namespace)
	}
	applyManifest(t, serve(namespace, "np-open", plain, port, false)+
		serve(namespace, "np-install", plain, 8080, false)+
		serve(npProxyNS, "np-tenant", plain, 8080, false)+
		serve(envoyNS, "np-envoy", proxydeploy.EnvoyProxyLabels, 8080, false)+
		serve(npAdmittedNS, "np-admitted", plain, 8080, false)+
		serve(npOtherNS, "np-other", plain, 8080, false)+
		serve(npOtherNS, "np-fake-envoy", proxydeploy.EnvoyProxyLabels, 8080, false))
	for _, p := range []string{namespace + "/np-open", namespace + "/np-install", npProxyNS + "/np-tenant", envoyNS + "/np-envoy",
		npAdmittedNS + "/np-admitted", npOtherNS + "/np-other", npOtherNS + "/np-fake-envoy"} {
		ns, name, _ := strings.Cut(p, "/")
		// Ready through the kubelet's probe: the node's traffic passes the policy.
		if out, err := kubectl(ctx, "wait", "-n", ns, "--for=condition=Ready", "pod/"+name, "--timeout=3m"); err != nil {
			t.Fatalf("pod %s not Ready: %v\n%s", p, err, out)
		}
	}
	protected := "http://" + podIP(t, namespace, proxyPod.Name) + fmt.Sprintf(":%d/", port)
	open := "http://" + podIP(t, namespace, "np-open") + fmt.Sprintf(":%d/", port)
	get := func(ns, pod, url string) (string, error) {
		return kubectl(ctx, "exec", "-n", ns, pod, "--", "netcheck", "get", "-timeout", "5s", url)
	}
	// refused: netcheck ran in the pod and failed (not kubectl failing to reach the pod).
	refused := func(out string, err error) bool {
		return err != nil && strings.Contains(out, "netcheck:") && strings.Contains(out, "command terminated with exit code")
	}

	// The path works: the refused namespace's pod reaches the unprotected server next to it.
	if out, err := get(npOtherNS, "np-other", open); err != nil || !strings.Contains(out, "netcheck np-open") {
		t.Fatalf("a pod of %s does not reach an unprotected pod of %s: %v\n%s", npOtherNS, namespace, err, out)
	}
	// Enforced (the enforcer programs a new pod's rules shortly after it starts): refused.
	waitFor(t, 2*time.Minute, "a pod of a namespace the tailnet does not admit refused at the egress port", func() (bool, string) {
		out, err := get(npOtherNS, "np-other", protected)
		return refused(out, err), out
	})
	for _, c := range []struct {
		ns, pod, what string
		served        bool
	}{
		{envoyNS, "np-envoy", "Envoy's stand-in (Envoy Gateway's data-plane labels in its namespace)", true},
		{npAdmittedNS, "np-admitted", "a pod of another namespace the tailnet admits", true},
		{npProxyNS, "np-tenant", "a pod of the TailscaleEndpoints' own namespace (admitted)", true},
		{namespace, "np-install", "a pod of the installation's namespace without the server's labels (not admitted)", false},
		{npOtherNS, "np-other", "a pod of a namespace the tailnet does not admit", false},
		{npOtherNS, "np-fake-envoy", "a pod with Envoy's labels in a namespace the tailnet does not admit", false},
	} {
		out, err := get(c.ns, c.pod, protected)
		served := err == nil && strings.Contains(out, "hello from api-server")
		if served != c.served || (!c.served && !refused(out, err)) {
			t.Errorf("%s (%s/%s): served %v, want %v: %v\n%s", c.what, c.ns, c.pod, served, c.served, err, out)
		}
	}
}

// envoyRule is the rule of np that admits Envoy's pods, nil when there is none.
func envoyRule(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicyIngressRule {
	for i, r := range np.Spec.Ingress {
		for _, from := range r.From {
			if from.PodSelector != nil && labels.SelectorFromSet(from.PodSelector.MatchLabels).Matches(labels.Set(proxydeploy.EnvoyProxyLabels)) {
				return &np.Spec.Ingress[i]
			}
		}
	}
	return nil
}

// egressPortOf is the one egress port the policy admits Envoy's pods to.
func egressPortOf(t *testing.T, np *networkingv1.NetworkPolicy) int32 {
	t.Helper()
	r := envoyRule(np)
	if r == nil {
		t.Fatalf("no rule admits Envoy's pods: %+v", np.Spec.Ingress)
	}
	if len(r.Ports) != 1 || r.Ports[0].Port == nil {
		t.Fatalf("the Envoy rule's ports: %+v", r.Ports)
	}
	return r.Ports[0].Port.IntVal
}

func podIP(t *testing.T, ns, name string) string {
	t.Helper()
	out, err := kubectl(t.Context(), "get", "pod", name, "-n", ns, "-o", "jsonpath={.status.podIP}")
	if err != nil || out == "" {
		t.Fatalf("pod %s/%s IP: %v %s", ns, name, err, out)
	}
	return out
}

// applyManifest applies YAML with kubectl.
func applyManifest(t *testing.T, manifest string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(t.Context(), "apply", "-f", file); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}
