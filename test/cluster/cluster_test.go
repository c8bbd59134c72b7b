// Package cluster_test installs the Helm chart on a real single-node cluster (hack/cluster-up.sh:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd,
// CNI, CoreDNS in a network namespace of this machine) from images built here, and checks what
// runs: pods Ready through their real probes, the APIService Available, every kind served.
//
// It needs root and TSGW_CLUSTER=1 (otherwise every test skips). The first test brings the cluster
// up unless it is already up (make cluster-up), the suite reuses it, and TestMain tears down a
// cluster it brought up. Every wait is on a condition, with a deadline.
package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	namespace  = "tailscale-gateway-system"
	release    = "tailscale-gateway"
	apiService = "v1alpha1.gateway.tailscale.com"
)

var (
	root       = repoRoot()
	kubeconfig = filepath.Join(root, "_output", "cluster", "admin.kubeconfig")
	helm       = filepath.Join(root, "_output", "bin", "helm")

	setupOnce sync.Once
	setupErr  error
	broughtUp bool   // this run brought the cluster up and tears it down
	imageTag  string // the tag hack/images.sh gave the images
	etcdTag   string

	clusterLock *os.File // held for the life of the test process
)

func TestMain(m *testing.M) {
	code := m.Run()
	if broughtUp && os.Getenv("TSGW_CLUSTER_KEEP") != "1" {
		if out, err := run(context.Background(), 5*time.Minute, filepath.Join(root, "hack", "cluster-down.sh")); err != nil {
			fmt.Fprintf(os.Stderr, "cluster-down: %v\n%s", err, out)
			code = 1
		}
		// cluster-down must leave nothing of the cluster behind.
		if left, err := leftovers(); err != nil || len(left) > 0 {
			fmt.Fprintf(os.Stderr, "after cluster-down: %v left on the machine (%v)\n", left, err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireCluster skips the test unless the suite is enabled, and brings the cluster up once.
func requireCluster(t *testing.T) {
	t.Helper()
	if os.Getenv("TSGW_CLUSTER") != "1" {
		t.Skip("the cluster suite runs with TSGW_CLUSTER=1 as root (docs/cluster.md)")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("the cluster suite needs root on Linux")
	}
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("bringing the cluster up: %v", setupErr)
	}
}

// setup builds the images (this machine's platform only), brings the cluster up unless it is up,
// and imports the images.
func setup() error {
	ctx := context.Background()
	// One cluster per machine (its netns and cgroup names are fixed): suites of other checkouts
	// wait here until this process exits, which releases the lock.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "tsgw-cluster.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	clusterLock = lock // kept reachable: the finalizer of an unreachable *os.File closes it
	out, err := run(ctx, time.Minute, "git", "-C", root, "describe", "--tags", "--always", "--dirty")
	if err != nil {
		return fmt.Errorf("git describe: %w\n%s", err, out)
	}
	imageTag = strings.TrimSpace(out)
	env := []string{"PLATFORMS=linux/" + runtime.GOARCH, "TAG=" + imageTag}
	images := filepath.Join(root, "hack", "images.sh")
	for _, args := range [][]string{{"test"}, {"etcd"}} {
		if out, err := runEnv(ctx, 30*time.Minute, env, images, args...); err != nil {
			return fmt.Errorf("hack/images.sh %s: %w\n%s", args[0], err, out)
		}
	}
	out, err = run(ctx, time.Minute, "go", "list", "-C", root, "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3")
	if err != nil {
		return fmt.Errorf("etcd version: %w\n%s", err, out)
	}
	etcdTag = strings.TrimSpace(out)

	if _, err := os.Stat("/run/netns/tsgw-node"); os.IsNotExist(err) {
		broughtUp = true
	}
	start := time.Now()
	if out, err := run(ctx, 60*time.Minute, filepath.Join(root, "hack", "cluster-up.sh")); err != nil {
		return fmt.Errorf("hack/cluster-up.sh: %w\n%s", err, out)
	}
	if broughtUp {
		fmt.Printf("cluster: node Ready %s after hack/cluster-up.sh started\n", time.Since(start).Round(time.Second))
	}
	// The check TestMain runs after cluster-down must see a running cluster.
	if left, err := leftovers(); err != nil || len(left) < 4 {
		return fmt.Errorf("the leftover check sees only %v of the running cluster (%v)", left, err)
	}
	archives, err := filepath.Glob(filepath.Join(root, "_output", "images", "*.tar"))
	if err != nil {
		return err
	}
	args := append([]string{"import"}, archives...)
	if out, err := run(ctx, 10*time.Minute, filepath.Join(root, "hack", "cluster-up.sh"), args...); err != nil {
		return fmt.Errorf("importing images: %w\n%s", err, out)
	}
	// A node under pressure (the kubelet evicts below 1% free disk) schedules nothing: say so
	// rather than let the first install time out.
	taints, err := kubectl(ctx, "get", "nodes", "-o", "jsonpath={.items[*].spec.taints[*].key}")
	if err != nil {
		return fmt.Errorf("reading the node's taints: %w\n%s", err, taints)
	}
	if strings.Contains(taints, "pressure") {
		return fmt.Errorf("the node is tainted %q: free disk or memory on this machine and run again", taints)
	}
	return nil
}

// TestChart runs the chart's life cycle in order on the one cluster, in the order a user installs:
// Envoy Gateway (its CA), our chart, our extension registered in Envoy Gateway, upgrade with
// readers, uninstall. A failed install stops it.
func TestChart(t *testing.T) {
	requireCluster(t)
	if !t.Run("envoy-gateway", testEnvoyGatewayInstall) || !t.Run("install", testHelmInstall) {
		return
	}
	t.Run("proxy", testProxy)
	t.Run("pool", testProxyPool)
	t.Run("networkpolicy", testProxyNetworkPolicy)
	t.Run("rollout", testRollout)
	t.Run("envoy-gateway-extension", testEnvoyGatewayExtension)
	t.Run("upgrade", testHelmUpgradeNoDowntime)
	t.Run("uninstall", testHelmUninstall)
	t.Run("envoy-gateway-uninstall", testEnvoyGatewayUninstall)
}

// testHelmInstall installs the chart from the local images and waits for what a user waits for:
// the APIService Available, both server replicas Ready through their probes, the 3 etcd members
// Ready; then every kind is served and `kubectl get tailscale -A` answers.
func testHelmInstall(t *testing.T) {
	ctx := t.Context()
	start := time.Now()
	installChart(t, ctx, imageTag)
	waitFor(t, 10*time.Minute, "APIService Available", func() (bool, string) {
		out, err := kubectl(ctx, "get", "apiservice", apiService,
			"-o", `jsonpath={.status.conditions[?(@.type=="Available")].status}`)
		return err == nil && out == "True", out
	})
	t.Logf("helm install to APIService Available: %s", time.Since(start).Round(time.Second))

	waitFor(t, 5*time.Minute, "2 server replicas Ready", func() (bool, string) {
		out, err := kubectl(ctx, "-n", namespace, "get", "deployment", "tailscale-gateway-apiserver",
			"-o", "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}")
		return err == nil && out == "2/2", out
	})
	waitFor(t, 5*time.Minute, "3 etcd members Ready", func() (bool, string) {
		out, err := kubectl(ctx, "-n", namespace, "get", "statefulset", "tailscale-gateway-etcd",
			"-o", "jsonpath={.status.readyReplicas}")
		return err == nil && out == "3", out
	})
	// The pods run the images built here, at the tag given, and are Ready by their own probes.
	out, err := kubectl(ctx, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component=apiserver",
		"-o", `jsonpath={range .items[*]}{.spec.containers[0].image} {.status.conditions[?(@.type=="Ready")].status} {.spec.containers[0].readinessProbe.httpGet.path}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("server pods: %v\n%s", err, out)
	}
	want := "ghcr.io/tailscale-gateway/tailscale-gateway-apiserver:" + imageTag + " True /readyz"
	for _, line := range strings.Split(out, "\n") {
		if line != want {
			t.Errorf("server pod: got %q, want %q", line, want)
		}
	}

	out, err = kubectl(ctx, "api-resources", "--api-group=gateway.tailscale.com", "-o", "name")
	if err != nil {
		t.Fatalf("kubectl api-resources: %v\n%s", err, out)
	}
	kinds := strings.Fields(out)
	sort.Strings(kinds)
	wantKinds := []string{"tailscaleendpoints.gateway.tailscale.com", "tailscalegateways.gateway.tailscale.com",
		"tailscaleservices.gateway.tailscale.com", "tailscaletailnets.gateway.tailscale.com"}
	if strings.Join(kinds, " ") != strings.Join(wantKinds, " ") {
		t.Errorf("served kinds: got %v, want %v", kinds, wantKinds)
	}
	if out, err := kubectl(ctx, "get", "tailscale", "-A"); err != nil {
		t.Errorf("kubectl get tailscale -A: %v\n%s", err, out)
	}
}

// testHelmUninstall removes the release and checks that no object of the chart is left.
func testHelmUninstall(t *testing.T) {
	ctx := t.Context()
	if out, err := runEnv(ctx, 5*time.Minute, nil, helm, "--kubeconfig", kubeconfig, "uninstall", release,
		"-n", namespace, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	selector := "app.kubernetes.io/instance=" + release
	waitFor(t, 3*time.Minute, "no object of the release", func() (bool, string) {
		var left []string
		for _, kinds := range []string{
			"apiservices,clusterroles,clusterrolebindings",
		} {
			out, err := kubectl(ctx, "get", kinds, "-l", selector, "-o", "name")
			if err != nil {
				return false, out
			}
			left = append(left, strings.Fields(out)...)
		}
		out, err := kubectl(ctx, "get", "all,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies,pvc",
			"-A", "-l", selector, "-o", "name")
		if err != nil {
			return false, out
		}
		left = append(left, strings.Fields(out)...)
		return len(left) == 0, strings.Join(left, " ")
	})
}

func installChart(t *testing.T, ctx context.Context, tag string) {
	t.Helper()
	if out, err := helmInstall(ctx, tag); err != nil {
		t.Fatalf("helm upgrade --install: %v\n%s", err, out)
	}
}

// helmInstall installs or upgrades the release to the images of tag (the test node has no volume
// provisioner: etcd runs on emptyDir). The chart reads Envoy Gateway's CA from its Secret
// (testEnvoyGatewayInstall ran first) and writes ours into Envoy Gateway's namespace.
func helmInstall(ctx context.Context, tag string) (string, error) {
	return runEnv(ctx, 10*time.Minute, nil, helm, "--kubeconfig", kubeconfig, "upgrade", "--install", release,
		filepath.Join(root, "charts", "tailscale-gateway"), "-n", namespace, "--create-namespace",
		"--set-string", "image.tag="+tag, // a tag of digits only (a commit hash) is a string too
		"--set", "etcd.image.repository=tsgw.local/etcd", "--set", "etcd.image.tag="+etcdTag,
		"--set", "etcd.persistence.enabled=false")
}

func kubectl(ctx context.Context, args ...string) (string, error) {
	out, err := run(ctx, 2*time.Minute, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	return strings.TrimSpace(out), err
}

// waitFor polls cond every second until it holds, failing the test with cond's last detail after
// timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s (last: %s)", what, timeout, detail)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-ticker.C:
		}
	}
}

func run(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	return runEnv(ctx, timeout, nil, name, args...)
}

func runEnv(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(dir, "..", ".."))
}
