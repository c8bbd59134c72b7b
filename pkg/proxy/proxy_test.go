package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

// egressObject is a TailscaleEndpoints of dev-a's four protocols, served for egress.
func (e *env) egressObject(name string) *v1alpha1.TailscaleEndpoints {
	d := e.devices["dev-a"]
	ep := func(n string, port int, p v1alpha1.Protocol) v1alpha1.TailscaleEndpoint {
		return v1alpha1.TailscaleEndpoint{Name: n, TailscaleIP: d.IPv4.String(), TailscaleFQDN: d.FQDN, Port: int32(port), Protocol: p}
	}
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"egress": "true"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			ep("http", d.HTTPPort, v1alpha1.ProtocolHTTP), ep("echo", d.TCPPort, v1alpha1.ProtocolTCP),
			ep("dns", d.UDPPort, v1alpha1.ProtocolUDP), ep("grpc", d.GRPCPort, v1alpha1.ProtocolGRPC),
		}},
	}
}

// egressAddr is where the proxy serves an egress endpoint: the bind address and the port the
// allocator recorded in the object's status (waited for), nothing learnt from the proxy.
func (e *env) egressAddr(t testing.TB, object, endpoint string, port int) string {
	t.Helper()
	var listener int32
	poll(t, "the egress port of "+object+"/"+endpoint, func() bool {
		obj, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Get(tctx(t), object, metav1.GetOptions{})
		if err != nil {
			return false
		}
		_, recorded := ports.Recorded(obj)
		for k, p := range recorded {
			if k.Endpoint == endpoint && k.Port == int32(port) {
				listener = p
			}
		}
		return listener != 0
	})
	return net.JoinHostPort(e.bind, fmt.Sprint(listener))
}

func TestEgressCarriesHTTPTCPUDPAndGRPC(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	obj := e.egressObject("egress-all")
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := e.devices["dev-a"]
	served := e.waitServed(t, func(s proxy.Served) bool {
		return s.Egress[namespace+"/egress-all/grpc"] != "" && s.Egress[namespace+"/egress-all/dns"] != ""
	})
	if got, want := served.Egress[namespace+"/egress-all/dns"], "udp://"+e.egressAddr(t, "egress-all", "dns", d.UDPPort); got != want {
		t.Errorf("UDP egress served on %s, want %s", got, want)
	}

	t.Run("HTTP", func(t *testing.T) {
		body := pollGet(t, "http://"+e.egressAddr(t, "egress-all", "http", d.HTTPPort)+"/")
		if body != "hello from dev-a\n" {
			t.Errorf("body %q", body)
		}
	})
	t.Run("TCP", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", e.egressAddr(t, "egress-all", "echo", d.TCPPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := strings.Repeat("echo through the tailnet ", 10000) // 250 kB: many segments each way
		go func() {
			_, _ = io.WriteString(c, msg)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("echo: %d of %d bytes, err %v", len(got), len(msg), err)
		}
	})
	t.Run("UDP", func(t *testing.T) {
		c, err := net.Dial("udp", e.egressAddr(t, "egress-all", "dns", d.UDPPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1500)
		// Datagrams can be lost while the session is dialled: send again until one echoes (bounded).
		poll(t, "a UDP echo", func() bool {
			if _, err := c.Write([]byte("ping-udp")); err != nil {
				return false
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(buf)
			return err == nil && string(buf[:n]) == "ping-udp"
		})
		for i := range 20 {
			msg := fmt.Sprintf("datagram %d", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("echo of %q: %q, %v", msg, buf[:n], err)
			}
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		conn, err := grpc.NewClient(e.egressAddr(t, "egress-all", "grpc", d.GRPCPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check through egress: %v, %v", resp, err)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		_, echoPort, _ := net.SplitHostPort(e.egressAddr(t, "egress-all", "echo", d.TCPPort))
		for _, want := range []string{
			`tailscale_gateway_proxy_connections_total{listener="egress/tcp/` + echoPort + `",role="egress",target="proxy-test/egress-all/echo"} 1`,
			`tailscale_gateway_proxy_bytes_total{direction="from_target",listener="egress/tcp/` + echoPort + `",role="egress",target="proxy-test/egress-all/echo"} 250000`,
			`tailscale_gateway_proxy_active_connections{listener="egress/udp/`,
		} {
			poll(t, "metric "+want, func() bool { return strings.Contains(e.metricsText(t), want) })
		}
	})
}

func TestEgressPortsSurviveChangesToTheObject(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	obj := e.egressObject("egress-stable")
	obj.Spec.Endpoints = obj.Spec.Endpoints[:1] // http only
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	key := namespace + "/egress-stable/http"
	before := e.waitServed(t, func(s proxy.Served) bool { return s.Egress[key] != "" }).Egress[key]
	// A new endpoint in front, reordered.
	full := e.egressObject("egress-stable")
	obj, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Get(ctx, "egress-stable", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.Spec.Endpoints = []v1alpha1.TailscaleEndpoint{full.Spec.Endpoints[1], obj.Spec.Endpoints[0]}
	if _, err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	after := e.waitServed(t, func(s proxy.Served) bool { return s.Egress[namespace+"/egress-stable/echo"] != "" })
	if after.Egress[key] != before {
		t.Errorf("the http endpoint moved from %s to %s", before, after.Egress[key])
	}
	// Deleting the object closes its listeners.
	if err := e.client.GatewayV1alpha1().TailscaleEndpoints(namespace).Delete(ctx, "egress-stable", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitServed(t, func(s proxy.Served) bool { return s.Egress[key] == "" })
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(before, "tcp://"), time.Second); err == nil {
		c.Close()
		t.Error("the listener of a deleted object still accepts")
	}
}

func (e *env) metricsText(t *testing.T) string {
	t.Helper()
	return gatheredText(t, e.metrics)
}

// gatheredText renders reg's metrics one a line, "name{labels} value".
func gatheredText(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			fmt.Fprintf(&b, "%s{%s} %v\n", mf.GetName(), strings.Join(labels, ","), v)
		}
	}
	return b.String()
}
