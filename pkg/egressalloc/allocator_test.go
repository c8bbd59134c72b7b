package egressalloc

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

// objectWith is a TailscaleEndpoints named name with n TCP endpoints on port 80, e0..e<n-1>.
func objectWith(name string, n int) *v1alpha1.TailscaleEndpoints {
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
	for i := range n {
		obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: fmt.Sprintf("e%d", i), TailscaleIP: "100.64.0.1", Port: 80})
	}
	return obj
}

// unique fails unless the ports recorded on objs are pairwise distinct, and returns them.
func unique(t *testing.T, objs ...*v1alpha1.TailscaleEndpoints) map[int32]string {
	t.Helper()
	seen := map[int32]string{}
	for _, o := range objs {
		_, rec := ports.Recorded(o)
		for k, p := range rec {
			who := o.Name + "/" + k.Endpoint
			if prev, dup := seen[p]; dup {
				t.Fatalf("port %d allocated to %s and %s", p, prev, who)
			}
			seen[p] = who
		}
	}
	return seen
}

// collidingNames returns two endpoint names of object obj whose earlier derived ports
// (ports.EgressPort) are equal.
func collidingNames(obj string) (string, string) {
	seen := map[int32]string{}
	for i := 0; ; i++ {
		n := fmt.Sprintf("e%d", i)
		p := ports.EgressPort(obj, n, 80)
		if prev, ok := seen[p]; ok {
			return prev, n
		}
		seen[p] = n
	}
}

func TestNoCollisionsAtAThousandEndpoints(t *testing.T) {
	a := New(Options{})
	var objs []*v1alpha1.TailscaleEndpoints
	for i := range 40 {
		objs = append(objs, objectWith(fmt.Sprintf("obj-%d", i), 25))
	}
	a.Allocate("p", objs...)
	if got := len(unique(t, objs...)); got != 1000 {
		t.Fatalf("%d ports for 1,000 endpoints", got)
	}
	// The earlier hash collides at this size (about 1 - e^(-1000²/45536) ≈ 100%): show it does
	// here, so that the check above means something.
	hashed := map[int32]bool{}
	collisions := 0
	for _, o := range objs {
		for _, ep := range o.Spec.Endpoints {
			p := ports.EgressPort(o.Name, ep.Name, ep.Port)
			if hashed[p] {
				collisions++
			}
			hashed[p] = true
		}
	}
	if collisions == 0 {
		t.Fatal("no hash collision among 1,000 endpoints: the test proves nothing")
	}
	t.Logf("the hash would have lost %d of 1,000 endpoints", collisions)
}

func TestAHashCollisionGetsTwoPortsAndTheFirstKeepsItsEarlierPort(t *testing.T) {
	x, y := collidingNames("obj")
	obj := objectWith("obj", 0)
	obj.Spec.Endpoints = []v1alpha1.TailscaleEndpoint{{Name: x, TailscaleIP: "100.64.0.1", Port: 80}, {Name: y, TailscaleIP: "100.64.0.2", Port: 80}}
	New(Options{}).Allocate("p", obj)
	_, rec := ports.Recorded(obj)
	px, py := rec[ports.Key{Endpoint: x, Port: 80}], rec[ports.Key{Endpoint: y, Port: 80}]
	if px != ports.EgressPort("obj", x, 80) || py == px || py == 0 {
		t.Fatalf("%s: %d, %s: %d; want the earlier port %d and another", x, px, y, py, ports.EgressPort("obj", x, 80))
	}
}

func TestAllocationsAreStableUnderReorderingRemovalAndOtherObjects(t *testing.T) {
	now := time.Unix(0, 0)
	a := New(Options{Now: func() time.Time { return now }})
	obj, other := objectWith("obj", 50), objectWith("other", 50)
	a.Allocate("p", obj, other)
	_, before := ports.Recorded(obj)

	// Reordered, and half the endpoints removed.
	rand.Shuffle(len(obj.Spec.Endpoints), func(i, j int) {
		obj.Spec.Endpoints[i], obj.Spec.Endpoints[j] = obj.Spec.Endpoints[j], obj.Spec.Endpoints[i]
	})
	removed := obj.Spec.Endpoints[25:]
	obj.Spec.Endpoints = obj.Spec.Endpoints[:25]
	a.Allocate("p", obj)
	_, after := ports.Recorded(obj)
	if len(after) != 25 {
		t.Fatalf("%d ports after removing half of 50", len(after))
	}
	for k, p := range after {
		if before[k] != p {
			t.Errorf("%s moved from %d to %d", k.Endpoint, before[k], p)
		}
	}
	// Another object deleted and re-created: ours do not move, and the freed ports are not
	// handed out again while in quarantine (not to the re-created object either).
	_, otherBefore := ports.Recorded(other)
	a.Forget("ns", "other")
	recreated := objectWith("other", 50)
	recreated.UID = "uid-other-2"
	a.Allocate("p", recreated)
	freed := map[int32]bool{}
	for _, p := range otherBefore {
		freed[p] = true
	}
	for _, k := range removed {
		freed[before[ports.Key{Endpoint: k.Name, Port: 80}]] = true
	}
	_, rec := ports.Recorded(recreated)
	for k, p := range rec {
		if freed[p] {
			t.Errorf("re-created %s got port %d freed a moment ago", k.Endpoint, p)
		}
	}
	a.Allocate("p", obj)
	if _, again := ports.Recorded(obj); fmt.Sprint(again) != fmt.Sprint(after) {
		t.Errorf("another object's re-creation moved ours: %v -> %v", after, again)
	}
	unique(t, obj, recreated)
}

