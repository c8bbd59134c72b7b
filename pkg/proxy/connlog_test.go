package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
)

// A listener TailscaleServices generated for a TailscaleGateway with observability.logging.accessLogs
// (the connection-log annotation): the proxy logs the connection — source (the tailnet caller),
// destination, bytes each way, duration — and, being a byte pipe, passes the request's W3C trace
// context (traceparent, tracestate) to the backend untouched.
func TestServiceConnectionLogAndTraceContext(t *testing.T) {
	e := getEnv(t)
	ctx := tctx(t)
	got := make(chan http.Header, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			select {
			case got <- r.Header.Clone():
			default:
			}
		}
		fmt.Fprint(w, "hello from envoy\n")
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	host, portText, _ := net.SplitHostPort(ln.Addr().String())
	var port int32
	fmt.Sscan(portText, &port)

	tg := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "logged", UID: "logged-uid"},
		Spec: v1alpha1.TailscaleGatewaySpec{GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: "logged"},
			Tailnets:      []v1alpha1.TailnetConfiguration{{Name: "sim", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "sim"}}},
			Observability: &v1alpha1.ObservabilityConfig{Logging: &v1alpha1.LoggingConfig{AccessLogs: true}}}}
	gen := tsgateway.GenerateListeners(tsgateway.ListenerInput{Gateway: tg,
		Tailnets:  map[string]*v1alpha1.TailscaleTailnet{"sim": {ObjectMeta: metav1.ObjectMeta{Name: "sim"}}},
		Listeners: []gwapiv1.Listener{{Name: "web", Port: gwapiv1.PortNumber(port), Protocol: gwapiv1.HTTPProtocolType}},
		Envoy: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "envoy-gateway-system", Name: "envoy-logged"},
			Spec: corev1.ServiceSpec{ClusterIP: host, Ports: []corev1.ServicePort{{Port: port, Protocol: corev1.ProtocolTCP}}}}})
	if len(gen.Services) != 1 {
		t.Fatalf("generated %+v", gen)
	}
	svc := gen.Services[0]
	svc.Labels["proxy"] = "test" // the shared proxy's --services-selector
	e.vips++
	vip := fmt.Sprintf("100.99.0.%d", e.vips)
	if err := e.sim.RouteService(ctx, svc.Spec.VIPService.Name, vip, e.node, e.peer); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GatewayV1alpha1().TailscaleServices(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	listener := fmt.Sprintf("%s/tcp/%d", svc.Spec.VIPService.Name, port)
	e.waitServed(t, func(s proxy.Served) bool { return slices.Contains(s.Services, listener) })

	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
	request := "GET /traced HTTP/1.1\r\nHost: vip\r\ntraceparent: " + traceparent + "\r\ntracestate: " + tracestate + "\r\nConnection: close\r\n\r\n"
	var received int
	// The first connections wait for the route to the proxy.
	poll(t, "a traced request through "+vip, func() bool {
		c, err := e.dialVIP(ctx, vip, int(port))
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, request); err != nil {
			return false
		}
		resp, err := io.ReadAll(c.r)
		received = len(resp)
		return err == nil && strings.HasSuffix(string(resp), "hello from envoy\n")
	})
	select {
	case h := <-got:
		if h.Get("traceparent") != traceparent || h.Get("tracestate") != tracestate {
			t.Errorf("the backend got traceparent %q, tracestate %q", h.Get("traceparent"), h.Get("tracestate"))
		}
	case <-ctx.Done():
		t.Fatal("the backend got no traced request")
	}

	peerIP, _ := e.peer.TailscaleIPs()
	var line map[string]any
	poll(t, "the connection's log line", func() bool {
		line = e.connLog.find(func(m map[string]any) bool {
			return m["msg"] == "Connection" && m["listener"] == listener && m["bytesFromDestination"] == float64(received)
		})
		return line != nil
	})
	src, _ := line["source"].(string)
	if ap, err := net.ResolveTCPAddr("tcp", src); err != nil || !ap.IP.Equal(net.IP(peerIP.AsSlice())) {
		t.Errorf("source %q, want the tailnet caller %s", src, peerIP)
	}
	if line["object"] != namespace+"/"+svc.Name || line["destination"] != namespace+"/"+svc.Name+"/external/"+tsgateway.EnvoyExternalService ||
		line["destinationAddress"] != ln.Addr().String() || line["bytesToDestination"] != float64(len(request)) {
		t.Errorf("log line %v", line)
	}
	if d, err := time.ParseDuration(fmt.Sprint(line["duration"])); err != nil || d <= 0 {
		t.Errorf("duration %v", line["duration"])
	}
}
