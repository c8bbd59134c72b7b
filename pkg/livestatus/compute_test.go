package livestatus

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

type fakeSources struct {
	tailnets map[string]Tailnet
	probes   map[string]Probe
	policy   *tenancy.Policy
}

func (f fakeSources) Tenancy() *tenancy.Policy { return f.policy }

func (f fakeSources) Tailnet(ref string) (Tailnet, bool) { t, ok := f.tailnets[ref]; return t, ok }
func (f fakeSources) Probe(key string) (Probe, bool)     { p, ok := f.probes[key]; return p, ok }

type fakeSelector []SelectedEndpoints

func (f fakeSelector) SelectEndpoints(_ string, s labels.Selector) []SelectedEndpoints {
	var out []SelectedEndpoints
	for _, e := range f {
		if s.Matches(labels.Set(e.Labels)) {
			out = append(out, e)
		}
	}
	return out
}

var (
	now      = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	lastSeen = now.Add(-time.Minute)
	enabled  = true
)

func sources() fakeSources {
	return fakeSources{
		tailnets: map[string]Tailnet{"company.ts.net": {
			Name: "company.ts.net", MagicDNSSuffix: "company.ts.net", Synced: true, LastSync: now,
			Devices: []Device{
				{Name: "api.company.ts.net.", Addresses: []string{"100.64.0.10", "fd7a:115c:a1e0::10"}, Online: true, LastSeen: lastSeen},
				{Name: "db.company.ts.net.", Addresses: []string{"100.64.0.11"}, Online: false, LastSeen: lastSeen},
			},
			Services: []Service{{Name: "svc:web", DNSName: "web.company.ts.net", Addrs: []string{"100.100.0.1"}, Tags: []string{"tag:web"},
				Hosts: []ServiceHost{{Device: "n1", Approved: true, Configured: true}}}},
		}},
		probes: map[string]Probe{
			"default/eps/api": {Status: Healthy, LastChecked: now, Latency: 3 * time.Millisecond},
		},
	}
}

func endpointsObject() *gateway.TailscaleEndpoints {
	return &gateway.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "eps", Generation: 3},
		Spec: gateway.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []gateway.TailscaleEndpoint{
			{Name: "api", TailscaleIP: "100.64.0.10", Port: 8080, HealthCheck: &gateway.HealthCheckConfig{Enabled: &enabled}},
			{Name: "db", TailscaleIP: "100.64.0.11", Port: 5432},
			{Name: "gone", TailscaleIP: "100.64.0.99", Port: 80},
		}},
	}
}

func TestEndpointsStatus(t *testing.T) {
	indexed := sources()
	tn := indexed.tailnets["company.ts.net"]
	tn.BuildIndex()
	indexed.tailnets["company.ts.net"] = tn
	for name, src := range map[string]fakeSources{"scan": sources(), "index": indexed} {
		t.Run(name, func(t *testing.T) { testEndpointsStatus(t, src) })
	}
}

