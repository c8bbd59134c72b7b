package proxypool

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// keyAPI is the Tailscale API's auth keys (the only part the pool controller calls).
type keyAPI struct {
	tailnet.API
	mu      sync.Mutex
	minted  []string
	revoked []string
}

func (k *keyAPI) CreateAuthKey(_ context.Context, opts tailnet.AuthKeyOptions) (tailnet.AuthKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := fmt.Sprintf("k%d", len(k.minted)+1)
	k.minted = append(k.minted, id)
	return tailnet.AuthKey{ID: id, Key: "tskey-auth-" + id}, nil
}

func (k *keyAPI) AuthKeyInfo(_ context.Context, id string) (tailnet.AuthKeyInfo, error) {
	return tailnet.AuthKeyInfo{ID: id}, nil
}

func (k *keyAPI) DeleteAuthKey(_ context.Context, id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.revoked = append(k.revoked, id)
	return nil
}

type stubTailnets struct{ api tailnet.API }

func (s stubTailnets) Resolve(ref string) (string, bool) {
	return "corp", ref == "corp" || ref == "corp.ts.net"
}
func (s stubTailnets) API(string) (tailnet.API, bool) { return s.api, true }

// TestControllerKeepsThePool runs the controller on fake clientsets: a pool of 2 for objects of
// two namespaces gets its Service with every object's port (also for objects whose port is
// recorded after the pool exists), a key per replica, ServedByProxyPool on the objects and
// ProxyPoolReady; scaled to 1, replica 1's key is revoked; at 0, everything goes.
func TestControllerKeepsThePool(t *testing.T) {
	const ns = "tailscale-gateway-system"
	tn := testTailnet(2)
	tn.Spec.ProxyPool.Resources = nil
	alloc := egressalloc.New(egressalloc.Options{})
	accepted := []metav1.Condition{{Type: tenancy.ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted"}}
	db := member(alloc, "team-a", "db", "100.64.0.7")
	db.Spec.Tailnet, db.Status.Conditions = "corp", accepted
	cache := member(egressalloc.New(egressalloc.Options{}), "team-b", "cache", "100.64.0.8")
	cache.Spec.Tailnet, cache.Status.Conditions, cache.Status.Egress = "corp.ts.net", accepted, nil // recorded later
	client := fake.NewSimpleClientset(tn, cache)
	kube := kubefake.NewSimpleClientset()
	api := &keyAPI{}
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := New(kube, factory, Options{Config: testConfig, Namespace: ns, Tailnets: stubTailnets{api},
		Recorder: record.NewFakeRecorder(100), Client: client, EnrollmentCheckInterval: 50 * time.Millisecond, NetworkPolicy: &testPolicy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	go c.Run(ctx, 1)

	until := func(what string, cond func() (bool, string)) {
		t.Helper()
		var last string
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			ok, l := cond()
			last = l
			return ok, nil
		}); err != nil {
			t.Fatalf("waiting for %s: %v; last: %s", what, err, last)
		}
	}
	base := NamesOf("corp").Base
	servicePorts := func() (int, string) {
		svc, err := kube.CoreV1().Services(ns).Get(ctx, base, metav1.GetOptions{})
		if err != nil {
			return 0, err.Error()
		}
		return len(svc.Spec.Ports), fmt.Sprint(svc.Spec.Ports)
	}
	until("the pool Service, with metrics only", func() (bool, string) {
		n, s := servicePorts()
		return n == 1, s
	})
	// db appears once the pool exists.
	if _, err := client.GatewayV1alpha1().TailscaleEndpoints("team-a").Create(ctx, db, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	until("the pool Service with db's two ports and metrics", func() (bool, string) {
		n, s := servicePorts()
		return n == 3, s
	})
	// cache's ports are recorded now: the Service follows.
	alloc.Allocate("shared", cache)
	if _, err := client.GatewayV1alpha1().TailscaleEndpoints("team-b").UpdateStatus(ctx, cache, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	until("the pool Service and NetworkPolicy with both objects' ports", func() (bool, string) {
		n, s := servicePorts()
		np, err := kube.NetworkingV1().NetworkPolicies(ns).Get(ctx, base, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return n == 5 && len(np.Spec.Ingress) == 2 && len(np.Spec.Ingress[0].Ports) == 4, s
	})
	until("a key per replica, ServedByProxyPool and ProxyPoolReady", func() (bool, string) {
		for i := range 2 {
			if _, err := kube.CoreV1().Secrets(ns).Get(ctx, NamesOf("corp").AuthKeySecret(i), metav1.GetOptions{}); err != nil {
				return false, err.Error()
			}
		}
		for _, o := range []*v1alpha1.TailscaleEndpoints{db, cache} {
			cur, err := client.GatewayV1alpha1().TailscaleEndpoints(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
			if err != nil || !meta.IsStatusConditionTrue(cur.Status.Conditions, ConditionServed) {
				return false, fmt.Sprint(o.Name, err)
			}
		}
		cur, err := client.GatewayV1alpha1().TailscaleTailnets().Get(ctx, "corp", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, ConditionReady)
		return cond != nil && cond.Reason == ReasonProgressing, fmt.Sprint(cond)
	})

	// Scaled to 1: replica 1's Secrets go and its key is revoked.
	scale := func(n int32) {
		cur, err := client.GatewayV1alpha1().TailscaleTailnets().Get(ctx, "corp", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.ProxyPool.Replicas = n
		if _, err := client.GatewayV1alpha1().TailscaleTailnets().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	key1, err := kube.CoreV1().Secrets(ns).Get(ctx, NamesOf("corp").AuthKeySecret(1), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id1 := key1.Annotations["gateway.tailscale.com/auth-key-id"]
	scale(1)
	until("replica 1's key revoked and its Secrets deleted", func() (bool, string) {
		api.mu.Lock()
		revoked := slices.Contains(api.revoked, id1)
		api.mu.Unlock()
		_, err := kube.CoreV1().Secrets(ns).Get(ctx, NamesOf("corp").StateSecret(1), metav1.GetOptions{})
		return revoked && err != nil, fmt.Sprint(revoked, err)
	})

	// At 0: the pool goes, its last key revoked, the objects no longer marked.
	scale(0)
	until("the pool removed", func() (bool, string) {
		_, err := kube.AppsV1().StatefulSets(ns).Get(ctx, base, metav1.GetOptions{})
		_, serr := kube.CoreV1().Services(ns).Get(ctx, base, metav1.GetOptions{})
		cur, _ := client.GatewayV1alpha1().TailscaleEndpoints("team-a").Get(ctx, "db", metav1.GetOptions{})
		api.mu.Lock()
		defer api.mu.Unlock()
		return err != nil && serr != nil && len(api.revoked) == 2 && meta.FindStatusCondition(cur.Status.Conditions, ConditionServed) == nil,
			fmt.Sprint(err, serr, api.revoked)
	})
}
