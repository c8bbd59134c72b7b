package proxydeploy

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/autoprovision"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// installNS is the installation's namespace of the tests.
const installNS = "tailscale-gateway-system"

var testConfig = Config{Namespace: installNS,
	Image: "ghcr.io/tailscale-gateway/tailscale-gateway-proxy:v0.1.0", PullPolicy: corev1.PullIfNotPresent,
	Resources:  corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")}},
	ControlURL: "https://control.example",
}

// testEndpoints is a TailscaleEndpoints with its egress ports allocated (pkg/egressalloc), as
// the controllers' allocator records them.
func testEndpoints(connectionType string, replicas int32) *v1alpha1.TailscaleEndpoints {
	obj := unallocated(connectionType, replicas)
	egressalloc.New(egressalloc.Options{}).Allocate("web/backends-proxy", obj)
	return obj
}

func unallocated(connectionType string, replicas int32) *v1alpha1.TailscaleEndpoints {
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "backends", UID: "0a1b", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{
			Tailnet: "corp", Tags: []string{"tag:web"},
			Proxy: &v1alpha1.ProxyConfig{Replicas: ptr.To(replicas), ConnectionType: connectionType},
			Endpoints: []v1alpha1.TailscaleEndpoint{
				{Name: "api", TailscaleIP: "100.64.0.7", TailscaleFQDN: "api.corp.ts.net", Port: 8080, Protocol: "HTTP"},
				{Name: "dns", TailscaleIP: "100.64.0.8", TailscaleFQDN: "dns.corp.ts.net", Port: 53, Protocol: "UDP"},
			},
		},
	}
}

// golden compares the YAML of objs with testdata/<name>.yaml.
func golden(t *testing.T, name string, objs ...any) {
	t.Helper()
	var buf bytes.Buffer
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	path := filepath.Join("testdata", name+".yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (run with -update to create it): %v", path, err)
	}
	if !bytes.Equal(want, buf.Bytes()) {
		t.Errorf("%s differs from %s (run with -update to accept):\n%s", name, path, buf.String())
	}
}

func TestGeneratedObjects(t *testing.T) {
	for _, ct := range []string{Bidirectional, Egress, Ingress} {
		t.Run(ct, func(t *testing.T) {
			obj := testEndpoints(ct, 2)
			in := Input{Endpoints: obj, Services: []string{"web"}, Tags: []string{"tag:k8s", "tag:web"}}
			golden(t, "backends-"+ct, ServiceAccount(installNS, obj), Role(installNS, obj), RoleBinding(installNS, obj),
				StateSecret(installNS, obj, 0), StateSecret(installNS, obj, 1),
				Service(installNS, obj), StatefulSet(testConfig, in), PodDisruptionBudget(installNS, in))
		})
	}
}

// TestReadinessIsProbedSoonAfterTheProxyIsReady: the kubelet's first readiness probe fails
// (the proxy has not joined its tailnet yet), so the period bounds how long a ready proxy waits
// to become an endpoint of its Service; Kubernetes' default of 10 s is too long for that.
func TestReadinessIsProbedSoonAfterTheProxyIsReady(t *testing.T) {
	sts := StatefulSet(testConfig, Input{Endpoints: testEndpoints(Egress, 1)})
	p := sts.Spec.Template.Spec.Containers[0].ReadinessProbe
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.StrVal != "metrics" {
		t.Fatalf("readiness probe %+v, want GET /readyz on the metrics port", p)
	}
	if p.PeriodSeconds == 0 || p.PeriodSeconds > 2 {
		t.Errorf("readiness probe every %d s (0: Kubernetes' 10 s), want at most 2 s", p.PeriodSeconds)
	}
}

