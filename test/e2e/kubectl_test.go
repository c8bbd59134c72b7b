package e2e

import (
	"bufio"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	applyv1alpha1 "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/applyconfiguration/gateway/v1alpha1"
)

// endpointsYAML is a TailscaleEndpoints for kubectl; NAMESPACE and NAME are replaced.
const endpointsYAML = `apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleEndpoints
metadata:
  name: NAME
  namespace: NAMESPACE
spec:
  tailnet: company.ts.net
  endpoints:
  - name: api
    tailscaleIP: 100.64.0.10
    tailscaleFQDN: api.company.ts.net
    port: 8080
    protocol: HTTP
`

func endpointsManifest(ns, name string) string {
	return strings.NewReplacer("NAMESPACE", ns, "NAME", name).Replace(endpointsYAML)
}

// TestKubectlTables checks the server's tables as kubectl shows them through kube-apiserver.
func TestKubectlTables(t *testing.T) {
	ns := newNamespace(t, "tables")
	kubectl(t, "apply", "-f", writeFile(t, endpointsManifest(ns, "web")))
	out := kubectl(t, "get", "tailscaleendpoints", "-n", ns, "web")
	if !regexp.MustCompile(`(?m)^NAME\s+TAILNET\s+ENDPOINTS\s+HEALTHY\s+READY\s+AGE$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^web\s+company\.ts\.net\s+1\s+0\s+(True|False|Unknown)\s+\S+$`).MatchString(out) {
		t.Fatalf("kubectl get:\n%s", out)
	}
	out = kubectl(t, "get", "tsep", "-n", ns, "-o", "wide")
	if !regexp.MustCompile(`(?m)^NAME\s+TAILNET\s+ENDPOINTS\s+HEALTHY\s+READY\s+AGE\s+ADDRESSES\s+PROTOCOLS$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^web\s.*100\.64\.0\.10\s+HTTP$`).MatchString(out) {
		t.Fatalf("kubectl get -o wide:\n%s", out)
	}
	if _, err := viaKube(t).TailscaleGateways(ns).Create(ctx(t), objects.Gateway(ns, "gw"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out = kubectl(t, "get", "tailscale", "-n", ns)
	for _, want := range []string{"tailscaleendpoints.gateway.tailscale.com/web", "tailscalegateway.gateway.tailscale.com/gw"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get tailscale lacks %s:\n%s", want, out)
		}
	}
	for _, short := range []string{"tsep", "tssvc", "tsgw", "tstn"} {
		kubectl(t, "get", short, "-A")
	}
}

// TestKubectlWatch follows kubectl get -w through kube-apiserver while objects change.
func TestKubectlWatch(t *testing.T) {
	ns := newNamespace(t, "watch")
	c, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd, err := env.KubectlCommand(c, env.AdminKubeconfig, "get", "tsep", "-n", ns, "-w", "--output-watch-events", "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string)
	go func() {
		defer close(lines)
		for s := bufio.NewScanner(stdout); s.Scan(); {
			lines <- s.Text()
		}
	}()
	expect := func(re string) {
		t.Helper()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("kubectl get -w ended before a line matching %q", re)
				}
				if regexp.MustCompile(re).MatchString(line) {
					return
				}
			case <-c.Done():
				t.Fatalf("no line matching %q from kubectl get -w", re)
			}
		}
	}
	// The watch is established once an object created now shows up as ADDED.
	eps := viaKube(t).TailscaleEndpoints(ns)
	if _, err := eps.Create(ctx(t), objects.Endpoints(ns, "first"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(`^ADDED\s+first\s+company\.ts\.net\s+3\s+0\s`)
	if _, err := eps.Patch(ctx(t), "first", types.MergePatchType, []byte(`{"spec":{"tailnet":"other.ts.net"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(`^MODIFIED\s+first\s+other\.ts\.net\s`)
	if err := eps.Delete(ctx(t), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(`^DELETED\s+first\s`)
}

// TestKubectlExplain reads field documentation from the OpenAPI kube-apiserver aggregates.
func TestKubectlExplain(t *testing.T) {
	out := strings.Join(strings.Fields(kubectl(t, "explain", "tailscaleendpoints.spec.endpoints.healthCheck")), " ")
	for _, want := range []string{"GROUP: gateway.tailscale.com", "unhealthyThreshold", "Defaults to 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	out = strings.Join(strings.Fields(kubectl(t, "explain", "tstn.spec", "--recursive")), " ")
	if !strings.Contains(out, "tailnet") {
		t.Errorf("explain tstn.spec --recursive:\n%s", out)
	}
}

// TestServerSideApply applies with kubectl and with the clientset's apply configurations through
// kube-apiserver: managed fields, updates by the owner, conflicts with another manager.
func TestServerSideApply(t *testing.T) {
	ns := newNamespace(t, "ssa")
	kubectl(t, "apply", "--server-side", "--field-manager=platform", "-f", writeFile(t, endpointsManifest(ns, "web")))
	kubectl(t, "apply", "--server-side", "--field-manager=platform", "-f",
		writeFile(t, strings.Replace(endpointsManifest(ns, "web"), "port: 8080", "port: 9090", 1)))
	got, err := viaKube(t).TailscaleEndpoints(ns).Get(ctx(t), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Endpoints[0].Port != 9090 {
		t.Fatalf("port after apply = %d, want 9090", got.Spec.Endpoints[0].Port)
	}
	var managers []string
	for _, mf := range got.ManagedFields {
		managers = append(managers, mf.Manager+"/"+string(mf.Operation))
	}
	if !strings.Contains(strings.Join(managers, ","), "platform/Apply") {
		t.Fatalf("managedFields %v lack platform/Apply", managers)
	}
	out, err := env.Kubectl(env.AdminKubeconfig, "apply", "--server-side", "--field-manager=intruder", "-f",
		writeFile(t, strings.Replace(endpointsManifest(ns, "web"), "port: 8080", "port: 7070", 1)))
	if err == nil || !strings.Contains(out, "conflict") {
		t.Fatalf("conflicting apply: %v\n%s", err, out)
	}

	// The clientset's apply configurations: a second endpoint owned by another manager.
	cfg := applyv1alpha1.TailscaleEndpoints("web", ns).WithSpec(applyv1alpha1.TailscaleEndpointsSpec().
		WithTailnet("company.ts.net").
		WithEndpoints(applyv1alpha1.TailscaleEndpoint().WithName("metrics").WithTailscaleIP("100.64.0.20").
			WithTailscaleFQDN("metrics.company.ts.net").WithPort(9100).WithProtocol("HTTP")))
	applied, err := viaKube(t).TailscaleEndpoints(ns).Apply(ctx(t), cfg, metav1.ApplyOptions{FieldManager: "metrics", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(applied.Spec.Endpoints); n != 2 {
		t.Fatalf("after applying a second list-map entry the object has %d endpoints, want 2", n)
	}
}
