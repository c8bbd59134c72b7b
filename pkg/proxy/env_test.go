package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/egressalloc"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// The tests share one simulated tailnet with three backend devices, a proxy node and a client
// node: starting tsnet nodes dominates their cost.
const namespace = "proxy-test"

var backendNames = []string{"dev-a", "dev-b", "dev-c"}

type env struct {
	sim     *tailnetsim.Tailnet
	client  *fake.Clientset
	node    *tsnet.Server // the proxy's node
	wrapped *node.Node    // node as the proxy uses it
	peer    *tsnet.Server // a tailnet client
	bind    string        // egress bind IP, a loopback address of its own
	metrics *prometheus.Registry
	proxy   *proxy.Proxy
	dir     string
	stop    context.CancelFunc
	stopped chan struct{}
	devices map[string]tailnetsim.Device
	vips    int
	// benchVIP is the VIP of BenchmarkServiceNewConnections, made once per process.
	benchVIP string
	// benchRuleVIP is BenchmarkServiceNewConnectionsWithAccessRule's.
	benchRuleVIP string
	// churnVIPAddr and churnEgressAddr are where TestNewConnectionsAreNeverDropped and
	// BenchmarkNewConnections connect, made once per process.
	churnVIPAddr, churnEgressAddr string
	// connLog holds the proxy's connection log lines (Options.ConnectionLog), decoded.
	connLog connLog
}

// connLog collects JSON log lines.
type connLog struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *connLog) add(obj string) {
	var m map[string]any
	if json.Unmarshal([]byte(obj), &m) != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, m)
}

// find returns the first line for which match holds, nil when none.
func (l *connLog) find(match func(map[string]any) bool) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.lines {
		if match(m) {
			return m
		}
	}
	return nil
}

var (
	shared     *env
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		done := make(chan struct{})
		go func() { shared.close(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			// tsnet v1.102.5's Server.Close can block forever after many connections.
			fmt.Fprintln(os.Stderr, "the simulated tailnet did not close in 20 s")
		}
	}
	os.Exit(code)
}

func getEnv(t testing.TB) *env {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = startEnv() })
	if sharedErr != nil {
		t.Fatalf("starting the simulated tailnet and the proxy: %v", sharedErr)
	}
	return shared
}

func startEnv() (_ *env, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var specs []tailnetsim.DeviceSpec
	for _, n := range backendNames {
		specs = append(specs, tailnetsim.AllProtocols(n, "tag:backend"))
	}
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Devices: specs})
	if err != nil {
		return nil, err
	}
	e := &env{sim: sim, devices: map[string]tailnetsim.Device{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	for _, n := range backendNames {
		if e.devices[n], err = sim.Device(n); err != nil {
			return nil, err
		}
	}
	if e.dir, err = os.MkdirTemp("", "proxy-node-"); err != nil {
		return nil, err
	}
	e.node, err = node.Start(ctx, node.Options{Dir: e.dir, Hostname: "proxy", ControlURL: sim.ControlURL(),
		AuthKey: sim.AuthKey(), Tags: []string{"tag:proxy"}})
	if err != nil {
		return nil, err
	}
	if e.wrapped, err = node.Wrap(e.node); err != nil {
		return nil, err
	}
	if e.peer, err = sim.NewNode(ctx, "client", sim.AuthKey()); err != nil {
		return nil, err
	}
	e.bind = fmt.Sprintf("127.%d.%d.%d", 10+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	e.client = fake.NewSimpleClientset()
	e.metrics = prometheus.NewRegistry()
	e.proxy, err = proxy.New(proxy.Options{
		Client: e.client, Node: e.wrapped, Metrics: forward.NewMetrics(e.metrics), EgressBindAddress: e.bind,
		DialTimeout: 5 * time.Second, Retry: 200 * time.Millisecond, ExternalServices: tenancy.ExternalServices{Allowed: true},
		ConnectionLog: funcr.NewJSON(e.connLog.add, funcr.Options{}),
		Selection: proxy.Selection{Namespace: namespace,
			EndpointsSelector: labels.SelectorFromSet(labels.Set{"egress": "true"}),
			ServicesSelector:  labels.SelectorFromSet(labels.Set{"proxy": "test"})},
	})
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	e.stop, e.stopped = stop, make(chan struct{})
	// The controllers' egress port allocator, on the same API, as the server runs it: the
	// objects' egress ports are the ones it records in their status.
	factory := informers.NewSharedInformerFactory(e.client, 0)
	alloc, err := egressalloc.New(e.client, factory, egressalloc.Options{Scope: func(*v1alpha1.TailscaleEndpoints) string { return "test" }})
	if err != nil {
		stop()
		return nil, err
	}
	factory.Start(runCtx.Done())
	go alloc.Run(runCtx)
	go func() {
		defer close(e.stopped)
		_ = e.proxy.Run(runCtx)
	}()
	select {
	case <-e.proxy.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e, nil
}

func (e *env) close() {
	if e.stop != nil {
		e.stop()
		<-e.stopped // the proxy closes its connections before its node closes
	}
	if e.wrapped != nil {
		e.wrapped.Close()
	} else if e.node != nil {
		e.node.Close()
	}
	if e.sim != nil {
		e.sim.Close()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// backendObject is a TailscaleEndpoints named name with the HTTP and TCP endpoints of device.
func (e *env) backendObject(name, device string, lbls map[string]string) *v1alpha1.TailscaleEndpoints {
	d := e.devices[device]
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: lbls},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "http", TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN, Port: int32(d.HTTPPort), Protocol: v1alpha1.ProtocolHTTP},
			{Name: "echo", TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN, Port: int32(d.TCPPort), Protocol: v1alpha1.ProtocolTCP},
		}},
	}
}

