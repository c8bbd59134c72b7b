package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// servicesObject is a TailscaleServices named name selecting app=<name>.
func servicesObject(name string, lb *v1alpha1.LoadBalancingConfig) *v1alpha1.TailscaleServices {
	return &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector:      &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			LoadBalancing: lb,
		},
	}
}

// backends returns one TailscaleEndpoints per device, "<prefix>-<device>", labelled app=prefix.
func (e *env) backends(prefix string) []*v1alpha1.TailscaleEndpoints {
	var out []*v1alpha1.TailscaleEndpoints
	for _, d := range backendNames {
		out = append(out, e.backendObject(prefix+"-"+d, d, map[string]string{"app": prefix}))
	}
	return out
}

// loopbackHTTP serves "hello from <name>" on 127.0.0.1: an external service.
func loopbackHTTP(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", name) }),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

func external(name, addr string, weight *int32) v1alpha1.ExternalService {
	host, port, _ := net.SplitHostPort(addr)
	var p int32
	fmt.Sscan(port, &p)
	return v1alpha1.ExternalService{Name: name, Address: host, Port: p, Protocol: v1alpha1.ProtocolHTTP, Weight: weight}
}

func TestServiceRoundRobinIsEvenAndSkipsUnhealthy(t *testing.T) {
	e := getEnv(t)
	svc := servicesObject("rr", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyRoundRobin})
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{external("ext", loopbackHTTP(t, "ext"), nil)}}
	vip := e.serve(t, svc, e.backends("rr")...)

	// Sequential connections: round-robin gives each of the four backends exactly a quarter
	// (tolerance: none; the first connection above may have shifted the starting point only).
	got := e.distribution(t, vip, 40)
	for _, who := range []string{"dev-a", "dev-b", "dev-c", "ext"} {
		if got[who] != 10 {
			t.Errorf("round-robin over 40 connections: %v, want 10 each of dev-a, dev-b, dev-c, ext", got)
			break
		}
	}

	// dev-b's HTTP endpoint becomes Unhealthy in the persisted status: no new connection reaches it.
	e.updateEndpointsStatus(t, "rr-dev-b", func(o *v1alpha1.TailscaleEndpoints) {
		o.Status.Endpoints = []v1alpha1.EndpointStatus{{Name: "http", Status: "Unhealthy"}, {Name: "echo", Status: "Healthy"}}
	})
	poll(t, "the proxy to stop sending to the unhealthy backend", func() bool { return e.distribution(t, vip, 3)["dev-b"] == 0 })
	got = e.distribution(t, vip, 30)
	if got["dev-b"] != 0 || got["dev-a"] != 10 || got["dev-c"] != 10 || got["ext"] != 10 {
		t.Errorf("with dev-b unhealthy: %v, want dev-b 0 and 10 each of the others", got)
	}
	e.updateEndpointsStatus(t, "rr-dev-b", func(o *v1alpha1.TailscaleEndpoints) {
		o.Status.Endpoints = []v1alpha1.EndpointStatus{{Name: "http", Status: "Healthy"}}
	})
	poll(t, "dev-b back in rotation", func() bool { return e.distribution(t, vip, 4)["dev-b"] == 1 })
}

func TestServiceWeightedProportions(t *testing.T) {
	e := getEnv(t)
	svc := servicesObject("weighted", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyWeighted,
		Weights: map[string]int32{"weighted-dev-a": 6, "weighted-dev-b": 3, "weighted-dev-c": 0}})
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{external("ext", loopbackHTTP(t, "ext"), ptr.To[int32](1))}}
	vip := e.serve(t, svc, e.backends("weighted")...)

	// 6:3:0:1 over 100 connections. Smooth weighted round-robin is exact over every window of
	// 10; the stated tolerance, ±2 per backend, covers the connection made by serve.
	got := e.distribution(t, vip, 100)
	for who, want := range map[string]int{"dev-a": 60, "dev-b": 30, "dev-c": 0, "ext": 10} {
		if d := got[who] - want; d < -2 || d > 2 {
			t.Errorf("weighted over 100 connections: %v, want dev-a 60, dev-b 30, dev-c 0, ext 10 (±2)", got)
			break
		}
	}
}

func TestServiceLeastConnectionsCountsHeldConnections(t *testing.T) {
	e := getEnv(t)
	vip := e.serve(t, servicesObject("least", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyLeastConnections}), e.backends("least")...)
	ctx := tctx(t)
	held := map[string][]*httpConn{}
	open := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			c, err := e.dialVIP(ctx, vip, 80)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			who, err := c.get()
			if err != nil {
				t.Fatal(err)
			}
			held[who] = append(held[who], c)
			got[who]++
		}
		return got
	}
	// Six held connections spread 2/2/2.
	if got := open(6); got["dev-a"] != 2 || got["dev-b"] != 2 || got["dev-c"] != 2 {
		t.Fatalf("six held connections: %v, want 2 each", got)
	}
	// Close dev-a's two: the next two new connections both go to dev-a (0 < 2), which
	// round-robin would not do.
	for _, c := range held["dev-a"] {
		c.Close()
	}
	held["dev-a"] = nil
	poll(t, "the proxy to see dev-a's connections end", func() bool {
		return strings.Contains(e.metricsText(t), `tailscale_gateway_proxy_active_connections{listener="svc:least/tcp/80",role="service",target="proxy-test/least-dev-a/http"} 0`)
	})
	if got := open(2); got["dev-a"] != 2 {
		t.Errorf("after dev-a's connections closed: %v, want both on dev-a", got)
	}
}