func testEndpointsStatus(t *testing.T, src fakeSources) {
	st := Endpoints(endpointsObject(), src, now)
	if st.TotalEndpoints != 3 || st.HealthyEndpoints != 1 {
		t.Fatalf("counts %d/%d", st.HealthyEndpoints, st.TotalEndpoints)
	}
	api, db, gone := st.Endpoints[0], st.Endpoints[1], st.Endpoints[2]
	if api.Status != Healthy || !*api.Online || api.Latency.Duration != 3*time.Millisecond || api.Address != "100.64.0.10:8080" {
		t.Errorf("api: %+v", api)
	}
	if db.Status != Unhealthy || *db.Online || !db.LastSeen.Time.Equal(lastSeen) {
		t.Errorf("db (no health check, device offline): %+v", db)
	}
	if gone.Status != Unknown || gone.Online != nil {
		t.Errorf("gone (no device): %+v", gone)
	}
	ready := meta.FindStatusCondition(st.Conditions, ConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != "DevicesOffline" || ready.ObservedGeneration != 3 {
		t.Errorf("ready: %+v", ready)
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionTailnetSynced); c.Status != metav1.ConditionTrue {
		t.Errorf("synced: %+v", c)
	}
}

func TestEndpointsStatusWhileTailnetAPIFails(t *testing.T) {
	src := sources()
	tn := src.tailnets["company.ts.net"]
	tn.Synced, tn.Reason, tn.Message = false, "APIUnavailable", "503 Service Unavailable"
	src.tailnets["company.ts.net"] = tn
	st := Endpoints(endpointsObject(), src, now)
	c := meta.FindStatusCondition(st.Conditions, ConditionTailnetSynced)
	if c.Status != metav1.ConditionFalse || c.Reason != "APIUnavailable" {
		t.Fatalf("synced: %+v", c)
	}
	// Last-known device state keeps serving.
	if st.Endpoints[0].Online == nil || !*st.Endpoints[0].Online {
		t.Fatalf("last-known state dropped: %+v", st.Endpoints[0])
	}
}

func TestEndpointsStatusUnknownTailnet(t *testing.T) {
	obj := endpointsObject()
	obj.Spec.Tailnet = "elsewhere.ts.net"
	st := Endpoints(obj, sources(), now)
	if c := meta.FindStatusCondition(st.Conditions, ConditionTailnetSynced); c.Reason != "TailnetNotFound" {
		t.Fatalf("synced: %+v", c)
	}
	if st.Endpoints[1].Status != Unknown {
		t.Fatalf("db without tailnet: %+v", st.Endpoints[1])
	}
}

func TestConditionTransitionTimeKeptWhileStatusHolds(t *testing.T) {
	obj := endpointsObject()
	obj.Status = Endpoints(obj, sources(), now)
	later := Endpoints(obj, sources(), now.Add(time.Hour))
	c := meta.FindStatusCondition(later.Conditions, ConditionReady)
	if !c.LastTransitionTime.Time.Equal(now) {
		t.Fatalf("transition time moved to %s", c.LastTransitionTime)
	}
}

func TestOverlayDoesNotWriteIntoTheObject(t *testing.T) {
	obj := endpointsObject()
	obj.Status = Endpoints(obj, sources(), now)
	stored := obj.Status.Endpoints
	storedConditions := obj.Status.Conditions
	src := sources()
	src.probes["default/eps/api"] = Probe{Status: Unhealthy, Error: "connection refused"}
	_ = Endpoints(obj, src, now.Add(time.Minute))
	if stored[0].Status != Healthy || meta.FindStatusCondition(storedConditions, ConditionReady).Reason != "DevicesOffline" {
		t.Fatal("computing a status wrote into the object's slices")
	}
}

func TestUnchangedConditionsAreSharedChangedOnesCopied(t *testing.T) {
	obj := endpointsObject()
	obj.Status = Endpoints(obj, sources(), now)
	stored := obj.Status.Conditions
	same := Endpoints(obj, sources(), now.Add(time.Minute))
	if &same.Conditions[0] != &stored[0] || len(same.Conditions) != len(stored) {
		t.Fatal("a status whose conditions are as stored copied them")
	}
	// A change (the tailnet's API fails) copies them rather than write into the stored slice.
	src := sources()
	tn := src.tailnets["company.ts.net"]
	tn.Synced, tn.Reason, tn.Message = false, "APIError", "unreachable"
	src.tailnets["company.ts.net"] = tn
	changed := Endpoints(obj, src, now.Add(time.Minute))
	if &changed.Conditions[0] == &stored[0] {
		t.Fatal("changed conditions share the stored slice")
	}
	if c := meta.FindStatusCondition(stored, ConditionTailnetSynced); c.Status != metav1.ConditionTrue || c.Reason != "Synced" {
		t.Fatalf("the stored condition was written through: %+v", c)
	}
	if c := meta.FindStatusCondition(changed.Conditions, ConditionTailnetSynced); c.Reason != "APIError" || c.Status != metav1.ConditionFalse {
		t.Fatalf("TailnetSynced = %+v", c)
	}
}

func TestEndpointsOfOneDeviceShareItsState(t *testing.T) {
	obj := endpointsObject()
	obj.Spec.Endpoints[2].TailscaleIP = "100.64.0.11" // on db's device, as endpoint 1
	st := Endpoints(obj, sources(), now)
	db, other := st.Endpoints[1], st.Endpoints[2]
	if db.Online != other.Online || db.LastSeen != other.LastSeen || *other.Online || !other.LastSeen.Time.Equal(lastSeen) {
		t.Fatalf("endpoints of one device: %+v, %+v", db, other)
	}
	if st.Endpoints[0].Online == db.Online {
		t.Fatal("endpoints of different devices share their online state")
	}
}

func TestStripEndpoints(t *testing.T) {
	st := Endpoints(endpointsObject(), sources(), now)
	full := st.Endpoints
	StripEndpoints(&st)
	if st.Endpoints[0].LastChecked != nil || st.Endpoints[0].Latency != nil || st.Endpoints[1].LastSeen != nil {
		t.Fatalf("not stripped: %+v", st.Endpoints)
	}
	if full[0].Latency == nil || st.Endpoints[0].Status != Healthy {
		t.Fatal("strip changed the source slice or dropped a transition field")
	}
}

func TestTailnetStatus(t *testing.T) {
	obj := &gateway.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "company.ts.net"}}
	st := TailnetStatus(obj, sources(), now)
	if st.DeviceCount != 2 || st.ConnectedDeviceCount != 1 || st.TailnetInfo.MagicDNSSuffix != "company.ts.net" || !st.LastSyncTime.Time.Equal(now) {
		t.Fatalf("status: %+v", st)
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionReady); c.Status != metav1.ConditionTrue {
		t.Fatalf("ready: %+v", c)
	}
	missing := TailnetStatus(&gateway.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "nope"}}, sources(), now)
	if c := meta.FindStatusCondition(missing.Conditions, ConditionReady); c.Status != metav1.ConditionFalse {
		t.Fatalf("ready without state: %+v", c)
	}
}

