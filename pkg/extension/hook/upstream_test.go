package hook

import (
	"os"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/internal/golden"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// tsep is a TailscaleEndpoints of namespace web labelled app=web; each spec is "name port protocol".
func tsep(name string, specs ...string) *v1alpha1.TailscaleEndpoints {
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main"}}
	for i, s := range specs {
		f := strings.Fields(s)
		port := map[string]int32{"443": 443, "50051": 50051, "80": 80}[f[1]]
		obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: f[0], TailscaleIP: "100.64.0." + string(rune('1'+i)),
			TailscaleFQDN: f[0] + ".tail1234.ts.net", Port: port, Protocol: v1alpha1.Protocol(f[2])})
	}
	return obj
}

func testCA(t *testing.T) string {
	t.Helper()
	pem, err := os.ReadFile("testdata/upstream-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem)
}

// The cluster of a rule reaching HTTPS and TLS endpoints originates TLS: SNI and the verified
// name are each host's tailscaleFQDN, the chain verified by the endpoint's caCertificate or the
// system CAs; HTTP endpoints stay cleartext; a rule reaching only gRPC endpoints speaks HTTP/2.
func TestClusterUpstreamProtocols(t *testing.T) {
	ca := testCA(t)
	secure := tsep("secure", "api 443 HTTPS", "public 443 HTTPS", "plain 80 HTTP", "raw 443 TLS")
	secure.Spec.Endpoints[0].TLS = &v1alpha1.UpstreamTLSConfig{CACertificate: ca}
	grpcOnly := tsep("grpc", "rpc 50051 gRPC")
	grpcOnly.Labels = map[string]string{"app": "rpc"}

	f := newFixture(t)
	got := f.modify(t, toJSON(t, secure, backends.KindEndpoints))
	golden.Assert(t, "cluster-upstream-tls", got)
	checkTLS(t, got, ca)

	got = f.modify(t, toJSON(t, grpcOnly, backends.KindEndpoints))
	golden.Assert(t, "cluster-upstream-grpc", got)
	if !http2(t, got) {
		t.Error("a rule of gRPC endpoints only: cluster without HTTP/2")
	}

	// A TailscaleServices: the endpoints it selects (read from the lister) decide.
	eps := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	f.server.opts.Endpoints = listers.NewTailscaleEndpointsLister(eps)
	svc := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "rpc"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "rpc"}}}}
	if err := eps.Add(grpcOnly); err != nil {
		t.Fatal(err)
	}
	if got := f.modify(t, toJSON(t, svc, backends.KindServices)); !http2(t, got) {
		t.Error("a TailscaleServices selecting gRPC endpoints only: cluster without HTTP/2")
	}

	// gRPC beside HTTP/1.1 endpoints: HTTP/1.1, and the objects are told why.
	mixed := tsep("mixed", "rpc 50051 gRPC", "web 80 HTTP")
	if got := f.modify(t, toJSON(t, mixed, backends.KindEndpoints)); http2(t, got) {
		t.Error("gRPC beside HTTP/1.1 endpoints: cluster speaks HTTP/2 to the HTTP/1.1 endpoints")
	}
	select {
	case e := <-f.recorder.Events:
		if !strings.Contains(e, "MixedUpstreamProtocols") || !strings.Contains(e, "web/mixed/rpc") {
			t.Errorf("event %q, want MixedUpstreamProtocols naming web/mixed/rpc", e)
		}
	default:
		t.Error("no Event on a rule mixing gRPC and HTTP/1.1 endpoints")
	}
}

// checkTLS checks the default transport socket and the matches of c.
func checkTLS(t *testing.T, c *clusterv3.Cluster, ca string) {
	t.Helper()
	def := upstreamTLS(t, c.GetTransportSocket().GetTypedConfig())
	if !def.AutoHostSni || !def.AutoSniSanValidation || def.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != SystemCAPath {
		t.Errorf("default transport socket %v: want TLS with auto SNI, SAN validation and the system CAs", def)
	}
	names := map[string]bool{}
	for _, m := range c.GetTransportSocketMatches() {
		names[m.Name] = true
		if m.Name == backends.UpstreamCAMatch("web", "secure", "api") {
			if got := upstreamTLS(t, m.GetTransportSocket().GetTypedConfig()).GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetInlineString(); got != ca {
				t.Errorf("match %s trusts %q, want the endpoint's caCertificate", m.Name, got)
			}
		}
	}
	if !names[backends.UpstreamPlaintext] || !names[backends.UpstreamCAMatch("web", "secure", "api")] || len(names) != 2 {
		t.Errorf("transport socket matches %v: want plaintext and web/secure/api's CA", names)
	}
}

func upstreamTLS(t *testing.T, a *anypb.Any) *tlsv3.UpstreamTlsContext {
	t.Helper()
	out := &tlsv3.UpstreamTlsContext{}
	if err := a.UnmarshalTo(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func http2(t *testing.T, c *clusterv3.Cluster) bool {
	t.Helper()
	a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if !ok {
		return false
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		t.Fatal(err)
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}
