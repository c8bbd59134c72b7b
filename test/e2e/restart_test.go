package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
)

// recorder keeps, for each object, what the informer's last event said: its first port, or
// "deleted".
type recorder struct {
	mu   sync.Mutex
	last map[string]string
}

func (r *recorder) set(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o := obj.(*v1alpha1.TailscaleEndpoints)
	state := fmt.Sprint(o.Spec.Endpoints[0].Port)
	if deleted {
		state = "deleted"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[o.Name] = state
}

func (r *recorder) snapshot() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.last)
}

// directTo returns the administrator's configuration for a server at addr.
func directTo(addr string) *rest.Config {
	cfg := rest.CopyConfig(env.Direct)
	cfg.Host = "https://" + addr
	return cfg
}

// TestInformerResumesAcrossServerRestart runs an informer through kube-apiserver while the
// server it reaches stops. A second replica on the same etcd (as with replicas >= 2 on an external
// etcd) changes objects meanwhile; once the first server is back the informer must have seen every
// change, and its cache must match a fresh list.
func TestInformerResumesAcrossServerRestart(t *testing.T) {
	ns := newNamespace(t, "restart")
	eps := viaKube(t).TailscaleEndpoints(ns)
	for _, n := range []string{"kept", "changed", "deleted"} {
		if _, err := eps.Create(ctx(t), objects.Endpoints(ns, n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	cs, err := versioned.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	informer := factory.Gateway().V1alpha1().TailscaleEndpoints().Informer()
	rec := &recorder{last: map[string]string{}}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { rec.set(o, false) },
		UpdateFunc: func(_, o any) { rec.set(o, false) },
		DeleteFunc: func(o any) { rec.set(o, true) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	syncCtx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), informer.HasSynced) {
		t.Fatal("informer did not sync")
	}

	replica, err := env.StartGateway("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := replica.Stop(); err != nil {
			t.Errorf("stopping the replica: %v", err)
		}
	}()
	if err := env.Gateway.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := env.Gateway.Start(); err != nil {
				t.Errorf("restarting the server: %v", err)
			}
		}
	}()

	// While the server behind the APIService is down, change objects through the replica.
	other := gateway(t, directTo(replica.Addr)).TailscaleEndpoints(ns)
	if _, err := other.Patch(ctx(t), "changed", types.JSONPatchType, portPatch(9999), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := other.Delete(ctx(t), "deleted", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Create(ctx(t), objects.Endpoints(ns, "created"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := env.Gateway.Start(); err != nil {
		t.Fatalf("restarting the server: %v", err)
	}
	restarted = true
	if err := env.WaitForAPIService(ctx(t), apiregistrationv1.ConditionTrue); err != nil {
		t.Fatal(err)
	}

	// Whether the informer resumes its watch or relists, its handlers must end on these states.
	want := map[string]string{"kept": "8080", "changed": "9999", "deleted": "deleted", "created": "8080"}
	var got map[string]string
	eventually(t, fmt.Sprintf("the informer to see every change made while the server was down (want %v)", want), func(context.Context) (bool, error) {
		got = rec.snapshot()
		return maps.Equal(got, want), nil
	})
	eventually(t, "the informer's cache to match a fresh list", func(ctx context.Context) (bool, error) {
		l, err := eps.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		fresh := map[string]string{}
		for _, o := range l.Items {
			fresh[o.Name] = o.ResourceVersion
		}
		cached := map[string]string{}
		for _, o := range informer.GetStore().List() {
			e := o.(*v1alpha1.TailscaleEndpoints)
			cached[e.Name] = e.ResourceVersion
		}
		return maps.Equal(fresh, cached) && slices.Equal(slices.Sorted(maps.Keys(fresh)), []string{"changed", "created", "kept"}), nil
	})
}

// TestGracefulShutdown stops a replica started with --shutdown-delay-duration: /readyz fails at
// once while requests are still served, then the server closes its watches and exits.
func TestGracefulShutdown(t *testing.T) {
	ns := newNamespace(t, "shutdown")
	replica, err := env.StartGateway("127.0.0.1:0", "--shutdown-delay-duration=5s")
	if err != nil {
		t.Fatal(err)
	}
	eps := gateway(t, directTo(replica.Addr)).TailscaleEndpoints(ns)
	w, err := eps.Watch(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	replica.Shutdown()
	client, err := rest.HTTPClientFor(directTo(replica.Addr))
	if err != nil {
		t.Fatal(err)
	}
	status := func(ctx context.Context, path string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+replica.Addr+path, nil)
		if err != nil {
			return 0
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, "/readyz to fail once shutdown begins", func(ctx context.Context) (bool, error) {
		return status(ctx, "/readyz") == http.StatusInternalServerError, nil
	})
	if code := status(ctx(t), "/livez"); code != http.StatusOK {
		t.Errorf("/livez during the shutdown delay: %d, want 200", code)
	}
	if _, err := eps.List(ctx(t), metav1.ListOptions{}); err != nil {
		t.Errorf("list during the shutdown delay: %v", err)
	}

	timeout := time.After(waitTimeout)
	for open := true; open; {
		select {
		case _, open = <-w.ResultChan():
		case <-timeout:
			t.Fatal("the watch was not closed by the shutdown")
		}
	}
	if err := replica.Wait(); err != nil {
		t.Errorf("server exit: %v", err)
	}
}
