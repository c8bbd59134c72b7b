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
	addr := e.egressAddr(name, "echo", d.TCPPort)
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

// BenchmarkEgressThroughput streams 1 MiB per op through one connection to dev-a's TCP echo and
// reads it back, through the proxy's egress listener and straight from a tsnet node.
func BenchmarkEgressThroughput(b *testing.B) {
	viaProxy, direct := benchEgress(b)
	for _, path := range []struct {
		name string
		dial func(context.Context) (net.Conn, error)
	}{{"direct", direct}, {"proxy", viaProxy}} {
		b.Run(path.name, func(b *testing.B) {
			c := dialEcho(b, path.dial)
			const chunk = 1 << 20
			out := make([]byte, chunk)
			in := make([]byte, 64<<10)
			b.SetBytes(chunk)
			b.ResetTimer()
			for b.Loop() {
				errc := make(chan error, 1)
				go func() {
					_, err := c.Write(out)
					errc <- err
				}()
				for got := 0; got < chunk; {
					n, err := c.Read(in)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEgressLatency measures round trips of 64 bytes over one connection to dev-a's TCP
// echo, through the proxy and straight from a tsnet node, and reports p50 and p99.
func BenchmarkEgressLatency(b *testing.B) {
	viaProxy, direct := benchEgress(b)
	for _, path := range []struct {
		name string
		dial func(context.Context) (net.Conn, error)
	}{{"direct", direct}, {"proxy", viaProxy}} {
		b.Run(path.name, func(b *testing.B) {
			c := dialEcho(b, path.dial)
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			var rtts []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				rtts = append(rtts, time.Since(start))
			}
			reportPercentiles(b, rtts)
		})
	}
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkServiceNewConnections opens connections from a tailnet client to a VIP balanced
// round-robin over 10 backends (10 TailscaleEndpoints over the three devices' TCP echo), one
// byte each way per connection, from 8 goroutines, and reports connections per second.
func BenchmarkServiceNewConnections(b *testing.B) {
	e := getEnv(b)
	ctx := tctx(b)
	const name = "bench-vip"
	var objs []*v1alpha1.TailscaleEndpoints
	for i := range 10 {
		objs = append(objs, e.backendObject(fmt.Sprintf("%s-%d", name, i), backendNames[i%len(backendNames)], map[string]string{"app": name}))
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		b.Skip("the VIP exists already (the benchmark ran before in this process)")
	}
	vip := e.serve(b, servicesObject(name, nil), objs...)
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
