package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// benchEgress serves dev-a's TCP echo for egress and returns a dialler of the egress
// listener (through the proxy) and one of the device straight from a tsnet node (direct).
func benchEgress(b *testing.B) (viaProxy, direct func(context.Context) (net.Conn, error)) {
	e := getEnv(b)
	ctx := tctx(b)
	const name = "bench-egress"
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		obj := e.egressObject(name)
		if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	d := e.devices["dev-a"]
	key := namespace + "/" + name + "/echo"
	poll(b, "the egress listener", func() bool { return e.proxy.Served().Egress[key] != "" })
	addr := e.egressAddr(b, name, "echo", d.TCPPort)
	var nd net.Dialer
	viaProxy = func(ctx context.Context) (net.Conn, error) { return nd.DialContext(ctx, "tcp", addr) }
	direct = func(ctx context.Context) (net.Conn, error) {
		return e.peer.Dial(ctx, "tcp", net.JoinHostPort(d.IPv4.String(), fmt.Sprint(d.TCPPort)))
	}
	return viaProxy, direct
}

func dialEcho(b *testing.B, dial func(context.Context) (net.Conn, error)) net.Conn {
	b.Helper()
	var c net.Conn
	poll(b, "a connection to the echo server", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := dial(ctx)
		if err != nil {
			return false
		}
		if _, err := conn.Write([]byte{1}); err != nil {
			conn.Close()
			return false
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			conn.Close()
			return false
		}
		_ = conn.SetReadDeadline(time.Time{})
		c = conn
		return true
	})
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkEgressThroughput streams 1 MiB per op and path through one connection to dev-a's TCP
// echo and reads it back, alternating between the proxy's egress listener and a connection
// straight from a tsnet node (direct), so both see the same machine load. It reports each
// path's MB/s (one direction) and the proxy's as a percentage of direct.
func BenchmarkEgressThroughput(b *testing.B) {
	viaProxy, direct := benchEgress(b)
	conns := []net.Conn{dialEcho(b, direct), dialEcho(b, viaProxy)}
	const chunk = 1 << 20
	out := make([]byte, chunk)
	in := make([]byte, 64<<10)
	var spent [2]time.Duration
	n := 0
	for b.Loop() {
		for i, c := range conns {
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Write(out)
				errc <- err
			}()
			for got := 0; got < chunk; {
				m, err := c.Read(in)
				if err != nil {
					b.Fatal(err)
				}
				got += m
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			spent[i] += time.Since(start)
		}
		n++
	}
	mbps := func(d time.Duration) float64 { return float64(n) * chunk / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(spent[0]), "direct-MB/s")
	b.ReportMetric(mbps(spent[1]), "proxy-MB/s")
	b.ReportMetric(100*mbps(spent[1])/mbps(spent[0]), "proxy-%-of-direct")
}

// BenchmarkEgressLatency measures round trips of 64 bytes to dev-a's TCP echo, alternating
// between the proxy's egress listener and a direct tsnet connection, and reports p50 and p99
// of each and what the proxy adds to them.
func BenchmarkEgressLatency(b *testing.B) {
	viaProxy, direct := benchEgress(b)
	conns := []net.Conn{dialEcho(b, direct), dialEcho(b, viaProxy)}
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	var rtts [2][]time.Duration
	for b.Loop() {
		for i, c := range conns {
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			rtts[i] = append(rtts[i], time.Since(start))
		}
	}
	d50, d99 := percentiles(rtts[0])
	p50, p99 := percentiles(rtts[1])
	b.ReportMetric(d50, "direct-p50-µs")
	b.ReportMetric(d99, "direct-p99-µs")
	b.ReportMetric(p50, "proxy-p50-µs")
	b.ReportMetric(p99, "proxy-p99-µs")
	b.ReportMetric(p99-d99, "added-p99-µs")
}

// percentiles returns p50 and p99 of d in microseconds.
func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[min(len(d)-1, int(p*float64(len(d))))].Nanoseconds()) / 1e3 }
	return at(0.50), at(0.99)
}

// BenchmarkServiceNewConnections opens connections from a tailnet client to a VIP balanced
// round-robin over 10 backends (10 TailscaleEndpoints over the three devices' TCP echo), one
// byte each way per connection, from 8 goroutines, and reports connections per second.
func BenchmarkServiceNewConnections(b *testing.B) {
	e := getEnv(b)
	benchNewConnections(b, e, "bench-vip", nil, &e.benchVIP)
}

// BenchmarkServiceNewConnectionsWithAccessRule is BenchmarkServiceNewConnections on a Service
// with an access rule (deniedTags: tag:dev, which the untagged client does not carry): every
// connection asks WhoIs for its caller's tags before it is forwarded.
func BenchmarkServiceNewConnectionsWithAccessRule(b *testing.B) {
	e := getEnv(b)
	benchNewConnections(b, e, "bench-rule-vip", accesscontrol.Rule{Denied: []string{"tag:dev"}}.Annotations(), &e.benchRuleVIP)
}

// benchNewConnections runs the connection benchmark on the Service name (its annotations
// annotations), made once per process and remembered in *vipOf.
func benchNewConnections(b *testing.B, e *env, name string, annotations map[string]string, vipOf *string) {
	ctx := tctx(b)
	if *vipOf == "" { // once per process: -count runs the benchmark again on the same VIP
		var objs []*v1alpha1.TailscaleEndpoints
		for i := range 10 {
			objs = append(objs, e.backendObject(fmt.Sprintf("%s-%d", name, i), backendNames[i%len(backendNames)], map[string]string{"app": name}))
		}
		svc := servicesObject(name, nil)
		svc.Annotations = annotations
		*vipOf = e.serve(b, svc, objs...)
	}
	vip := *vipOf
	served := e.proxy.Served()
	if !slices.Contains(served.Services, "svc:"+name+"/tcp/5432") {
		b.Fatalf("not served: %v", served.Services)
	}
	addr := net.JoinHostPort(vip, "5432")
	const workers = 8
	var wg sync.WaitGroup
	work := make(chan struct{})
	stop := make(chan struct{})
	var once sync.Once
	var firstErr error
	fail := func(err error) { once.Do(func() { firstErr = err; close(stop) }) }
	for range workers {
		wg.Go(func() {
			one := []byte{1}
			for range work {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := e.peer.Dial(cctx, "tcp", addr)
				cancel()
				if err != nil {
					fail(err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err = c.Write(one); err == nil {
					_, err = io.ReadFull(c, one)
				}
				c.Close()
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	n := 0
	start := time.Now()
loop:
	for b.Loop() {
		select {
		case work <- struct{}{}:
			n++
		case <-stop:
			break loop
		}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		b.Fatalf("after %d connections: %v", n, firstErr)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "conns/s")
}
