package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

const kubectlEndpoints = `apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleEndpoints
metadata:
  name: kubectl-web
  namespace: kubectl
  labels:
    service-type: web
spec:
  tailnet: "company.ts.net"
  endpoints:
  - name: api-server
    tailscaleIP: "100.64.0.10"
    tailscaleFQDN: "api-server.company.ts.net"
    port: 8080
    protocol: "HTTP"
    externalTarget: "api.internal.company.com:8080"
    healthCheck:
      enabled: true
      path: "/health"
      interval: "30s"
`

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := shared.Kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "object.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKubectlServerSideApply(t *testing.T) {
	path := writeFile(t, kubectlEndpoints)
	kubectl(t, "apply", "--server-side", "--field-manager=platform", "-f", path)
	// Re-applying a changed port through the same manager updates it.
	kubectl(t, "apply", "--server-side", "--field-manager=platform", "-f",
		writeFile(t, strings.Replace(kubectlEndpoints, "port: 8080", "port: 9090", 1)))

	got, err := shared.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("kubectl").Get(ctx(t), "kubectl-web", metav1.GetOptions{})
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

	// Another manager changing the same field conflicts.
	out, err := shared.Kubectl("apply", "--server-side", "--field-manager=intruder", "-f",
		writeFile(t, strings.Replace(kubectlEndpoints, "port: 8080", "port: 7070", 1)))
	if err == nil || !strings.Contains(out, "conflict") {
		t.Fatalf("conflicting apply: %v\n%s", err, out)
	}
}

func TestKubectlStrictFieldValidation(t *testing.T) {
	bad := strings.Replace(kubectlEndpoints, "name: kubectl-web", "name: kubectl-strict", 1)
	bad = strings.Replace(bad, "    port: 8080\n", "    port: 8080\n    portt: 8080\n", 1)
	out, err := shared.Kubectl("create", "--validate=strict", "-f", writeFile(t, bad))
	if err == nil || !strings.Contains(out, `unknown field "spec.endpoints[0].portt"`) {
		t.Fatalf("strict create: %v\n%s", err, out)
	}
	out, err = shared.Kubectl("apply", "--server-side", "--validate=strict", "-f", writeFile(t, bad))
	if err == nil || !strings.Contains(out, "portt") {
		t.Fatalf("strict apply: %v\n%s", err, out)
	}
}