func TestServiceFailoverFollowsThePersistedActiveTier(t *testing.T) {
	e := getEnv(t)
	svc := servicesObject("failover", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyFailover,
		FailoverConfig: &v1alpha1.FailoverConfig{PrimaryEndpoints: []string{"failover-dev-a"},
			SecondaryEndpoints: []string{"failover-dev-b", "failover-dev-c"}, FailbackDelay: &metav1.Duration{Duration: time.Minute}}})
	vip := e.serve(t, svc, e.backends("failover")...)
	if got := e.distribution(t, vip, 10); got["dev-a"] != 10 {
		t.Errorf("no tier in status (primary): %v, want all on dev-a", got)
	}
	setTier := func(tier string) {
		e.updateServicesStatus(t, "failover", func(s *v1alpha1.TailscaleServices) {
			s.Status.LoadBalancingStatus = &v1alpha1.LoadBalancingStatus{Strategy: v1alpha1.StrategyFailover,
				FailoverStatus: &v1alpha1.FailoverStatus{ActiveTier: tier}}
		})
	}
	// The server moved traffic to the secondary tier (and holds it there for failbackDelay
	// although dev-a is healthy): the proxy follows the persisted tier, it does not recompute it.
	setTier("secondary")
	poll(t, "traffic on the secondary tier", func() bool { return e.distribution(t, vip, 2)["dev-a"] == 0 })
	if got := e.distribution(t, vip, 20); got["dev-a"] != 0 || got["dev-b"] != 10 || got["dev-c"] != 10 {
		t.Errorf("secondary tier: %v, want dev-b and dev-c 10 each", got)
	}
	// Failback, once the server says so.
	setTier("primary")
	poll(t, "traffic back on the primary tier", func() bool { return e.distribution(t, vip, 1)["dev-a"] == 1 })
	if got := e.distribution(t, vip, 10); got["dev-a"] != 10 {
		t.Errorf("after failback: %v, want all on dev-a", got)
	}
	// The active tier has no usable backend yet (status not written yet): the other tier serves.
	e.updateEndpointsStatus(t, "failover-dev-a", func(o *v1alpha1.TailscaleEndpoints) {
		o.Status.Endpoints = []v1alpha1.EndpointStatus{{Name: "http", Status: "Unhealthy"}}
	})
	poll(t, "dev-a unhealthy", func() bool { return e.distribution(t, vip, 1)["dev-a"] == 0 })
}

func TestServiceDialErrorTriesTheNextBackend(t *testing.T) {
	e := getEnv(t)
	// A closed port on loopback: the external service refuses every dial.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	svc := servicesObject("retry", &v1alpha1.LoadBalancingConfig{Strategy: v1alpha1.StrategyRoundRobin})
	svc.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{ExternalServices: []v1alpha1.ExternalService{external("refusing", closed, nil)}}
	vip := e.serve(t, svc, e.backendObject("retry-dev-a", "dev-a", map[string]string{"app": "retry"}))
	// Every connection succeeds on dev-a, whichever backend round-robin tried first.
	if got := e.distribution(t, vip, 10); got["dev-a"] != 10 {
		t.Errorf("%v, want all 10 on dev-a", got)
	}
	want := `tailscale_gateway_proxy_dial_errors_total{listener="svc:retry/tcp/80",role="service",target="proxy-test/retry/external/refusing"}`
	var line string
	for _, l := range strings.Split(e.metricsText(t), "\n") {
		if strings.HasPrefix(l, want) {
			line = l
		}
	}
	if line == "" || strings.HasSuffix(line, " 0") {
		t.Errorf("dial errors of the refusing backend not counted: %q", line)
	}
}

func TestServiceTCPPortCarriesBytesBothWays(t *testing.T) {
	e := getEnv(t)
	vip := e.serve(t, servicesObject("echo", nil), e.backends("echo")...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := e.peer.Dial(ctx, "tcp", net.JoinHostPort(vip, "5432"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// No half-close: tsnet's Service forwarding (ipnlocal forwardTCPWithProxyProtocol in
	// v1.102.5) ends the whole connection when either direction ends.
	msg := strings.Repeat("0123456789", 50000)
	go func() { _, _ = io.WriteString(c, msg) }()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo through the VIP: %v", err)
	}
}
