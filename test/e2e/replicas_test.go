package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	gatewayv1alpha1 "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/typed/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/replicas"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// probeCounts accumulates a device's health requests by probe tag and source (a replica's
// prober node).
type probeCounts map[string]map[netip.Addr]int

// collect adds the requests the device received since the last collect.
func (p probeCounts) collect(t *testing.T, sim *tailnetsim.Tailnet, device string) {
	t.Helper()
	got, err := sim.HealthRequests(device)
	if err != nil {
		t.Fatal(err)
	}
	for tag, bySource := range got {
		if p[tag] == nil {
			p[tag] = map[netip.Addr]int{}
		}
		for src, n := range bySource {
			p[tag][src] += n
		}
	}
}

// each reports whether every tag has at least n requests.
func (p probeCounts) each(tags []string, n int) bool {
	for _, tag := range tags {
		total := 0
		for _, c := range p[tag] {
			total += c
		}
		if total < n {
			return false
		}
	}
	return true
}

// TestReplicasShareProbes runs a second replica beside the first on one etcd: each
// TailscaleEndpoints is probed by exactly one of them (its member Lease's shard), both together
// probe every object, a health transition in either shard is persisted and served by both, and
// when the second replica stops the first probes everything again.
func TestReplicasShareProbes(t *testing.T) {
	const device = "shard-web"
	sim, _ := startSimWith(t, "e2e-shard", tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{
		{Hostname: device, HTTPPort: 8080}}})
	dev, err := sim.Device(device)
	if err != nil {
		t.Fatal(err)
	}
	// Both replicas' prober nodes join the simulated tailnet: the suite's replica is replaced,
	// on its address, by one with the simulator's control server, and restarted afterwards.
	control := "--tailnet-control-url=" + sim.ControlURL()
	const pollInterval = time.Second
	poll := "--tailnet-poll-interval=" + pollInterval.String()
	replaceSuiteReplica(t, control, poll, "--tsnet-state-dir="+t.TempDir())
	second, err := env.StartGateway("127.0.0.1:0", control, poll, "--tsnet-state-dir="+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = second.Stop()
		}
	})
	leases := env.Kube.CoordinationV1().Leases(framework.Namespace)
	group := labels.SelectorFromSet(labels.Set{replicas.GroupLabel: "tailscale-gateway-controllers"}).String()
	var members []string
	eventually(t, "two member Leases", func(c context.Context) (bool, error) {
		list, err := leases.List(c, metav1.ListOptions{LabelSelector: group})
		if err != nil {
			return false, err
		}
		members = members[:0]
		for _, l := range list.Items {
			members = append(members, *l.Spec.HolderIdentity)
		}
		return len(members) == 2, nil
	})

	ns := newNamespace(t, "shard")
	const objects = 12
	var tags []string
	owners := map[string]string{}
	enabled := true
	for i := range objects {
		name := fmt.Sprintf("web-%d", i)
		tags = append(tags, ns+"/"+name)
		owners[ns+"/"+name] = replicas.Owner(members, ns+"/"+name)
		obj := &v1alpha1.TailscaleEndpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-shard", Endpoints: []v1alpha1.TailscaleEndpoint{{
				Name: "http", TailscaleIP: dev.IPv4.String(), TailscaleFQDN: dev.FQDN, Port: 8080, Protocol: v1alpha1.ProtocolHTTP,
				HealthCheck: &v1alpha1.HealthCheckConfig{Enabled: &enabled, Type: v1alpha1.ProtocolHTTP, Path: tailnetsim.DefaultHealthPath,
					Interval: &metav1.Duration{Duration: 2 * time.Second}, Timeout: &metav1.Duration{Duration: time.Second},
					HealthyThreshold: ptrTo(int32(1)), UnhealthyThreshold: ptrTo(int32(1)),
					Headers: map[string]string{tailnetsim.ProbeTagHeader: ns + "/" + name}},
			}}},
		}
		if _, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if byOwner := slices.Compact(slices.Sorted(maps.Values(owners))); len(byOwner) != 2 {
		t.Fatalf("all %d objects hash to %v; pick other names", objects, byOwner)
	}

	// Wait for every object to be probed twice (the shards settle meanwhile), then count afresh.
	counts := probeCounts{}
	waitProbes := func(what string, n int) {
		t.Helper()
		eventually(t, what, func(context.Context) (bool, error) {
			counts.collect(t, sim, device)
			return counts.each(tags, n), nil
		})
	}
	waitProbes("every object probed", 2)
	counts = probeCounts{}
	counts.collect(t, sim, device)
	counts = probeCounts{}
	waitProbes("every object probed three more times", 3)
	sources := map[netip.Addr]string{} // prober node -> member owning its objects
	for _, tag := range tags {
		if len(counts[tag]) != 1 {
			t.Fatalf("%s probed from %v; want one replica", tag, counts[tag])
		}
		for src := range counts[tag] {
			if m, ok := sources[src]; ok && m != owners[tag] {
				t.Fatalf("prober %s probes objects of %s and of %s", src, m, owners[tag])
			}
			sources[src] = owners[tag]
		}
	}
	if len(sources) != 2 {
		t.Fatalf("probes came from %v; want both replicas", sources)
	}

	// One replica polls the Tailscale API; the other serves the tailnet it imports. Polls come
	// one interval (±10% jitter) apart: six device listings take at least 5 intervals less
	// jitter, where two pollers would take half as long. (Load only makes them slower.)
	listings := func() int64 { return sim.APIRequestCounts()["GET /api/v2/tailnet/{tailnet}/devices"] }
	start, from := time.Now(), listings()
	eventually(t, "six more device listings", func(context.Context) (bool, error) { return listings() >= from+6, nil })
	if took := time.Since(start); took < 5*pollInterval*9/10-pollInterval/2 {
		t.Fatalf("six device listings in %s with polls every %s: more than one replica polls", took, pollInterval)
	}
	eventually(t, "the second replica to serve the tailnet's devices", func(c context.Context) (bool, error) {
		tn, err := gateway(t, directTo(second.Addr)).TailscaleTailnets().Get(c, "e2e-shard", metav1.GetOptions{})
		return err == nil && tn.Status.DeviceCount >= 1 && tn.Status.LastSyncTime != nil &&
			time.Since(tn.Status.LastSyncTime.Time) < 10*pollInterval, err
	})

	// A transition in each shard is persisted and served by both replicas.
	if err := sim.SetHTTPStatus(device, 503); err != nil {
		t.Fatal(err)
	}
	for _, client := range []gatewayv1alpha1.GatewayV1alpha1Interface{viaKube(t), gateway(t, directTo(second.Addr))} {
		eventually(t, "every object unhealthy", func(c context.Context) (bool, error) {
			list, err := client.TailscaleEndpoints(ns).List(c, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, o := range list.Items {
				if len(o.Status.Endpoints) != 1 || o.Status.Endpoints[0].Status != "Unhealthy" {
					return false, nil
				}
			}
			return len(list.Items) == objects, nil
		})
	}
	if err := sim.SetHTTPStatus(device, 200); err != nil {
		t.Fatal(err)
	}

	// The second replica stops (its member Lease deleted): the first probes everything.
	stopped = true
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one member Lease", func(c context.Context) (bool, error) {
		list, err := leases.List(c, metav1.ListOptions{LabelSelector: group})
		return err == nil && len(list.Items) == 1, err
	})
	counts = probeCounts{}
	waitProbes("every object probed after the second replica left", 2)
	counts = probeCounts{}
	counts.collect(t, sim, device)
	counts = probeCounts{}
	waitProbes("every object probed by the remaining replica", 3)
	var remaining []netip.Addr
	for _, tag := range tags {
		for src := range counts[tag] {
			if !slices.Contains(remaining, src) {
				remaining = append(remaining, src)
			}
		}
	}
	if len(remaining) != 1 {
		t.Fatalf("after the second replica left, probes came from %v", remaining)
	}
}