func TestServicesStatus(t *testing.T) {
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gateway.TailscaleServicesSpec{
			Selector:   &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			VIPService: &gateway.VIPServiceSpec{Name: "svc:web"},
			LoadBalancing: &gateway.LoadBalancingConfig{Strategy: gateway.StrategyFailover,
				FailoverConfig: &gateway.FailoverConfig{PrimaryEndpoints: []string{"east"}, SecondaryEndpoints: []string{"west"}}},
		},
	}
	sel := fakeSelector{
		{Name: "east", Namespace: "default", Tailnet: "company.ts.net", Labels: map[string]string{"app": "web"}, Total: 2, Healthy: 0},
		{Name: "west", Namespace: "default", Tailnet: "company.ts.net", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1},
		{Name: "other", Namespace: "default", Labels: map[string]string{"app": "db"}, Total: 1, Healthy: 1},
	}
	st := Services(obj, sources(), sel, now)
	if len(st.SelectedEndpoints) != 2 || st.SelectedEndpoints[0].Status != "NotReady" || st.SelectedEndpoints[1].Status != "Ready" {
		t.Fatalf("selected: %+v", st.SelectedEndpoints)
	}
	vs := st.VIPServiceStatus
	if !vs.Created || vs.Addresses[0] != "100.100.0.1" || vs.BackendCount != 3 || vs.HealthyBackendCount != 1 || vs.DNSName != "web.company.ts.net" {
		t.Fatalf("vip: %+v", vs)
	}
	if fs := st.LoadBalancingStatus.FailoverStatus; fs.ActiveTier != "secondary" {
		t.Fatalf("failover: %+v", fs)
	}
	sel[0].Healthy = 1
	if fs := Services(obj, sources(), sel, now).LoadBalancingStatus.FailoverStatus; fs.ActiveTier != "primary" {
		t.Fatalf("failback: %+v", fs)
	}
}

// TestServicesKeepsControllerFields checks that the status computed for a TailscaleServices
// carries over what the VIP service controller writes, so the status writer never undoes it.
func TestServicesKeepsControllerFields(t *testing.T) {
	reg := metav1.NewTime(now.Add(-time.Minute).Truncate(time.Second))
	info := &gateway.ServiceInfo{MultiOperatorService: true, OwnerOperator: "a", ConsumerOperators: []string{"b"},
		ServiceRegistryKey: "company/svc:web", LastCoordination: &reg}
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Generation: 1},
		Spec: gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			VIPService: &gateway.VIPServiceSpec{Name: "svc:web"}},
		Status: gateway.TailscaleServicesStatus{
			ServiceInfo:      info,
			VIPServiceStatus: &gateway.VIPServiceState{LastRegistration: &reg},
			Conditions: []metav1.Condition{
				{Type: ConditionDegraded, Status: metav1.ConditionFalse, Reason: "Reconciled", LastTransitionTime: reg},
				{Type: ConditionConflict, Status: metav1.ConditionFalse, Reason: "NoConflict", LastTransitionTime: reg},
			},
		},
	}
	sel := fakeSelector{{Name: "east", Namespace: "default", Tailnet: "company.ts.net", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1}}
	st := Services(obj, sources(), sel, now)
	if st.ServiceInfo != info || !st.VIPServiceStatus.LastRegistration.Equal(&reg) {
		t.Fatalf("controller fields dropped: %+v %+v", st.ServiceInfo, st.VIPServiceStatus)
	}
	for _, ty := range []string{ConditionDegraded, ConditionConflict} {
		if c := meta.FindStatusCondition(st.Conditions, ty); c == nil || c.Status != metav1.ConditionFalse {
			t.Fatalf("condition %s dropped: %+v", ty, st.Conditions)
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionVIPServiceReady); c.Status != metav1.ConditionTrue {
		t.Fatalf("VIPServiceReady: %+v", c)
	}

	// A Service of the name that is not ours does not make the VIP service ready.
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: ConditionConflict, Status: metav1.ConditionTrue,
		Reason: "OwnedByAnotherOperator", Message: "svc:web is owned by operator x"})
	st = Services(obj, sources(), sel, now)
	if c := meta.FindStatusCondition(st.Conditions, ConditionVIPServiceReady); c.Status != metav1.ConditionFalse || c.Reason != "Conflict" {
		t.Fatalf("VIPServiceReady under conflict: %+v", c)
	}
}

