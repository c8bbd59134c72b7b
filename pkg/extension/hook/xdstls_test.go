package hook

import (
	"context"
	"fmt"
	"testing"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/internal/golden"
)

// Finding 1 (issue 20): with XDSTLS the xDS cluster the hook adds makes Envoy present its client
// certificate (Envoy Gateway's SDS secret from a file), verify the server against the CA of the
// moment and the advertised name; without a CA the translation fails rather than publish
// clusters whose EDS source cannot connect.
func TestXDSClusterCarriesEnvoysClientCertificate(t *testing.T) {
	f := newFixture(t)
	ca := []byte("-----BEGIN CERTIFICATE-----\nfirst\n-----END CERTIFICATE-----\n")
	f.server.opts.XDSTLS = &XDSClientTLS{SDSCertificateName: EnvoyGatewaySDSCertificateName, SDSCertificatePath: EnvoyGatewaySDSCertificatePath,
		ServerName: "tailscale-gateway-apiserver.tailscale-gateway-system.svc", CA: func() []byte { return ca }}
	req := &pb.PostTranslateModifyRequest{Clusters: []*clusterv3.Cluster{f.modify(t, endpointsJSON(t, "web-east"))}}
	resp, err := f.server.PostTranslateModify(context.Background(), req)
	if err != nil || len(resp.Clusters) != 2 {
		t.Fatalf("PostTranslateModify: %d clusters, %v", len(resp.GetClusters()), err)
	}
	golden.Assert(t, "cluster-xds-tls", resp.Clusters[1])
	// Envoy's own constraints on the cluster (no Envoy binary here to load it).
	if err := resp.Clusters[1].ValidateAll(); err != nil {
		t.Errorf("the xDS cluster breaks Envoy's constraints: %v", err)
	}
	var tlsCtx tlsv3.UpstreamTlsContext
	if err := resp.Clusters[1].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tlsCtx); err != nil || tlsCtx.ValidateAll() != nil {
		t.Errorf("UpstreamTlsContext: %v %v", err, tlsCtx.ValidateAll())
	}

	ca = []byte("-----BEGIN CERTIFICATE-----\nrotated\n-----END CERTIFICATE-----\n")
	resp, err = f.server.PostTranslateModify(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := resp.Clusters[1].GetTransportSocket().GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatal(err)
	}
	if got := ctx.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetInlineBytes(); string(got) != string(ca) {
		t.Errorf("the next translation trusts %q, want the rotated CA", got)
	}

	ca = nil
	if _, err := f.server.PostTranslateModify(context.Background(), req); status.Code(err) != codes.Unavailable {
		t.Errorf("without a CA: %v, want Unavailable", err)
	}
}

// TestMessageSizes measures the hooks' largest messages, a PostTranslateModify of 1,000
// custom-backend clusters and a PostClusterModify of one TailscaleEndpoints of 1,000 endpoints,
// against MaxMessageSize (go test -run TestMessageSizes -v ./pkg/extension/hook/ prints them).
func TestMessageSizes(t *testing.T) {
	f := newFixture(t)
	obj := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web-east"}, Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main"}}
	for j := range 1000 {
		obj.Spec.Endpoints = append(obj.Spec.Endpoints, v1alpha1.TailscaleEndpoint{Name: fmt.Sprintf("ep-%d", j),
			TailscaleIP: fmt.Sprintf("100.64.%d.%d", j/250, j%250+1), TailscaleFQDN: fmt.Sprintf("device-%d.tailnet-1234.ts.net", j), Port: 8080, Protocol: v1alpha1.ProtocolHTTP})
	}
	clusterReq := &pb.PostClusterModifyRequest{Cluster: egCluster(), PostClusterContext: &pb.PostClusterExtensionContext{
		BackendExtensionResources: []*pb.ExtensionResource{{UnstructuredBytes: toJSON(t, obj, backends.KindEndpoints)}}}}
	translate := &pb.PostTranslateModifyRequest{}
	for i := range 1000 {
		c := f.modify(t, endpointsJSON(t, "web-east"))
		c.Name = backends.RouteRule{Namespace: "web", Name: fmt.Sprintf("route-%d", i)}.ClusterName()
		c.EdsClusterConfig.ServiceName = c.Name
		translate.Clusters = append(translate.Clusters, c)
	}
	translate.Clusters = append(translate.Clusters, &clusterv3.Cluster{Name: eds.ClusterName})
	for name, size := range map[string]int{"PostClusterModify (1,000 endpoints)": proto.Size(clusterReq),
		"PostTranslateModify (1,000 clusters)": proto.Size(translate)} {
		t.Logf("%s: %d bytes (%.1f%% of MaxMessageSize)", name, size, 100*float64(size)/MaxMessageSize)
		if size*4 > MaxMessageSize {
			t.Errorf("%s is %d bytes: less than 4x headroom under MaxMessageSize %d", name, size, MaxMessageSize)
		}
	}
}
