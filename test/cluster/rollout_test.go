package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/churn"
)

// Names and figures of testRollout.
const (
	rolloutObject = "rollout"
	rolloutVIP    = "tsgw-rollout"
	rolloutRate   = 50 // new connections per second, through the VIP and to the egress address each
	// rolloutLoad is how long each load runs; the rollout of two proxies must end within it.
	rolloutLoad = 50 * time.Second
	// rolloutTail is the load that must still run after the rollout ended (the new pods serving).
	rolloutTail = 5 * time.Second
)

// testRollout rolls a proxy StatefulSet of two replicas (kubectl rollout restart: a pod-template
// annotation) while a simulated device opens rolloutRate new connections per second through the
// VIP the proxies host and a client pod as many to their egress address: no connection may fail
// (docs/data-plane.md, "Rolling restart").
func testRollout(t *testing.T) {
	ctx := t.Context()
	sim := simTailnetWithNamespace(t, ctx, rolloutObject)

	// Two proxies serving the egress endpoint api-server and hosting the VIP in front of it.
	fqdn, ip, port := sim.device(t, "api-server")
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints",
"metadata":{"name":%q,"namespace":%q,"labels":{"app":%q}},"spec":{"tailnet":%q,"proxy":{"replicas":2},
"endpoints":[{"name":"web","tailscaleIP":%q,"tailscaleFQDN":%q,"port":%d,"protocol":"HTTP"}]}}`,
		rolloutObject, proxyNS, rolloutObject, simTailnetN, ip, fqdn, port))
	mustApply(t, ctx, fmt.Sprintf(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices",
"metadata":{"name":%q,"namespace":%q},"spec":{"selector":{"matchLabels":{"app":%q}},
"vipService":{"name":"svc:%s","ports":["tcp:80"]}}}`, rolloutObject, proxyNS, rolloutObject, rolloutVIP))
	pods := waitProxyPodsReady(t, ctx, rolloutObject, 2, nil)
	for _, p := range pods {
		t.Logf("proxy pod %s", p.timeline(ctx))
		approveHost(t, ctx, sim, p.Name, rolloutVIP)
	}
	vipURL := "http://" + rolloutVIP + "." + sim.MagicDNSSuffix + "/"
	wantBody := "hello from api-server\n"
	waitFor(t, 3*time.Minute, "laptop GETs "+vipURL, func() (bool, string) {
		status, body, err := sim.fetch(ctx, "laptop", vipURL)
		return err == nil && status == 200 && body == wantBody, fmt.Sprintf("%d %q %v", status, body, err)
	})
	client := startNetcheckPod(t, ctx, "client")
	svcNS, svcName := proxyObject(t, ctx, "services", rolloutObject)
	egressURL := fmt.Sprintf("http://%s.%s.svc.cluster.local:%s/", svcName, svcNS, egressServicePort(t, ctx, svcNS, svcName))
	waitNetcheckGet(t, ctx, client, egressURL, wantBody)

	// The proxies' logs until they exit, for a failure's message.
	logs := followLogs(ctx, pods)

	// Load through both paths, and the rollout while it runs.
	var wg sync.WaitGroup
	var vip, egress churn.Paced
	var vipErr, egressErr error
	loadStart := time.Now()
	wg.Go(func() { vip, vipErr = sim.load(ctx, "laptop", vipURL, rolloutRate, rolloutLoad) })
	wg.Go(func() { egress, egressErr = netcheckLoad(ctx, client, egressURL, rolloutRate, rolloutLoad) })
	stsNS, sts := proxyObject(t, ctx, "statefulsets", rolloutObject)
	rolled := time.Now()
	if out, err := kubectl(ctx, "-n", stsNS, "rollout", "restart", "statefulset/"+sts); err != nil {
		t.Fatalf("kubectl rollout restart: %v\n%s", err, out)
	}
	if out, err := run(ctx, 5*time.Minute, "kubectl", "--kubeconfig", kubeconfig, "-n", stsNS, "rollout", "status",
		"statefulset/"+sts, "--timeout=4m"); err != nil {
		t.Fatalf("kubectl rollout status: %v\n%s", err, out)
	}
	uids := []string{pods[0].UID, pods[1].UID}
	after := waitProxyPodsReady(t, ctx, rolloutObject, 2, uids)
	rolledIn := time.Since(rolled)
	for _, p := range after {
		t.Logf("new proxy pod %s", p.timeline(ctx))
	}
	wg.Wait()
	t.Logf("rollout of %s/%s: %v (load started %v before it, ran %v)", stsNS, sts, rolledIn.Round(100*time.Millisecond),
		rolled.Sub(loadStart).Round(100*time.Millisecond), rolloutLoad)
	if tail := loadStart.Add(rolloutLoad).Sub(rolled.Add(rolledIn)); tail < rolloutTail {
		t.Errorf("the rollout took %v: the load (%v) ran only %v after it, want %v", rolledIn, rolloutLoad, tail, rolloutTail)
	}
	withdrawn := withdrawals(logs())
	for _, r := range []struct {
		what string
		res  churn.Paced
		err  error
		// inFlight: failures of connections in flight through a host at the instant it
		// withdrew its VIP are expected (docs/data-plane.md, "Rolling restart"), no others.
		inFlight bool
	}{{"through the VIP (laptop, " + vipURL + ")", vip, vipErr, true}, {"to the egress address (pod client, " + egressURL + ")", egress, egressErr, false}} {
		if r.err != nil {
			t.Errorf("load %s: %v", r.what, r.err)
			continue
		}
		t.Logf("load %s during the rollout: %v", r.what, r.res)
		if r.inFlight && r.res.Failed > 0 {
			if err := inFlightAtWithdrawal(r.res, loadStart, withdrawn); err != nil {
				t.Errorf("%d of %d connections %s failed: %v (%v; failures %q)", r.res.Failed, r.res.Conns, r.what, err, r.res.Kinds, r.res.Samples)
			} else {
				t.Logf("%d of %d connections %s failed, all in flight when a host withdrew the VIP (at %v): %q",
					r.res.Failed, r.res.Conns, r.what, withdrawn, r.res.Samples)
			}
		} else if r.res.Failed > 0 {
			t.Errorf("%d of %d connections %s failed, want none: %v; first failures %q", r.res.Failed, r.res.Conns, r.what, r.res.Kinds, r.res.Samples)
		}
		if want := int(float64(rolloutRate) * rolloutLoad.Seconds() * 0.8); r.res.Conns < want {
			t.Errorf("only %d connections %s, want at least %d (%d/s for %v)", r.res.Conns, r.what, want, rolloutRate, rolloutLoad)
		}
	}
	if t.Failed() {
		for name, l := range logs() {
			t.Logf("log of the old proxy pod %s (last 6 KiB):\n%s", name, l[max(0, len(l)-6144):])
		}
	}
}

