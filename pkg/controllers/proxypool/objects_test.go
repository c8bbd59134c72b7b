package proxypool

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var testConfig = proxydeploy.Config{
	Image: "ghcr.io/tailscale-gateway/tailscale-gateway-proxy:v0.1.0", PullPolicy: corev1.PullIfNotPresent,
	Resources:  corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")}},
	ControlURL: "https://control.example",
}

var testPolicy = proxydeploy.NetworkPolicyConfig{EnvoyGatewayNamespace: "envoy-gateway-system",
	ServerNamespace: "tailscale-gateway-system", ServerLabels: map[string]string{"app.kubernetes.io/name": "tailscale-gateway"}}

func testTailnet(replicas int32) *v1alpha1.TailscaleTailnet {
	return &v1alpha1.TailscaleTailnet{
		ObjectMeta: metav1.ObjectMeta{Name: "corp", UID: "7e11"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "corp.ts.net", ProxyTags: []string{"tag:pool", "tag:web"},
			ProxyPool: &v1alpha1.ProxyPool{Replicas: replicas,
				Resources: &v1alpha1.ProxyResources{Requests: map[string]resource.Quantity{"cpu": resource.MustParse("100m"), "memory": resource.MustParse("64Mi")},
					Limits: map[string]resource.Quantity{"memory": resource.MustParse("256Mi")}},
				Tolerations:       []v1alpha1.ProxyToleration{{Key: "dedicated", Value: "proxies", Effect: "NoSchedule"}},
				NodeSelector:      map[string]string{"kubernetes.io/os": "linux"},
				PodLabels:         map[string]string{"team": "net"},
				PodAnnotations:    map[string]string{"example.com/scrape": "true"},
				PriorityClassName: "system-cluster-critical"}},
	}
}

// member is a TailscaleEndpoints without spec.proxy in namespace ns, its ports allocated in the
// shared scope as the server allocates them.
func member(alloc *egressalloc.Allocator, ns, name, ip string) *v1alpha1.TailscaleEndpoints {
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("u-" + name)},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "corp", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "api", TailscaleIP: ip, Port: 8080, Protocol: "HTTP"},
			{Name: "dns", TailscaleIP: ip, Port: 53, Protocol: "UDP"},
		}},
	}
	alloc.Allocate("shared", obj)
	return obj
}

func testPool(replicas int32) Pool {
	alloc := egressalloc.New(egressalloc.Options{})
	p := Pool{Tailnet: testTailnet(replicas), Namespace: "tailscale-gateway-system", Tags: []string{"tag:pool"}}
	for _, m := range []*v1alpha1.TailscaleEndpoints{member(alloc, "team-a", "db", "100.64.0.7"), member(alloc, "team-b", "cache", "100.64.0.8")} {
		p.Ports = MergePorts(p.Ports, proxydeploy.EgressPorts(m))
	}
	return p
}

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
		t.Errorf("%s differs from the generated objects (run with -update to accept):\n%s", path, buf.String())
	}
}

// TestPoolObjects pins every object of a pool of two replicas serving two objects of two
// namespaces: one Service port per egress listener of both, the pool's pod settings, the
// --tailnet command line, the Role naming only its own Secrets, and the budget.
func TestPoolObjects(t *testing.T) {
	p := testPool(2)
	key := tailnet.AuthKey{ID: "k123", Key: "tskey-auth-secret"}
	sts := StatefulSet(testConfig, p)
	golden(t, "pool", ServiceAccount(p), Role(p), RoleBinding(p), StateSecret(p, 0), AuthKeySecret(p, 1, key, p.Tags),
		Service(p), sts, PodDisruptionBudget(p),
		NetworkPolicy(testPolicy, p, sts))
	if got := len(Service(p).Spec.Ports); got != 5 {
		t.Errorf("Service ports: %d, want 4 egress ports and metrics", got)
	}
	if PodDisruptionBudget(testPool(1)) != nil {
		t.Error("a pool of one replica has a PodDisruptionBudget")
	}
	// The pool's resources replace the server's defaults; without any, the defaults stay.
	if r := sts.Spec.Template.Spec.Containers[0].Resources; r.Requests.Cpu().String() != "100m" || r.Limits.Memory().String() != "256Mi" {
		t.Errorf("resources %v", r)
	}
	bare := testPool(1)
	bare.Tailnet.Spec.ProxyPool.Resources = nil
	if r := StatefulSet(testConfig, bare).Spec.Template.Spec.Containers[0].Resources; r.Requests.Cpu().String() != "50m" {
		t.Errorf("default resources %v", r)
	}
	// Any change of the pool's pod settings rolls the pods.
	changed := testPool(2)
	changed.Tailnet.Spec.ProxyPool.Tolerations = nil
	if StatefulSet(testConfig, changed).Spec.Template.Annotations[proxydeploy.ConfigHashAnnotation] == sts.Spec.Template.Annotations[proxydeploy.ConfigHashAnnotation] {
		t.Error("the config hash ignores the tolerations")
	}
}

