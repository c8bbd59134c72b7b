package vipservice

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxyhosts"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

func TestDecideApprovals(t *testing.T) {
	ours := func(id string, ready, approved bool) host {
		return host{ServiceHost: tailnet.ServiceHost{NodeID: id, Approved: approved, Configured: true}, ours: true,
			proxy: proxyhosts.Host{Pod: "ns/" + id, Ready: ready}}
	}
	foreign := func(id string, approved bool) host {
		return host{ServiceHost: tailnet.ServiceHost{NodeID: id, Approved: approved, Configured: true}}
	}
	ids := func(hs []host) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.NodeID)
		}
		return out
	}
	for _, tc := range []struct {
		name                    string
		hosts                   []host
		approve, withdraw, kept []string
	}{
		{name: "ready hosts are approved, a foreign one is left unapproved",
			hosts: []host{ours("a", true, false), ours("b", true, true), foreign("x", false)}, approve: []string{"a"}},
		{name: "an unready host is withdrawn while another serves",
			hosts: []host{ours("a", true, true), ours("b", false, true)}, withdraw: []string{"b"}},
		{name: "an unready host is withdrawn while a foreign approved host serves",
			hosts: []host{ours("a", false, true), foreign("x", true)}, withdraw: []string{"a"}},
		{name: "a new ready host is approved before the unready one goes",
			hosts: []host{ours("a", false, true), ours("b", true, false)}, approve: []string{"b"}, withdraw: []string{"a"}},
		{name: "no host ready and none other serving: approvals are left as they are",
			hosts: []host{ours("a", false, true), ours("b", false, false), foreign("x", false)}, kept: []string{"a"}},
		{name: "a foreign host is never withdrawn",
			hosts: []host{ours("a", true, true), foreign("x", true)}},
		{name: "an unready host not approved is not approved", hosts: []host{ours("a", false, false)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := decideApprovals(tc.hosts)
			if !slices.Equal(ids(a.approve), tc.approve) || !slices.Equal(ids(a.withdraw), tc.withdraw) || !slices.Equal(ids(a.kept), tc.kept) {
				t.Errorf("approve %v withdraw %v kept %v, want %v %v %v", ids(a.approve), ids(a.withdraw), ids(a.kept), tc.approve, tc.withdraw, tc.kept)
			}
		})
	}
}

// hostsAPI is memoryAPI with hosts and approval calls.
type hostsAPI struct {
	*memoryAPI
	hmu   sync.Mutex
	hosts []tailnet.ServiceHost
	calls []string // "<node>=<approved>"
}

func (a *hostsAPI) ServiceHosts(context.Context, string) ([]tailnet.ServiceHost, error) {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	return slices.Clone(a.hosts), nil
}

func (a *hostsAPI) ApproveServiceHost(_ context.Context, _, nodeID string, approved bool) error {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	a.calls = append(a.calls, nodeID+map[bool]string{true: "=true", false: "=false"}[approved])
	for i := range a.hosts {
		if a.hosts[i].NodeID == nodeID {
			a.hosts[i].Approved = approved
		}
	}
	return nil
}

func (a *hostsAPI) takeCalls() []string {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	out := a.calls
	a.calls = nil
	return out
}

type hostsTailnet struct{ api *hostsAPI }

func (o hostsTailnet) Resolve(ref string) (string, bool)                   { return "sim", ref == "sim" }
func (o hostsTailnet) Snapshot(string) (tailnet.Snapshot, bool)            { return tailnet.Snapshot{}, false }
func (o hostsTailnet) API(string) (tailnet.API, bool)                      { return o.api, true }
func (o hostsTailnet) Subscribe(func(tailnet.Change)) (unsubscribe func()) { return func() {} }

// fakeHosts is a Hosts whose proxies the test sets.
type fakeHosts struct {
	mu    sync.Mutex
	gen   uint64
	hosts map[string]proxyhosts.Host
}

func (f *fakeHosts) Lookup(_ context.Context, id string) (proxyhosts.Host, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.hosts[id]
	return h, ok
}
func (f *fakeHosts) Generation() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.gen }
func (f *fakeHosts) OnChange(func())    {}
func (f *fakeHosts) HasSynced() bool    { return true }
func (f *fakeHosts) set(id string, h proxyhosts.Host) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[id] = h
	f.gen++
}

