package cluster_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Names of what testProxyPool creates.
const (
	poolTailnet   = "tsgw-pool-sim"
	poolNamespace = "tsgw-pool-test"
	poolObjects   = 100
)

// testProxyPool: 100 TailscaleEndpoints without spec.proxy, their tailnet's pool at 2 replicas:
// exactly 2 proxy pods run (no dedicated one), both Ready through their own probe with the keys
// the pool controller minted, and a client pod reaches the simulated device through every
// object's egress address (the pool Service's name and the object's port). Everything it
// creates is removed when it ends.
func testProxyPool(t *testing.T) {
	ctx := t.Context()
	sim := startSim(t)
	connectServerToSim(t, ctx, sim)
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleTailnet",
"metadata":{"name":%q},"spec":{"tailnet":%q,"apiBaseURL":%q,"oauthSecretName":%q,"oauthSecretNamespace":%q,
"tags":["tag:k8s-proxy"],"proxyPool":{"replicas":2}}}`, poolTailnet, sim.Tailnet, sim.APIURL, simOAuth, namespace))
	t.Cleanup(func() { deleteAndWait(t, "tailscaletailnet", poolTailnet) })
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, poolNamespace))
	t.Cleanup(func() { deleteAndWait(t, "namespace", poolNamespace) })

	fqdn, ip, port := sim.device(t, "api-server")
	var items []string
	for i := range poolObjects {
		items = append(items, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints",
"metadata":{"name":"obj-%d","namespace":%q},"spec":{"tailnet":%q,
"endpoints":[{"name":"web","tailscaleIP":%q,"tailscaleFQDN":%q,"port":%d,"protocol":"HTTP"}]}}`, i, poolNamespace, poolTailnet, ip, fqdn, port))
	}
	mustApply(t, ctx, `{"apiVersion":"v1","kind":"List","items":[`+strings.Join(items, ",")+`]}`)

	// Exactly the pool's 2 pods, Ready.
	pods := "app.kubernetes.io/name=tailscale-gateway-proxy,gateway.tailscale.com/proxy-pool=" + poolTailnet
	waitFor(t, 5*time.Minute, "the pool's 2 proxy pods Ready", func() (bool, string) {
		out, err := kubectl(ctx, "-n", namespace, "get", "pods", "-l", pods, "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		lines := strings.Split(out, "\n") // kubectl's output comes trimmed
		ready := 0
		for _, l := range lines {
			if strings.HasSuffix(l, " True") {
				ready++
			}
		}
		return err == nil && len(lines) == 2 && ready == 2, fmt.Sprintf("%q %v", out, err)
	})
	if out, err := kubectl(ctx, "get", "pods", "-A", "-l", "app.kubernetes.io/name=tailscale-gateway-proxy,gateway.tailscale.com/parent-namespace="+poolNamespace,
		"-o", "name"); err != nil || out != "" {
		t.Fatalf("dedicated proxy pods for the pool's objects: %q %v", out, err)
	}

	// Every object's egress address, from a client pod: the pool Service and the port each
	// object's status.egress records.
	var svcName string
	var poolURLs []string
	waitFor(t, 3*time.Minute, "the egress ports of the 100 objects recorded and on the pool Service", func() (bool, string) {
		out, err := kubectl(ctx, "-n", poolNamespace, "get", "tailscaleendpoints", "-o", "json")
		if err != nil {
			return false, out
		}
		var list struct {
			Items []struct {
				Status struct {
					Egress *struct {
						Ports []struct {
							ListenerPort int `json:"listenerPort"`
						} `json:"ports"`
					} `json:"egress"`
				} `json:"status"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, err.Error()
		}
		svcOut, err := kubectl(ctx, "-n", namespace, "get", "services", "-l", "gateway.tailscale.com/proxy-pool="+poolTailnet,
			"-o", `jsonpath={range .items[*]}{.metadata.name}{range .spec.ports[*]} {.port}{end}{"\n"}{end}`)
		fields := strings.Fields(svcOut)
		if err != nil || len(fields) == 0 {
			return false, svcOut
		}
		svcName = fields[0]
		onService := map[string]bool{}
		for _, p := range fields[1:] {
			onService[p] = true
		}
		var urls []string
		for _, it := range list.Items {
			if it.Status.Egress == nil || len(it.Status.Egress.Ports) != 1 || !onService[fmt.Sprint(it.Status.Egress.Ports[0].ListenerPort)] {
				continue
			}
			urls = append(urls, fmt.Sprintf("http://%s.%s.svc.cluster.local:%d/", svcName, namespace, it.Status.Egress.Ports[0].ListenerPort))
		}
		poolURLs = urls
		return len(urls) == poolObjects, fmt.Sprintf("%d of %d objects on Service %s", len(urls), poolObjects, svcName)
	})
	// The client runs in proxyNS (startNetcheckPod), which the tailnet admits (it admits all).
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, proxyNS))
	t.Cleanup(func() { deleteAndWait(t, "namespace", proxyNS) })
	client := startNetcheckPod(t, ctx, "pool-client")
	start := time.Now()
	want := strings.Repeat("hello from api-server\n", poolObjects)
	waitFor(t, 3*time.Minute, "a GET through each of the 100 egress addresses", func() (bool, string) {
		args := append([]string{"--kubeconfig", kubeconfig, "-n", proxyNS, "exec", client, "--", "/usr/local/bin/netcheck", "get"}, poolURLs...)
		out, err := run(ctx, 2*time.Minute, "kubectl", args...)
		return err == nil && out == want, fmt.Sprintf("%d answers, %v", strings.Count(out, "\n"), err)
	})
	t.Logf("100 egress addresses of one pool of 2 pods reached from a client pod (%s for the 100 GETs)", time.Since(start).Round(time.Second))
}