func TestFreedPortsWaitForTheQuarantine(t *testing.T) {
	now := time.Unix(0, 0)
	// A range of 2: with both held or quarantined nothing is free.
	a := New(Options{Base: 20000, Span: 2, Quarantine: time.Minute, Now: func() time.Time { return now }})
	one, two := objectWith("one", 1), objectWith("two", 1)
	a.Allocate("p", one, two)
	a.Forget("ns", "one")
	three := objectWith("three", 1)
	if got, pending := a.Sync(three, "p", Wants(three)); len(got) != 0 || len(pending) != 1 {
		t.Fatalf("a port freed a moment ago was reused: %v, pending %v", got, pending)
	}
	now = now.Add(time.Minute)
	if got, pending := a.Sync(three, "p", Wants(three)); len(got) != 1 || len(pending) != 0 {
		t.Fatalf("after the quarantine: %v, pending %v", got, pending)
	}
}

func TestNextFitDoesNotReuseAFreedPortFirst(t *testing.T) {
	a := New(Options{Base: 20000, Span: 100, Quarantine: -1})
	// The earlier derived ports of these names fall outside this range: next-fit decides.
	objs := make([]*v1alpha1.TailscaleEndpoints, 10)
	for i := range objs {
		objs[i] = objectWith(fmt.Sprintf("o%d", i), 1)
	}
	a.Allocate("p", objs...)
	_, first := ports.Recorded(objs[0])
	a.Forget("ns", "o0")
	next := objectWith("next", 1)
	a.Allocate("p", next)
	_, got := ports.Recorded(next)
	if got[ports.Key{Endpoint: "e0", Port: 80}] == first[ports.Key{Endpoint: "e0", Port: 80}] {
		t.Fatalf("the port freed last (%v) was handed out first, without quarantine", first)
	}
}

func TestSeedRestoresAllocationsAndTheCursor(t *testing.T) {
	a := New(Options{})
	x, y := collidingNames("obj")
	obj := objectWith("obj", 0)
	obj.Spec.Endpoints = []v1alpha1.TailscaleEndpoint{{Name: x, TailscaleIP: "100.64.0.1", Port: 80}, {Name: y, TailscaleIP: "100.64.0.2", Port: 80}}
	other := objectWith("other", 20)
	a.Allocate("p", obj, other)
	scope := func(*v1alpha1.TailscaleEndpoints) string { return "p" }

	// A new allocator (a restart) seeded from the records, objects listed in another order.
	b := New(Options{})
	b.Seed([]*v1alpha1.TailscaleEndpoints{other, obj}, scope)
	if b.InUse("p") != 22 {
		t.Fatalf("%d ports in use after Seed, want 22", b.InUse("p"))
	}
	for _, o := range []*v1alpha1.TailscaleEndpoints{obj, other} {
		_, before := ports.Recorded(o)
		got, _ := b.Sync(o, "p", Wants(o))
		if fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("%s after a restart: %v, was %v", o.Name, got, before)
		}
	}
	// A new endpoint after the restart collides with nothing recorded.
	late := objectWith("late", 30)
	b.Allocate("p", late)
	unique(t, obj, other, late)

	// A forged record claiming another object's port is not loaded: the older object keeps it.
	forged := objectWith("forged", 1)
	forged.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
	_, rec := ports.Recorded(obj)
	forged.Status.Egress = &v1alpha1.EgressAllocation{Proxy: "p", Ports: []v1alpha1.EgressPort{
		{Endpoint: "e0", Protocol: v1alpha1.ProtocolTCP, Port: 80, ListenerPort: rec[ports.Key{Endpoint: x, Port: 80}]}}}
	c := New(Options{})
	c.Seed([]*v1alpha1.TailscaleEndpoints{forged, obj}, scope)
	c.Allocate("p", forged)
	unique(t, obj, forged)
}

