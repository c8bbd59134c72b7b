package cluster_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	tsclient "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
)

// testHelmUpgradeNoDowntime upgrades the release to a new image tag while a client lists and
// watches our kinds without pause: no request may fail, the APIService may never leave Available,
// and a namespace deleted during the rollout (namespace deletion needs every aggregated API) must be
// gone within 30 s.
func testHelmUpgradeNoDowntime(t *testing.T) {
	ctx := t.Context()
	// A second tag of the same server: the rollout replaces every pod.
	newTag := imageTag + "-upgrade"
	for _, name := range []string{"tailscale-gateway-apiserver", "tailscale-gateway-proxy"} {
		if out, err := runEnv(ctx, 30*time.Minute, []string{"PLATFORMS=linux/" + runtime.GOARCH, "TAG=" + newTag},
			root+"/hack/images.sh", name); err != nil {
			t.Fatalf("hack/images.sh %s: %v\n%s", name, err, out)
		}
		if out, err := run(ctx, 5*time.Minute, root+"/hack/cluster-up.sh", "import",
			root+"/_output/images/"+name+".tar"); err != nil {
			t.Fatalf("import: %v\n%s", err, out)
		}
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 100
	ts := tsclient.NewForConfigOrDie(cfg)
	kube := kubernetes.NewForConfigOrDie(cfg)
	agg := aggregator.NewForConfigOrDie(cfg)

	// The reader: LIST every 100 ms, a watch re-opened when the server ends it, the APIService
	// condition every 100 ms.
	readCtx, stopReading := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var requests, failures, unavailable atomic.Int64
	var firstFailure atomic.Value
	fail := func(err error) {
		failures.Add(1)
		firstFailure.CompareAndSwap(nil, err.Error())
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		for readCtx.Err() == nil {
			requests.Add(1)
			if _, err := ts.GatewayV1alpha1().TailscaleEndpoints("").List(readCtx, metav1.ListOptions{}); err != nil && readCtx.Err() == nil {
				fail(fmt.Errorf("list: %w", err))
			}
			sleepCtx(readCtx, 100*time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for readCtx.Err() == nil {
			requests.Add(1)
			w, err := ts.GatewayV1alpha1().TailscaleServices("").Watch(readCtx, metav1.ListOptions{})
			if err != nil {
				if readCtx.Err() == nil {
					fail(fmt.Errorf("watch: %w", err))
				}
				sleepCtx(readCtx, 100*time.Millisecond)
				continue
			}
			for range w.ResultChan() {
			}
			w.Stop()
		}
	}()
	go func() {
		defer wg.Done()
		for readCtx.Err() == nil {
			as, err := agg.ApiregistrationV1().APIServices().Get(readCtx, apiService, metav1.GetOptions{})
			if err == nil && !available(as) {
				unavailable.Add(1)
			}
			sleepCtx(readCtx, 100*time.Millisecond)
		}
	}()

	// A namespace to delete mid-rollout.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "upgrade-"}}
	ns, err = kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	upgradeErr := make(chan error, 1)
	go func() {
		out, err := helmInstall(ctx, newTag)
		if err != nil {
			err = fmt.Errorf("helm upgrade: %w\n%s", err, out)
		}
		upgradeErr <- err
	}()
	// Mid-rollout: once a pod of the new tag exists.
	waitFor(t, 10*time.Minute, "a pod of the new tag", func() (bool, string) {
		out, err := kubectl(ctx, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component=apiserver",
			"-o", "jsonpath={.items[*].spec.containers[0].image}")
		return err == nil && containsTag(out, newTag), out
	})
	deleted := time.Now()
	if err := kube.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "namespace deleted during the rollout is gone", func() (bool, string) {
		_, err := kube.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	t.Logf("namespace deleted during the rollout gone after %s", time.Since(deleted).Round(100*time.Millisecond))
	if err := <-upgradeErr; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Minute, "rollout complete", func() (bool, string) {
		out, err := kubectl(ctx, "-n", namespace, "get", "deployment", "tailscale-gateway-apiserver", "-o",
			"jsonpath={.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}/{.spec.template.spec.containers[0].image}")
		return err == nil && out == "2/2/2/ghcr.io/tailscale-gateway/tailscale-gateway-apiserver:"+newTag, out
	})
	t.Logf("helm upgrade to rollout complete: %s", time.Since(start).Round(time.Second))
	// The old pods drain for shutdownDelay after they leave the endpoints; read through that too.
	sleepCtx(ctx, 15*time.Second)
	stopReading()
	wg.Wait()

	t.Logf("reader: %d requests, %d failed; APIService not Available in %d samples", requests.Load(), failures.Load(), unavailable.Load())
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed during the upgrade; first: %v", failures.Load(), requests.Load(), firstFailure.Load())
	}
	if unavailable.Load() != 0 {
		t.Errorf("the APIService was not Available in %d samples during the upgrade", unavailable.Load())
	}
}

func available(as *apiregistrationv1.APIService) bool {
	for _, c := range as.Status.Conditions {
		if c.Type == apiregistrationv1.Available {
			return c.Status == apiregistrationv1.ConditionTrue
		}
	}
	return false
}

func containsTag(images, tag string) bool {
	for _, image := range strings.Fields(images) {
		if strings.HasSuffix(image, ":"+tag) {
			return true
		}
	}
	return false
}

// sleepCtx waits d or until ctx ends (pacing a load generator, not synchronising a test).
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
