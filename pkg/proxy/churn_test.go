package proxy_test

import (
	"context"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/test/churn"
)

// TestNewConnectionsAreNeverDropped opens 10,000 new connections through a VIP and 10,000 through
// an egress listener, half closed first by the server and half by the client, and wants every
// one answered with no SYN lost: a tsnet node's netstack drops a SYN that reuses the port pair
// of a connection it holds in TIME_WAIT unless a listening endpoint takes it (docs/data-plane.md).
func TestNewConnectionsAreNeverDropped(t *testing.T) {
	e := getEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 10000

	t.Run("VIP", func(t *testing.T) {
		sf, cf := churn.BothWays(ctx, n, e.churnVIP(t))
		checkChurn(t, "server closes first", sf)
		checkChurn(t, "client closes first", cf)
	})
	t.Run("Egress", func(t *testing.T) {
		sf, cf := churn.BothWays(ctx, n, e.churnEgress(t))
		checkChurn(t, "server closes first", sf)
		checkChurn(t, "client closes first", cf)
	})
}

// churnVIP returns a dialer of a VIP, made once per process, whose Service forwards port 80 to
// dev-a's HTTP server: the client dials through the tailnet, the proxy through its node.
func (e *env) churnVIP(t testing.TB) func(context.Context) (net.Conn, error) {
	if e.churnVIPAddr == "" {
		vip := e.serve(t, servicesObject("churn", nil), e.backendObject("churn-a", "dev-a", map[string]string{"app": "churn"}))
		e.churnVIPAddr = net.JoinHostPort(vip, "80")
	}
	return func(ctx context.Context) (net.Conn, error) { return e.peer.Dial(ctx, "tcp", e.churnVIPAddr) }
}

// churnEgress returns a dialer of an egress listener, made once per process, of dev-a's HTTP
// server: the client dials on loopback, the proxy through its node.
func (e *env) churnEgress(t testing.TB) func(context.Context) (net.Conn, error) {
	if e.churnEgressAddr == "" {
		obj := e.egressObject("churn-egress")
		if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(tctx(t), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitServed(t, func(s proxy.Served) bool { return s.Egress[namespace+"/churn-egress/http"] != "" })
		e.churnEgressAddr = e.egressAddr(t, "churn-egress", "http", e.devices["dev-a"].HTTPPort)
	}
	var dialer net.Dialer
	return func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", e.churnEgressAddr) }
}

// BenchmarkNewConnections opens b.N new HTTP connections (half closed first by the server, half
// by the client, 16 at a time) through a VIP and through an egress listener, and reports
// connections per second and, per 10,000 connections, those that failed and those whose SYN had
// to be retransmitted. Run it with -benchtime 10000x.
func BenchmarkNewConnections(b *testing.B) {
	e := getEnv(b)
	for _, path := range []struct {
		name string
		dial func(testing.TB) func(context.Context) (net.Conn, error)
	}{{"VIP", e.churnVIP}, {"Egress", e.churnEgress}} {
		b.Run(path.name, func(b *testing.B) {
			dial := path.dial(b)
			ctx := tctx(b)
			b.ResetTimer()
			sf, cf := churn.BothWays(ctx, max(b.N, 2), dial)
			b.StopTimer()
			conns, failed, slow := sf.Conns+cf.Conns, sf.Failed+cf.Failed, sf.Slow+cf.Slow
			b.ReportMetric(float64(conns)/(sf.Elapsed+cf.Elapsed).Seconds(), "conns/s")
			b.ReportMetric(float64(failed)*10000/float64(conns), "failed/10k")
			b.ReportMetric(float64(slow)*10000/float64(conns), "retransmitted/10k")
			b.ReportMetric(0, "ns/op")
			if failed > 0 {
				b.Logf("server closes first: %v; client closes first: %v", sf, cf)
			}
		})
	}
}

func checkChurn(t *testing.T, what string, r churn.Result) {
	t.Helper()
	t.Logf("%s: %v", what, r)
	if r.Reset > 0 {
		// Seen once in about 50,000 egress connections (client closing first); cause not found
		// yet (docs/data-plane.md). Reported, not failed: it is no lost SYN.
		t.Logf("%s: %d connections were reset", what, r.Reset)
	}
	if err := r.Err(); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}
