package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/backends"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
)

// upstreamClient is a client configured as a shaped cluster says for one host: the transport
// socket its metadata selects (TLS with SNI, verified name and CAs, or cleartext) and the
// cluster's HTTP version.
type upstreamClient struct {
	addr  string
	tls   *tls.Config // nil: cleartext
	http2 bool
}

// clientFor reads the cluster c and the EDS host h as Envoy would.
func clientFor(t *testing.T, c *clusterv3.Cluster, h *endpointv3.LbEndpoint) upstreamClient {
	t.Helper()
	sa := h.GetEndpoint().GetAddress().GetSocketAddress()
	uc := upstreamClient{addr: net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))}
	value := h.GetMetadata().GetFilterMetadata()[backends.TransportSocketMatchFilter].GetFields()[backends.TransportSocketMatchKey].GetStringValue()
	socket := c.GetTransportSocket()
	for _, m := range c.GetTransportSocketMatches() {
		if m.GetMatch().GetFields()[backends.TransportSocketMatchKey].GetStringValue() == value {
			socket = m.GetTransportSocket()
		}
	}
	if socket.GetName() == "envoy.transport_sockets.tls" {
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := socket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		ca := ctx.GetCommonTlsContext().GetValidationContext().GetTrustedCa()
		pemData := []byte(ca.GetInlineString())
		if f := ca.GetFilename(); f != "" {
			var err error
			if pemData, err = os.ReadFile(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pemData)
		sni := ctx.GetSni()
		if ctx.GetAutoHostSni() {
			sni = h.GetEndpoint().GetHostname()
		}
		if !ctx.GetAutoSniSanValidation() {
			t.Fatalf("cluster %s: TLS without SAN validation against the SNI", c.Name)
		}
		// Go checks the certificate's DNS names against ServerName: auto_sni_san_validation.
		uc.tls = &tls.Config{ServerName: sni, RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	if a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; ok {
		opts := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(opts); err != nil {
			t.Fatal(err)
		}
		uc.http2 = opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
	}
	return uc
}

// get is an HTTP/1.1 GET of / as the client is configured.
func (uc upstreamClient) get(ctx context.Context) (string, error) {
	tr := &http.Transport{TLSClientConfig: uc.tls, DisableKeepAlives: true, ForceAttemptHTTP2: false}
	scheme := "http"
	if uc.tls != nil {
		scheme = "https"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+uc.addr+"/", nil)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), nil
}

// testCA is a CA and a leaf certificate it issues for dnsName.
func testCA(t *testing.T, dnsName string) (caPEM string, leaf tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// In proxy mode, through the proxy's egress listeners: Envoy's cluster for an HTTPS endpoint
// originates TLS that the device's certificate satisfies (SNI and name = tailscaleFQDN, chain =
// the endpoint's caCertificate); one naming another FQDN, or trusting only the system CAs, is
// refused by that same device; a gRPC endpoint's cluster speaks HTTP/2 and gets an answer.
func TestProxyModeSpeaksEachEndpointsProtocol(t *testing.T) {
	bind := fmt.Sprintf("127.%d.%d.%d", 10+mrand.IntN(200), mrand.IntN(250), 1+mrand.IntN(250))
	env := startExtensionEnv(t, func(o *server.Options) {
		o.Extension.EndpointMode, o.Extension.ProxyAddress = server.EndpointModeProxy, bind
	})
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The TLS device: a tailnet node serving HTTPS on 443 with a certificate for its MagicDNS name.
	secure, err := env.sim.NewNode(sctx, "secure", env.sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	lc, err := secure.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	st, err := lc.StatusWithoutPeers(sctx)
	if err != nil {
		t.Fatal(err)
	}
	fqdn := strings.TrimSuffix(st.Self.DNSName, ".")
	caPEM, leaf := testCA(t, fqdn)
	l, err := secure.Listen("tcp", ":443")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls to %s", r.TLS.ServerName)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{leaf}}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })

	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	ip := st.Self.TailscaleIPs[0].String()
	httpsEndpoint := func(name, fqdn string, ca string) v1alpha1.TailscaleEndpoint {
		ep := v1alpha1.TailscaleEndpoint{Name: name, TailscaleIP: ip, TailscaleFQDN: fqdn, Port: 443, Protocol: v1alpha1.ProtocolHTTPS}
		if ca != "" {
			ep.TLS = &v1alpha1.UpstreamTLSConfig{CACertificate: ca}
		}
		return ep
	}
	for _, obj := range []*v1alpha1.TailscaleEndpoints{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "secure"}, Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim",
			Endpoints: []v1alpha1.TailscaleEndpoint{
				httpsEndpoint("own-ca", fqdn, caPEM),
				httpsEndpoint("other-name", "impostor."+env.sim.MagicDNSSuffix(), caPEM),
				httpsEndpoint("system-cas", fqdn, ""),
			}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "rpc"}, Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim",
			Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "health", TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN,
				Port: int32(api.GRPCPort), Protocol: v1alpha1.ProtocolGRPC}}}},
	} {
		if _, err := env.client.GatewayV1alpha1().TailscaleEndpoints("sim").Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	n, err := node.Start(sctx, node.Options{Dir: t.TempDir(), Hostname: "proxy", ControlURL: env.sim.ControlURL(),
		AuthKey: env.sim.AuthKey(), Tags: []string{"tag:proxy"}})
	if err != nil {
		t.Fatal(err)
	}
	pn, err := node.Wrap(n)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	defer pn.Close()
	p, err := proxy.New(proxy.Options{Client: env.client, Node: pn, EgressBindAddress: bind,
		Metrics: forward.NewMetrics(prometheus.NewRegistry()), Selection: proxy.Selection{Namespace: "sim", Endpoints: []string{"secure", "rpc"}}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(context.Background())
	defer stop()
	go p.Run(pctx)

	const tlsCluster, grpcCluster = "httproute/sim/secure/rule/0", "httproute/sim/rpc/rule/0"
	tlsShaped := env.shape(t, tlsCluster, env.backendJSON(t, "tailscaleendpoints", "sim", "secure"))
	grpcShaped := env.shape(t, grpcCluster, env.backendJSON(t, "tailscaleendpoints", "sim", "rpc"))
	clients := map[string]upstreamClient{}
	collect := func(cluster string, shaped *clusterv3.Cluster, want int) {
		env.subscribe(t, false, cluster).waitFor("the proxy's egress listeners of "+cluster, func(cla *endpointv3.ClusterLoadAssignment) bool {
			for _, loc := range cla.Endpoints {
				for _, h := range loc.LbEndpoints {
					if h.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == bind {
						uc := clientFor(t, shaped, h)
						clients[cluster+"/"+h.GetEndpoint().GetHostname()+"/"+uc.addr] = uc
					}
				}
			}
			return len(clients) >= want
		})
	}
	collect(tlsCluster, tlsShaped, 3)
	collect(grpcCluster, grpcShaped, 4)

	var ownCA, otherName, systemCAs, rpc *upstreamClient
	for key, uc := range clients {
		uc := uc
		switch {
		case strings.HasPrefix(key, grpcCluster):
			rpc = &uc
		case strings.Contains(key, "/impostor."):
			otherName = &uc
		case uc.tls != nil && uc.tls.RootCAs.Equal(poolOf(caPEM)):
			ownCA = &uc
		default:
			systemCAs = &uc
		}
	}
	if ownCA == nil || otherName == nil || systemCAs == nil || rpc == nil {
		t.Fatalf("hosts: own CA %v, other name %v, system CAs %v, gRPC %v: want each", ownCA, otherName, systemCAs, rpc)
	}
	if ownCA.tls == nil || otherName.tls == nil || systemCAs.tls == nil {
		t.Fatal("an HTTPS endpoint's host is spoken to in cleartext")
	}
	if rpc.tls != nil || !rpc.http2 {
		t.Fatalf("gRPC endpoint: TLS %v, HTTP/2 %v; want cleartext HTTP/2", rpc.tls != nil, rpc.http2)
	}

	// The egress listeners open once the proxy has synced: wait for the good client's answer.
	var body string
	err = wait.PollUntilContextTimeout(ctx(t), 100*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		body, err = ownCA.get(c)
		return err == nil, nil
	})
	if err != nil || body != "tls to "+fqdn {
		t.Fatalf("HTTPS through %s with the endpoint's CA: %q, %v; want the device's answer over TLS to %s", ownCA.addr, body, err, fqdn)
	}
	var unknownAuthority x509.UnknownAuthorityError
	if _, err := systemCAs.get(ctx(t)); !errors.As(err, &unknownAuthority) {
		t.Errorf("HTTPS verified by the system CAs to a device of a private CA: %v, want an unknown-authority refusal", err)
	}
	var hostname x509.HostnameError
	if _, err := otherName.get(ctx(t)); !errors.As(err, &hostname) {
		t.Errorf("HTTPS with SNI %s to a certificate for %s: %v, want a name mismatch refusal", otherName.tls.ServerName, fqdn, err)
	}

	conn, err := grpc.NewClient(rpc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx(t), time.Minute)
	defer ccancel()
	resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health over HTTP/2 through %s: %v, %v; want SERVING", rpc.addr, resp.GetStatus(), err)
	}
}

func poolOf(caPEM string) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM([]byte(caPEM))
	return p
}
