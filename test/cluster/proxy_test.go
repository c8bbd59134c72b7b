package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
)

// Names of what testProxy creates.
const (
	proxyNS      = "tsgw-proxy-test"
	simTailnetN  = "tsgw-proxy-sim"
	simOAuth     = "tsgw-proxy-sim-oauth"
	simCAConfig  = "tsgw-proxy-sim-ca"
	egressObject = "egress"
	gatewayName  = "gw"
	// The discovery controller's names for gatewayName, tailnet entry "main" and Service "web"
	// (docs/tasks/expose-local-service.md).
	hostObject = gatewayName + "-main-local-host"
	localVIP   = "local-" + proxyNS + "-web"
)

// testProxy runs the first proxy pods on the kubelet, joined to a simulated tailnet the pods
// reach (tailnet-sim in the node's network namespace): a TailscaleEndpoints with spec.proxy gets a
// pod that becomes Ready through its own probe with the key proxydeploy minted; a client pod
// reaches a simulated device through the proxy's egress Service; a simulated device reaches an
// in-cluster Service through the VIP a discovery proxy hosts; a deleted proxy pod comes back as
// the same tailnet node without a new key. Everything it creates is removed when it ends.
func testProxy(t *testing.T) {
	ctx := t.Context()
	sim := simTailnetWithNamespace(t, ctx, egressObject, hostObject, hostsObject)

	// 1. A proxy with the key proxydeploy minted, Ready through its own probe.
	fqdn, ip, port := sim.device(t, "api-server")
	created := time.Now()
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints",
"metadata":{"name":%q,"namespace":%q},"spec":{"tailnet":%q,"proxy":{"replicas":1},
"endpoints":[{"name":"web","tailscaleIP":%q,"tailscaleFQDN":%q,"port":%d,"protocol":"HTTP"}]}}`,
		egressObject, proxyNS, simTailnetN, ip, fqdn, port))
	pod := waitProxyPodReady(t, ctx, egressObject, "")
	t.Logf("proxy pod %s; TailscaleEndpoints applied to the pod Ready (seen by the test) %s",
		pod.timeline(ctx), time.Since(created).Round(time.Second))
	// Control admits a new node only with a valid key, so the node proves the minted key was used;
	// once it has joined, proxydeploy revokes that single-use key (it leaves the tailnet's list).
	waitDevice(t, ctx, sim, pod.Name)
	keyOf := "tailscale-gateway-proxy " + proxyNS + "/" + egressObject + " "
	waitFor(t, 2*time.Minute, "the used auth key revoked", func() (bool, string) {
		keys, err := sim.keys(ctx)
		return err == nil && !slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(k, keyOf) }), fmt.Sprint(keys, err)
	})
	if n := keysMinted(t, ctx, egressObject); n != 1 {
		t.Fatalf("%d %s Events, want one key minted", n, proxydeploy.ReasonKeyMinted)
	}

	// 2. A client pod reaches the simulated device through the proxy's egress Service.
	client := startNetcheckPod(t, ctx, "client")
	svcNS, svcName := proxyObject(t, ctx, "services", egressObject)
	egressPort := egressServicePort(t, ctx, svcNS, svcName)
	egressURL := fmt.Sprintf("http://%s.%s.svc.cluster.local:%s/", svcName, svcNS, egressPort)
	wantBody := "hello from api-server\n"
	waitNetcheckGet(t, ctx, client, egressURL, wantBody)

	// 3. A simulated device reaches an in-cluster Service through the VIP a discovery proxy hosts.
	exposeLocalService(t, ctx, sim)

	// 3b. A VIP host killed: the Service's client is served by the other replica.
	vipHostFailover(t, ctx, sim)

	// 4. The deleted proxy pod comes back as the same node, with no new key.
	before, err := sim.devices(ctx, pod.Name)
	if err != nil || len(before) != 1 {
		t.Fatalf("device %s before the restart: %v %v", pod.Name, before, err)
	}
	// The node's identity is in the pod's state Secret, not in the pod.
	state, err := kubectl(ctx, "-n", pod.Namespace, "get", "secret", pod.Name, "-o", "go-template={{range $k, $v := .data}}{{$k}} {{end}}")
	if err != nil || !strings.Contains(state, "_machinekey") {
		t.Fatalf("state Secret %s/%s holds %q (%v), want the node's state", pod.Namespace, pod.Name, state, err)
	}
	if out, err := kubectl(ctx, "-n", pod.Namespace, "delete", "pod", pod.Name, "--wait=true"); err != nil {
		t.Fatalf("deleting the proxy pod: %v\n%s", err, out)
	}
	again := waitProxyPodReady(t, ctx, egressObject, pod.UID)
	t.Logf("restarted proxy pod %s", again.timeline(ctx))
	waitNetcheckGet(t, ctx, client, egressURL, wantBody)
	after, err := sim.devices(ctx, again.Name)
	if err != nil || len(after) != 1 || after[0].NodeID != before[0].NodeID || after[0].NodeKey != before[0].NodeKey {
		t.Errorf("device %s after the restart: %+v (%v), want the same node as before: %+v", again.Name, after, err, before)
	}
	if n := keysMinted(t, ctx, egressObject); n != 1 {
		t.Errorf("%d %s Events after the restart, want still one", n, proxydeploy.ReasonKeyMinted)
	}
}

// simTailnetWithNamespace starts the simulated tailnet, points the release at it, and creates
// the server's TailscaleTailnet for it and the test namespace proxyNS. When t ends the
// namespace goes first (the finalizers of its TailscaleServices release their Services
// through the tailnet), then nothing generated for the TailscaleEndpoints named endpoints may
// be left in any namespace, then the TailscaleTailnet goes.
func simTailnetWithNamespace(t *testing.T, ctx context.Context, endpoints ...string) *simTailnet {
	t.Helper()
	sim := startSim(t)
	connectServerToSim(t, ctx, sim)
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleTailnet",
"metadata":{"name":%q},"spec":{"tailnet":%q,"apiBaseURL":%q,"oauthSecretName":%q,"oauthSecretNamespace":%q,
"tags":["tag:k8s-proxy"]}}`, simTailnetN, sim.Tailnet, sim.APIURL, simOAuth, namespace))
	t.Cleanup(func() { deleteAndWait(t, "tailscaletailnet", simTailnetN) })
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, proxyNS))
	t.Cleanup(func() {
		deleteAndWait(t, "namespace", proxyNS)
		noProxyObjectsLeft(t, endpoints...)
	})
	return sim
}

