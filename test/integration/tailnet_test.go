package integration

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// simEnv is the server wired to a simulated tailnet: testcontrol, DERP/STUN and tsnet devices on
// loopback, and the stateful Tailscale API over them.
type simEnv struct {
	sim    *tailnetsim.Tailnet
	server *framework.Server
	client *versioned.Clientset
}

func startSimEnv(t *testing.T, configure ...func(*server.Options)) *simEnv {
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(sctx, tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{
		tailnetsim.AllProtocols("api-server", "tag:web"),
		tailnetsim.AllProtocols("postgres", "tag:db"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return startServerOn(t, sim, configure...)
}

// startServerOn starts a server (an installation of its own, with its own etcd) with a
// TailscaleTailnet "sim" for sim.
func startServerOn(t *testing.T, sim *tailnetsim.Tailnet, configure ...func(*server.Options)) *simEnv {
	creds := framework.CredentialsDir(t, sim.OAuthClientID(), sim.OAuthClientSecret())
	s := framework.Start(t, "", append([]func(*server.Options){func(o *server.Options) {
		o.Live.CredentialsDir = creds
		o.Live.PollInterval = 200 * time.Millisecond
		o.Live.APIRequestsPerSecond = -1
		o.Live.ControlURL = sim.ControlURL()
	}}, configure...)...)
	env := &simEnv{sim: sim, server: s, client: s.Clientset(t)}

	_, err := env.client.GatewayV1alpha1().TailscaleTailnets().Create(ctx(t), &v1alpha1.TailscaleTailnet{
		ObjectMeta: metav1.ObjectMeta{Name: "sim"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: sim.TailnetName(), OAuthSecretName: "ts-oauth",
			APIBaseURL: sim.APIURL(), Tags: []string{"tag:prober"},
			// The tags the tests' objects ask for (spec.tags, endpointTemplate.tags).
			ProxyTags: []string{"tag:k8s", "tag:web"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func simEndpoints(t *testing.T, sim *tailnetsim.Tailnet) *v1alpha1.TailscaleEndpoints {
	api, err := sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := sim.Device("postgres")
	if err != nil {
		t.Fatal(err)
	}
	check := func(typ v1alpha1.Protocol, path string) *v1alpha1.HealthCheckConfig {
		return &v1alpha1.HealthCheckConfig{Enabled: ptr.To(true), Type: typ, Path: path,
			Interval: &metav1.Duration{Duration: 100 * time.Millisecond}, Timeout: &metav1.Duration{Duration: 80 * time.Millisecond},
			HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](2)}
	}
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "web", TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN, Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP,
				HealthCheck: check(v1alpha1.ProtocolHTTP, api.HealthPath)},
			{Name: "grpc", TailscaleIP: api.IPv6.String(), TailscaleFQDN: api.FQDN, Port: int32(api.GRPCPort), Protocol: v1alpha1.ProtocolGRPC,
				HealthCheck: check(v1alpha1.ProtocolGRPC, "")},
			{Name: "db", TailscaleIP: pg.IPv4.String(), TailscaleFQDN: pg.FQDN, Port: int32(pg.TCPPort), Protocol: v1alpha1.ProtocolTCP},
		}},
	}
}

// waitFor polls GET of the endpoints until cond holds.
func (e *simEnv) waitFor(t *testing.T, what string, cond func(*v1alpha1.TailscaleEndpoints) bool) *v1alpha1.TailscaleEndpoints {
	t.Helper()
	var got *v1alpha1.TailscaleEndpoints
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, 2*time.Minute, true, func(c context.Context) (bool, error) {
		o, err := e.client.GatewayV1alpha1().TailscaleEndpoints("sim").Get(c, "backends", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = o
		return cond(o), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v\nlast status: %+v", what, err, got.Status)
	}
	return got
}

func statusOf(name string) func(*v1alpha1.TailscaleEndpoints) string {
	return func(o *v1alpha1.TailscaleEndpoints) string { return endpointStatus(o, name).Status }
}

func TestLiveStatusFromSimulatedTailnet(t *testing.T) {
	env := startSimEnv(t)
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("sim")
	if _, err := eps.Create(ctx(t), simEndpoints(t, env.sim), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Devices online, probes through the prober's tsnet node healthy: 100.64.0.0/10 is not
	// routed on this host, so a healthy HTTP or gRPC probe travelled through the tailnet.
	all := env.waitFor(t, "every endpoint healthy", func(o *v1alpha1.TailscaleEndpoints) bool { return o.Status.HealthyEndpoints == 3 })
	web := endpointStatus(all, "web")
	if web.LastChecked == nil || web.Latency == nil || web.Online == nil || !*web.Online {
		t.Fatalf("web endpoint lacks live fields: %+v", web)
	}
	// The prober's own tsnet node joined the tailnet: two devices and the prober.
	var tn *v1alpha1.TailscaleTailnet
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		var err error
		tn, err = env.client.GatewayV1alpha1().TailscaleTailnets().Get(c, "sim", metav1.GetOptions{})
		return err == nil && tn.Status.DeviceCount == 3 && tn.Status.ConnectedDeviceCount == 3, err
	})
	if err != nil || !meta.IsStatusConditionTrue(tn.Status.Conditions, "Ready") {
		t.Fatalf("tailnet status: %+v (%v)", tn.Status, err)
	}

	w, err := eps.Watch(ctx(t), metav1.ListOptions{ResourceVersion: all.ResourceVersion, FieldSelector: "metadata.name=backends"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	// A device going offline reaches the watcher.
	if err := env.sim.SetOnline(ctx(t), "postgres", false); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool {
		e := endpointStatus(o, "db")
		return e.Online != nil && !*e.Online && e.Status == "Unhealthy"
	})
	if err := env.sim.SetOnline(ctx(t), "postgres", true); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool { return statusOf("db")(o) == "Healthy" })

	// The health path answering 500 turns the endpoint unhealthy, and 200 healthy again.
	if err := env.sim.SetHTTPStatus("api-server", 500); err != nil {
		t.Fatal(err)
	}
	ev := waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool { return statusOf("web")(o) == "Unhealthy" })
	if e := endpointStatus(ev, "web"); e.Error == "" {
		t.Errorf("unhealthy endpoint without an error: %+v", e)
	}
	if err := env.sim.SetHTTPStatus("api-server", 200); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool { return statusOf("web")(o) == "Healthy" })

	// gRPC NOT_SERVING is unhealthy.
	if err := env.sim.SetGRPCServing("api-server", false); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool { return statusOf("grpc")(o) == "Unhealthy" })
	if err := env.sim.SetGRPCServing("api-server", true); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool { return statusOf("grpc")(o) == "Healthy" })
}

