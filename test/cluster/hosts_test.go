package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Names of what vipHostFailover creates (in proxyNS).
const (
	hostsObject = "vip-hosts"
	hostsVIP    = "vip-hosts"
)

// vipHostFailover: a TailscaleServices with vipService.autoApprove hosted by a dedicated proxy
// of two replicas. The server approves both pods' nodes (the Service's tag is not the proxies',
// so nothing else approves them); a simulated device is served through the VIP; the replica
// serving it is force-deleted (its process killed, nothing drained) and the device is served by
// the other. The time from the deletion to that first answer is logged (docs/performance.md).
// The simulated control plane keeps routing a dead node for 15 s (startSim's -offline-after), as
// Tailscale's does: a failover in less is the server withdrawing the dead pod's approval.
func vipHostFailover(t *testing.T, ctx context.Context, sim *simTailnet) {
	t.Helper()
	fqdn, ip, port := sim.device(t, "api-server")
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints",
"metadata":{"name":%[1]q,"namespace":%[2]q,"labels":{"app":%[1]q}},"spec":{"tailnet":%[3]q,
"proxy":{"replicas":2,"connectionType":"ingress"},
"endpoints":[{"name":"web","tailscaleIP":%[4]q,"tailscaleFQDN":%[5]q,"port":%[6]d,"protocol":"HTTP"}]}}`,
		hostsObject, proxyNS, simTailnetN, ip, fqdn, port))
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices",
"metadata":{"name":%[1]q,"namespace":%[2]q},"spec":{"selector":{"matchLabels":{"app":%[1]q}},
"vipService":{"name":"svc:%[3]s","ports":["tcp:80"],"tags":["tag:vip-hosts"],"autoApprove":true}}}`, hostsObject, proxyNS, hostsVIP))

	// Both replicas Ready, and approved as hosts by the server.
	var pods map[string]string // pod name -> pod IP
	waitFor(t, 5*time.Minute, "both proxy pods of "+hostsObject+" Ready and approved", func() (bool, string) {
		var why string
		pods, why = readyPods(ctx, hostsObject)
		if len(pods) != 2 {
			return false, why
		}
		hosts, err := simHosts(ctx, sim, "svc:"+hostsVIP)
		for name := range pods {
			if hosts[name] != "approved:manual" {
				return false, fmt.Sprintf("hosts %v (%v)", hosts, err)
			}
		}
		return true, ""
	})

	vipURL := "http://" + hostsVIP + "." + sim.MagicDNSSuffix + "/"
	// get is one GET from the simulated laptop, given up after 1 s so that a black-holed
	// attempt does not hide a failover behind it.
	get := func() bool {
		out, err := sim.curl(ctx, "--max-time", "1", sim.AdminURL+"/devices/laptop/fetch?url="+url.QueryEscape(vipURL))
		var res struct {
			Status int    `json:"status"`
			Body   string `json:"body"`
		}
		return err == nil && json.Unmarshal([]byte(out), &res) == nil && res.Status == 200 && strings.Contains(res.Body, "api-server")
	}
	waitFor(t, 3*time.Minute, "laptop served through svc:"+hostsVIP, func() (bool, string) { return get(), "" })

	// The replica serving the laptop: the one whose connection count grows.
	counts := func() map[string]float64 {
		out := map[string]float64{}
		for name, podIP := range pods {
			out[name] = proxyConnections(ctx, sim, podIP)
		}
		return out
	}
	var serving string
	waitFor(t, time.Minute, "the replica serving the laptop", func() (bool, string) {
		before := counts()
		if !get() {
			return false, "a GET failed"
		}
		after := counts()
		for name := range pods {
			if after[name] > before[name] {
				serving = name
				return true, ""
			}
		}
		return false, fmt.Sprintf("counts %v then %v", before, after)
	})
	var other string
	for name := range pods {
		if name != serving {
			other = name
		}
	}
	otherBefore := proxyConnections(ctx, sim, pods[other])
	died := time.Now()
	// Proxy pods live in the installation's namespace (proxydeploy.NamesFor), found by their
	// parent labels (readyPods).
	if out, err := kubectl(ctx, "-n", namespace, "delete", "pod", serving, "--grace-period=0", "--force"); err != nil {
		t.Fatalf("killing %s: %v\n%s", serving, err, out)
	}
	attempts := 0
	waitFor(t, 2*time.Minute, "laptop served by "+other, func() (bool, string) {
		attempts++
		return get() && proxyConnections(ctx, sim, pods[other]) > otherBefore, ""
	})
	t.Logf("VIP host failover: %s from the forced deletion of %s to the first answer through %s (%d GETs of at most 1 s)",
		time.Since(died).Round(10*time.Millisecond), serving, other, attempts)
}

// readyPods returns the names and IPs of the Ready, not terminating proxy pods of the
// TailscaleEndpoints endpoints of proxyNS, in the installation's namespace.
func readyPods(ctx context.Context, endpoints string) (map[string]string, string) {
	out, err := kubectl(ctx, "-n", namespace, "get", "pods", "-l",
		proxySelector("pods", endpoints)+",gateway.tailscale.com/parent-namespace="+proxyNS, "-o", "json")
	if err != nil {
		return nil, out
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string
				DeletionTimestamp *time.Time
			}
			Status struct {
				PodIP      string `json:"podIP"`
				Conditions []struct{ Type, Status string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err.Error()
	}
	pods := map[string]string{}
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" && p.Metadata.DeletionTimestamp == nil {
				pods[p.Metadata.Name] = p.Status.PodIP
			}
		}
	}
	return pods, fmt.Sprintf("%d pods, Ready: %v", len(list.Items), pods)
}

// simHosts maps the hostnames of a Service's hosts to their approval level in the simulated API.
func simHosts(ctx context.Context, sim *simTailnet, name string) (map[string]string, error) {
	var body struct {
		Devices []struct {
			Hostname      string `json:"hostname"`
			ApprovalLevel string `json:"approvalLevel"`
			Configured    bool   `json:"configured"`
		} `json:"devices"`
	}
	if err := sim.api(ctx, "GET", "/api/v2/tailnet/-/vip-services/"+name+"/devices", nil, &body); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range body.Devices {
		if d.Configured {
			out[d.Hostname] = d.ApprovalLevel
		}
	}
	return out, nil
}

// proxyConnections sums tailscale_gateway_proxy_connections_total of the proxy at podIP, read
// from the node (which NetworkPolicy does not filter); -1 when it cannot be read.
func proxyConnections(ctx context.Context, sim *simTailnet, podIP string) float64 {
	out, err := sim.curl(ctx, "--max-time", "5", "http://"+podIP+":9090/metrics")
	if err != nil {
		return -1
	}
	n := 0.0
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "tailscale_gateway_proxy_connections_total{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			n += v
		}
	}
	return n
}