func TestGatewayStatus(t *testing.T) {
	obj := &gateway.TailscaleGateway{Spec: gateway.TailscaleGatewaySpec{Tailnets: []gateway.TailnetConfiguration{
		{Name: "main", TailscaleTailnetRef: gateway.LocalPolicyTargetReference{Name: "company.ts.net"}},
		{Name: "other", TailscaleTailnetRef: gateway.LocalPolicyTargetReference{Name: "missing"}},
	}}}
	st := Gateway(obj, sources(), now)
	if st.Tailnets[0].Status != "Connected" || st.Tailnets[0].ServicesCount != 1 || st.Tailnets[1].Status != "Unknown" {
		t.Fatalf("tailnets: %+v", st.Tailnets)
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionTailnetsReady); c.Status != metav1.ConditionFalse || c.Reason != "TailnetNotFound" {
		t.Fatalf("tailnets ready: %+v", c)
	}
	if meta.FindStatusCondition(st.Conditions, ConditionReady) != nil {
		t.Fatalf("Ready is the TailscaleGateway controller's: %+v", st.Conditions)
	}

	// The controller's fields are carried over.
	obj.Status = gateway.TailscaleGatewayStatus{
		Conditions:  []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "GatewayConfigured"}},
		Tailnets:    []gateway.TailnetStatus{{Name: "main", RoutesGenerated: 3}},
		ServiceInfo: &gateway.GatewayServiceInfo{TotalServices: 2, HealthyServices: 1},
		GatewayInfo: &gateway.GatewayInfo{ListenerCount: 2, RouteCount: 4},
	}
	st = Gateway(obj, sources(), now)
	if st.Tailnets[0].RoutesGenerated != 3 || st.ServiceInfo.TotalServices != 2 || st.GatewayInfo.ListenerCount != 2 ||
		meta.FindStatusCondition(st.Conditions, ConditionReady).Reason != "GatewayConfigured" {
		t.Fatalf("controller fields dropped: %+v", st)
	}
	obj.Spec.Tailnets = obj.Spec.Tailnets[:1]
	st = Gateway(obj, sources(), now)
	if c := meta.FindStatusCondition(st.Conditions, ConditionTailnetsReady); c.Status != metav1.ConditionTrue || c.Reason != "AllTailnetsConnected" {
		t.Fatalf("tailnets ready: %+v", c)
	}
}

// BenchmarkEndpoints measures the overlay of one TailscaleEndpoints of three endpoints.
func BenchmarkEndpoints(b *testing.B) {
	src := sources()
	tn := src.tailnets["company.ts.net"]
	tn.BuildIndex()
	src.tailnets["company.ts.net"] = tn
	obj := endpointsObject()
	obj.Status = Endpoints(obj, src, now)
	b.ReportAllocs()
	for b.Loop() {
		Endpoints(obj, src, now)
	}
}

