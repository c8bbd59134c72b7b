package examples

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// gatewayAPIDir holds the API contract's Gateway API objects (Gateway, HTTPRoute, TCPRoute): they
// are not kinds of this server, so examples/*.yaml leaves them out; the e2e suite applies them to
// a kube-apiserver with the Gateway API CRDs (TestExamplesApplyThroughKubeAPIServer).
const gatewayAPIDir = examplesDir + "/gateway-api"

// TestGatewayAPIExamples checks that every file of examples/gateway-api starts with a comment
// citing pages of docs/ that exist, and holds only named gateway.networking.k8s.io objects.
func TestGatewayAPIExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(gatewayAPIDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.yaml files in %s (%v)", gatewayAPIDir, err)
	}
	entries, err := os.ReadDir(gatewayAPIDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(files) {
		t.Errorf("%s holds files that are not *.yaml: %d entries, %d manifests", gatewayAPIDir, len(entries), len(files))
	}
	for _, path := range files {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := "gateway-api/" + filepath.Base(path)
		if first, _, _ := strings.Cut(string(raw), "\n"); !strings.HasPrefix(first, "# ") {
			t.Errorf("%s: must start with a comment saying what it shows, got %q", name, first)
		}
		checkDocReferences(t, name, string(raw))
		var obj unstructured.Unstructured
		if err := utilyaml.Unmarshal(raw, &obj.Object); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if g := obj.GroupVersionKind().Group; g != "gateway.networking.k8s.io" || obj.GetKind() == "" || obj.GetName() == "" {
			t.Errorf("%s: %s %q, want a named object of gateway.networking.k8s.io", name, obj.GroupVersionKind(), obj.GetName())
		}
	}
}
