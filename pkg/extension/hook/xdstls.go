package hook

import (
	"errors"
	"fmt"
	"net"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Envoy Gateway's own client certificate of every Envoy it deploys (controller-namespace mode):
// the SDS secret its bootstrap names for the xds_cluster, read from a file its infrastructure
// mounts (the Secret "envoy" of Envoy Gateway's namespace, signed by Envoy Gateway's CA).
const (
	EnvoyGatewaySDSCertificateName = "xds_certificate"
	EnvoyGatewaySDSCertificatePath = "/sds/xds-certificate.json"
)

// XDSClientTLS is how Envoy authenticates to this project's xDS server and verifies it: the xDS
// cluster gets an UpstreamTlsContext that presents the client certificate of an SDS secret read
// from a file in the Envoy pod, trusts CA and requires ServerName among the server's DNS names.
type XDSClientTLS struct {
	// SDSCertificateName and SDSCertificatePath name the SDS secret of Envoy's client certificate.
	SDSCertificateName, SDSCertificatePath string
	// ServerName is the name Envoy sends as SNI and requires in the server's certificate.
	ServerName string
	// CA returns the PEM bundle that signed the xDS serving certificate; it is read on every
	// translation, so a new bundle reaches Envoy at the next one.
	CA func() []byte
}

// transportSocket is the TLS transport socket of the xDS cluster.
func (t *XDSClientTLS) transportSocket() (*corev3.TransportSocket, error) {
	ca := t.CA()
	if len(ca) == 0 {
		return nil, errors.New("no CA bundle for the xDS server")
	}
	// An IP address is matched as an IP SAN and is not a valid SNI.
	san, sni := tlsv3.SubjectAltNameMatcher_DNS, t.ServerName
	if net.ParseIP(t.ServerName) != nil {
		san, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
				Name: t.SDSCertificateName,
				SdsConfig: &corev3.ConfigSource{
					ResourceApiVersion:    corev3.ApiVersion_V3,
					ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: t.SDSCertificatePath}},
				},
			}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: san,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.ServerName}},
				}},
			}},
		},
	}
	typed, err := anypb.New(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed}}, nil
}

// xdsClusterNow returns the cluster of the xDS server for one translation: with TLS when the
// server has XDSTLS.
func (s *Server) xdsClusterNow() (*clusterv3.Cluster, error) {
	if s.opts.XDSTLS == nil {
		return s.xdsCluster, nil
	}
	ts, err := s.opts.XDSTLS.transportSocket()
	if err != nil {
		return nil, fmt.Errorf("xDS cluster TLS: %w", err)
	}
	c := proto.Clone(s.xdsCluster).(*clusterv3.Cluster)
	c.TransportSocket = ts
	return c, nil
}