func TestEndpointAddressReusesStoredAddress(t *testing.T) {
	v4 := gateway.TailscaleEndpoint{Name: "a", TailscaleIP: "100.64.0.1", Port: 8080}
	v6 := gateway.TailscaleEndpoint{Name: "b", TailscaleIP: "fd7a:115c:a1e0::1", Port: 443}
	stored := []gateway.EndpointStatus{{Name: "a", Address: "100.64.0.1:8080"}, {Name: "b", Address: "[fd7a:115c:a1e0::1]:443"}}
	for _, tc := range []struct {
		name   string
		ep     gateway.TailscaleEndpoint
		stored []gateway.EndpointStatus
		i      int
		want   string
	}{
		{"stored v4", v4, stored, 0, "100.64.0.1:8080"},
		{"stored v6", v6, stored, 1, "[fd7a:115c:a1e0::1]:443"},
		{"nothing stored", v4, nil, 0, "100.64.0.1:8080"},
		{"other endpoint at that index", v4, stored[1:], 0, "100.64.0.1:8080"},
		{"port changed", gateway.TailscaleEndpoint{Name: "a", TailscaleIP: "100.64.0.1", Port: 80}, stored, 0, "100.64.0.1:80"},
		{"address changed", gateway.TailscaleEndpoint{Name: "a", TailscaleIP: "100.64.0.2", Port: 8080}, stored, 0, "100.64.0.2:8080"},
	} {
		if got := endpointAddress(tc.ep, tc.stored, tc.i); got != tc.want {
			t.Errorf("%s: address %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Traffic fails over to the secondary tier at once and returns to the primary tier only once
// the primaries have been healthy for failbackDelay, as the stored status remembers.
func TestFailoverHonoursFailbackDelay(t *testing.T) {
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gateway.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			LoadBalancing: &gateway.LoadBalancingConfig{Strategy: gateway.StrategyFailover, FailoverConfig: &gateway.FailoverConfig{
				PrimaryEndpoints: []string{"east"}, FailbackDelay: &metav1.Duration{Duration: time.Minute}}},
		},
	}
	sel := fakeSelector{
		{Name: "east", Namespace: "default", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1},
		{Name: "west", Namespace: "default", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1},
	}
	// step computes the status at t, stores it as the status writer would, and returns the tier.
	step := func(t time.Time) *gateway.FailoverStatus {
		obj.Status = Services(obj, sources(), sel, t)
		return obj.Status.LoadBalancingStatus.FailoverStatus
	}
	if fs := step(now); fs.ActiveTier != TierPrimary || fs.LastFailover != nil {
		t.Fatalf("start: %+v, want primary without a failover", fs)
	}
	sel[0].Healthy = 0
	down := now.Add(10 * time.Second)
	if fs := step(down); fs.ActiveTier != TierSecondary || fs.FailoverReason != ReasonPrimaryUnhealthy || !fs.LastFailover.Time.Equal(down) {
		t.Fatalf("primary down: %+v, want secondary since %v", fs, down)
	}
	sel[0].Healthy = 1
	up := now.Add(20 * time.Second)
	if fs := step(up); fs.ActiveTier != TierSecondary {
		t.Fatalf("primary recovered: %+v, want secondary until failbackDelay has passed", fs)
	}
	if due, ok := FailbackDue(obj.Spec.LoadBalancing.FailoverConfig, obj.Status.Conditions); !ok || !due.Equal(up.Add(time.Minute)) {
		t.Fatalf("FailbackDue = %v, %v; want %v", due, ok, up.Add(time.Minute))
	}
	if fs := step(up.Add(59 * time.Second)); fs.ActiveTier != TierSecondary {
		t.Fatalf("before failbackDelay: %+v", fs)
	}
	if fs := step(up.Add(time.Minute)); fs.ActiveTier != TierPrimary || fs.FailoverReason != ReasonPrimaryRecovered {
		t.Fatalf("after failbackDelay: %+v, want primary", fs)
	}
	// A relapse during the delay restarts it.
	sel[0].Healthy = 0
	step(up.Add(2 * time.Minute))
	sel[0].Healthy = 1
	step(up.Add(3 * time.Minute))
	sel[0].Healthy = 0
	step(up.Add(3*time.Minute + 10*time.Second))
	sel[0].Healthy = 1
	again := up.Add(3*time.Minute + 20*time.Second)
	step(again)
	if fs := step(again.Add(50 * time.Second)); fs.ActiveTier != TierSecondary {
		t.Fatalf("relapse: %+v, want secondary until %v", fs, again.Add(time.Minute))
	}
}

// A primary not probed yet has not failed: a new failover object starts on the primary tier
// while the secondary is healthy, and fails over only once the primary's result is Unhealthy.
func TestFailoverWaitsForTheFirstPrimaryResult(t *testing.T) {
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gateway.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			LoadBalancing: &gateway.LoadBalancingConfig{Strategy: gateway.StrategyFailover, FailoverConfig: &gateway.FailoverConfig{
				PrimaryEndpoints: []string{"east"}, FailbackDelay: &metav1.Duration{Duration: time.Minute}}},
		},
	}
	sel := fakeSelector{
		{Name: "east", Namespace: "default", Labels: map[string]string{"app": "web"}, Total: 1, Pending: 1},
		{Name: "west", Namespace: "default", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1},
	}
	obj.Status = Services(obj, sources(), sel, now)
	if fs := obj.Status.LoadBalancingStatus.FailoverStatus; fs.ActiveTier != TierPrimary || fs.LastFailover != nil {
		t.Fatalf("primary not probed: %+v, want primary", fs)
	}
	if c := meta.FindStatusCondition(obj.Status.Conditions, ConditionPrimaryHealthy); c == nil || c.Status != metav1.ConditionUnknown {
		t.Fatalf("PrimaryEndpointsHealthy = %+v, want Unknown", c)
	}
	sel[0].Pending = 0
	obj.Status = Services(obj, sources(), sel, now.Add(10*time.Second))
	if fs := obj.Status.LoadBalancingStatus.FailoverStatus; fs.ActiveTier != TierSecondary || fs.FailoverReason != ReasonPrimaryUnhealthy {
		t.Fatalf("primary unhealthy: %+v, want secondary", fs)
	}
	// Back to pending (an endpoint added to the primary): no failback without a healthy primary.
	sel[0].Pending = 1
	obj.Status = Services(obj, sources(), sel, now.Add(time.Hour))
	if fs := obj.Status.LoadBalancingStatus.FailoverStatus; fs.ActiveTier != TierSecondary {
		t.Fatalf("primary pending after a failover: %+v, want secondary", fs)
	}
}