// keysMinted counts the ProxyAuthKeyMinted Events of the TailscaleEndpoints name (proxydeploy
// records one per key it mints; Events are aggregated, so their counts are summed).
func keysMinted(t *testing.T, ctx context.Context, name string) int {
	t.Helper()
	out, err := kubectl(ctx, "-n", proxyNS, "get", "events", "--field-selector",
		"involvedObject.name="+name+",reason="+proxydeploy.ReasonKeyMinted, "-o", `jsonpath={range .items[*]}{.count}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("reading Events: %v\n%s", err, out)
	}
	n := 0
	for _, c := range strings.Fields(out) {
		v, err := strconv.Atoi(c)
		if err != nil {
			t.Fatalf("Event count %q: %v", c, err)
		}
		n += max(v, 1)
	}
	return n
}

// connectServerToSim points the release at the simulated tailnet: the OAuth client Secret, the
// proxies' coordination server (--tailnet-control-url) and trust in the simulated API's CA (a
// CA bundle mounted over the image's, with apiserver.extraVolumes and extraVolumeMounts), by a
// `helm upgrade --reuse-values` the later upgrade test replaces.
func connectServerToSim(t *testing.T, ctx context.Context, sim *simTailnet) {
	t.Helper()
	secret := map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"name": simOAuth, "namespace": namespace},
		"stringData": map[string]string{"client_id": sim.OAuthClientID, "client_secret": sim.OAuthClientSecret}}
	caBundle := map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": simCAConfig, "namespace": namespace},
		"data":     map[string]string{"ca-certificates.crt": string(sim.caPEM)}}
	for _, o := range []any{secret, caBundle} {
		b, _ := json.Marshal(o)
		mustApply(t, ctx, string(b))
	}
	t.Cleanup(func() {
		for _, o := range []string{"secret/" + simOAuth, "configmap/" + simCAConfig} {
			if out, err := kubectl(context.Background(), "-n", namespace, "delete", o, "--ignore-not-found"); err != nil {
				t.Errorf("deleting %s: %v\n%s", o, err, out)
			}
		}
	})
	values := map[string]any{"apiserver": map[string]any{
		"extraArgs": []string{"--tailnet-control-url=" + sim.ControlURL},
		// optional: pods of this template still start once the ConfigMap is gone.
		"extraVolumes": []any{map[string]any{"name": "tailnet-sim-ca",
			"configMap": map[string]any{"name": simCAConfig, "optional": true}}},
		"extraVolumeMounts": []any{map[string]any{"name": "tailnet-sim-ca", "mountPath": "/etc/ssl/certs", "readOnly": true}},
	}}
	b, _ := json.Marshal(values)
	file := filepath.Join(t.TempDir(), "sim-values.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runEnv(ctx, 10*time.Minute, nil, helm, "--kubeconfig", kubeconfig, "upgrade", release,
		filepath.Join(root, "charts", "tailscale-gateway"), "-n", namespace, "--reuse-values", "-f", file,
		"--wait", "--timeout", "8m"); err != nil {
		t.Fatalf("helm upgrade --reuse-values with the simulated tailnet: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, "-n", namespace, "rollout", "status", "deployment/tailscale-gateway-apiserver", "--timeout=5m"); err != nil {
		t.Fatalf("server rollout: %v\n%s", err, out)
	}
}

// exposeLocalService exposes a netcheck Service through the discovery path
// (docs/tasks/expose-local-service.md): a TailscaleGateway with serviceDiscovery and the
// Service labelled; the tailnet's admin approves the proxy as the VIP's host (as the policy's
// autoApprovers would); a simulated device then GETs the Service by its MagicDNS name.
func exposeLocalService(t *testing.T, ctx context.Context, sim *simTailnet) {
	t.Helper()
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":%[1]q},
"spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},
"spec":{"containers":[{"name":"netcheck","image":%[2]q,"imagePullPolicy":"Never","args":["serve"],
"ports":[{"containerPort":8080}],"readinessProbe":{"httpGet":{"path":"/","port":8080}}}]}}}}`, proxyNS, netcheckImage()))
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":%q,
"labels":{"gateway.tailscale.com/expose":"true"}},"spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":80,"targetPort":8080}]}}`, proxyNS))
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleGateway",
"metadata":{"name":%q,"namespace":%q},"spec":{"gatewayRef":{"name":"eg"},
"tailnets":[{"name":"main","tailscaleTailnetRef":{"name":%q},"serviceDiscovery":{"enabled":true}}]}}`, gatewayName, proxyNS, simTailnetN))

	host := waitProxyPodReady(t, ctx, hostObject, "")
	t.Logf("VIP host proxy pod %s", host.timeline(ctx))
	waitDevice(t, ctx, sim, host.Name)
	devs, err := sim.devices(ctx, host.Name)
	if err != nil || len(devs) != 1 {
		t.Fatalf("device %s: %v %v", host.Name, devs, err)
	}
	approve := "/api/v2/tailnet/-/vip-services/svc:" + localVIP + "/device/" + devs[0].NodeID + "/approved"
	waitFor(t, 3*time.Minute, "the tailnet's admin approves the host of svc:"+localVIP, func() (bool, string) {
		err := sim.api(ctx, "POST", approve, map[string]bool{"approved": true}, nil)
		return err == nil, fmt.Sprint(err)
	})
	vipURL := "http://" + localVIP + "." + sim.MagicDNSSuffix + "/"
	waitFor(t, 3*time.Minute, "laptop GETs "+vipURL, func() (bool, string) {
		status, body, err := sim.fetch(ctx, "laptop", vipURL)
		return err == nil && status == 200 && strings.HasPrefix(body, "netcheck web-"), fmt.Sprintf("%d %q %v", status, body, err)
	})
}

