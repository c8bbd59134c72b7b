package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	gatewayv1alpha1 "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/typed/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// Bounds of single calls and of waits on conditions.
const (
	callTimeout = time.Minute
	waitTimeout = 2 * time.Minute
)

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// gateway returns the typed client of the API group for cfg.
func gateway(t *testing.T, cfg *rest.Config) gatewayv1alpha1.GatewayV1alpha1Interface {
	t.Helper()
	c, err := versioned.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c.GatewayV1alpha1()
}

// viaKube is the API group through kube-apiserver as the cluster administrator.
func viaKube(t *testing.T) gatewayv1alpha1.GatewayV1alpha1Interface { return gateway(t, env.Admin) }

// newNamespace creates a namespace for one test; it is deleted (by the namespace controller,
// through the aggregated API too) when the test ends.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns, err := env.Kube.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := env.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// eventually polls cond until it returns true or waitTimeout passes.
func eventually(t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, waitTimeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// kubectl runs kubectl as the cluster administrator and fails the test when it fails.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := env.Kubectl(env.AdminKubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// portPatch is a JSON patch setting the port of the first endpoint.
func portPatch(port int32) []byte {
	return []byte(fmt.Sprintf(`[{"op":"replace","path":"/spec/endpoints/0/port","value":%d}]`, port))
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "object.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceSuiteReplica stops the suite's replica and starts, on its address (where kube-apiserver's
// APIService points), one with the suite's flags and extra, e.g. a simulator's control server
// for the prober's nodes. It returns once kube-apiserver reaches the replacement; cleanup stops
// the replacement and restarts the suite's replica.
func replaceSuiteReplica(t *testing.T, extra ...string) *framework.Gateway {
	t.Helper()
	addr := env.Gateway.Addr
	stopSuiteReplica(t)
	replica, err := env.StartGateway(addr, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replica.Stop() })
	eventually(t, "kube-apiserver to reach the replacement", func(c context.Context) (bool, error) {
		_, err := viaKube(t).TailscaleTailnets().List(c, metav1.ListOptions{})
		return err == nil, nil
	})
	return replica
}

// stopSuiteReplica stops the suite's replica; cleanup starts it again and waits until
// kube-apiserver reaches it.
func stopSuiteReplica(t *testing.T) {
	t.Helper()
	if err := env.Gateway.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Gateway.Start(); err != nil {
			t.Errorf("restarting the suite's replica: %v", err)
			return
		}
		// The tests that follow reach it through kube-apiserver.
		eventually(t, "kube-apiserver to reach the restarted replica", func(c context.Context) (bool, error) {
			_, err := viaKube(t).TailscaleTailnets().List(c, metav1.ListOptions{})
			return err == nil, nil
		})
	})
}

// watchLoadAssignment watches the load assignment of cluster on the xDS server at addr until the
// test ends.
func watchLoadAssignment(t *testing.T, addr, cluster string) *xdsclient.Watch {
	t.Helper()
	xc, err := xdsclient.Dial(addr, xdsclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xc.Close() })
	w, err := xc.Watch(ctx(t), xdsclient.EndpointType, cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}
