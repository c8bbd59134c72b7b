package integration

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

func startLiveServer(t *testing.T) (*framework.Server, *framework.ScriptedCollector) {
	collector := &framework.ScriptedCollector{
		Tailnets: map[string]livestatus.Tailnet{"company.ts.net": {
			Name: "company.ts.net", Synced: true, LastSync: time.Now(),
			Devices: []livestatus.Device{
				{Name: "api-server.company.ts.net", Addresses: []string{"100.64.0.10"}, Online: true, LastSeen: time.Now()},
				{Name: "postgres.company.ts.net", Addresses: []string{"100.64.0.11"}, Online: true, LastSeen: time.Now()},
			},
		}},
	}
	s := framework.Start(t, "", func(o *server.Options) { o.Collector = collector })
	return s, collector
}

func liveEndpoints(ns string) *v1alpha1.TailscaleEndpoints {
	obj := objects.Endpoints(ns, "live")
	obj.Spec.Endpoints = obj.Spec.Endpoints[:2] // api-server (probed) and postgres (device state only)
	return obj
}

// waitForEvent returns the first event on w whose object satisfies match.
func waitForEvent(t *testing.T, w watch.Interface, match func(*v1alpha1.TailscaleEndpoints) bool) *v1alpha1.TailscaleEndpoints {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed")
			}
			if o, isEndpoints := ev.Object.(*v1alpha1.TailscaleEndpoints); isEndpoints && match(o) {
				return o
			}
		case <-timeout:
			t.Fatal("no matching watch event within a minute")
		}
	}
}

func endpointStatus(o *v1alpha1.TailscaleEndpoints, name string) v1alpha1.EndpointStatus {
	for _, e := range o.Status.Endpoints {
		if e.Name == name {
			return e
		}
	}
	return v1alpha1.EndpointStatus{}
}

