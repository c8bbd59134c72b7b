package proxy_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// echoRoundTrip writes one byte to c and reads it back within 10 s.
func echoRoundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 1))
	return err
}

// startNode joins a proxy node of its own, named hostname, to the simulated tailnet.
func (e *env) startNode(t *testing.T, ctx context.Context, hostname string) (*tsnet.Server, *node.Node) {
	t.Helper()
	srv, err := node.Start(ctx, node.Options{Dir: t.TempDir(), Hostname: hostname, ControlURL: e.sim.ControlURL(),
		AuthKey: e.sim.AuthKey(), Tags: []string{"tag:proxy"}})
	if err != nil {
		t.Fatal(err)
	}
	nd, err := node.Wrap(srv)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	return srv, nd
}

// run runs p until stop is called (what SIGTERM does); stopped is closed when Run returned.
func run(p *proxy.Proxy) (stop context.CancelFunc, stopped <-chan struct{}) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	return stop, done
}

// advertises reports whether srv's prefs advertise the Service name.
func advertises(ctx context.Context, srv *tsnet.Server, name string) bool {
	lc, err := srv.LocalClient()
	if err != nil {
		return false
	}
	prefs, err := lc.GetPrefs(ctx)
	return err == nil && slices.Contains(prefs.AdvertiseServices, name)
}

// parallel runs f on every element of items from 16 goroutines and returns the errors.
func parallel[T any](items []T, f func(T) error) []error {
	var mu sync.Mutex
	var errs []error
	work := make(chan T)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for it := range work {
				if err := f(it); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
	return errs
}

// TestShutdownDrainsTwoThousandConnections stops a proxy holding 2,000 connections (what
// SIGTERM does: Run's context ends). It wants the Service it hosts withdrawn and its egress port
// closed at once, the 1,000 connections that finish within the grace period carried to the end,
// the other 1,000 closed when it ends, Run back right after, and the node closed in bounded time.
func TestShutdownDrainsTwoThousandConnections(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	const conns, grace = 2000, 15 * time.Second

	srv, nd := e.startNode(t, ctx, "drain-proxy")
	d := e.devices["dev-b"]
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "drain", Labels: map[string]string{"app": "drain"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "echo", TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN, Port: int32(d.TCPPort), Protocol: v1alpha1.ProtocolTCP}}},
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := servicesObject("drain", nil)
	svc.Namespace = namespace
	svc.Spec.VIPService = &v1alpha1.VIPServiceSpec{Name: "svc:drain", Ports: []string{"tcp:5432"}}
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := fmt.Sprintf("127.%d.%d.%d", 10+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	p, err := proxy.New(proxy.Options{Client: e.client, Node: nd, Metrics: forward.NewMetrics(prometheus.NewRegistry()),
		EgressBindAddress: bind, DrainGrace: grace, Retry: 200 * time.Millisecond,
		Selection: proxy.Selection{Namespace: namespace, Endpoints: []string{"drain"}, Services: []string{"drain"}}})
	if err != nil {
		t.Fatal(err)
	}
	stop, stopped := run(p)
	defer stop()
	var served proxy.Served
	poll(t, "the drain proxy's listeners", func() bool {
		served = p.Served()
		return served.Egress[namespace+"/drain/echo"] != "" && slices.Contains(served.Services, "svc:drain/tcp/5432")
	})
	addr := served.Egress[namespace+"/drain/echo"][len("tcp://"):]
	advertised := func() bool { return advertises(ctx, srv, "svc:drain") }
	if !advertised() {
		t.Fatal("svc:drain is not advertised while hosted")
	}

	open := make([]net.Conn, conns)
	idx := make([]int, conns)
	for i := range idx {
		idx[i] = i
	}
	if errs := parallel(idx, func(i int) error {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return err
		}
		open[i] = c
		return echoRoundTrip(c)
	}); len(errs) > 0 {
		t.Fatalf("%d of %d connections failed to open: %v", len(errs), conns, errs[0])
	}
	defer func() {
		for _, c := range open {
			if c != nil {
				c.Close()
			}
		}
	}()

	start := time.Now()
	stop() // SIGTERM
	poll(t, "svc:drain withdrawn", func() bool { return !advertised() })
	poll(t, "the egress port closed to new connections", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case <-stopped:
		t.Fatal("Run returned before the grace period with connections open")
	default:
	}
	// Half finish within the grace period: another round trip, then they close.
	finishing, idle := open[:conns/2], open[conns/2:]
	if errs := parallel(finishing, func(c net.Conn) error {
		defer c.Close()
		return echoRoundTrip(c)
	}); len(errs) > 0 {
		t.Errorf("%d of %d connections that finished within the grace period were cut: %v", len(errs), len(finishing), errs[0])
	}
	if elapsed := time.Since(start); elapsed >= grace {
		t.Fatalf("the finishing connections took %v, beyond the grace period %v: the test proves nothing", elapsed, grace)
	}
	select {
	case <-stopped:
	case <-time.After(grace + proxy.DrainTimeout):
		t.Fatalf("Run did not return within the grace period (%v) and DrainTimeout", grace)
	}
	ran := time.Since(start)
	if ran < grace {
		t.Errorf("Run returned after %v, before the grace period %v, with %d connections open", ran, grace, len(idle))
	}
	// The idle half was closed at the end of the grace period.
	if errs := parallel(idle, func(c net.Conn) error {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			return fmt.Errorf("read %v, want EOF", err)
		}
		return nil
	}); len(errs) > 0 {
		t.Errorf("%d of %d connections left open past the grace period were not closed: %v", len(errs), len(idle), errs[0])
	}
	closed := make(chan struct{})
	go func() { nd.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not close within 30 s")
	}
	t.Logf("Run returned %v after the stop (grace %v); the node closed %v after that", ran.Round(time.Millisecond), grace, (time.Since(start) - ran).Round(time.Millisecond))
}