// waitProxyPodsReady waits for n proxy pods of endpoints, none of the UIDs not, all Ready through
// their probes, and returns them sorted by name.
func waitProxyPodsReady(t *testing.T, ctx context.Context, endpoints string, n int, not []string) []proxyPod {
	t.Helper()
	var pods []proxyPod
	waitFor(t, 5*time.Minute, fmt.Sprintf("%d proxy pods of %s Ready", n, endpoints), func() (bool, string) {
		out, err := kubectl(ctx, "get", "pods", "-A", "-l", proxySelector("pods", endpoints), "-o", "json")
		if err != nil {
			return false, out
		}
		var list struct {
			Items []struct {
				Metadata struct {
					Namespace, Name, UID string
					CreationTimestamp    time.Time `json:"creationTimestamp"`
					DeletionTimestamp    *time.Time
				}
				Status struct {
					Conditions []struct {
						Type, Status       string
						LastTransitionTime time.Time `json:"lastTransitionTime"`
					}
					ContainerStatuses []struct {
						State struct {
							Running *struct {
								StartedAt time.Time `json:"startedAt"`
							}
						}
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, err.Error()
		}
		pods = nil
		var detail []string
		for _, p := range list.Items {
			m := p.Metadata
			if slices.Contains(not, m.UID) || m.DeletionTimestamp != nil {
				detail = append(detail, m.Name+" (old or terminating)")
				continue
			}
			ready := false
			for _, c := range p.Status.Conditions {
				if c.Type == "Ready" && c.Status == "True" && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil {
					ready = true
					pods = append(pods, proxyPod{Namespace: m.Namespace, Name: m.Name, UID: m.UID, Created: m.CreationTimestamp,
						Ready: c.LastTransitionTime, Started: p.Status.ContainerStatuses[0].State.Running.StartedAt})
				}
			}
			if !ready {
				detail = append(detail, fmt.Sprintf("%s/%s: %+v", m.Namespace, m.Name, p.Status))
			}
		}
		slices.SortFunc(pods, func(a, b proxyPod) int { return strings.Compare(a.Name, b.Name) })
		return len(pods) == n && len(list.Items) == n, fmt.Sprintf("%v; %s", detail, describeEndpoints(ctx, endpoints))
	})
	return pods
}

// approveHost approves the device of the proxy pod as a host of svc:<vip>, as the tailnet's
// autoApprovers would.
func approveHost(t *testing.T, ctx context.Context, sim *simTailnet, pod, vip string) {
	t.Helper()
	waitDevice(t, ctx, sim, pod)
	devs, err := sim.devices(ctx, pod)
	if err != nil || len(devs) != 1 {
		t.Fatalf("device %s: %v %v", pod, devs, err)
	}
	approve := "/api/v2/tailnet/-/vip-services/svc:" + vip + "/device/" + devs[0].NodeID + "/approved"
	waitFor(t, 3*time.Minute, "the tailnet's admin approves "+pod+" as a host of svc:"+vip, func() (bool, string) {
		err := sim.api(ctx, "POST", approve, map[string]bool{"approved": true}, nil)
		return err == nil, fmt.Sprint(err)
	})
}

// load has the simulated device hostname open rate new connections per second to rawURL for
// duration (the admin API's load, churn.RunPaced) and returns what happened to them.
func (s *simTailnet) load(ctx context.Context, hostname, rawURL string, rate int, duration time.Duration) (churn.Paced, error) {
	q := url.Values{"url": {rawURL}, "rate": {fmt.Sprint(rate)}, "duration": {duration.String()}}
	out, err := run(ctx, duration+2*time.Minute, "nsenter", "--net="+nodeNetns, "curl", "-sS", "--fail-with-body",
		"--max-time", fmt.Sprint(int((duration + time.Minute).Seconds())), s.AdminURL+"/devices/"+hostname+"/load?"+q.Encode())
	var res churn.Paced
	if err == nil {
		err = json.Unmarshal([]byte(out), &res)
	}
	if err != nil {
		return res, fmt.Errorf("%w: %s", err, out)
	}
	return res, nil
}

// netcheckLoad has the netcheck pod open rate new connections per second to rawURL for duration
// (`netcheck load`) and returns what happened to them.
func netcheckLoad(ctx context.Context, pod, rawURL string, rate int, duration time.Duration) (churn.Paced, error) {
	out, err := run(ctx, duration+2*time.Minute, "kubectl", "--kubeconfig", kubeconfig, "-n", proxyNS, "exec", pod, "--",
		"/usr/local/bin/netcheck", "load", "-rate", fmt.Sprint(rate), "-duration", duration.String(), rawURL)
	var res churn.Paced
	if err == nil {
		err = json.Unmarshal([]byte(lastLine(out)), &res)
	}
	if err != nil {
		return res, fmt.Errorf("%w: %s", err, out)
	}
	return res, nil
}

// followLogs follows the logs of pods until they end (or ctx does); the returned function
// gives what each logged so far.
func followLogs(ctx context.Context, pods []proxyPod) func() map[string]string {
	var mu sync.Mutex
	bufs := map[string]*bytes.Buffer{}
	for _, p := range pods {
		var b bytes.Buffer
		bufs[p.Name] = &b
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "-n", p.Namespace, "logs", "-f", "--timestamps", p.Name)
		w := lockedWriter{mu: &mu, b: &b}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			b.WriteString(err.Error())
			continue
		}
		go func() { _ = cmd.Wait() }()
	}
	return func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]string{}
		for name, b := range bufs {
			out[name] = b.String()
		}
		return out
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// lastLine is the last non-empty line of out (a command's JSON answer after what it logged).
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// maxInFlight bounds the connections that may be in flight through a host when it withdraws
// its VIP: 50 new connections/s, each answered within about 100 ms on this machine.
const maxInFlight = 5

// withdrawals are the times at which the proxies logged that their VIPs had moved away.
func withdrawals(logs map[string]string) []time.Time {
	var out []time.Time
	for _, l := range logs {
		for _, line := range strings.Split(l, "\n") {
			stamp, rest, ok := strings.Cut(line, " ")
			if at, err := time.Parse(time.RFC3339Nano, stamp); ok && err == nil && strings.Contains(rest, "Services withdrawn") {
				out = append(out, at)
			}
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// inFlightAtWithdrawal checks that every failure of res is a connection that was answered
// late or not at all (its dial succeeded: no SYN was lost or refused) and began within 2 s
// before a withdrawal (or 0.5 s after it, the load's clock starting slightly after start), at
// most maxInFlight per withdrawal.
func inFlightAtWithdrawal(res churn.Paced, start time.Time, withdrawn []time.Time) error {
	if len(res.Samples) < res.Failed {
		return fmt.Errorf("only %d of the failures are known", len(res.Samples))
	}
	if res.Failed > maxInFlight*len(withdrawn) {
		return fmt.Errorf("more than %d per withdrawal (%d withdrawals)", maxInFlight, len(withdrawn))
	}
	for _, sample := range res.Samples {
		offset, what, _ := strings.Cut(strings.TrimPrefix(sample, "+"), ": ")
		d, err := time.ParseDuration(offset)
		if err != nil {
			return fmt.Errorf("failure %q: %w", sample, err)
		}
		if !strings.HasPrefix(what, "answer") {
			return fmt.Errorf("failure %q: not a connection in flight", sample)
		}
		began := start.Add(d)
		if !slices.ContainsFunc(withdrawn, func(w time.Time) bool {
			return began.After(w.Add(-2*time.Second)) && began.Before(w.Add(500*time.Millisecond))
		}) {
			return fmt.Errorf("failure %q began at %v, not just before a withdrawal", sample, began.Format(time.RFC3339Nano))
		}
	}
	return nil
}