// The reconciler approves our Ready proxies hosting the object's Service and no other device,
// withdraws one whose pod stops being Ready (keeping the last one), and makes no approval call
// without autoApprove.
func TestAutoApproveReconcile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	obj := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "web", UID: "u1"},
		Spec: v1alpha1.TailscaleServicesSpec{VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:web", Ports: []string{"tcp:80"}, AutoApprove: new(true)},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "sim"}}}
	client := fake.NewSimpleClientset()
	if _, err := client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	api := &hostsAPI{memoryAPI: &memoryAPI{svcs: map[string]tailnet.Service{}}, hosts: []tailnet.ServiceHost{
		{NodeID: "nA", Configured: true}, {NodeID: "nB", Configured: true}, {NodeID: "nForeign", Configured: true},
		{NodeID: "nOtherNS", Configured: true},
	}}
	hosts := &fakeHosts{hosts: map[string]proxyhosts.Host{
		"nA": {Pod: "vip/web-proxy-0", Namespace: "vip", Services: []string{"web"}, Ready: true},
		"nB": {Pod: "vip/web-proxy-1", Namespace: "vip", Services: []string{"web"}, Ready: true},
		// Our proxy, but of another namespace's object: not approved on this object's behalf.
		"nOtherNS": {Pod: "other/web-proxy-0", Namespace: "other", Services: []string{"web"}, Ready: true},
	}}
	c, err := New(client, factory, Options{OperatorID: "op", Tailnets: hostsTailnet{api}, Recorder: record.NewFakeRecorder(100), Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	sync := func() *v1alpha1.TailscaleServices {
		t.Helper()
		if err := c.sync(ctx, "vip/web"); err != nil {
			t.Fatal(err)
		}
		o, err := client.GatewayV1alpha1().TailscaleServices("vip").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	cond := func(o *v1alpha1.TailscaleServices) metav1.Condition {
		t.Helper()
		c := meta.FindStatusCondition(o.Status.Conditions, ConditionHostsApproved)
		if c == nil {
			t.Fatalf("no %s condition: %+v", ConditionHostsApproved, o.Status.Conditions)
		}
		return *c
	}

	o := sync()
	if got := api.takeCalls(); !slices.Equal(got, []string{"nA=true", "nB=true"}) {
		t.Fatalf("approval calls %v, want nA and nB approved only", got)
	}
	if c := cond(o); c.Status != metav1.ConditionTrue || c.Reason != ReasonHostsApproved {
		t.Errorf("HostsApproved %+v", c)
	}
	if sync(); len(api.takeCalls()) != 0 {
		t.Error("a steady state made approval calls")
	}

	hosts.set("nB", proxyhosts.Host{Pod: "vip/web-proxy-1", Namespace: "vip", Services: []string{"web"}, Reason: "its pod is not Ready"})
	o = sync()
	if got := api.takeCalls(); !slices.Equal(got, []string{"nB=false"}) {
		t.Fatalf("after web-proxy-1 turned unready: calls %v, want nB withdrawn", got)
	}
	if c := cond(o); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "withdrawn: vip/web-proxy-1") {
		t.Errorf("HostsApproved %+v", c)
	}

	hosts.set("nA", proxyhosts.Host{Pod: "vip/web-proxy-0", Namespace: "vip", Services: []string{"web"}, Reason: "its pod is gone"})
	o = sync()
	if got := api.takeCalls(); len(got) != 0 {
		t.Fatalf("the last approved host was withdrawn: calls %v", got)
	}
	if c := cond(o); c.Status != metav1.ConditionFalse || c.Reason != ReasonNoReadyHost {
		t.Errorf("HostsApproved %+v", c)
	}

	hosts.set("nB", proxyhosts.Host{Pod: "vip/web-proxy-1", Namespace: "vip", Services: []string{"web"}, Ready: true})
	sync()
	if got := api.takeCalls(); !slices.Equal(got, []string{"nB=true", "nA=false"}) {
		t.Fatalf("web-proxy-1 Ready again: calls %v, want nB approved, then nA withdrawn", got)
	}

	o.Spec.VIPService.AutoApprove = new(false)
	if _, err := client.GatewayV1alpha1().TailscaleServices("vip").Update(ctx, o, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	hosts.set("nA", proxyhosts.Host{Pod: "vip/web-proxy-0", Namespace: "vip", Services: []string{"web"}, Ready: true})
	for {
		if cur, err := c.services.TailscaleServices("vip").Get("web"); err == nil && !autoApprove(cur) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the informer never saw autoApprove false")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if o = sync(); len(api.takeCalls()) != 0 {
		t.Error("autoApprove false made approval calls")
	}
	if meta.FindStatusCondition(o.Status.Conditions, ConditionHostsApproved) != nil {
		t.Error("HostsApproved remains without autoApprove")
	}
}
