package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/statuswriter"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// health is what a TailscaleEndpoints says of each endpoint, by name.
func health(o *v1alpha1.TailscaleEndpoints) map[string]string {
	out := map[string]string{}
	for _, e := range o.Status.Endpoints {
		out[e.Name] = e.Status
	}
	return out
}

// endpointEvent reports whether ns has an Event of reason about endpoint of TailscaleEndpoints
// name.
func endpointEvent(c context.Context, ns, name, reason, endpoint string) (bool, error) {
	evs, err := env.Kube.CoreV1().Events(ns).List(c, metav1.ListOptions{})
	if err != nil {
		return false, nil // kube-apiserver may still be starting
	}
	return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
		return e.Reason == reason && e.InvolvedObject.Kind == "TailscaleEndpoints" && e.InvolvedObject.Name == name &&
			strings.HasPrefix(e.Message, "Endpoint "+endpoint+" ")
	}), nil
}

// TestKubeAPIServerRestart stops kube-apiserver for longer than the controllers' Lease (15 s)
// and starts it again on the same port, etcd and certificates. One device goes offline at once,
// while the server still leads, and another after the server lost the Lease (so no replica
// polls). After the restart: the APIService is Available, kubectl works, the served and
// persisted status has both transitions, an Event exists for each, a watch re-opened through
// kube-apiserver from the last resourceVersion the watch opened before the restart saw gets
// both transitions in order (the aggregated server's history is continuous), the controllers
// lead again (published EndpointSlices follow the health), and the server's informers of the
// core API resume (a namespace relabelled after the restart is refused by tenancy admission and
// its object's Accepted condition turns False). The times to each are logged; docs/development.md records
// them.
func TestKubeAPIServerRestart(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	sim, _ := startSimWith(t, "e2e-kas", tailnetsim.Options{})
	db, err := sim.AddVirtualDevice("kas-db")
	if err != nil {
		t.Fatal(err)
	}
	web, err := sim.AddVirtualDevice("kas-web")
	if err != nil {
		t.Fatal(err)
	}

	// The suite's replica is replaced, on its address, by one polling every second.
	replica := replaceSuiteReplica(t, "--tailnet-poll-interval=1s", "--tailnet-control-url="+sim.ControlURL(), "--tsnet-state-dir="+t.TempDir())
	direct := gateway(t, directTo(replica.Addr))
	api := viaKube(t)

	ns := newNamespace(t, "kas-restart")
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-kas", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "db", TailscaleIP: db.IPv4.String(), TailscaleFQDN: db.FQDN, Port: 5432, Protocol: v1alpha1.ProtocolTCP},
			{Name: "web", TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN, Port: 5432, Protocol: v1alpha1.ProtocolTCP},
		}}}
	eps := api.TailscaleEndpoints(ns)
	if _, err := eps.Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	healthy := map[string]string{"db": livestatus.Healthy, "web": livestatus.Healthy}
	eventually(t, "both endpoints healthy", func(c context.Context) (bool, error) {
		o, err := eps.Get(c, "backends", metav1.GetOptions{})
		return err == nil && fmt.Sprint(health(o)) == fmt.Sprint(healthy), nil
	})
	service := publish.ServiceName(publish.KindEndpoints, "backends")
	dbPort, webPort := recordedPort(t, viaKube(t), ns, "backends", "db", 5432), recordedPort(t, viaKube(t), ns, "backends", "web", 5432)
	eventually(t, "the published EndpointSlices, ready", func(c context.Context) (bool, error) {
		got, err := slicesReady(c, ns, service)
		return err == nil && len(got) == 2 && got[dbPort] && got[webPort], nil
	})

	// Tenancy: a tailnet admitting namespaces labelled kas-restart=yes, and an object in one.
	tn := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "e2e-kas-tenancy"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "kas-tenancy.ts.net", AllowedNamespaces: &v1alpha1.AllowedNamespaces{
			From: v1alpha1.NamespacesFromSelector, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"kas-restart": "yes"}}}}}
	if _, err := api.TailscaleTailnets().Create(ctx(t), tn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = viaKube(t).TailscaleTailnets().Delete(context.Background(), tn.Name, metav1.DeleteOptions{})
	})
	tenant := newNamespace(t, "kas-tenant")
	relabel := func(value string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{"kas-restart":%q}}}`, value)
		if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx(t), tenant, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	relabel("yes")
	tenantObj := objects.Endpoints(tenant, "web")
	tenantObj.Spec.Tailnet = tn.Name
	eventually(t, "an object admitted in the labelled namespace", func(c context.Context) (bool, error) {
		_, err := api.TailscaleEndpoints(tenant).Create(c, tenantObj, metav1.CreateOptions{})
		return err == nil, nil
	})
	accepted := func(c context.Context) (*metav1.Condition, error) {
		o, err := api.TailscaleEndpoints(tenant).Get(c, "web", metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return meta.FindStatusCondition(o.Status.Conditions, tenancy.ConditionAccepted), nil
	}
	eventually(t, "Accepted=True", func(c context.Context) (bool, error) {
		a, err := accepted(c)
		return err == nil && a != nil && a.Status == metav1.ConditionTrue, nil
	})

	// A watch through kube-apiserver, opened before the restart at the list's resourceVersion.
	list, err := eps.List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lastRV := list.ResourceVersion
	before, err := eps.Watch(ctx(t), metav1.ListOptions{ResourceVersion: lastRV})
	if err != nil {
		t.Fatal(err)
	}
	defer before.Stop()
	// seen are the distinct health states the watches went through, from the one at the list's
	// resourceVersion, and rvs the resourceVersions at which they did; record adds what an event
	// says.
	seen := []map[string]string{healthy}
	var rvs []uint64
	record := func(o *v1alpha1.TailscaleEndpoints) {
		lastRV = o.ResourceVersion
		if h := health(o); fmt.Sprint(h) != fmt.Sprint(seen[len(seen)-1]) { // else a write of other fields
			rv, err := strconv.ParseUint(o.ResourceVersion, 10, 64)
			if err != nil {
				t.Errorf("resourceVersion %q: %v", o.ResourceVersion, err)
			}
			seen, rvs = append(seen, h), append(rvs, rv)
		}
	}
	// The watch opened before runs until kube-apiserver's process exits (it keeps proxied
	// watches open until its shutdown timeout); only then are seen and lastRV read again.
	beforeDone := make(chan struct{})
	beforeEvents := 0
	go func() {
		defer close(beforeDone)
		for ev := range before.ResultChan() {
			if o, ok := ev.Object.(*v1alpha1.TailscaleEndpoints); ok && ev.Type == watch.Modified {
				beforeEvents++
				record(o)
			}
		}
	}()

	// kube-apiserver goes. One device goes offline at once, while the server leads: the status
	// writer persists it into the server's own etcd, and the server serves it directly.
	leases := env.Kube.CoordinationV1().Leases(framework.Namespace)
	lease, err := leases.Get(ctx(t), "tailscale-gateway-controllers", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := env.StartKubeAPIServer(); err != nil {
				t.Errorf("starting kube-apiserver again: %v", err)
			}
		}
	})
	stopped := time.Now()
	if err := env.StopKubeAPIServer(); err != nil {
		t.Fatal(err)
	}
	sim.SetAPIOnline("kas-db", false)
	eventually(t, "the server to serve db unhealthy while kube-apiserver is down", func(c context.Context) (bool, error) {
		o, err := direct.TailscaleEndpoints(ns).Get(c, "backends", metav1.GetOptions{})
		return err == nil && health(o)["db"] == livestatus.Unhealthy, nil
	})
	// kube-apiserver stays down past the Lease duration: the server no longer leads, and no
	// replica polls. The fault's length, not a wait for a result.
	eventually(t, "the controllers' Lease duration to pass", func(context.Context) (bool, error) {
		return time.Since(stopped) > 20*time.Second, nil
	})
	// Served (and persisted, by the shard's owner) as last-known state, no longer as in sync.
	eventually(t, "TailnetSynced=False (NotPolled) while no replica polls", func(c context.Context) (bool, error) {
		o, err := direct.TailscaleEndpoints(ns).Get(c, "backends", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		s := meta.FindStatusCondition(o.Status.Conditions, livestatus.ConditionTailnetSynced)
		return s != nil && s.Status == metav1.ConditionFalse && s.Reason == tailnet.ReasonNotPolled && health(o)["db"] == livestatus.Unhealthy, nil
	})
	// The second device goes offline with no replica polling.
	sim.SetAPIOnline("kas-web", false)
	polls := sim.APIRequestCount()
	env.WaitForKubeAPIServerExit()
	if n := sim.APIRequestCount() - polls; n != 0 {
		t.Errorf("%d Tailscale API requests while kube-apiserver was down past the Lease: the server still polled (led)", n)
	}

	if err := env.StartKubeAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	select {
	case <-beforeDone:
	case <-time.After(waitTimeout):
		t.Fatal("the watch opened before the restart did not end with kube-apiserver")
	}
	t.Logf("kube-apiserver down (not accepting connections) for %s; the watch opened before delivered %d events, up to resourceVersion %s, health %v",
		back.Sub(stopped).Round(time.Millisecond), beforeEvents, lastRV, seen)
	var (
		tAvailable, tServed, tSlices, tEvents, tTenancy time.Duration
	)
	// The APIService's stored condition may still say Available from before: what counts is a
	// request through kube-apiserver reaching the server.
	eventually(t, "a GET through kube-apiserver", func(c context.Context) (bool, error) {
		_, err := eps.Get(c, "backends", metav1.GetOptions{})
		return err == nil, nil
	})
	tAvailable = time.Since(back)
	if err := env.WaitForAPIService(ctx(t), apiregistrationv1.ConditionTrue); err != nil {
		t.Fatal(err)
	}
	out := kubectl(t, "get", "tailscaleendpoints", "-n", ns, "backends")
	if !strings.Contains(out, "backends") {
		t.Fatalf("kubectl get after the restart:\n%s", out)
	}

	// Re-opened from the last resourceVersion seen: both transitions, in order, nothing skipped.
	after, err := eps.Watch(ctx(t), metav1.ListOptions{ResourceVersion: lastRV})
	if err != nil {
		t.Fatalf("watch from resourceVersion %s after the restart: %v", lastRV, err)
	}
	defer after.Stop()
	expect := func(what string, want map[string]string) *v1alpha1.TailscaleEndpoints {
		t.Helper()
		var got *v1alpha1.TailscaleEndpoints
		if fmt.Sprint(seen[len(seen)-1]) != fmt.Sprint(want) {
			waitEvent(t, after, func(ev watch.Event) bool {
				o, ok := ev.Object.(*v1alpha1.TailscaleEndpoints)
				if !ok || ev.Type != watch.Modified || o.Name != "backends" {
					return false
				}
				record(o)
				got = o
				return fmt.Sprint(seen[len(seen)-1]) == fmt.Sprint(want)
			})
		}
		t.Logf("%s: %v at resourceVersion %d", what, want, rvs[len(rvs)-1])
		return got
	}
	expect("db offline while kube-apiserver was down", map[string]string{"db": livestatus.Unhealthy, "web": livestatus.Healthy})
	expect("web offline while no replica led", map[string]string{"db": livestatus.Unhealthy, "web": livestatus.Unhealthy})
	tServed = time.Since(back)
	if len(seen) != 3 {
		t.Errorf("the watches went through %v, want exactly the two transitions", seen)
	}
	// A fresh list agrees with the watch.
	fresh, err := eps.Get(ctx(t), "backends", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := health(fresh); h["db"] != livestatus.Unhealthy || h["web"] != livestatus.Unhealthy {
		t.Errorf("GET after the restart: %v", h)
	}
	if s := meta.FindStatusCondition(fresh.Status.Conditions, livestatus.ConditionTailnetSynced); s == nil || s.Status != metav1.ConditionTrue {
		t.Errorf("TailnetSynced after the restart: %+v", s)
	}
	if f, err := strconv.ParseUint(fresh.ResourceVersion, 10, 64); err != nil || f < rvs[len(rvs)-1] {
		t.Errorf("GET returned resourceVersion %s, older than the watch's last transition %d (%v)", fresh.ResourceVersion, rvs[len(rvs)-1], err)
	}

	// Events for both transitions reach the core API (recorded while it was down, or after).
	for _, e := range []string{"db", "web"} {
		eventually(t, "an EndpointUnhealthy Event for "+e, func(c context.Context) (bool, error) {
			return endpointEvent(c, ns, "backends", statuswriter.ReasonEndpointUnhealthy, e)
		})
	}
	tEvents = time.Since(back)
	// The controllers lead again: the published EndpointSlices follow.
	eventually(t, "the published EndpointSlices, not ready", func(c context.Context) (bool, error) {
		got, err := slicesReady(c, ns, service)
		return err == nil && len(got) == 2 && !got[dbPort] && !got[webPort], nil
	})
	tSlices = time.Since(back)
	// The server, which lost the controllers' Lease during the outage (it stopped polling, as
	// checked above), holds it again: the same holder renews it. (Its leaseTransitions stay: the
	// holder's last observation was its own term.)
	eventually(t, "the controllers' Lease renewed by the same holder", func(c context.Context) (bool, error) {
		l, err := leases.Get(c, "tailscale-gateway-controllers", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == *lease.Spec.HolderIdentity &&
			l.Spec.RenewTime != nil && l.Spec.RenewTime.After(back), nil
	})

	// The server's informers of the core API resumed: a relabelled namespace is refused and its
	// object's Accepted condition turns False (the informer holds the namespace, so admission
	// does not read it from the API).
	relabel("no")
	refused := objects.Endpoints(tenant, "refused")
	refused.Spec.Tailnet = tn.Name
	eventually(t, "tenancy admission to refuse the relabelled namespace", func(c context.Context) (bool, error) {
		_, err := api.TailscaleEndpoints(tenant).Create(c, refused, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsInvalid(err) && strings.Contains(err.Error(), "does not admit namespace "+tenant), nil
	})
	eventually(t, "Accepted=False on the relabelled namespace's object", func(c context.Context) (bool, error) {
		a, err := accepted(c)
		return err == nil && a != nil && a.Status == metav1.ConditionFalse, nil
	})
	tTenancy = time.Since(back)

	// Both devices back: the same watch gets the recovery, with Events.
	sim.ClearAPIOnline("kas-db")
	sim.ClearAPIOnline("kas-web")
	expect("both back", healthy)
	first, err := strconv.ParseUint(list.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(rvs) || len(rvs) == 0 || rvs[0] <= first {
		t.Errorf("resourceVersions of the transitions %v, after %d: want increasing", rvs, first)
	}
	for _, e := range []string{"db", "web"} {
		eventually(t, "an EndpointHealthy Event for "+e, func(c context.Context) (bool, error) {
			return endpointEvent(c, ns, "backends", statuswriter.ReasonEndpointHealthy, e)
		})
	}
	eventually(t, "the published EndpointSlices, ready again", func(c context.Context) (bool, error) {
		got, err := slicesReady(c, ns, service)
		return err == nil && len(got) == 2 && got[dbPort] && got[webPort], nil
	})
	t.Logf("after kube-apiserver was ready again: first GET through it in %s, both transitions through kube-apiserver in %s, "+
		"their Events in %s, EndpointSlices updated by the controllers in %s, tenancy informer caught up in %s",
		tAvailable.Round(time.Millisecond), tServed.Round(time.Millisecond), tEvents.Round(time.Millisecond),
		tSlices.Round(time.Millisecond), tTenancy.Round(time.Millisecond))
}