func TestKubectlTables(t *testing.T) {
	kubectl(t, "apply", "-f", writeFile(t, strings.ReplaceAll(kubectlEndpoints, "kubectl-web", "table-web")))
	out := kubectl(t, "get", "tailscaleendpoints", "-n", "kubectl", "table-web")
	if !regexp.MustCompile(`(?m)^NAME\s+TAILNET\s+ENDPOINTS\s+HEALTHY\s+READY\s+AGE$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^table-web\s+company\.ts\.net\s+1\s+0\s+Unknown\s+\S+$`).MatchString(out) {
		t.Fatalf("kubectl get:\n%s", out)
	}
	out = kubectl(t, "get", "tsep", "-n", "kubectl", "table-web", "-o", "wide")
	if !regexp.MustCompile(`(?m)^NAME\s+TAILNET\s+ENDPOINTS\s+HEALTHY\s+READY\s+AGE\s+ADDRESSES\s+PROTOCOLS$`).MatchString(out) ||
		!strings.Contains(out, "100.64.0.10") {
		t.Fatalf("kubectl get -o wide:\n%s", out)
	}
	if _, err := shared.Clientset(t).GatewayV1alpha1().TailscaleGateways("kubectl").Create(ctx(t), objects.Gateway("kubectl", "gw"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := objects.Services("kubectl", "table-svc")
	if _, err := shared.Clientset(t).GatewayV1alpha1().TailscaleServices("kubectl").Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out = kubectl(t, "get", "tssvc", "-n", "kubectl", "table-svc")
	if !regexp.MustCompile(`(?m)^NAME\s+VIP\s+STRATEGY\s+BACKENDS\s+HEALTHY\s+READY\s+AGE$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^table-svc\s+\S+\s+\S+\s+\d+\s+\d+\s+(True|False|Unknown)\s+\S+$`).MatchString(out) {
		t.Errorf("kubectl get tssvc:\n%s", out)
	}
	out = kubectl(t, "get", "tailscale", "-n", "kubectl")
	for _, want := range []string{"tailscaleendpoints.gateway.tailscale.com/table-web", "tailscalegateway.gateway.tailscale.com/gw"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get tailscale lacks %s:\n%s", want, out)
		}
	}
	out = kubectl(t, "get", "tsgw", "-n", "kubectl")
	if !regexp.MustCompile(`(?m)^gw\s+envoy-gateway-system/envoy-gateway\s+1\s+Unknown\s+\S+$`).MatchString(out) {
		t.Errorf("kubectl get tsgw:\n%s", out)
	}
}

func TestKubectlAPIResources(t *testing.T) {
	out := kubectl(t, "api-resources", "--api-group=gateway.tailscale.com", "-o", "wide")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^tailscaleendpoints\s+tsep\s+gateway.tailscale.com/v1alpha1\s+true\s+TailscaleEndpoints\s+.*tailscale`),
		regexp.MustCompile(`(?m)^tailscalegateways\s+tsgw\s+gateway.tailscale.com/v1alpha1\s+true\s+TailscaleGateway\s`),
		regexp.MustCompile(`(?m)^tailscaleservices\s+tssvc\s+gateway.tailscale.com/v1alpha1\s+true\s+TailscaleServices\s`),
		regexp.MustCompile(`(?m)^tailscaletailnets\s+tstn\s+gateway.tailscale.com/v1alpha1\s+false\s+TailscaleTailnet\s`),
	} {
		if !want.MatchString(out) {
			t.Errorf("api-resources lacks %s:\n%s", want, out)
		}
	}
}

func TestKubectlExplain(t *testing.T) {
	out := strings.Join(strings.Fields(kubectl(t, "explain", "tailscaleendpoints.spec.endpoints.healthCheck")), " ")
	for _, want := range []string{"HealthCheckConfig configures an active health check", "unhealthyThreshold", "Defaults to 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	out = strings.Join(strings.Fields(kubectl(t, "explain", "tailscalegateways.spec.tailnets.priority")), " ")
	if !strings.Contains(out, "Defaults to 100") {
		t.Errorf("explain priority:\n%s", out)
	}
}

func TestRestartKeepsData(t *testing.T) {
	s := framework.Start(t, "")
	c := s.Clientset(t).GatewayV1alpha1()
	if _, err := c.TailscaleTailnets().Create(ctx(t), objects.Tailnet("durable"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Stop()

	restarted := framework.Start(t, s.DataDir)
	got, err := restarted.Clientset(t).GatewayV1alpha1().TailscaleTailnets().Get(ctx(t), "durable", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got.Spec.Tailnet != "company.ts.net" {
		t.Fatalf("after restart: %+v", got.Spec)
	}
}

// TestExamplesApply is the newcomer's path: apply examples/ and list everything.
func TestExamplesApply(t *testing.T) {
	kubectl(t, "apply", "-f", "../../examples/")
	out := kubectl(t, "get", "tailscale", "-A")
	for _, want := range []string{
		"tailscaleendpoints.gateway.tailscale.com/web-services",
		"tailscaleservices.gateway.tailscale.com/production-web-service",
		"tailscalegateway.gateway.tailscale.com/production-gateway",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get tailscale -A lacks %s:\n%s", want, out)
		}
	}
	out = kubectl(t, "get", "tstn")
	if !regexp.MustCompile(`(?m)^main-tailnet\s+company\.ts\.net\s+Unknown\s+0\s+\S+$`).MatchString(out) {
		t.Errorf("kubectl get tstn:\n%s", out)
	}
}