func TestScopesAreIndependentAndAMoveKeepsThePortWhenFree(t *testing.T) {
	a := New(Options{})
	obj := objectWith("obj", 3)
	a.Allocate("dedicated", obj)
	_, before := ports.Recorded(obj)
	a.Allocate("pool", obj) // moved to a pool: the recorded ports are offered first
	proxy, after := ports.Recorded(obj)
	if proxy != "pool" || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("after the move: %s %v, was %v", proxy, after, before)
	}
	if a.InUse("dedicated") != 0 || a.InUse("pool") != 3 {
		t.Fatalf("in use: dedicated %d, pool %d", a.InUse("dedicated"), a.InUse("pool"))
	}
}

// TestAMoveAndBackKeepsThePortThroughTheQuarantine: an object moved from a pool to a dedicated
// proxy and back at once gets its ports back although they are quarantined in the pool's scope
// (any stale record of them still means the same listeners); another object never gets them.
func TestAMoveAndBackKeepsThePortThroughTheQuarantine(t *testing.T) {
	a := New(Options{})
	obj := objectWith("obj", 3)
	a.Allocate("pool", obj)
	_, before := ports.Recorded(obj)
	a.Allocate("dedicated", obj)
	other := objectWith("other", 3)
	for k, p := range before { // another object recorded (forged) with obj's quarantined ports
		other.Status.Egress = Record("pool", map[ports.Key]int32{k: p})
		break
	}
	a.Allocate("pool", other)
	a.Allocate("pool", obj)
	proxy, after := ports.Recorded(obj)
	if proxy != "pool" || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("moved back: %s %v, was %v", proxy, after, before)
	}
	if got := len(unique(t, obj, other)); got != 6 {
		t.Fatalf("%d ports for 6 endpoints", got)
	}
}

func TestConcurrentObjectsNeverShareAPort(t *testing.T) {
	a := New(Options{}) // the edits quarantine 4,800 freed ports: the range holds them
	objs := make([]*v1alpha1.TailscaleEndpoints, 64)
	var wg sync.WaitGroup
	for i := range objs {
		objs[i] = objectWith(fmt.Sprintf("obj-%d", i), 25)
		wg.Add(1)
		go func(o *v1alpha1.TailscaleEndpoints) {
			defer wg.Done()
			for range 5 { // edits: endpoints dropped and re-added
				o2 := o.DeepCopy()
				o2.Spec.Endpoints = o2.Spec.Endpoints[:10]
				a.Sync(o2, "p", Wants(o2))
				a.Allocate("p", o)
			}
		}(objs[i])
	}
	wg.Wait()
	if got := len(unique(t, objs...)); got != 64*25 {
		t.Fatalf("%d ports for %d endpoints", got, 64*25)
	}
}

func TestAFullRangeLeavesEndpointsPending(t *testing.T) {
	a := New(Options{Base: 20000, Span: 3})
	obj := objectWith("obj", 5)
	got, pending := a.Sync(obj, "p", Wants(obj))
	if len(got) != 3 || len(pending) != 2 {
		t.Fatalf("got %v, pending %v", got, pending)
	}
}

// BenchmarkAllocate allocates the ports of b.N objects of 10 endpoints each in one scope whose
// range holds them all (the controller's work per object, without the status write).
func BenchmarkAllocate(b *testing.B) {
	a := New(Options{Base: 0, Span: 1 << 30})
	objs := make([]*v1alpha1.TailscaleEndpoints, b.N)
	for i := range objs {
		objs[i] = objectWith(fmt.Sprintf("obj-%d", i), 10)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, o := range objs {
		a.Sync(o, "p", Wants(o))
	}
}

// BenchmarkAllocateNearlyFull allocates one endpoint in a scope of the default range with
// 20,000 of its 22,768 ports held: the next-fit walk's cost when little is free.
func BenchmarkAllocateNearlyFull(b *testing.B) {
	a := New(Options{Quarantine: -1})
	for i := range 2000 {
		a.Allocate("p", objectWith(fmt.Sprintf("fill-%d", i), 10))
	}
	o := objectWith("churn", 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		o.UID = types.UID(fmt.Sprint(i)) // a new object each time: its port is freed and another taken
		a.Sync(o, "p", Wants(o))
	}
}
