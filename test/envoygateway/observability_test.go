package envoygateway_test

import (
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// envoyProxyYAML is the EnvoyProxy the controller generates for a TailscaleGateway of the
// Gateway's namespace with the API contract's observability example, the collector named by
// jaegerEndpoint.
func envoyProxyYAML(t *testing.T, jaegerEndpoint string) (name, yaml string) {
	t.Helper()
	rate := resource.MustParse("0.1")
	tgw := &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge", UID: "uid-edge"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: gatewayName},
			Observability: &v1alpha1.ObservabilityConfig{
				Metrics: &v1alpha1.MetricsConfig{Enabled: true},
				Tracing: &v1alpha1.TracingConfig{Enabled: true, SamplingRate: &rate, JaegerEndpoint: jaegerEndpoint},
				Logging: &v1alpha1.LoggingConfig{Level: "info", AccessLogs: true},
			},
		},
	}
	ep, refused, unrealised := tsgateway.GenerateEnvoyProxy(tgw)
	if ep == nil || refused != "" || len(unrealised) > 0 {
		t.Fatalf("no EnvoyProxy generated: %s %v", refused, unrealised)
	}
	return ep.GetName(), mustYAML(ep.Object)
}

// listenerHCM returns the HttpConnectionManager of the listener on port, nil when none.
func listenerHCM(t *testing.T, r *xdsclient.Response, port uint32) *hcmv3.HttpConnectionManager {
	for _, l := range r.Listeners() {
		if l.GetAddress().GetSocketAddress().GetPortValue() != port {
			continue
		}
		for _, fc := range append(l.GetFilterChains(), l.GetDefaultFilterChain()) {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(h) == nil {
					return h
				}
			}
		}
	}
	return nil
}

// fileAccessLog returns the file access log of logs, nil when none.
func fileAccessLog(t *testing.T, logs []*accesslogv3.AccessLog) *filev3.FileAccessLog {
	for _, l := range logs {
		f := &filev3.FileAccessLog{}
		if l.GetTypedConfig().UnmarshalTo(f) == nil {
			return f
		}
	}
	return nil
}

// Envoy Gateway v1.9.1 takes the EnvoyProxy the controller generates, attached through the
// Gateway's parametersRef as the controller sets it: the HTTP listener's connection manager
// traces with the Zipkin provider posting to /api/v2/spans at the collector (a cluster of its
// own), sampling 10% of requests, and writes the JSON access log (with the request's trace
// context) to /dev/stdout. An OTLP jaegerEndpoint becomes the OpenTelemetry provider.
func TestEnvoyGatewayTranslatesGeneratedEnvoyProxy(t *testing.T) {
	const port = 18080
	epName, zipkin := envoyProxyYAML(t, "http://jaeger-collector.observability:9411/api/v2/spans")
	gateway := mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": gatewayName, "namespace": ns,
			"annotations": map[string]any{tsgateway.AnnotationEnvoyProxyOf: "edge"}},
		"spec": map[string]any{"gatewayClassName": "eg",
			"infrastructure": map[string]any{"parametersRef": map[string]any{"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": epName}},
			"listeners":      []any{map[string]any{"name": "http", "protocol": "HTTP", "port": port}}},
	})
	route := mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "web", "namespace": ns},
		"spec": map[string]any{"parentRefs": []any{map[string]any{"name": gatewayName}},
			"rules": []any{map[string]any{"backendRefs": []any{map[string]any{
				"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "native", "port": 8080}}}}},
	})
	_, addr := newRecorder(t)
	ctx := bounded(t)
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, JSONLogs: true, Resources: map[string]string{
		"gateway.yaml": envoygateway.JoinYAML(envoygateway.GatewayClassYAML("eg"), gateway, route, nativeBackendYAML),
		// The file provider loads one EnvoyProxy per file.
		"envoyproxy.yaml": zipkin,
	}})

	// Envoy Gateway v1.9 reports the EnvoyProxy Accepted for its ancestor, the Gateway; the file
	// provider logs that status under kind "Unknown" (the object it logs has no kind set).
	waitAccepted(ctx, t, eg, "Unknown", ns+"/"+epName)

	xc := eg.XDS(t, ns, gatewayName)
	lds, err := xc.Watch(ctx, xdsclient.ListenerType)
	if err != nil {
		t.Fatal(err)
	}
	defer lds.Stop()
	// By the provider's config type (Envoy Gateway names the Zipkin provider "envoy.traces.zipkin").
	tracedBy := func(config string) func(*xdsclient.Response) bool {
		return func(r *xdsclient.Response) bool {
			return listenerHCM(t, r, port).GetTracing().GetProvider().GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.config.trace.v3."+config
		}
	}
	got, err := lds.WaitFor(ctx, tracedBy("ZipkinConfig"))
	if err != nil {
		t.Fatalf("the HTTP listener never traced with Zipkin: %v; its connection manager: %s", err, dump(t, listenerHCM(t, lds.Latest(), port)))
	}
	hcm := listenerHCM(t, got, port)
	tr := hcm.GetTracing()
	if v := tr.GetRandomSampling().GetValue(); v != 10 {
		t.Errorf("random sampling %v%%, want 10%% (samplingRate 0.1)", v)
	}
	zc := &tracev3.ZipkinConfig{}
	if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(zc); err != nil {
		t.Fatal(err)
	}
	if zc.GetCollectorEndpoint() != tsgateway.ZipkinSpansPath || !zc.GetTraceId_128Bit() || zc.GetCollectorCluster() == "" {
		t.Errorf("Zipkin provider %v", dump(t, zc))
	}
	al := fileAccessLog(t, hcm.GetAccessLog())
	if al == nil || al.GetPath() != tsgateway.AccessLogPath {
		t.Fatalf("access log %v", hcm.GetAccessLog())
	}
	fields := al.GetLogFormat().GetJsonFormat().GetFields()
	for k, v := range tsgateway.AccessLogFormat {
		if fields[k].GetStringValue() != v {
			t.Errorf("access log field %s = %q, want %q", k, fields[k].GetStringValue(), v)
		}
	}

	// The collector is a cluster of its own, at the URL's host and port.
	cds, err := xc.FetchClusters(ctx, func(r *xdsclient.Response) bool { return r.Cluster(zc.GetCollectorCluster()) != nil })
	if err != nil {
		t.Fatalf("no cluster %s: %v", zc.GetCollectorCluster(), err)
	}
	sa := cds.Cluster(zc.GetCollectorCluster()).GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "jaeger-collector.observability" || sa.GetPortValue() != 9411 {
		t.Errorf("collector cluster at %s:%d", sa.GetAddress(), sa.GetPortValue())
	}
	// Envoy Gateway builds a provider host/port as a gRPC destination: HTTP/2 to the collector.
	po := &httpv3.HttpProtocolOptions{}
	if err := cds.Cluster(zc.GetCollectorCluster()).GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(po); err != nil ||
		po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("collector cluster without HTTP/2: %v (%v)", dump(t, po), err)
	}

	// An OTLP endpoint: the OpenTelemetry provider (OTLP over gRPC).
	_, otlp := envoyProxyYAML(t, "http://jaeger-collector.observability:4317")
	if err := eg.WriteResource("envoyproxy.yaml", otlp); err != nil {
		t.Fatal(err)
	}
	if _, err := lds.WaitFor(ctx, tracedBy("OpenTelemetryConfig")); err != nil {
		t.Fatalf("the HTTP listener never traced with OpenTelemetry: %v", err)
	}
}
