package tsnode

import (
	"context"
	"expvar"
	"net"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"tailscale.com/wgengine/netstack"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/gvstack"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/health"
	"github.com/tailscale-gateway/tailscale-gateway/test/churn"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// tailnetDialer dials through the node of one tailnet.
type tailnetDialer struct {
	nodes   *Nodes
	tailnet string
}

func (d tailnetDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.nodes.DialContext(ctx, d.tailnet, network, address)
}

// TestProbesLeaveShortTimeWait probes a simulated device over HTTP through a node: every probe's
// connection is then in TIME_WAIT on the node (the prober closed first, so the device's tsnet
// stack keeps no TIME_WAIT that would drop a later SYN), and those connections are gone after
// about TimeWait, well before the network stack's default 60 s.
func TestProbesLeaveShortTimeWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Dir: t.TempDir(),
		Devices: []tailnetsim.DeviceSpec{{Hostname: "web", HTTPPort: tailnetsim.DefaultHTTPPort}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	web, err := sim.Device("web")
	if err != nil {
		t.Fatal(err)
	}
	nodes := New(Options{Dir: t.TempDir(), Hostname: "prober", ControlURL: sim.ControlURL(),
		MintKey: func(context.Context, string) (string, error) { return sim.AuthKey(), nil }})
	defer nodes.Close()
	dialer := tailnetDialer{nodes: nodes, tailnet: "sim"}
	prober := health.New(health.Options{DialerFor: func(string) health.Dialer { return dialer }})

	const probes = 20
	target := health.Target{Key: "web", Address: net.JoinHostPort(web.IPv4.String(), "80"),
		Check: health.Check{Type: health.ProtocolHTTP, Path: tailnetsim.DefaultHealthPath, Timeout: 10 * time.Second}}
	for i := range probes {
		if err := prober.Probe(ctx, target); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	srv, err := nodes.server(ctx, "sim")
	if err != nil {
		t.Fatal(err)
	}
	// Closed here, not by nodes.Close in the background, so that nothing writes to the state
	// directory when the test removes it.
	defer srv.Close()
	impl := srv.Sys().Netstack.Get().(*netstack.Impl)
	connected := func() int64 {
		return impl.ExpVar().(interface{ Get(string) expvar.Var }).Get("gauge_tcp_current_connected").(expvar.Func)().(int64)
	}
	if n := connected(); n < probes {
		t.Fatalf("%d connections left on the node after %d probes, want each in TIME_WAIT (closed by the prober first)", n, probes)
	}
	start := time.Now()
	// Bounded by half the default TIME_WAIT: the default fails this test.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return connected() == 0, nil
	}); err != nil {
		t.Fatalf("%d connections still on the node after 30 s: %v", connected(), err)
	}
	t.Logf("the node's probe connections were gone %v after the last probe (TimeWait %v)", time.Since(start).Round(100*time.Millisecond), TimeWait)
}

// TestProbeDialsNeverHitAPeersTimeWait dials a simulated device (a tsnet node, whose netstack
// drops a SYN from a port pair it holds in TIME_WAIT) 6,000 times through a node, the device
// closing first half of the time, and wants no connection failed or slowed by a lost SYN: the
// node's Dialer does not reuse a port pair towards one destination until its range is used up.
func TestProbeDialsNeverHitAPeersTimeWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Dir: t.TempDir(),
		Devices: []tailnetsim.DeviceSpec{{Hostname: "web", HTTPPort: tailnetsim.DefaultHTTPPort}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	web, err := sim.Device("web")
	if err != nil {
		t.Fatal(err)
	}
	nodes := New(Options{Dir: t.TempDir(), Hostname: "prober", ControlURL: sim.ControlURL(),
		MintKey: func(context.Context, string) (string, error) { return sim.AuthKey(), nil }})
	addr := net.JoinHostPort(web.IPv4.String(), "80")
	dial := func(ctx context.Context) (net.Conn, error) { return nodes.DialContext(ctx, "sim", "tcp", addr) }
	srv, err := nodes.server(ctx, "sim")
	if err != nil {
		t.Fatal(err)
	}
	defer gvstack.Close(srv)
	serverFirst, clientFirst := churn.BothWays(ctx, 6000, dial)
	for what, r := range map[string]churn.Result{"server closes first": serverFirst, "client closes first": clientFirst} {
		t.Logf("%s: %v", what, r)
		if err := r.Err(); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
}