func TestServicePortsAreTheRecordedEgressPorts(t *testing.T) {
	if p := EgressPorts(unallocated(Bidirectional, 1)); len(p) != 0 {
		t.Fatalf("ports before any allocation: %v", p)
	}
	obj := testEndpoints(Bidirectional, 1)
	got := EgressPorts(obj)
	_, recorded := ports.Recorded(obj)
	want := []int32{recorded[ports.Key{Endpoint: "api", Port: 8080}], recorded[ports.Key{Endpoint: "dns", Port: 53, UDP: true}]}
	var have []int32
	for _, p := range got {
		have = append(have, p.Port)
		if p.TargetPort.IntVal != p.Port {
			t.Errorf("port %s: targetPort %v, want the listener's port %d", p.Name, p.TargetPort, p.Port)
		}
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(have, want) || want[0] == 0 {
		t.Fatalf("Service ports %v, want %v", have, want)
	}
	if p := EgressPorts(testEndpoints(Ingress, 1)); len(p) != 0 {
		t.Fatalf("an ingress-only proxy exposes %v", p)
	}
}

func TestRoleNamesOnlyTheReplicasStateSecrets(t *testing.T) {
	r := Role(installNS, testEndpoints(Egress, 3))
	base := NamesFor("web", "backends").Base
	for _, rule := range r.Rules {
		if slices.Contains(rule.APIGroups, v1alpha1.GroupName) {
			t.Fatalf("the Role in the installation's namespace grants %v (the proxies read them in the tenant's)", rule)
		}
		if slices.Contains(rule.Resources, "secrets") {
			if !slices.Equal(rule.ResourceNames, []string{base + "-0", base + "-1", base + "-2"}) {
				t.Fatalf("secrets rule names %v", rule.ResourceNames)
			}
			if slices.Contains(rule.Verbs, "list") || slices.Contains(rule.Verbs, "create") {
				t.Fatalf("secrets rule verbs %v", rule.Verbs)
			}
			return
		}
	}
	t.Fatal("no rule on secrets")
}

func TestConfigChangeChangesTheHash(t *testing.T) {
	in := Input{Endpoints: testEndpoints(Bidirectional, 1), Services: []string{"web"}}
	a := StatefulSet(testConfig, in).Spec.Template.Annotations[ConfigHashAnnotation]
	if b := StatefulSet(testConfig, in).Spec.Template.Annotations[ConfigHashAnnotation]; a != b {
		t.Fatal("the hash is not deterministic")
	}
	cfg := testConfig
	cfg.Image = strings.Replace(cfg.Image, "v0.1.0", "v0.2.0", 1)
	if b := StatefulSet(cfg, in).Spec.Template.Annotations[ConfigHashAnnotation]; a == b {
		t.Fatal("a new image keeps the hash")
	}
	in.Services = []string{"web", "api"}
	if b := StatefulSet(testConfig, in).Spec.Template.Annotations[ConfigHashAnnotation]; a == b {
		t.Fatal("another hosted service keeps the hash")
	}
}

func TestIngressWithNothingToServeRunsNoReplicas(t *testing.T) {
	in := Input{Endpoints: testEndpoints(Ingress, 2)}
	if r := *StatefulSet(testConfig, in).Spec.Replicas; r != 0 {
		t.Fatalf("replicas %d, want 0", r)
	}
	in.Services = []string{"web"}
	if r := *StatefulSet(testConfig, in).Spec.Replicas; r != 2 {
		t.Fatalf("replicas %d, want 2", r)
	}
}

func TestPodDisruptionBudgetOnlyForSeveralReplicas(t *testing.T) {
	in := Input{Endpoints: testEndpoints(Egress, 3)}
	pdb := PodDisruptionBudget(installNS, in)
	if pdb == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil ||
		!IsKeptFor(pdb, in.Endpoints) || pdb.Namespace != installNS {
		t.Fatalf("budget %+v", pdb)
	}
	sts := StatefulSet(testConfig, in)
	if !equalMaps(pdb.Spec.Selector.MatchLabels, sts.Spec.Selector.MatchLabels) {
		t.Fatalf("budget selector %v, StatefulSet's %v", pdb.Spec.Selector.MatchLabels, sts.Spec.Selector.MatchLabels)
	}
	for _, in := range []Input{{Endpoints: testEndpoints(Egress, 1)}, {Endpoints: testEndpoints(Egress, 0)}, {Endpoints: testEndpoints(Ingress, 2)}} {
		if pdb := PodDisruptionBudget(installNS, in); pdb != nil {
			t.Errorf("a budget for %d replicas (%s, serves %v)", Replicas(in.Endpoints), ConnectionType(in.Endpoints), Serves(in))
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestIsReplicaSecretOf(t *testing.T) {
	n := Names{Base: "x-proxy"}
	for name, want := range map[string]bool{"x-proxy-0": false, "x-proxy-2": true, "x-proxy-10": true, "x-proxy-authkey": false, "x-proxy-02": false, "y-proxy-5": false,
		"x-proxy-1-authkey": false, "x-proxy-2-authkey": true, "x-proxy-2-authkey-authkey": false} {
		if got := isReplicaSecretOf(n, name, 2); got != want {
			t.Errorf("isReplicaSecretOf(%s) = %v, want %v", name, got, want)
		}
	}
}

func TestWanted(t *testing.T) {
	obj := testEndpoints(Egress, 1)
	if !Wanted(obj) {
		t.Fatal("spec.proxy wants a proxy")
	}
	obj.Spec.Proxy = nil
	if Wanted(obj) {
		t.Fatal("no spec.proxy, not auto-provisioned: no proxy")
	}
	obj.Annotations = map[string]string{autoprovision.Annotation: "true"}
	if !Wanted(obj) || Replicas(obj) != 1 || ConnectionType(obj) != Bidirectional {
		t.Fatal("an auto-provisioned object gets one bidirectional proxy")
	}
	obj.Annotations = map[string]string{autoprovision.LegacyAnnotation: "true"}
	if !Wanted(obj) {
		t.Fatal("an object auto-provisioned by an earlier version (legacy annotation) gets a proxy")
	}
}