func TestTailscaleAPIFailuresDegradeAndRecover(t *testing.T) {
	env := startSimEnv(t)
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("sim")
	if _, err := eps.Create(ctx(t), simEndpoints(t, env.sim), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "device state", func(o *v1alpha1.TailscaleEndpoints) bool { return endpointStatus(o, "db").Online != nil })

	for _, failure := range []tailnetsim.ErrorInjection{
		{Status: 500, Duration: time.Hour},
		{Status: 429, RetryAfter: time.Second, Duration: time.Hour},
	} {
		env.sim.InjectErrors(failure)
		got := env.waitFor(t, "TailnetSynced=False", func(o *v1alpha1.TailscaleEndpoints) bool {
			c := meta.FindStatusCondition(o.Status.Conditions, "TailnetSynced")
			return c != nil && c.Status == metav1.ConditionFalse
		})
		// Last-known state keeps serving while the API fails.
		if db := endpointStatus(got, "db"); db.Online == nil || !*db.Online {
			t.Fatalf("HTTP %d: last-known device state dropped: %+v", failure.Status, db)
		}
		t.Logf("HTTP %d: %+v", failure.Status, meta.FindStatusCondition(got.Status.Conditions, "TailnetSynced"))
		env.sim.ClearErrorInjections()
		env.waitFor(t, "TailnetSynced=True", func(o *v1alpha1.TailscaleEndpoints) bool {
			return meta.IsStatusConditionTrue(o.Status.Conditions, "TailnetSynced")
		})
	}
}
