package envoygateway_test

import (
	"os"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/hook"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// Envoy Gateway v1.9.1 publishes the upstream protocol our hook gives a rule's cluster: TLS
// origination for an HTTPS endpoint (SNI and verified name from the host, its caCertificate
// trusted, the system CAs by default, cleartext for plaintext hosts) and HTTP/2 for a rule of
// gRPC endpoints.
func TestEnvoyGatewayPublishesUpstreamTLSAndHTTP2(t *testing.T) {
	caPEM, err := os.ReadFile("../../pkg/extension/hook/testdata/upstream-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	secure := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "secure"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "api", TailscaleIP: "100.64.0.21", TailscaleFQDN: "api.tail1234.ts.net", Port: 443, Protocol: v1alpha1.ProtocolHTTPS,
				TLS: &v1alpha1.UpstreamTLSConfig{CACertificate: string(caPEM)}},
			{Name: "plain", TailscaleIP: "100.64.0.22", TailscaleFQDN: "plain.tail1234.ts.net", Port: 443, Protocol: v1alpha1.ProtocolHTTP},
		}}}
	rpc := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rpc"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "health", TailscaleIP: "100.64.0.23", TailscaleFQDN: "rpc.tail1234.ts.net", Port: 50051, Protocol: v1alpha1.ProtocolGRPC},
		}}}
	s, hookL, _ := startServer(t, &framework.ScriptedCollector{Tailnets: map[string]livestatus.Tailnet{}})
	ctx := bounded(t)
	for _, o := range []*v1alpha1.TailscaleEndpoints{secure, rpc} {
		if _, err := s.Clientset(t).GatewayV1alpha1().TailscaleEndpoints(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: hookL.Addr().String(), Resources: map[string]string{
		"gateway.yaml": envoygateway.JoinYAML(envoygateway.GatewayClassYAML("eg"), envoygateway.GatewayYAML(ns, gatewayName, "eg", 8080)),
		"route.yaml": envoygateway.HTTPRouteYAML(ns, "upstream", gatewayName,
			[]envoygateway.BackendRef{envoygateway.EndpointsRef("secure", 443)},
			[]envoygateway.BackendRef{envoygateway.EndpointsRef("rpc", 50051)}),
		"objects.yaml": envoygateway.JoinYAML(objectYAML(t, "TailscaleEndpoints", secure), objectYAML(t, "TailscaleEndpoints", rpc)),
	}})
	tlsRule, grpcRule := envoygateway.ClusterName(ns, "upstream", 0), envoygateway.ClusterName(ns, "upstream", 1)
	cds, err := eg.XDS(t, ns, gatewayName).Watch(ctx, xdsclient.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	defer cds.Stop()
	got, err := cds.WaitFor(ctx, func(r *xdsclient.Response) bool {
		return r.Cluster(tlsRule).GetTransportSocket() != nil && r.Cluster(grpcRule).GetTransportSocket() != nil
	})
	if err != nil {
		t.Fatalf("Envoy Gateway never published the shaped clusters: %v", err)
	}

	c := got.Cluster(tlsRule)
	def := tlsContext(t, c.GetTransportSocket().GetTypedConfig())
	if !def.GetAutoHostSni() || !def.GetAutoSniSanValidation() || def.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != hook.SystemCAPath {
		t.Errorf("%s default transport socket: %v; want TLS, SNI and SAN from the host, system CAs", tlsRule, def)
	}
	matches := map[string]*clusterv3.Cluster_TransportSocketMatch{}
	for _, m := range c.GetTransportSocketMatches() {
		matches[m.GetMatch().GetFields()[backends.TransportSocketMatchKey].GetStringValue()] = m
	}
	if m := matches[backends.UpstreamPlaintext]; m.GetTransportSocket().GetName() != "envoy.transport_sockets.raw_buffer" {
		t.Errorf("%s: plaintext hosts get %v, want raw_buffer", tlsRule, m)
	}
	own := matches[backends.UpstreamCAMatch(ns, "secure", "api")]
	if ca := tlsContext(t, own.GetTransportSocket().GetTypedConfig()).GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetInlineString(); ca != string(caPEM) {
		t.Errorf("%s: the api endpoint's match trusts %q, want its caCertificate", tlsRule, ca)
	}
	if http2Of(t, c) {
		t.Errorf("%s (HTTPS and HTTP endpoints) speaks HTTP/2", tlsRule)
	}
	if !http2Of(t, got.Cluster(grpcRule)) {
		t.Errorf("%s (gRPC endpoints) does not speak HTTP/2", grpcRule)
	}
}

func tlsContext(t *testing.T, a *anypb.Any) *tlsv3.UpstreamTlsContext {
	t.Helper()
	out := &tlsv3.UpstreamTlsContext{}
	if err := a.UnmarshalTo(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func http2Of(t *testing.T, c *clusterv3.Cluster) bool {
	t.Helper()
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		t.Fatal(err)
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}