// proxyPod is the part of a proxy pod the test reads.
type proxyPod struct {
	Namespace, Name, UID string
	// Created, Started (its container) and Ready (through its probe) are the kubelet's and the
	// API's timestamps, to the second.
	Created, Started, Ready time.Time
}

func (p proxyPod) readyAfter() time.Duration { return p.Ready.Sub(p.Created) }

// timeline is when the pod's container started and the proxy joined the tailnet (its log line
// "Joined the tailnet") after the pod's creation, and when it was Ready.
func (p proxyPod) timeline(ctx context.Context) string {
	joined := "?"
	var errs []string
	out, err := kubectl(ctx, "-n", p.Namespace, "logs", p.Name, "--timestamps")
	for _, line := range strings.Split(out, "\n") {
		stamp, rest, ok := strings.Cut(line, " ")
		if !ok || err != nil {
			continue
		}
		if strings.HasPrefix(rest, "E") {
			errs = append(errs, rest)
		}
		if at, err := time.Parse(time.RFC3339Nano, stamp); err == nil && joined == "?" && strings.Contains(rest, "Joined the tailnet") {
			joined = at.Sub(p.Created).Round(100 * time.Millisecond).String()
		}
	}
	return fmt.Sprintf("%s/%s created; container started +%s, joined the tailnet +%s, Ready +%s; %d error lines logged %q",
		p.Namespace, p.Name, p.Started.Sub(p.Created), joined, p.readyAfter(), len(errs), errs[:min(len(errs), 5)])
}

