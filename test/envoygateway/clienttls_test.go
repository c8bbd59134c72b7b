package envoygateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/envoygateway"
	"github.com/tailscale-gateway/tailscale-gateway/test/pki"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// secretType is the type URL of SDS secrets, which Envoy Gateway serves on its ADS.
const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// clientTLSPolicyYAML is the ClientTrafficPolicy the controller generates for a TailscaleGateway
// of the Gateway's namespace with security.tlsMode mode and mtls naming Secret client-ca.
func clientTLSPolicyYAML(t *testing.T, mode string) (name, yaml string) {
	t.Helper()
	tgw := &v1alpha1.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge", UID: "uid-edge"},
		Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Kind: "Gateway", Name: gatewayName},
			Security: &v1alpha1.SecurityConfig{TLSMode: mode, MTLS: &v1alpha1.MTLSConfig{Enabled: true,
				CertificateRef: &v1alpha1.SecretReference{Name: "client-ca"}}},
		},
	}
	p, refused := tsgateway.GenerateClientTLS(tgw)
	if p == nil {
		t.Fatalf("no ClientTrafficPolicy generated: %s", refused)
	}
	return p.GetName(), mustYAML(p.Object)
}

// waitAccepted waits until Envoy Gateway reports the resource key (namespace/name) of kind
// Accepted for its first parent or ancestor.
func waitAccepted(ctx context.Context, t *testing.T, eg *envoygateway.Instance, kind, key string) {
	t.Helper()
	var last string
	if err := waitUntil(ctx, func() bool {
		st, err := eg.Statuses(kind)
		if err != nil {
			last = err.Error()
			return false
		}
		c := st[key].Condition(0, "Accepted")
		last = fmt.Sprintf("%+v", c)
		return c != nil && c.Status == metav1.ConditionTrue
	}); err != nil {
		t.Fatalf("%s %s not Accepted: %s (%v)", kind, key, last, err)
	}
}

func secretYAML(name, typ string, data map[string][]byte) string {
	enc := map[string]any{}
	for k, v := range data {
		enc[k] = base64.StdEncoding.EncodeToString(v)
	}
	return mustYAML(map[string]any{"apiVersion": "v1", "kind": "Secret", "type": typ,
		"metadata": map[string]any{"name": name, "namespace": ns}, "data": enc})
}

// httpsListenerTLS returns the DownstreamTlsContext of the listener on port, nil when it has none.
func httpsListenerTLS(t *testing.T, r *xdsclient.Response, port uint32) *tlsv3.DownstreamTlsContext {
	for _, l := range r.Listeners() {
		if l.GetAddress().GetSocketAddress().GetPortValue() != port {
			continue
		}
		chains := append([]*listenerv3.FilterChain{l.GetDefaultFilterChain()}, l.GetFilterChains()...)
		for _, fc := range chains {
			if ts := fc.GetTransportSocket(); ts != nil {
				ctx := &tlsv3.DownstreamTlsContext{}
				if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
					t.Fatal(err)
				}
				return ctx
			}
		}
	}
	return nil
}

// caSecretName is the SDS secret of the listener's validation context, "" when it has none.
func caSecretName(ctx *tlsv3.DownstreamTlsContext) string {
	c := ctx.GetCommonTlsContext()
	if n := c.GetValidationContextSdsSecretConfig().GetName(); n != "" {
		return n
	}
	return c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName()
}