// dialerFunc is a HostDialer.
type dialerFunc func(ctx context.Context, network, address string) (net.Conn, error)

func (f dialerFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// TestShutdownServesConnectionsAcceptedAndArrivingWhileWithdrawing stops a proxy hosting a
// Service while one connection's backend dial is under way, and connects again while the
// Service is being withdrawn (the control plane still routes its VIP here): both are served.
// Before, the stop canceled the dials of accepted connections (they were closed unanswered)
// and closed the Service's listener together with its advertisement.
func TestShutdownServesConnectionsAcceptedAndArrivingWhileWithdrawing(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	srv, nd := e.startNode(t, ctx, "withdraw-proxy")
	defer nd.Close()
	var block sync.Mutex // held: backend dials wait for it
	entered := make(chan struct{}, 1)
	hostDialer := dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		unblocked := make(chan struct{})
		go func() { block.Lock(); block.Unlock(); close(unblocked) }()
		select {
		case <-unblocked:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	})
	svc := servicesObject("withdraw", nil)
	svc.Namespace = namespace
	svc.Spec.VIPService = &v1alpha1.VIPServiceSpec{Name: "svc:withdraw", Ports: []string{"tcp:80"}}
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{external("ext", loopbackHTTP(t, "ext"), nil)}}
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{Client: e.client, Node: nd, Metrics: forward.NewMetrics(prometheus.NewRegistry()),
		HostDialer: hostDialer, ExternalServices: tenancy.ExternalServices{Allowed: true}, DrainGrace: 20 * time.Second,
		Retry: 200 * time.Millisecond, Selection: proxy.Selection{Namespace: namespace, Services: []string{"withdraw"}}})
	if err != nil {
		t.Fatal(err)
	}
	stop, stopped := run(p)
	defer stop()
	poll(t, "svc:withdraw hosted", func() bool { return slices.Contains(p.Served().Services, "svc:withdraw/tcp/80") })
	// The route stays (RouteService): the control plane keeps the VIP here all through the
	// withdrawal, which then lasts proxy.WithdrawWait.
	const vip = "100.99.1.1"
	if err := e.sim.RouteService(ctx, "svc:withdraw", vip, srv, e.peer); err != nil {
		t.Fatal(err)
	}
	poll(t, "a first connection through "+vip, func() bool {
		c, err := e.dialVIP(ctx, vip, 80)
		if err != nil {
			return false
		}
		defer c.Close()
		who, err := c.get()
		return err == nil && who == "ext"
	})

	block.Lock()
	early, err := e.dialVIP(ctx, vip, 80)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	answer := make(chan error, 1)
	go func() {
		who, err := early.get()
		if err == nil && who != "ext" {
			err = fmt.Errorf("answered by %q", who)
		}
		answer <- err
	}()
	<-entered // its backend dial is under way
	start := time.Now()
	stop() // SIGTERM
	poll(t, "svc:withdraw no longer advertised", func() bool { return !advertises(ctx, srv, "svc:withdraw") })
	block.Unlock()
	late, err := e.dialVIP(ctx, vip, 80)
	if err != nil {
		t.Fatalf("connecting while the Service is withdrawn: %v", err)
	}
	defer late.Close()
	who, err := late.get()
	late.Close()
	if err != nil || who != "ext" {
		t.Errorf("a connection arriving while the Service is withdrawn: %q, %v", who, err)
	}
	if elapsed := time.Since(start); elapsed >= proxy.WithdrawWait {
		t.Fatalf("the late connection took %v, beyond the withdrawal (%v): the test proves nothing", elapsed, proxy.WithdrawWait)
	}
	if err := <-answer; err != nil {
		t.Errorf("the connection accepted before the stop: %v", err)
	}
	early.Close()
	select {
	case <-stopped:
	case <-time.After(proxy.WithdrawWait + 20*time.Second + proxy.DrainTimeout):
		t.Fatal("Run did not return")
	}
}