// TestEndpointsStatusOfAnotherReplicasShard: an endpoint probed by another replica shows the
// health that replica persisted; the tailnet fields stay live.
func TestEndpointsStatusOfAnotherReplicasShard(t *testing.T) {
	src := sources()
	src.probes["default/eps/api"] = Probe{Persisted: true}
	obj := endpointsObject()
	obj.Status.Endpoints = []gateway.EndpointStatus{{Name: "api", Status: Unhealthy}}
	st := Endpoints(obj, src, now)
	api := st.Endpoints[0]
	if api.Status != Unhealthy || api.LastChecked != nil || api.Online == nil || !*api.Online {
		t.Fatalf("api %+v; want the persisted Unhealthy, online from the tailnet", api)
	}
	// Nothing persisted yet: Unknown, as before a first probe.
	obj.Status.Endpoints = nil
	if st := Endpoints(obj, src, now); st.Endpoints[0].Status != Unknown {
		t.Fatalf("api %+v without a persisted status", st.Endpoints[0])
	}
}

// requestCounts come from the proxies' metrics aggregator: the computed status keeps the stored
// ones, with and without spec.loadBalancing.
func TestServicesStatusKeepsRequestCounts(t *testing.T) {
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:       gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		Status: gateway.TailscaleServicesStatus{LoadBalancingStatus: &gateway.LoadBalancingStatus{
			RequestCounts: map[string]int64{"east": 1450, "west": 620}}},
	}
	if st := Services(obj, sources(), fakeSelector{}, now); st.LoadBalancingStatus == nil ||
		st.LoadBalancingStatus.RequestCounts["east"] != 1450 || st.LoadBalancingStatus.RequestCounts["west"] != 620 {
		t.Fatalf("without loadBalancing: %+v", st.LoadBalancingStatus)
	}
	obj.Spec.LoadBalancing = &gateway.LoadBalancingConfig{Strategy: gateway.StrategyWeighted, Weights: map[string]int32{"east": 70}}
	st := Services(obj, sources(), fakeSelector{}, now)
	if ls := st.LoadBalancingStatus; ls.Strategy != gateway.StrategyWeighted || ls.EndpointWeights["east"] != 70 || ls.RequestCounts["west"] != 620 {
		t.Fatalf("with loadBalancing: %+v", ls)
	}
	st.LoadBalancingStatus.RequestCounts["west"] = 0
	if obj.Status.LoadBalancingStatus.RequestCounts["west"] != 620 {
		t.Fatal("the computed status shares the stored map")
	}
	obj.Status = gateway.TailscaleServicesStatus{}
	obj.Spec.LoadBalancing = nil
	if st := Services(obj, sources(), fakeSelector{}, now); st.LoadBalancingStatus != nil {
		t.Fatalf("no counts, no loadBalancing: %+v", st.LoadBalancingStatus)
	}
}

func TestMessagesReusedOnlyWhenEqual(t *testing.T) {
	stored := conditions{list: []metav1.Condition{{Type: ConditionReady, Message: "2 of 3 endpoints healthy"}}}
	for _, tc := range []struct {
		n, total int32
		what     string
		want     string
	}{
		{2, 3, "endpoints healthy", "2 of 3 endpoints healthy"},
		{1, 3, "endpoints healthy", "1 of 3 endpoints healthy"},
		{2, 30, "endpoints healthy", "2 of 30 endpoints healthy"},
		{2, 3, "endpoint devices offline", "2 of 3 endpoint devices offline"},
	} {
		if got := stored.countOf(ConditionReady, tc.n, tc.total, tc.what); got != tc.want {
			t.Errorf("countOf(%d, %d, %q) = %q, want %q", tc.n, tc.total, tc.what, got, tc.want)
		}
	}
	if (&conditions{}).countOf(ConditionReady, 10, 12, "x") != "10 of 12 x" {
		t.Error("countOf without a stored condition")
	}
	for msg, want := range map[string]bool{"tailnet a.ts.net synced": true, "tailnet b.ts.net synced": false,
		"tailnet a.ts.net synced ": false, "tailnet a.ts.ne synced": false, "": false} {
		if isSyncedMessage(msg, "a.ts.net") != want {
			t.Errorf("isSyncedMessage(%q) = %v", msg, !want)
		}
	}
}