func TestLiveStatusOnReadWatchAndTransitions(t *testing.T) {
	s, collector := startLiveServer(t)
	c := s.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("live")
	_, err := c.Create(ctx(t), liveEndpoints("live"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	collector.SetProbe("live", "live", "api-server", livestatus.Probe{Status: livestatus.Healthy, LastChecked: time.Now(), Latency: 2 * time.Millisecond})

	// GET carries live state, including fields computed on read only.
	got, err := c.Get(ctx(t), "live", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	api, pg := endpointStatus(got, "api-server"), endpointStatus(got, "postgres")
	if api.Status != livestatus.Healthy || api.Latency == nil || !*api.Online || pg.Status != livestatus.Healthy || got.Status.HealthyEndpoints != 2 {
		t.Fatalf("live status on GET: %+v", got.Status)
	}
	out := kubectlAt(t, s, "get", "tsep", "-n", "live", "live")
	if !strings.Contains(out, "company.ts.net   2           2") {
		t.Fatalf("kubectl get shows no live HEALTHY count:\n%s", out)
	}

	// The writer persists the healthy state; watch from there.
	healthy := waitForStored(t, s, "live", "live", func(o *v1alpha1.TailscaleEndpoints) bool { return o.Status.HealthyEndpoints == 2 })
	w, err := c.Watch(ctx(t), metav1.ListOptions{ResourceVersion: healthy.ResourceVersion, FieldSelector: "metadata.name=live"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	// healthy -> unhealthy reaches the watcher as an event with a new resourceVersion.
	start := time.Now()
	collector.SetProbe("live", "live", "api-server", livestatus.Probe{Status: livestatus.Unhealthy, LastChecked: time.Now(), Error: "HTTP 500"})
	ev := waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool {
		return endpointStatus(o, "api-server").Status == livestatus.Unhealthy
	})
	t.Logf("health transition reached the watcher after %s", time.Since(start))
	if ev.ResourceVersion == healthy.ResourceVersion || ev.Status.HealthyEndpoints != 1 || endpointStatus(ev, "api-server").Error != "HTTP 500" {
		t.Fatalf("transition event: rv %s (was %s) status %+v", ev.ResourceVersion, healthy.ResourceVersion, ev.Status)
	}

	// online -> offline likewise.
	collector.SetOnline("company.ts.net", "postgres.company.ts.net", false)
	ev = waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool {
		e := endpointStatus(o, "postgres")
		return e.Online != nil && !*e.Online
	})
	if endpointStatus(ev, "postgres").Status != livestatus.Unhealthy {
		t.Fatalf("offline device: %+v", ev.Status)
	}
}

func TestInformerReconnectingSeesTransition(t *testing.T) {
	s, collector := startLiveServer(t)
	c := s.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("reconnect")
	if _, err := c.Create(ctx(t), liveEndpoints("reconnect"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	collector.SetProbe("reconnect", "live", "api-server", livestatus.Probe{Status: livestatus.Healthy, LastChecked: time.Now()})
	last := waitForStored(t, s, "reconnect", "live", func(o *v1alpha1.TailscaleEndpoints) bool { return o.Status.HealthyEndpoints == 2 })

	// The "informer" is disconnected while the endpoint turns unhealthy.
	collector.SetProbe("reconnect", "live", "api-server", livestatus.Probe{Status: livestatus.Unhealthy, LastChecked: time.Now()})
	waitForStored(t, s, "reconnect", "live", func(o *v1alpha1.TailscaleEndpoints) bool { return o.Status.HealthyEndpoints == 1 })

	// Reconnecting from its last resourceVersion, it receives the transition.
	w, err := c.Watch(ctx(t), metav1.ListOptions{ResourceVersion: last.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool {
		return endpointStatus(o, "api-server").Status == livestatus.Unhealthy
	})
}

// Live status is part of readiness: its post-start hook, which returns once the collector's and
// status writer's informers have synced, is a named /readyz check.
func TestReadinessIncludesLiveStatus(t *testing.T) {
	s, _ := startLiveServer(t)
	out, err := s.Clientset(t).Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "").DoRaw(ctx(t))
	if err != nil {
		t.Fatalf("readyz: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "[+]poststarthook/tailscale-gateway-live-status ok") {
		t.Fatalf("readyz lacks the live-status check:\n%s", out)
	}
}

// The state an object has when it is created (here: its device online, no probe) is persisted
// too, although every read of it, the server's own informers' aside, already shows it live.
func TestStateAtCreationIsPersisted(t *testing.T) {
	s, _ := startLiveServer(t)
	obj := liveEndpoints("initial")
	obj.Spec.Endpoints = obj.Spec.Endpoints[1:] // postgres: device state only
	if _, err := s.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("initial").Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stored := waitForStored(t, s, "initial", "live", func(o *v1alpha1.TailscaleEndpoints) bool {
		e := endpointStatus(o, "postgres")
		return e.Online != nil && *e.Online && e.Status == livestatus.Healthy && o.Status.HealthyEndpoints == 1
	})
	// The writer's informer holds no managed fields; its status update keeps the stored ones.
	var managers []string
	for _, m := range stored.ManagedFields {
		managers = append(managers, m.Manager+"/"+m.Subresource)
	}
	if len(managers) != 2 || managers[1] != "tailscale-gateway-status/status" {
		t.Fatalf("stored managed fields: %v, want the creator's and tailscale-gateway-status/status", managers)
	}
}

func TestLiveFieldsAreNeverPersisted(t *testing.T) {
	s, collector := startLiveServer(t)
	c := s.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("persist")
	if _, err := c.Create(ctx(t), liveEndpoints("persist"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	collector.SetProbe("persist", "live", "api-server", livestatus.Probe{Status: livestatus.Healthy, LastChecked: time.Now(), Latency: time.Millisecond})
	waitForStored(t, s, "persist", "live", func(o *v1alpha1.TailscaleEndpoints) bool { return o.Status.HealthyEndpoints == 2 })
	got, err := c.Get(ctx(t), "live", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if endpointStatus(got, "api-server").Latency == nil {
		t.Fatal("GET lacks the live latency")
	}

	// A client writing back what it read, through the resource and through the status subresource.
	got.Labels["touched"] = "yes"
	updated, err := c.Update(ctx(t), got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateStatus(ctx(t), updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	raw, _ := storedJSON(t, s, "/registry/gateway.tailscale.com/gateway.tailscale.com/tailscaleendpoints/persist/live")
	for _, liveOnly := range []string{`"latency"`, `"lastChecked"`, `"lastSeen"`} {
		if strings.Contains(raw, liveOnly) {
			t.Errorf("etcd holds live-only field %s: %s", liveOnly, raw)
		}
	}
	if !strings.Contains(raw, `"status":"Healthy"`) {
		t.Errorf("etcd lacks the persisted transition state: %s", raw)
	}
}

// waitForStored polls etcd until the stored object satisfies match, and returns it with its
// resourceVersion.
func waitForStored(t *testing.T, s *framework.Server, namespace, name string, match func(*v1alpha1.TailscaleEndpoints) bool) *v1alpha1.TailscaleEndpoints {
	t.Helper()
	var got *v1alpha1.TailscaleEndpoints
	err := wait.PollUntilContextTimeout(ctx(t), 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		got = storedEndpoints(t, s, namespace, name)
		return match(got), nil
	})
	if err != nil {
		t.Fatalf("waiting for stored status: %v (last %+v)", err, got.Status)
	}
	return got
}

// storedEndpoints reads a TailscaleEndpoints straight from etcd, bypassing the server.
func storedEndpoints(t *testing.T, s *framework.Server, namespace, name string) *v1alpha1.TailscaleEndpoints {
	t.Helper()
	raw, rev := storedJSON(t, s, "/registry/gateway.tailscale.com/gateway.tailscale.com/tailscaleendpoints/"+namespace+"/"+name)
	obj := &v1alpha1.TailscaleEndpoints{}
	if err := json.Unmarshal([]byte(raw), obj); err != nil {
		t.Fatalf("decoding stored object: %v", err)
	}
	obj.ResourceVersion = strconv.FormatInt(rev, 10)
	return obj
}

// storedJSON reads an object's bytes and modification revision straight from etcd.
func storedJSON(t *testing.T, s *framework.Server, key string) (string, int64) {
	t.Helper()
	client, err := s.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	resp, err := client.Get(ctx(t), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading %s from etcd: %v", key, err)
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
}

func kubectlAt(t *testing.T, s *framework.Server, args ...string) string {
	t.Helper()
	out, err := s.Kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}