// TestNames keeps every pool's names valid and distinct, however the tailnet is named.
func TestNames(t *testing.T) {
	seen := map[string]string{}
	for _, tn := range []string{"corp", "a.b", "a-b", strings.Repeat("x", 63), strings.Repeat("x", 64), "company.example.com"} {
		n := NamesOf(tn)
		if len(n.Base) > maxBase || strings.ContainsAny(n.Base, ".") || strings.HasSuffix(n.Base, "-") {
			t.Errorf("%q: base %q", tn, n.Base)
		}
		if len(n.AuthKeySecret(15)) > 63 {
			t.Errorf("%q: %q is too long", tn, n.AuthKeySecret(15))
		}
		if other, ok := seen[n.Base]; ok {
			t.Errorf("%q and %q share %q", tn, other, n.Base)
		}
		seen[n.Base] = tn
	}
	if replicaOf(NamesOf("corp"), "tsgw-pool-corp-3-authkey") != 3 || replicaOf(NamesOf("corp"), "tsgw-pool-corp-03") != -1 {
		t.Error("replicaOf")
	}
}

// TestPodsPerHundredObjects counts the proxy pods the controllers' StatefulSets ask for when
// 100 TailscaleEndpoints are served: each with a dedicated proxy (spec.proxy, default 1
// replica, and 2 replicas), and all without spec.proxy by their tailnet's pool of 2 replicas,
// whose Service then carries every object's port.
func TestPodsPerHundredObjects(t *testing.T) {
	alloc := egressalloc.New(egressalloc.Options{})
	pool := Pool{Tailnet: testTailnet(2), Namespace: "tailscale-gateway-system", Tags: []string{"tag:pool"}}
	dedicated := map[int32]int32{} // replicas per proxy -> pods
	for i := range 100 {
		obj := member(alloc, fmt.Sprintf("team-%d", i%10), fmt.Sprintf("obj-%d", i), "100.64.0.7")
		pool.Ports = MergePorts(pool.Ports, proxydeploy.EgressPorts(obj))
		for _, r := range []int32{1, 2} {
			withProxy := obj.DeepCopy()
			withProxy.Spec.Proxy = &v1alpha1.ProxyConfig{Replicas: &r}
			dedicated[r] += *proxydeploy.StatefulSet(testConfig, proxydeploy.Input{Endpoints: withProxy}).Spec.Replicas
		}
	}
	pooled := *StatefulSet(testConfig, pool).Spec.Replicas
	t.Logf("proxy pods for 100 objects: dedicated %d (1 replica each), %d (2 replicas each); pool %d, one Service of %d ports",
		dedicated[1], dedicated[2], pooled, len(Service(pool).Spec.Ports))
	if dedicated[1] != 100 || dedicated[2] != 200 || pooled != 2 || len(Service(pool).Spec.Ports) != 2*100+1 {
		t.Fatalf("dedicated %v, pool %d, pool Service ports %d", dedicated, pooled, len(Service(pool).Spec.Ports))
	}
}
