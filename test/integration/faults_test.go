package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/embeddedetcd"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// TestEtcdRestartUnderWriteLoad restarts the etcd member under the server while writers create
// objects: every create the server acknowledged is there afterwards, and the server serves
// again once etcd is back (the time it took is logged; docs/development.md records it).
func TestEtcdRestartUnderWriteLoad(t *testing.T) {
	etcd, err := embeddedetcd.Start(filepath.Join(t.TempDir(), "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	s := framework.Start(t, t.TempDir(), func(o *server.Options) {
		etcd.Transport(&o.RecommendedOptions.Etcd.StorageConfig.Transport)
	})
	eps := s.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("faults")

	const writers = 4
	var (
		mu       sync.Mutex
		acked    []string
		failures atomic.Int64
		stop     = make(chan struct{})
		done     sync.WaitGroup
	)
	for w := range writers {
		done.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := eps.Create(c, objects.Endpoints("faults", name), metav1.CreateOptions{})
				cancel()
				if err != nil {
					failures.Add(1)
					continue
				}
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		})
	}
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx(t), 10*time.Millisecond, 2*time.Minute, true,
			func(context.Context) (bool, error) { return cond(), nil }); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	poll("writes before the restart", func() bool { return ackedCount() >= 50 })

	before := failures.Load()
	if err := etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// The server serves again: a fresh write succeeds.
	poll("a write after etcd is back", func() bool {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := eps.Create(c, objects.Endpoints("faults", fmt.Sprintf("probe-%d", time.Now().UnixNano())), metav1.CreateOptions{})
		return err == nil
	})
	recovered := time.Since(back)
	n := ackedCount()
	poll("writes after the restart", func() bool { return ackedCount() >= n+50 })
	close(stop)
	done.Wait()
	t.Logf("etcd restart: serving again %s after etcd was back; %d writes acknowledged, %d failed during the restart",
		recovered.Round(time.Millisecond), ackedCount(), failures.Load()-before)

	list, err := eps.List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, o := range list.Items {
		stored[o.Name] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range acked {
		if !stored[name] {
			t.Errorf("acknowledged create of %s lost", name)
		}
	}
}
