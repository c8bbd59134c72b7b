// Package aggregation compares three ways of serving the same TailscaleEndpoints, in one run on
// one control plane (test/e2e/framework): by tailscale-gateway-apiserver through kube-apiserver's
// aggregation layer ("aggregated"), by tailscale-gateway-apiserver directly ("direct"), and by
// kube-apiserver as a CustomResourceDefinition (testdata/tailscaleendpoints-crd.yaml, "crd").
// The aggregated server runs with --live-status=false. Every path uses JSON, one HTTP/2 client with the administrator's certificate (system:masters,
// so no SubjectAccessReview on any path) and the same decoding into the v1alpha1 types.
package aggregation

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
)

const (
	crdGroup = "bench.gateway.tailscale.com"
	resource = "tailscaleendpoints"
)

// sizes are the numbers of objects measured; the objects of each size live in their own
// namespace, bench-<size>.
var sizes = []int{1000, 10000}

func namespace(size int) string { return fmt.Sprintf("bench-%d", size) }

// path is one way of reaching the objects: a client and the URL of a namespace's collection.
type path struct {
	name   string
	client *http.Client
	url    string
}

// fixture is the control plane every benchmark of the package shares.
var fixture struct {
	once     sync.Once
	err      error
	dir      string
	env      *framework.Environment
	kube     *http.Client // the administrator's, for kube-apiserver
	direct   *http.Client // the administrator's, for tailscale-gateway-apiserver
	prepared map[int]bool
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.env != nil {
		fixture.env.Close()
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// pathsWith returns the three paths to namespace bench-<n>, which holds n objects.
func pathsWith(b *testing.B, n int) []path {
	b.Helper()
	fixture.once.Do(func() { fixture.err = setup() })
	if fixture.err != nil {
		b.Fatal(fixture.err)
	}
	if !fixture.prepared[n] {
		if err := create(n); err != nil {
			b.Fatal(err)
		}
		fixture.prepared[n] = true
	}
	collection := "/apis/%s/v1alpha1/namespaces/" + namespace(n) + "/" + resource
	env := fixture.env
	return []path{
		{"aggregated", fixture.kube, env.Admin.Host + fmt.Sprintf(collection, v1alpha1.GroupName)},
		{"direct", fixture.direct, env.Direct.Host + fmt.Sprintf(collection, v1alpha1.GroupName)},
		{"crd", fixture.kube, env.Admin.Host + fmt.Sprintf(collection, crdGroup)},
	}
}

func setup() error {
	dir, err := os.MkdirTemp("", "tsgw-bench-aggregation-")
	if err != nil {
		return err
	}
	fixture.dir = dir
	if err := framework.LogToFile(filepath.Join(dir, "test-process.log")); err != nil {
		return err
	}
	// Live status off: the benchmark measures serving, not the probing of 33,000 endpoints
	// (which a CRD would not do either).
	env, err := framework.Setup(dir, "--live-status=false")
	if err != nil {
		return fmt.Errorf("%w (logs in %s)", err, dir)
	}
	fixture.env = env
	crd := filepath.Join(env.Root, "test", "benchmark", "aggregation", "testdata", "tailscaleendpoints-crd.yaml")
	if out, err := env.Kubectl(env.AdminKubeconfig, "apply", "-f", crd); err != nil {
		return fmt.Errorf("applying the CRD: %w\n%s", err, out)
	}
	if out, err := env.Kubectl(env.AdminKubeconfig, "wait", "--for=condition=Established", "--timeout=2m", "-f", crd); err != nil {
		return fmt.Errorf("waiting for the CRD: %w\n%s", err, out)
	}
	if fixture.kube, err = rest.HTTPClientFor(env.Admin); err != nil {
		return err
	}
	if fixture.direct, err = rest.HTTPClientFor(env.Direct); err != nil {
		return err
	}
	fixture.prepared = map[int]bool{}
	return nil
}

// create makes namespace bench-<n> and objects ep-0..ep-<n-1> in it on both servers, with a few
// concurrent writers.
func create(n int) error {
	env := fixture.env
	ns := namespace(n)
	_, err := env.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	gw, err := versioned.NewForConfig(env.Direct)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(env.Admin)
	if err != nil {
		return err
	}
	crd := dyn.Resource(schema.GroupVersionResource{Group: crdGroup, Version: "v1alpha1", Resource: resource}).Namespace(ns)
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := w; i < n; i += writers {
				obj := object(ns, i)
				if _, err := gw.GatewayV1alpha1().TailscaleEndpoints(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					errs <- fmt.Errorf("creating object %d: %w", i, err)
					return
				}
				u, err := asCRD(obj)
				if err != nil {
					errs <- err
					return
				}
				if _, err := crd.Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					errs <- fmt.Errorf("creating custom resource %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return nil
}

// asCRD returns obj as an object of the CRD's group.
func asCRD(obj *v1alpha1.TailscaleEndpoints) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(crdGroup + "/v1alpha1")
	u.SetKind("TailscaleEndpoints")
	return u, nil
}

// object is the i-th benchmark object: three endpoints with health checks, as in test/benchmark.
func object(ns string, i int) *v1alpha1.TailscaleEndpoints {
	ep := func(j int) v1alpha1.TailscaleEndpoint {
		return v1alpha1.TailscaleEndpoint{
			Name:          fmt.Sprintf("endpoint-%d", j),
			TailscaleIP:   fmt.Sprintf("100.%d.%d.%d", 64+i/65536%64, i/256%256, i%256),
			TailscaleFQDN: fmt.Sprintf("ep-%d-%d.company.ts.net", i, j),
			Port:          int32(8080 + j),
			Protocol:      v1alpha1.ProtocolHTTP,
			HealthCheck:   &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Path: "/health"},
		}
	}
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ep-%d", i), Namespace: ns, Labels: map[string]string{"tier": "bench"}},
		Spec:       v1alpha1.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []v1alpha1.TailscaleEndpoint{ep(0), ep(1), ep(2)}},
	}
}
