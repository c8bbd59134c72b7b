package egressalloc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	alloc "github.com/tailscale-gateway/tailscale-gateway/pkg/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

// start runs a controller (one term of leadership) on client until the returned stop.
func start(t *testing.T, client *fake.Clientset, o Options) (stop func()) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := New(client, factory, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	factory.Start(ctx.Done())
	go func() { defer close(done); c.Run(ctx) }()
	return func() { cancel(); <-done; factory.Shutdown() }
}

func endpointsObject(name string, names ...string) *v1alpha1.TailscaleEndpoints {
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
	for _, n := range names {
		obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: n, TailscaleIP: "100.64.0.1", Port: 80})
	}
	return obj
}

// waitFor polls obj until cond holds and returns it.
func waitFor(t *testing.T, client *fake.Clientset, name, what string, cond func(*v1alpha1.TailscaleEndpoints) bool) *v1alpha1.TailscaleEndpoints {
	t.Helper()
	var last *v1alpha1.TailscaleEndpoints
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := client.GatewayV1alpha1().TailscaleEndpoints("ns").Get(c, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = o
		return cond(o), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last status %+v)", what, err, last.Status)
	}
	return last
}

func recorded(o *v1alpha1.TailscaleEndpoints) map[string]int32 {
	_, rec := ports.Recorded(o)
	out := map[string]int32{}
	for k, p := range rec {
		out[k.Endpoint] = p
	}
	return out
}

// sameHash returns n endpoint names of object obj on port 80 with one earlier derived port.
func sameHash(obj string, n int) []string {
	byPort := map[int32][]string{}
	for i := 0; ; i++ {
		name := fmt.Sprintf("e%d", i)
		p := ports.EgressPort(obj, name, 80)
		if byPort[p] = append(byPort[p], name); len(byPort[p]) == n {
			return byPort[p]
		}
	}
}

func TestControllerRecordsKeepsAndRestoresAllocations(t *testing.T) {
	ctx := context.Background()
	client := fake.NewSimpleClientset()
	api := client.GatewayV1alpha1().TailscaleEndpoints("ns")
	scope := func(*v1alpha1.TailscaleEndpoints) string { return "shared" }
	names := sameHash("obj", 3)
	if _, err := api.Create(ctx, endpointsObject("obj", names[0], names[1]), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop := start(t, client, Options{Scope: scope})
	obj := waitFor(t, client, "obj", "two ports", func(o *v1alpha1.TailscaleEndpoints) bool {
		c := meta.FindStatusCondition(o.Status.Conditions, ConditionAllocated)
		return len(recorded(o)) == 2 && c != nil && c.Status == metav1.ConditionTrue
	})
	first := recorded(obj)
	if first[names[0]] == first[names[1]] || obj.Status.Egress.Proxy != "shared" {
		t.Fatalf("allocation %v on %s", first, obj.Status.Egress.Proxy)
	}

	// Someone else's edit of status.egress is written back.
	forged := obj.DeepCopy()
	forged.Status.Egress.Ports[1].ListenerPort = forged.Status.Egress.Ports[0].ListenerPort
	if _, err := api.UpdateStatus(ctx, forged, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, client, "obj", "the forged status written back", func(o *v1alpha1.TailscaleEndpoints) bool {
		return fmt.Sprint(recorded(o)) == fmt.Sprint(first)
	})

	// A restart (a new term of leadership), with a third endpoint added and another object of
	// the same proxy created meanwhile, each hashing to the first endpoint's port. The
	// allocation is kept, and both get other ports: the new controller loaded the records
	// before reconciling anything (without them, whichever it reconciled first would take it).
	stop()
	cur, err := api.Get(ctx, "obj", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Endpoints = append(cur.Spec.Endpoints, endpointsObject("x", names[2]).Spec.Endpoints...)
	if _, err := api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var otherName string
	for i := 0; otherName == ""; i++ {
		if n := fmt.Sprintf("o%d", i); ports.EgressPort("another", n, 80) == first[names[0]] {
			otherName = n
		}
	}
	if _, err := api.Create(ctx, endpointsObject("another", otherName), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop = start(t, client, Options{Scope: scope})
	defer stop()
	obj = waitFor(t, client, "obj", "three ports", func(o *v1alpha1.TailscaleEndpoints) bool { return len(recorded(o)) == 3 })
	got := recorded(obj)
	if got[names[0]] != first[names[0]] || got[names[1]] != first[names[1]] || got[names[2]] == got[names[0]] || got[names[2]] == got[names[1]] {
		t.Fatalf("after the restart %v, before %v", got, first)
	}
	another := recorded(waitFor(t, client, "another", "a port", func(o *v1alpha1.TailscaleEndpoints) bool { return len(recorded(o)) == 1 }))
	if p := another[otherName]; p == got[names[0]] || p == got[names[1]] || p == got[names[2]] {
		t.Fatalf("another object got port %d of %v", p, got)
	}

	// Endpoints removed: their ports are freed and no longer recorded; none left: no record
	// and no condition.
	cur, err = api.Get(ctx, "obj", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Endpoints = nil
	if _, err := api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, client, "obj", "no record", func(o *v1alpha1.TailscaleEndpoints) bool {
		return o.Status.Egress == nil && meta.FindStatusCondition(o.Status.Conditions, ConditionAllocated) == nil
	})
}

func TestControllerReportsEndpointsWithoutAPort(t *testing.T) {
	client := fake.NewSimpleClientset(endpointsObject("big", "a", "b", "c"))
	stop := start(t, client, Options{Scope: func(*v1alpha1.TailscaleEndpoints) string { return "p" },
		Allocator: alloc.Options{Base: 20000, Span: 2}})
	defer stop()
	obj := waitFor(t, client, "big", "RangeExhausted", func(o *v1alpha1.TailscaleEndpoints) bool {
		c := meta.FindStatusCondition(o.Status.Conditions, ConditionAllocated)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == ReasonRangeExhausted
	})
	if n := len(recorded(obj)); n != 2 {
		t.Fatalf("%d ports recorded, want 2 of 3", n)
	}
	t.Log(meta.FindStatusCondition(obj.Status.Conditions, ConditionAllocated).Message)
}
