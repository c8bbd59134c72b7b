package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/replicas"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// TestReplicaKilledMidProbeRound runs three replicas as processes of the server binary on one
// etcd, probing one simulated device for 30 TailscaleEndpoints (every 2 s each), and kills
// the one holding the controllers' Lease with SIGKILL, so it cannot delete its member Lease.
// Each of its objects must then be probed by the survivor rendezvous hashing gives it to, within
// one lease duration plus the observer's bound: a survivor first saw the victim's last renewal
// up to one retry period after it was written, judges expiry by its own clock on its next
// refresh (one more retry period), and spreads the first probe of a new target over one probe
// interval. The survivors keep their own objects, nobody probes an object twice, the victim's
// Lease is still there (so the takeover came from its expiry), and a survivor polls the
// Tailscale API in its place.
func TestReplicaKilledMidProbeRound(t *testing.T) {
	const (
		device        = "kill-web"
		objects       = 30
		probeInterval = 2 * time.Second
		leaseDuration = 15 * time.Second
		retryPeriod   = 2 * time.Second
		// loadSlack covers scheduling delays of a loaded two-core machine: API calls of the
		// refresh, the collector's resharding, the probe's WireGuard round trip.
		loadSlack = 5 * time.Second
	)
	sim, _ := startSimWith(t, "e2e-kill", tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{
		{Hostname: device, HTTPPort: 8080}}})
	dev, err := sim.Device(device)
	if err != nil {
		t.Fatal(err)
	}

	// The suite's in-process replica makes way for three processes with the simulator's control
	// server; it is restarted afterwards.
	stopSuiteReplica(t)
	flags := []string{"--tailnet-control-url=" + sim.ControlURL(), "--tailnet-poll-interval=1s",
		"--leader-elect-lease-duration=" + leaseDuration.String(), "--leader-elect-renew-deadline=10s",
		"--leader-elect-retry-period=" + retryPeriod.String()}
	procs := map[string]*framework.GatewayProcess{} // by member identity
	for _, name := range []string{"replica-a", "replica-b", "replica-c"} {
		p, err := env.StartGatewayProcess(name, append(flags, "--tsnet-state-dir="+t.TempDir())...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if p.Exited() == nil {
				if err := p.Stop(); err != nil {
					t.Errorf("stopping %s: %v", name, err)
				}
			}
		})
		var id string
		eventually(t, name+" to share work", func(context.Context) (bool, error) {
			if err := p.Exited(); err != nil {
				return false, err
			}
			id, err = p.MemberIdentity()
			return id != "", err
		})
		procs[id] = p
	}
	// The tailnet goes before the replicas stop, so that the restarted suite replica, which has
	// no way to the simulator's control server, starts no prober node for it.
	t.Cleanup(func() {
		for _, p := range procs {
			if p.Exited() == nil {
				_ = gateway(t, p.Config).TailscaleTailnets().Delete(context.Background(), "e2e-kill", metav1.DeleteOptions{})
				return
			}
		}
	})
	leases := env.Kube.CoordinationV1().Leases(framework.Namespace)
	group := labels.SelectorFromSet(labels.Set{replicas.GroupLabel: "tailscale-gateway-controllers"}).String()
	var members []string
	eventually(t, "three member Leases", func(c context.Context) (bool, error) {
		list, err := leases.List(c, metav1.ListOptions{LabelSelector: group})
		if err != nil {
			return false, err
		}
		members = members[:0]
		for _, l := range list.Items {
			if procs[*l.Spec.HolderIdentity] != nil {
				members = append(members, *l.Spec.HolderIdentity)
			}
		}
		return len(members) == 3, nil
	})
	slices.Sort(members)
	var leader string
	eventually(t, "a leader", func(c context.Context) (bool, error) {
		l, err := leases.Get(c, "tailscale-gateway-controllers", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		leader = *l.Spec.HolderIdentity
		return procs[leader] != nil, nil
	})

	ns := newNamespace(t, "kill")
	first := gateway(t, procs[members[0]].Config)
	var tags []string
	enabled := true
	for i := range objects {
		name := fmt.Sprintf("web-%d", i)
		tags = append(tags, ns+"/"+name)
		obj := &v1alpha1.TailscaleEndpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-kill", Endpoints: []v1alpha1.TailscaleEndpoint{{
				Name: "http", TailscaleIP: dev.IPv4.String(), TailscaleFQDN: dev.FQDN, Port: 8080, Protocol: v1alpha1.ProtocolHTTP,
				HealthCheck: &v1alpha1.HealthCheckConfig{Enabled: &enabled, Type: v1alpha1.ProtocolHTTP, Path: tailnetsim.DefaultHealthPath,
					Interval: &metav1.Duration{Duration: probeInterval}, Timeout: &metav1.Duration{Duration: time.Second},
					HealthyThreshold: ptrTo(int32(1)), UnhealthyThreshold: ptrTo(int32(1)),
					Headers: map[string]string{tailnetsim.ProbeTagHeader: ns + "/" + name}},
			}}},
		}
		if _, err := first.TailscaleEndpoints(ns).Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	owner := func(members []string, tag string) string { return replicas.Owner(members, tag) }
	var victimTags []string
	for _, tag := range tags {
		if owner(members, tag) == leader {
			victimTags = append(victimTags, tag)
		}
	}
	if len(victimTags) == 0 {
		t.Fatalf("the leader %s owns none of %d objects among %v", leader, objects, members)
	}

	// Every object probed by its owner alone; the owners' prober nodes are told apart by the
	// objects they probe.
	counts := probeCounts{}
	waitProbes := func(what string, n int) {
		t.Helper()
		eventually(t, what, func(context.Context) (bool, error) {
			counts.collect(t, sim, device)
			return counts.each(tags, n), nil
		})
	}
	waitProbes("every object probed twice", 2)
	counts = probeCounts{}
	counts.collect(t, sim, device)
	counts = probeCounts{}
	waitProbes("every object probed three more times", 3)
	source := map[string]netip.Addr{} // member -> its prober node's address
	for _, tag := range tags {
		if len(counts[tag]) != 1 {
			t.Fatalf("%s probed from %v; want one replica", tag, counts[tag])
		}
		for src := range counts[tag] {
			m := owner(members, tag)
			if s, ok := source[m]; ok && s != src {
				t.Fatalf("the objects of %s are probed from %s and %s", m, s, src)
			}
			source[m] = src
		}
	}
	member := map[netip.Addr]string{}
	for m, a := range source {
		member[a] = m
	}
	if len(source) != 3 || len(member) != 3 {
		t.Fatalf("prober nodes %v; want one per replica", source)
	}
	listings := func() int64 { return sim.APIRequestCounts()["GET /api/v2/tailnet/{tailnet}/devices"] }

	// SIGKILL the leader while it probes its shard.
	victim := procs[leader]
	survivors := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == leader })
	_, _ = sim.HealthRequests(device)
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	listingsAtKill := listings()

	bound := leaseDuration + 2*retryPeriod + probeInterval + loadSlack
	takenOver := map[string]time.Duration{} // victim's tag -> first probe by its new owner
	deadline := killed.Add(bound)
	// The simulator keeps a record of probes rather than notifying: poll it, bounded by deadline.
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for ; len(takenOver) < len(victimTags); <-poll.C {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the victim's %d objects taken over %s after SIGKILL (bound %s): %v",
				len(takenOver), len(victimTags), time.Since(killed).Round(time.Millisecond), bound, takenOver)
		}
		got, err := sim.HealthRequests(device)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Since(killed)
		for tag, bySource := range got {
			for src := range bySource {
				m, ok := member[src]
				switch {
				case !ok:
					t.Fatalf("%s probed from unknown node %s", tag, src)
				case m == leader && at > time.Second:
					// Probes in flight at the kill may still arrive; later ones may not.
					t.Fatalf("%s probed by the killed replica %s after SIGKILL", tag, at)
				case m != leader && slices.Contains(victimTags, tag):
					if m != owner(survivors, tag) {
						t.Fatalf("%s probed by %s; rendezvous hashing gives it to %s", tag, m, owner(survivors, tag))
					}
					if _, seen := takenOver[tag]; !seen {
						takenOver[tag] = at
					}
				case m != leader && m != owner(members, tag):
					t.Fatalf("%s, of %s, probed by %s before its shard moved", tag, owner(members, tag), m)
				}
			}
		}
	}
	var slowest time.Duration
	for _, d := range takenOver {
		slowest = max(slowest, d)
	}
	t.Logf("the %d objects of the killed replica were probed by the survivors %s after SIGKILL "+
		"(lease duration %s, retry period %s, probe interval %s; bound %s; observed every 100ms)",
		len(victimTags), slowest.Round(10*time.Millisecond), leaseDuration, retryPeriod, probeInterval, bound)

	// Its Lease was not deleted: the shard moved because it expired.
	victimLease := "tailscale-gateway-controllers-" + leader
	if _, err := leases.Get(ctx(t), victimLease, metav1.GetOptions{}); err != nil {
		t.Fatalf("the killed replica's Lease: %v", err)
	}
	// A restarted replica would count it live for one lease duration from first sight.
	t.Cleanup(func() { _ = leases.Delete(context.Background(), victimLease, metav1.DeleteOptions{}) })

	// Afterwards every object is probed by its owner among the survivors alone.
	counts = probeCounts{}
	counts.collect(t, sim, device)
	counts = probeCounts{}
	waitProbes("every object probed three times by the survivors", 3)
	for _, tag := range tags {
		want := source[owner(survivors, tag)]
		if len(counts[tag]) != 1 || counts[tag][want] == 0 {
			t.Fatalf("%s probed from %v; want %s (%s) alone", tag, counts[tag], want, owner(survivors, tag))
		}
	}
	// A survivor took the controllers' Lease and polls the Tailscale API.
	eventually(t, "a survivor to poll the Tailscale API", func(context.Context) (bool, error) {
		return listings() >= listingsAtKill+3, nil
	})
	l, err := leases.Get(ctx(t), "tailscale-gateway-controllers", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := *l.Spec.HolderIdentity; !slices.Contains(survivors, h) {
		t.Fatalf("the controllers' Lease is held by %s; want one of %v", h, survivors)
	}
}