// proxySelector selects the objects proxydeploy generates for the TailscaleEndpoints named
// endpoints (its pods carry the pod labels, the rest the managed-by label), in whichever
// namespace the installation puts them.
func proxySelector(resource, endpoints string) string {
	if resource == "pods" {
		return "app.kubernetes.io/name=tailscale-gateway-proxy,gateway.tailscale.com/parent-name=" + endpoints
	}
	return "app.kubernetes.io/managed-by=tailscale-gateway-proxydeploy,gateway.tailscale.com/parent-name=" + endpoints
}

// proxyObject returns the namespace and name of the one object of resource generated for
// endpoints.
func proxyObject(t *testing.T, ctx context.Context, resource, endpoints string) (string, string) {
	t.Helper()
	out, err := kubectl(ctx, "get", resource, "-A", "-l", proxySelector(resource, endpoints),
		"-o", `jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}`)
	lines := strings.Fields(out)
	if err != nil || len(lines) != 2 {
		t.Fatalf("%s of the proxy of %s: %v %q", resource, endpoints, err, out)
	}
	return lines[0], lines[1]
}

// waitProxyPodReady waits for the proxy pod of endpoints (other than the one of UID notUID) to
// be Ready through its readiness probe, and the only one, and returns it.
func waitProxyPodReady(t *testing.T, ctx context.Context, endpoints, notUID string) proxyPod {
	t.Helper()
	return waitProxyPodsReady(t, ctx, endpoints, 1, []string{notUID})[0]
}

// describeEndpoints is the conditions and Events of the TailscaleEndpoints named endpoints, for
// a failure's message.
func describeEndpoints(ctx context.Context, endpoints string) string {
	out, _ := kubectl(ctx, "-n", proxyNS, "get", "tailscaleendpoints", endpoints, "-o", "jsonpath={.status.conditions}")
	ev, _ := kubectl(ctx, "get", "events", "-A", "--field-selector", "involvedObject.name="+endpoints, "-o",
		`jsonpath={range .items[*]}{.reason}: {.message}{"\n"}{end}`)
	return out + "\n" + ev
}