// Envoy Gateway v1.9.1 accepts the ClientTrafficPolicy the controller generates for tlsMode
// strict and mtls.certificateRef, and its HTTPS listener then requires client certificates,
// validated against the CA of the Secret (served over SDS); tlsMode permissive keeps the CA and
// makes the certificate optional. The plaintext listener is left without TLS.
func TestEnvoyGatewayRequiresClientCertificatesOfGeneratedPolicy(t *testing.T) {
	dir := t.TempDir()
	serverCA, err := pki.NewCA(dir, "server-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := serverCA.IssueServing("gateway", "gw.example.com")
	if err != nil {
		t.Fatal(err)
	}
	crt, err := os.ReadFile(serving.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(serving.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := pki.NewCA(dir, "client-ca")
	if err != nil {
		t.Fatal(err)
	}
	const httpsPort, httpPort = 18443, 18080
	gateway := mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": gatewayName, "namespace": ns},
		"spec": map[string]any{"gatewayClassName": "eg", "listeners": []any{
			map[string]any{"name": "http", "protocol": "HTTP", "port": httpPort},
			map[string]any{"name": "https", "protocol": "HTTPS", "port": httpsPort, "hostname": "gw.example.com",
				"tls": map[string]any{"mode": "Terminate", "certificateRefs": []any{map[string]any{"name": "gateway-cert"}}}},
		}},
	})
	route := mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "web", "namespace": ns},
		"spec": map[string]any{"parentRefs": []any{map[string]any{"name": gatewayName}},
			"rules": []any{map[string]any{"backendRefs": []any{map[string]any{
				"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "native", "port": 8080}}}}},
	})
	policyName, strict := clientTLSPolicyYAML(t, tsgateway.TLSModeStrict)
	_, addr := newRecorder(t)
	ctx := bounded(t)
	eg := envoygateway.Start(t, envoygateway.Options{ExtensionAddr: addr, JSONLogs: true, Resources: map[string]string{
		"gateway.yaml": envoygateway.JoinYAML(envoygateway.GatewayClassYAML("eg"), gateway, route, nativeBackendYAML),
		"secrets.yaml": envoygateway.JoinYAML(
			secretYAML("gateway-cert", "kubernetes.io/tls", map[string][]byte{"tls.crt": crt, "tls.key": key}),
			secretYAML("client-ca", "Opaque", map[string][]byte{"ca.crt": clientCA.CertPEM})),
		"policy.yaml": strict,
	}})

	waitAccepted(ctx, t, eg, "ClientTrafficPolicy", ns+"/"+policyName)

	xc := eg.XDS(t, ns, gatewayName)
	lds, err := xc.Watch(ctx, xdsclient.ListenerType)
	if err != nil {
		t.Fatal(err)
	}
	defer lds.Stop()
	got, err := lds.WaitFor(ctx, func(r *xdsclient.Response) bool {
		return httpsListenerTLS(t, r, httpsPort).GetRequireClientCertificate().GetValue()
	})
	if err != nil {
		t.Fatalf("the HTTPS listener never required client certificates: %v", err)
	}
	tlsCtx := httpsListenerTLS(t, got, httpsPort)
	secret := caSecretName(tlsCtx)
	if secret == "" {
		t.Fatalf("HTTPS listener without a validation context: %v", dump(t, tlsCtx))
	}
	if plain := httpsListenerTLS(t, got, httpPort); plain != nil {
		t.Errorf("the HTTP listener got TLS: %v", dump(t, plain))
	}
	// A wildcard subscription: a named SotW one is answered only when it names every secret.
	var ca []byte
	if _, err := xc.Fetch(ctx, secretType, func(r *xdsclient.Response) bool {
		for _, m := range r.Resources {
			if s, ok := m.(*tlsv3.Secret); ok && s.GetName() == secret {
				ca = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
			}
		}
		return ca != nil
	}); err != nil {
		t.Fatalf("SDS secret %s: %v", secret, err)
	}
	if !bytes.Equal(bytes.TrimSpace(ca), bytes.TrimSpace(clientCA.CertPEM)) {
		t.Errorf("SDS secret %s trusts %q, want the CA of Secret client-ca", secret, ca)
	}

	// permissive: the same CA, the certificate no longer required.
	_, permissive := clientTLSPolicyYAML(t, tsgateway.TLSModePermissive)
	if err := eg.WriteResource("policy.yaml", permissive); err != nil {
		t.Fatal(err)
	}
	got, err = lds.WaitFor(ctx, func(r *xdsclient.Response) bool {
		c := httpsListenerTLS(t, r, httpsPort)
		return c != nil && !c.GetRequireClientCertificate().GetValue()
	})
	if err != nil {
		t.Fatalf("tlsMode permissive: the HTTPS listener still requires client certificates: %v", err)
	}
	if c := httpsListenerTLS(t, got, httpsPort); caSecretName(c) != secret {
		t.Errorf("tlsMode permissive: validation context %q, want %q: %v", caSecretName(c), secret, dump(t, c))
	}
}