// A template whose labels the selector does not match is reported (the object is accepted with
// an admission warning); fixing the labels turns the condition True; removing the template removes it.
func TestServicesEndpointTemplateSelected(t *testing.T) {
	obj := &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Generation: 3},
		Spec: gateway.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "region", Operator: metav1.LabelSelectorOpIn, Values: []string{"east", "west"}}}},
			EndpointTemplate: &gateway.EndpointTemplate{Tailnet: "company.ts.net", Labels: map[string]string{"region": "auto"}},
		},
	}
	cond := func() *metav1.Condition {
		obj.Status = Services(obj, sources(), fakeSelector{}, now)
		return meta.FindStatusCondition(obj.Status.Conditions, ConditionEndpointTemplateSelected)
	}
	if c := cond(); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "LabelsNotSelected" || c.ObservedGeneration != 3 ||
		!strings.Contains(c.Message, "region=auto") {
		t.Fatalf("template outside the selector: %+v", c)
	}
	obj.Spec.EndpointTemplate.Labels["region"] = "east"
	if c := cond(); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("template inside the selector: %+v", c)
	}
	obj.Spec.EndpointTemplate = nil
	if c := cond(); c != nil {
		t.Fatalf("without a template: %+v", c)
	}
}

// A Tailscale Service that exists but that no host serves (advertising it and approved) is not
// ready: VIPServiceReady=False NoServingHost, and a TailscaleEndpoints' vipServices entry Pending.
func TestVIPServiceNeedsAServingHost(t *testing.T) {
	src := sources()
	for _, hosts := range [][]ServiceHost{nil, {{Device: "n1", Configured: true}}, {{Device: "n1", Approved: true}}} {
		tn := src.tailnets["company.ts.net"]
		tn.Services = []Service{{Name: "svc:web", Addrs: []string{"100.100.0.1"}, Hosts: hosts}}
		src.tailnets["company.ts.net"] = tn
		svc := &gateway.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
			Spec: gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				VIPService: &gateway.VIPServiceSpec{Name: "svc:web"}}}
		sel := fakeSelector{{Name: "east", Namespace: "default", Tailnet: "company.ts.net", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1}}
		if c := meta.FindStatusCondition(Services(svc, src, sel, now).Conditions, ConditionVIPServiceReady); c == nil ||
			c.Status != metav1.ConditionFalse || c.Reason != "NoServingHost" {
			t.Errorf("hosts %+v: VIPServiceReady %+v, want False NoServingHost", hosts, c)
		}
		eps := endpointsObject()
		eps.Spec.ServiceDiscovery = &gateway.ServiceDiscoveryConfig{VIPServices: []gateway.VIPServiceConfig{{Name: "svc:web"}}}
		if vs := Endpoints(eps, src, now).VIPServices; len(vs) != 1 || vs[0].Status != "Pending" {
			t.Errorf("hosts %+v: vipServices %+v, want Pending", hosts, vs)
		}
	}
	eps := endpointsObject()
	eps.Spec.ServiceDiscovery = &gateway.ServiceDiscoveryConfig{VIPServices: []gateway.VIPServiceConfig{{Name: "svc:web"}}}
	if vs := Endpoints(eps, sources(), now).VIPServices; len(vs) != 1 || vs[0].Status != "Registered" {
		t.Errorf("served: vipServices %+v, want Registered", vs)
	}
}

// status.vipServiceStatus.hosts lists the Service's hosts as the tailnet reports them: machine
// name (the node ID when the API gives none), approval and advertisement.
func TestVIPServiceHosts(t *testing.T) {
	src := sources()
	tn := src.tailnets["company.ts.net"]
	tn.Services = []Service{{Name: "svc:web", Addrs: []string{"100.100.0.1"}, Hosts: []ServiceHost{
		{Device: "nA", Hostname: "web-proxy-0", Approved: true, Configured: true}, {Device: "nB", Configured: true}}}}
	src.tailnets["company.ts.net"] = tn
	svc := &gateway.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			VIPService: &gateway.VIPServiceSpec{Name: "svc:web"}}}
	sel := fakeSelector{{Name: "east", Namespace: "default", Tailnet: "company.ts.net", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1}}
	want := []gateway.VIPServiceHost{{Device: "web-proxy-0", NodeID: "nA", Approved: true, Advertising: true}, {Device: "nB", NodeID: "nB", Advertising: true}}
	if got := Services(svc, src, sel, now).VIPServiceStatus.Hosts; !reflect.DeepEqual(got, want) {
		t.Errorf("hosts %+v, want %+v", got, want)
	}
}

