package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	pb "github.com/envoyproxy/gateway/proto/extension"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// Envoy Gateway v1.9.1 in the cluster: its own Helm chart (charts/gateway-helm of the Envoy Gateway
// module hack/tools/envoy-gateway pins, CRDs from its crds subchart), its image built here
// (hack/images.sh envoy-gateway), the Kubernetes provider. No Envoy image exists here, so the Envoy
// pods Envoy Gateway deploys for a Gateway never start: the tests check everything up to them.
const (
	egNamespace = "envoy-gateway-system"
	egRelease   = "eg"
	egTestNS    = "tsgw-eg"
	egModule    = "github.com/envoyproxy/gateway"
)

// egChart is the gateway-helm chart directory in the module cache (read-only) and egValues the
// values file rendered from its values.tmpl.yaml (the module ships no values.yaml).
var egChart, egValues string

// testEnvoyGatewayInstall installs Envoy Gateway the way a user does before our chart (its certgen
// job writes the CA our chart reads) and waits for its pod to be Ready through its own probes.
func testEnvoyGatewayInstall(t *testing.T) {
	ctx := t.Context()
	out, err := run(ctx, 10*time.Minute, "go", "-C", filepath.Join(root, "hack", "tools", "envoy-gateway"),
		"mod", "download", "-json", egModule)
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s", egModule, err, out)
	}
	var mod struct{ Dir, Version string }
	if err := json.Unmarshal([]byte(out), &mod); err != nil {
		t.Fatalf("go mod download: %v\n%s", err, out)
	}
	egChart = filepath.Join(mod.Dir, "charts", "gateway-helm")
	tmpl, err := os.ReadFile(filepath.Join(egChart, "values.tmpl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// What Envoy Gateway's release process substitutes; Never: the image is imported, not pulled.
	vars := map[string]string{"GatewayImage": "tsgw.local/envoy-gateway:" + mod.Version, "GatewayImagePullPolicy": "Never"}
	values := os.Expand(string(tmpl), func(k string) string {
		v, ok := vars[k]
		if !ok {
			t.Fatalf("values.tmpl.yaml names ${%s}, which the suite does not set", k)
		}
		return v
	})
	egValues = filepath.Join(t.TempDir(), "eg-values.yaml")
	if err := os.WriteFile(egValues, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	// upgrade --install without --reuse-values: a release left by an earlier run loses the extension
	// values, which need our chart's CA Secret.
	if out, err := runEnv(ctx, 10*time.Minute, nil, helm, "--kubeconfig", kubeconfig, "upgrade", "--install",
		egRelease, egChart, "-n", egNamespace, "--create-namespace", "-f", egValues,
		"--wait", "--timeout", "8m"); err != nil {
		t.Fatalf("helm upgrade --install %s: %v\n%s\n%s", egRelease, err, out, egLogs(ctx))
	}
	waitEnvoyGatewayReady(t)
	t.Logf("Envoy Gateway %s: helm install to its pod Ready: %s", mod.Version, time.Since(start).Round(time.Second))
	// Its certgen job wrote the CA our chart trusts and the certificates of Envoy Gateway and Envoy.
	for _, s := range []string{"envoy-gateway", "envoy"} {
		if _, err := secretFile(ctx, egNamespace, s, "ca.crt"); err != nil {
			t.Fatalf("certgen: %v", err)
		}
	}
}

func waitEnvoyGatewayReady(t *testing.T) {
	t.Helper()
	waitFor(t, 5*time.Minute, "Envoy Gateway's pod Ready", func() (bool, string) {
		out, err := kubectl(t.Context(), "-n", egNamespace, "get", "pods", "-l", "control-plane=envoy-gateway",
			"-o", `jsonpath={range .items[*]}{.metadata.deletionTimestamp}{.spec.containers[0].image}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		return err == nil && strings.HasPrefix(out, "tsgw.local/envoy-gateway:") && !strings.Contains(out, "=False") &&
			strings.Count(out, "=True") == 1, out
	})
}

// testEnvoyGatewayExtension registers our extension the way the docs say (the values our chart's
// NOTES print, merged into Envoy Gateway's release, then a restart: Envoy Gateway reads its
// configuration and looks our kinds up at startup), then checks a Gateway end to end.
func testEnvoyGatewayExtension(t *testing.T) {
	ctx := t.Context()
	notes, err := runEnv(ctx, time.Minute, nil, helm, "--kubeconfig", kubeconfig, "get", "notes", release, "-n", namespace)
	if err != nil {
		t.Fatalf("helm get notes: %v\n%s", err, notes)
	}
	ext, err := notesValues(notes)
	if err != nil {
		t.Fatal(err)
	}
	extFile := filepath.Join(t.TempDir(), "tailscale-gateway-values.yaml")
	if err := os.WriteFile(extFile, []byte(ext), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runEnv(ctx, 10*time.Minute, nil, helm, "--kubeconfig", kubeconfig, "upgrade", egRelease, egChart,
		"-n", egNamespace, "--reuse-values", "-f", extFile, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm upgrade %s with the extension values: %v\n%s", egRelease, err, out)
	}
	if out, err := kubectl(ctx, "-n", egNamespace, "rollout", "restart", "deployment/envoy-gateway"); err != nil {
		t.Fatalf("restarting Envoy Gateway: %v\n%s", err, out)
	}
	if out, err := run(ctx, 6*time.Minute, "kubectl", "--kubeconfig", kubeconfig, "-n", egNamespace, "rollout", "status",
		"deployment/envoy-gateway", "--timeout", "5m"); err != nil {
		t.Fatalf("Envoy Gateway with the extension: %v\n%s\n%s", err, out, egLogs(ctx))
	}
	waitEnvoyGatewayReady(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Envoy Gateway's log:\n%s", egLogs(context.Background()))
		}
	})
	t.Run("gateway", testEnvoyGatewayGateway)
}

// notesValues returns the Envoy Gateway values block our chart's NOTES print (the lines from
// "config:" on, as long as they stay indented), unindented.
func notesValues(notes string) (string, error) {
	lines := strings.Split(notes, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "config:" {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		var b strings.Builder
		for _, l := range lines[i:] {
			if len(l)-len(strings.TrimLeft(l, " ")) < indent || strings.TrimSpace(l) == "" {
				break
			}
			b.WriteString(l[indent:] + "\n")
		}
		return b.String(), nil
	}
	return "", fmt.Errorf("no config: block in the chart's NOTES:\n%s", notes)
}

// The Gateway, its route and our objects. The TailscaleTailnet has no OAuth Secret: the listener
// controller needs the object, not a reachable tailnet (the Tailscale Services themselves are
// checked against the simulated tailnet in test/e2e).
const egObjects = `apiVersion: v1
kind: Namespace
metadata:
  name: tsgw-eg
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: tsgw-eg
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: tsgw-eg
spec:
  gatewayClassName: tsgw-eg
  listeners:
    - {name: http, port: 80, protocol: HTTP}
    - {name: db, port: 5432, protocol: TCP}
---
apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleTailnet
metadata:
  name: tsgw-eg
spec:
  tailnet: eg-test.ts.net
---
apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleGateway
metadata:
  name: tsgw
  namespace: tsgw-eg
spec:
  gatewayRef: {name: edge}
  tailnets:
    - name: main
      tailscaleTailnetRef: {name: tsgw-eg}
---
apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleEndpoints
metadata:
  name: web
  namespace: tsgw-eg
spec:
  tailnet: eg-test.ts.net
  endpoints:
    - {name: api, tailscaleIP: 100.64.0.10, tailscaleFQDN: api.eg-test.ts.net, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: tsgw-eg
spec:
  parentRefs:
    - {name: edge, sectionName: http}
  rules:
    - backendRefs:
        - {group: gateway.tailscale.com, kind: TailscaleEndpoints, name: web, port: 8080}
`

// testEnvoyGatewayGateway: a GatewayClass and a Gateway with two listeners; Envoy Gateway creates
// the Gateway's Envoy Deployment and Service; a TailscaleGateway naming the Gateway gets one
// listener TailscaleServices per listener forwarding to that Service; an HTTPRoute to a
// TailscaleEndpoints is translated through our hooks (Envoy Gateway read the object through
// aggregation and called the extension with mutual TLS) and its xDS, read with Envoy's client
// certificate, carries the EDS cluster the hook made, pointing at our xDS server, which serves it.
func testEnvoyGatewayGateway(t *testing.T) {
	ctx := t.Context()
	deleteEnvoyGatewayObjects(t)       // a run interrupted before its cleanup
	defer deleteEnvoyGatewayObjects(t) // before t.Context ends
	defer func() {
		if t.Failed() {
			for _, args := range [][]string{
				{"-n", egTestNS, "get", "tailscalegateways,tailscaleservices,tailscaleendpoints,gateways,httproutes", "-o", "yaml"},
				{"-n", namespace, "logs", "-l", "app.kubernetes.io/component=apiserver", "--prefix", "--tail=80"},
			} {
				out, _ := kubectl(context.Background(), args...)
				t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
			}
		}
	}()
	manifest := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(manifest, []byte(egObjects), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}

	waitFor(t, 3*time.Minute, "Gateway edge Accepted", func() (bool, string) {
		out, err := kubectl(ctx, "-n", egTestNS, "get", "gateway", "edge",
			"-o", `jsonpath={.status.conditions[?(@.type=="Accepted")].status}`)
		return err == nil && out == "True", out
	})
	// Envoy Gateway's Deployment and Service for the Gateway. Their pods stay Pending on the Envoy
	// image, which is not built here: nothing below needs Envoy to run.
	selector := "gateway.envoyproxy.io/owning-gateway-name=edge,gateway.envoyproxy.io/owning-gateway-namespace=" + egTestNS
	var svcName, clusterIP, nodeCluster string
	waitFor(t, 3*time.Minute, "Envoy Gateway's Envoy Deployment and Service for edge", func() (bool, string) {
		out, err := kubectl(ctx, "-n", egNamespace, "get", "services", "-l", selector,
			"-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.clusterIP} {range .spec.ports[*]}{.port},{end}{"\n"}{end}`)
		if err != nil || strings.Count(out, "\n") > 0 {
			return false, out
		}
		f := strings.Fields(out)
		if len(f) != 3 || (f[2] != "80,5432," && f[2] != "5432,80,") { // one port per listener
			return false, out
		}
		svcName, clusterIP = f[0], f[1]
		args, err := kubectl(ctx, "-n", egNamespace, "get", "deployment", svcName,
			"-o", `jsonpath={.spec.template.spec.containers[0].args}`)
		if err != nil {
			return false, args
		}
		var list []string
		if err := json.Unmarshal([]byte(args), &list); err != nil {
			return false, args
		}
		for i, a := range list {
			if a == "--service-cluster" && i+1 < len(list) {
				nodeCluster = list[i+1]
			}
		}
		return nodeCluster != "", out + " " + args
	})
	t.Logf("Envoy Gateway created Deployment and Service %s/%s (%s), xDS node cluster %q", egNamespace, svcName, clusterIP, nodeCluster)

	// The listener controller found that Service (not one of ours) and made one listener
	// TailscaleServices per listener, forwarding to its cluster IP on the listener's port.
	for listener, port := range map[string]string{"http": "80", "db": "5432"} {
		name := "tsgw-main-listener-" + listener
		waitFor(t, 2*time.Minute, "TailscaleServices "+name, func() (bool, string) {
			out, err := kubectl(ctx, "-n", egTestNS, "get", "tailscaleservices", name,
				"-o", `jsonpath={.spec.serviceDiscovery.externalServices[*].address}:{.spec.serviceDiscovery.externalServices[*].port}`)
			return err == nil && out == clusterIP+":"+port, out
		})
	}

	// Envoy Gateway resolved the backendRef: it read the TailscaleEndpoints through the APIService.
	waitFor(t, 2*time.Minute, "HTTPRoute web Accepted with its refs resolved", func() (bool, string) {
		out, err := kubectl(ctx, "-n", egTestNS, "get", "httproute", "web",
			"-o", `jsonpath={range .status.parents[0].conditions[*]}{.type}={.status} {end}`)
		return err == nil && strings.Contains(out, "Accepted=True") && strings.Contains(out, "ResolvedRefs=True"), out
	})

	envoyTLS := clientTLS(t, "envoy", "envoy-gateway", "envoy-gateway."+egNamespace+".svc.cluster.local")
	egSvcIP, err := kubectl(ctx, "-n", egNamespace, "get", "service", "envoy-gateway", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatalf("Envoy Gateway's Service: %v\n%s", err, egSvcIP)
	}
	xds, err := xdsclient.Dial(net.JoinHostPort(egSvcIP, "18000"), xdsclient.Options{
		TLS: envoyTLS, NodeCluster: nodeCluster, NodeID: "tsgw-cluster-suite", Dialer: dialNode,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer xds.Close()
	rule := "httproute/" + egTestNS + "/web/rule/0"
	xctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cds, err := xds.FetchClusters(xctx, func(r *xdsclient.Response) bool { return r.Cluster(rule) != nil })
	if err != nil {
		t.Fatalf("Envoy Gateway's CDS for %s: %v", nodeCluster, err)
	}
	// The hook's answer: an EDS cluster named after the rule, fetched from our xDS server, whose
	// cluster the Translation hook added at our Service's address.
	c := cds.Cluster(rule)
	src := c.GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource().GetGrpcServices()
	if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetServiceName() != rule ||
		len(src) != 1 || src[0].GetEnvoyGrpc().GetClusterName() != "tailscale-gateway-eds" {
		t.Fatalf("cluster %s is not our EDS cluster: %v", rule, c)
	}
	eds := cds.Cluster("tailscale-gateway-eds")
	xdsHost := "tailscale-gateway-apiserver." + namespace + ".svc.cluster.local"
	addr := eds.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if addr.GetAddress() != xdsHost || addr.GetPortValue() != 18001 || eds.GetTransportSocket() == nil {
		t.Fatalf("cluster tailscale-gateway-eds: %v, want %s:18001 over TLS", eds, xdsHost)
	}

	// Our xDS server, as Envoy reaches it: Envoy's certificate, our CA, over the cluster network.
	ourIP, err := kubectl(ctx, "-n", namespace, "get", "service", "tailscale-gateway-apiserver", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatalf("our Service: %v\n%s", err, ourIP)
	}
	ours, err := xdsclient.Dial(net.JoinHostPort(ourIP, "18001"), xdsclient.Options{
		TLS: clientTLS(t, "envoy", "tailscale-gateway-extension-ca", xdsHost), NodeCluster: nodeCluster,
		NodeID: "tsgw-cluster-suite", Dialer: dialNode,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	cla, err := ours.FetchEndpoints(xctx, func(r *xdsclient.Response) bool { return r.LoadAssignment(rule) != nil }, rule)
	if err != nil {
		t.Fatalf("our EDS for %s: %v", rule, err)
	}
	t.Logf("our EDS serves %s: %v", rule, cla.LoadAssignment(rule))

	// The hook port over the cluster network: Envoy Gateway's certificate is admitted, Envoy's (same
	// CA, CN "*", DNS SAN *.envoy-gateway-system) and none are refused.
	hookAddr := net.JoinHostPort(ourIP, "5005")
	hookHost := "tailscale-gateway-apiserver." + namespace + ".svc"
	if err := callHook(ctx, hookAddr, clientTLS(t, "envoy-gateway", "tailscale-gateway-extension-ca", hookHost)); err != nil {
		t.Errorf("the hook with Envoy Gateway's certificate: %v", err)
	}
	if err := callHook(ctx, hookAddr, clientTLS(t, "envoy", "tailscale-gateway-extension-ca", hookHost)); err == nil {
		t.Error("the hook port admitted Envoy's certificate")
	}
	anon := clientTLS(t, "", "tailscale-gateway-extension-ca", hookHost)
	if err := callHook(ctx, hookAddr, anon); err == nil {
		t.Error("the hook port admitted a client without a certificate")
	}
}

// deleteEnvoyGatewayObjects removes what testEnvoyGatewayGateway creates and waits until Envoy
// Gateway removed the Gateway's Envoy Deployment and Service and our objects are gone.
func deleteEnvoyGatewayObjects(t *testing.T) {
	ctx := context.Background()
	if out, err := kubectl(ctx, "delete", "--ignore-not-found", "--wait=false", "namespace/"+egTestNS,
		"tailscaletailnet/tsgw-eg", "gatewayclass/tsgw-eg"); err != nil {
		t.Errorf("deleting the Envoy Gateway test objects: %v\n%s", err, out)
		return
	}
	waitFor(t, 3*time.Minute, "the Envoy Gateway test objects gone", func() (bool, string) {
		out, err := kubectl(ctx, "get", "namespace/"+egTestNS, "gatewayclass/tsgw-eg", "--ignore-not-found", "-o", "name")
		if err != nil || out != "" {
			return false, out
		}
		out, err = kubectl(ctx, "-n", egNamespace, "get", "deployments,services", "-o", "name",
			"-l", "gateway.envoyproxy.io/owning-gateway-namespace="+egTestNS)
		return err == nil && out == "", out
	})
}

// testEnvoyGatewayUninstall removes Envoy Gateway's release (its CRDs stay, as Helm leaves a
// chart's crds/) so that the shared cluster runs nothing of this suite.
func testEnvoyGatewayUninstall(t *testing.T) {
	if out, err := runEnv(t.Context(), 5*time.Minute, nil, helm, "--kubeconfig", kubeconfig, "uninstall", egRelease,
		"-n", egNamespace, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall %s: %v\n%s", egRelease, err, out)
	}
}

// callHook calls PostTranslateModify on the extension's hook port with cfg.
func callHook(ctx context.Context, addr string, cfg *tls.Config) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithContextDialer(dialNode))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = pb.NewEnvoyGatewayExtensionClient(conn).PostTranslateModify(ctx, &pb.PostTranslateModifyRequest{})
	return err
}

// clientTLS is a TLS client configuration with the certificate of Envoy Gateway's Secret cert
// ("" for none) in its namespace, trusting ca.crt (or tls.crt) of Secret ca there, for serverName.
func clientTLS(t *testing.T, cert, ca, serverName string) *tls.Config {
	t.Helper()
	ctx := t.Context()
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
	caPEM, err := secretFile(ctx, egNamespace, ca, "ca.crt")
	if err != nil {
		caPEM, err = secretFile(ctx, egNamespace, ca, "tls.crt")
	}
	if err != nil || !cfg.RootCAs.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA of Secret %s/%s: %v", egNamespace, ca, err)
	}
	if cert != "" {
		crt, err := secretFile(ctx, egNamespace, cert, "tls.crt")
		if err != nil {
			t.Fatal(err)
		}
		key, err := secretFile(ctx, egNamespace, cert, "tls.key")
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(crt, key)
		if err != nil {
			t.Fatalf("Secret %s/%s: %v", egNamespace, cert, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// secretFile returns key of Secret ns/name, decoded.
func secretFile(ctx context.Context, ns, name, key string) ([]byte, error) {
	out, err := kubectl(ctx, "-n", ns, "get", "secret", name, "-o", "jsonpath={.data."+strings.ReplaceAll(key, ".", `\.`)+"}")
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w: %s", ns, name, err, out)
	}
	if out == "" {
		return nil, fmt.Errorf("Secret %s/%s has no %s", ns, name, key)
	}
	return base64.StdEncoding.DecodeString(out)
}

// egLogs is the end of Envoy Gateway's log (for failures).
func egLogs(ctx context.Context) string {
	out, _ := kubectl(ctx, "-n", egNamespace, "logs", "deployment/envoy-gateway", "--tail=60")
	return out
}

// dialNode opens a TCP connection from the node's network namespace, where Service cluster IPs
// are routed (kube-proxy's rules live there): the socket is made on a thread moved into that
// namespace, which the runtime discards afterwards (the goroutine exits still locked to it).
func dialNode(ctx context.Context, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		ns, err := os.Open(nodeNetns)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("entering %s: %w", nodeNetns, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		done <- result{conn, err}
	}()
	r := <-done // DialContext ends with ctx
	return r.conn, r.err
}