// waitDevice waits for the proxy pod's node in the simulated tailnet (named like the pod).
func waitDevice(t *testing.T, ctx context.Context, sim *simTailnet, hostname string) {
	t.Helper()
	waitFor(t, 2*time.Minute, "device "+hostname+" in the simulated tailnet", func() (bool, string) {
		devs, err := sim.devices(ctx, hostname)
		return err == nil && len(devs) == 1, fmt.Sprint(devs, err)
	})
}

// egressServicePort is the egress listener's port of the proxy's Service (the one port that is
// not metrics).
func egressServicePort(t *testing.T, ctx context.Context, ns, name string) string {
	t.Helper()
	out, err := kubectl(ctx, "-n", ns, "get", "service", name, "-o", `jsonpath={range .spec.ports[*]}{.name} {.port}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("Service %s/%s: %v\n%s", ns, name, err, out)
	}
	var ports []string
	for _, line := range strings.Split(out, "\n") {
		if name, port, ok := strings.Cut(line, " "); ok && name != "metrics" {
			ports = append(ports, port)
		}
	}
	if len(ports) != 1 {
		t.Fatalf("Service %s/%s: egress ports %v, want one", ns, name, ports)
	}
	return ports[0]
}

// startNetcheckPod runs a netcheck pod (an idle `netcheck serve`) in proxyNS to exec `netcheck
// get` in, and waits for it to be Ready.
func startNetcheckPod(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":%q},
"spec":{"containers":[{"name":"netcheck","image":%q,"imagePullPolicy":"Never","args":["serve"],
"readinessProbe":{"httpGet":{"path":"/","port":8080}}}]}}`, name, proxyNS, netcheckImage()))
	waitFor(t, 3*time.Minute, "pod "+name+" Ready", func() (bool, string) {
		out, err := kubectl(ctx, "-n", proxyNS, "get", "pod", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True", out
	})
	return name
}

// waitNetcheckGet waits until `netcheck get rawURL` in pod answers want.
func waitNetcheckGet(t *testing.T, ctx context.Context, pod, rawURL, want string) {
	t.Helper()
	waitFor(t, 3*time.Minute, pod+" GETs "+rawURL, func() (bool, string) {
		out, err := run(ctx, time.Minute, "kubectl", "--kubeconfig", kubeconfig, "-n", proxyNS, "exec", pod, "--",
			"/usr/local/bin/netcheck", "get", rawURL)
		return err == nil && out == want, fmt.Sprintf("%q %v", out, err)
	})
}

func mustApply(t *testing.T, ctx context.Context, manifest string) {
	t.Helper()
	if out, err := kubectlApply(ctx, manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// deleteAndWait deletes the cluster-scoped object or namespace and waits until it is gone.
func deleteAndWait(t *testing.T, resource, name string) {
	ctx := context.Background()
	if out, err := run(ctx, 5*time.Minute, "kubectl", "--kubeconfig", kubeconfig, "delete", resource, name,
		"--ignore-not-found", "--wait=true", "--timeout=4m"); err != nil {
		t.Errorf("deleting %s %s: %v\n%s", resource, name, err, out)
	}
}

// noProxyObjectsLeft checks, after the objects went, that none of what proxydeploy generated for
// them is left in any namespace (run from a Cleanup: no t.Context).
func noProxyObjectsLeft(t *testing.T, endpoints ...string) {
	ctx := context.Background()
	sel := "gateway.tailscale.com/parent-name in (" + strings.Join(endpoints, ",") + ")"
	var out string
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); <-tick.C {
		var err error
		out, err = kubectl(ctx, "get", "statefulsets,services,secrets,serviceaccounts,roles,rolebindings,pods", "-A", "-l", sel, "-o", "name")
		if err == nil && out == "" {
			return
		}
	}
	t.Errorf("objects of the proxies left: %s", out)
}