// selectedEndpoints[].lastSelected is when an object joined the selection and vipServices[].lastUpdated
// when the Service's entry last changed: both kept from the stored status while unchanged.
func TestSelectionAndVIPTimestamps(t *testing.T) {
	svc := &gateway.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	sel := fakeSelector{{Name: "east", Namespace: "default", Labels: map[string]string{"app": "web"}, Total: 1, Healthy: 1}}
	svc.Status = Services(svc, sources(), sel, now)
	if got := svc.Status.SelectedEndpoints[0].LastSelected; got == nil || !got.Time.Equal(now) {
		t.Fatalf("newly selected: lastSelected %v, want %v", got, now)
	}
	later := now.Add(time.Hour)
	sel = append(sel, SelectedEndpoints{Name: "west", Namespace: "default", Labels: map[string]string{"app": "web"}, Total: 1})
	st := Services(svc, sources(), sel, later)
	if a, b := st.SelectedEndpoints[0].LastSelected, st.SelectedEndpoints[1].LastSelected; !a.Time.Equal(now) || !b.Time.Equal(later) {
		t.Fatalf("lastSelected east %v (want %v, kept), west %v (want %v)", a, now, b, later)
	}

	eps := endpointsObject()
	eps.Spec.ServiceDiscovery = &gateway.ServiceDiscoveryConfig{VIPServices: []gateway.VIPServiceConfig{{Name: "svc:web"}}}
	eps.Status = Endpoints(eps, sources(), now)
	if got := eps.Status.VIPServices[0].LastUpdated; got == nil || !got.Time.Equal(now) {
		t.Fatalf("vipServices lastUpdated %v, want %v", got, now)
	}
	if got := Endpoints(eps, sources(), later).VIPServices[0].LastUpdated; !got.Time.Equal(now) {
		t.Fatalf("unchanged entry: lastUpdated %v, want the stored %v", got, now)
	}
	src := sources()
	tn := src.tailnets["company.ts.net"]
	tn.Services[0].Hosts = nil // no longer served: Registered -> Pending
	src.tailnets["company.ts.net"] = tn
	if got := Endpoints(eps, src, later).VIPServices[0]; got.Status != "Pending" || !got.LastUpdated.Time.Equal(later) {
		t.Fatalf("changed entry: %+v, want Pending updated at %v", got, later)
	}
}

func TestServicesLastHealthCheck(t *testing.T) {
	svc := &gateway.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	web := map[string]string{"app": "web"}
	sel := fakeSelector{
		{Name: "eps", Namespace: "default", Labels: web, Total: 2, Healthy: 2, Endpoints: []string{"api", "db"}},
		{Name: "unprobed", Namespace: "default", Labels: web, Total: 1, Endpoints: []string{"x"}},
		{Name: "remote", Namespace: "default", Labels: web, Total: 1, Endpoints: []string{"y"}},
	}
	src := sources()
	latest := now.Add(-2 * time.Second)
	src.probes["default/eps/api"] = Probe{Status: Healthy, LastChecked: now.Add(-9 * time.Second)}
	src.probes["default/eps/db"] = Probe{Status: Unhealthy, LastChecked: latest}
	src.probes["default/remote/y"] = Probe{Persisted: true} // another replica's shard

	st := Services(svc, src, sel, now)
	if got := st.SelectedEndpoints[0].HealthStatus.LastHealthCheck; got == nil || !got.Time.Equal(latest) {
		t.Fatalf("lastHealthCheck %v, want the latest probe of its endpoints %v", got, latest)
	}
	for _, i := range []int{1, 2} {
		if got := st.SelectedEndpoints[i].HealthStatus.LastHealthCheck; got != nil {
			t.Fatalf("%s: lastHealthCheck %v, want none (no probe here)", st.SelectedEndpoints[i].Name, got)
		}
	}
	StripServices(&st)
	if got := st.SelectedEndpoints[0].HealthStatus; got.LastHealthCheck != nil || got.HealthyMachines != 2 {
		t.Fatalf("stripped: %+v, want the counts without lastHealthCheck", got)
	}
}
