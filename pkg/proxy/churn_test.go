package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
)

// churnResult counts what happened to a run of new connections.
type churnResult struct {
	conns   int
	failed  int           // dial or request failed within churnTimeout
	slow    int           // dialled, but only after churnRetransmit: a SYN was retransmitted
	elapsed time.Duration // wall time of the run
	first   error
}

const (
	// churnTimeout bounds each connection: dial, request and answer.
	churnTimeout = 10 * time.Second
	// churnRetransmit is gVisor's initial retransmission timeout: a dial that took longer had
	// its SYN (or SYN-ACK) lost once.
	churnRetransmit = time.Second
	churnWorkers    = 16
)

// churn opens n new HTTP connections with dial from churnWorkers goroutines, one GET each.
// With serverFirst the request says "Connection: close" and the server closes first (its side
// of the connection is left in TIME_WAIT); otherwise the client closes once it has the answer.
func churn(ctx context.Context, n int, serverFirst bool, dial func(context.Context) (net.Conn, error)) churnResult {
	var res churnResult
	var mu sync.Mutex
	var next atomic.Int64
	req := "GET / HTTP/1.1\r\nHost: churn\r\n\r\n"
	if serverFirst {
		req = "GET / HTTP/1.1\r\nHost: churn\r\nConnection: close\r\n\r\n"
	}
	one := func() (slow bool, err error) {
		cctx, cancel := context.WithTimeout(ctx, churnTimeout)
		defer cancel()
		start := time.Now()
		c, err := dial(cctx)
		if err != nil {
			return false, fmt.Errorf("dial: %w", err)
		}
		defer c.Close()
		slow = time.Since(start) >= churnRetransmit
		_ = c.SetDeadline(start.Add(churnTimeout))
		if _, err := io.WriteString(c, req); err != nil {
			return slow, fmt.Errorf("request: %w", err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return slow, fmt.Errorf("answer: %w", err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return slow, fmt.Errorf("answer body: %w", err)
		}
		if serverFirst { // wait for the server's FIN before closing
			if _, err := br.ReadByte(); err != io.EOF {
				return slow, fmt.Errorf("the server did not close first: %v", err)
			}
		}
		return slow, nil
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range churnWorkers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				slow, err := one()
				mu.Lock()
				res.conns++
				if slow {
					res.slow++
				}
				if err != nil {
					res.failed++
					if res.first == nil {
						res.first = err
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

func (r churnResult) String() string {
	return fmt.Sprintf("%d connections in %v (%.0f/s): %d failed, %d needed a retransmitted SYN (first error: %v)",
		r.conns, r.elapsed.Round(time.Millisecond), float64(r.conns)/r.elapsed.Seconds(), r.failed, r.slow, r.first)
}

// churnBothWays runs churn with n/2 connections the server closes first, then n/2 the client
// closes first, and returns both results.
func churnBothWays(ctx context.Context, n int, dial func(context.Context) (net.Conn, error)) (serverFirst, clientFirst churnResult) {
	return churn(ctx, n/2, true, dial), churn(ctx, n/2, false, dial)
}

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
		sf, cf := churnBothWays(ctx, n, e.churnVIP(t))
		checkChurn(t, "server closes first", sf)
		checkChurn(t, "client closes first", cf)
	})
	t.Run("Egress", func(t *testing.T) {
		sf, cf := churnBothWays(ctx, n, e.churnEgress(t))
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
		e.churnEgressAddr = e.egressAddr("churn-egress", "http", e.devices["dev-a"].HTTPPort)
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
			sf, cf := churnBothWays(ctx, max(b.N, 2), dial)
			b.StopTimer()
			conns, failed, slow := sf.conns+cf.conns, sf.failed+cf.failed, sf.slow+cf.slow
			b.ReportMetric(float64(conns)/(sf.elapsed+cf.elapsed).Seconds(), "conns/s")
			b.ReportMetric(float64(failed)*10000/float64(conns), "failed/10k")
			b.ReportMetric(float64(slow)*10000/float64(conns), "retransmitted/10k")
			b.ReportMetric(0, "ns/op")
			if failed > 0 {
				b.Logf("server closes first: %v; client closes first: %v", sf, cf)
			}
		})
	}
}

func checkChurn(t *testing.T, what string, r churnResult) {
	t.Helper()
	t.Logf("%s: %v", what, r)
	if r.failed > 0 || r.slow > 0 {
		t.Errorf("%s: %d of %d connections failed and %d needed a retransmitted SYN, want none", what, r.failed, r.conns, r.slow)
	}
}