// serve creates a TailscaleServices hosted by the proxy on a new VIP (tcp:80 and tcp:5432),
// makes the VIP routable from the client node and waits until the proxy hosts it. It returns
// the VIP.
func (e *env) serve(t testing.TB, svc *v1alpha1.TailscaleServices, objs ...*v1alpha1.TailscaleEndpoints) string {
	t.Helper()
	ctx := tctx(t)
	for _, o := range objs {
		if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc.Namespace = namespace
	svc.Labels = map[string]string{"proxy": "test"}
	if svc.Spec.VIPService == nil {
		svc.Spec.VIPService = &v1alpha1.VIPServiceSpec{Name: "svc:" + svc.Name, Ports: []string{"tcp:80", "tcp:5432"}}
	}
	e.vips++
	vip := fmt.Sprintf("100.99.0.%d", e.vips)
	if err := e.sim.RouteService(ctx, svc.Spec.VIPService.Name, vip, e.node, e.peer); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitServed(t, func(s proxy.Served) bool {
		n := 0
		for _, l := range s.Services {
			if strings.HasPrefix(l, svc.Spec.VIPService.Name+"/") {
				n++
			}
		}
		return n == len(svc.Spec.VIPService.Ports)
	})
	// The first connection waits for the client to reach the proxy over the new route.
	poll(t, "a first connection through "+vip, func() bool {
		c, err := e.dialVIP(ctx, vip, 80)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.get()
		return err == nil
	})
	return vip
}

func (e *env) waitServed(t testing.TB, cond func(proxy.Served) bool) proxy.Served {
	t.Helper()
	var last proxy.Served
	poll(t, "the proxy's listeners", func() bool {
		last = e.proxy.Served()
		return cond(last)
	})
	return last
}

// update changes svc's status or spec through the API and waits until the proxy has applied
// the resulting configuration (its informer has the new resourceVersion and one more
// reconcile has run).
func (e *env) updateServicesStatus(t *testing.T, name string, mutate func(*v1alpha1.TailscaleServices)) {
	t.Helper()
	ctx := tctx(t)
	svc, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mutate(svc)
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) updateEndpointsStatus(t *testing.T, name string, mutate func(*v1alpha1.TailscaleEndpoints)) {
	t.Helper()
	ctx := tctx(t)
	o, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mutate(o)
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// httpConn is a raw HTTP/1.1 connection through a VIP: each get on it is answered by the
// backend the connection was forwarded to, so a held connection keeps its backend.
type httpConn struct {
	net.Conn
	r *bufio.Reader
}

func (e *env) dialVIP(ctx context.Context, vip string, port int) (*httpConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := e.peer.Dial(dctx, "tcp", net.JoinHostPort(vip, fmt.Sprint(port)))
	if err != nil {
		return nil, err
	}
	return &httpConn{Conn: c, r: bufio.NewReader(c)}, nil
}

// get sends GET / and returns the answering device ("hello from <device>").
func (c *httpConn) get() (string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&body); err != nil {
		return "", err
	}
	return strings.TrimPrefix(strings.TrimSpace(body.String()), "hello from "), nil
}

// distribution opens n connections to vip:80 one after the other, one request each, and
// counts the answering devices.
func (e *env) distribution(t *testing.T, vip string, n int) map[string]int {
	t.Helper()
	ctx := tctx(t)
	got := map[string]int{}
	for range n {
		c, err := e.dialVIP(ctx, vip, 80)
		if err != nil {
			t.Fatal(err)
		}
		who, err := c.get()
		c.Close()
		if err != nil {
			t.Fatalf("request through %s: %v", vip, err)
		}
		got[who]++
	}
	return got
}

// poll waits for cond, checking every 20 ms, for at most two minutes.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
