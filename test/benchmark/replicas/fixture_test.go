// Package replicas benchmarks replicas of tailscale-gateway-apiserver sharing the live-status
// work (--share-work) on one etcd and one kube-apiserver (test/e2e/framework), each replica a
// process of the server binary built from the working tree, so that each one's CPU time, probes
// and latencies are its own. They probe the devices of a simulated tailnet (test/tailnetsim,
// in the benchmark process) through their own tsnet prober nodes.
package replicas

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

const (
	// tailnetName is the TailscaleTailnet of the simulated tailnet.
	tailnetName = "bench"
	// devices serve the probed endpoints, endpoint i of the benchmark on device i mod devices.
	devices = 4
	// pollInterval is the replicas' --tailnet-poll-interval.
	pollInterval = 2 * time.Second
	// leaseGroup is the replicas' --leader-elect-name (the default).
	leaseGroup = "tailscale-gateway-controllers"
)

// fixture is the control plane and simulated tailnet every benchmark of the package shares.
var fixture struct {
	once sync.Once
	err  error
	dir  string
	env  *framework.Environment
	sim  *tailnetsim.Tailnet
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.env != nil {
		fixture.env.Close()
	}
	if fixture.sim != nil {
		closeWithin(fixture.sim, 30*time.Second)
	}
	if fixture.dir != "" && code == 0 {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// closeWithin closes the simulated tailnet, giving up after timeout: the netstack of a device
// that served many short probe connections can block in Close (gvisor's Stack.Close aborts
// every endpoint, whose RSTs wait on an outbound queue nothing reads any more), and the process
// exits anyway.
func closeWithin(sim *tailnetsim.Tailnet, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		sim.Close()
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		fmt.Fprintf(os.Stderr, "replicas: the simulated tailnet did not close within %s; exiting anyway\n", timeout)
	}
}

// setup starts the simulated tailnet and the control plane, creates the TailscaleTailnet and
// its OAuth Secret, and stops the environment's in-process replica, so that only the
// benchmark's replica processes serve, poll and probe.
func setup(b *testing.B) (*framework.Environment, *tailnetsim.Tailnet) {
	b.Helper()
	fixture.once.Do(func() { fixture.err = doSetup() })
	if fixture.err != nil {
		b.Fatal(fixture.err)
	}
	return fixture.env, fixture.sim
}

func doSetup() error {
	dir, err := os.MkdirTemp("", "tsgw-bench-replicas-")
	if err != nil {
		return err
	}
	fixture.dir = dir
	if err := framework.LogToFile(filepath.Join(dir, "test-process.log")); err != nil {
		return err
	}
	var specs []tailnetsim.DeviceSpec
	for i := range devices {
		specs = append(specs, tailnetsim.DeviceSpec{Hostname: fmt.Sprintf("bench-%d", i), HTTPPort: tailnetsim.DefaultHTTPPort})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Devices: specs, Dir: dir})
	if err != nil {
		return err
	}
	fixture.sim = sim
	// The in-process replica joins the simulator too while it runs, rather than trying
	// Tailscale's control server.
	env, err := framework.Setup(dir, "--tailnet-control-url="+sim.ControlURL())
	if err != nil {
		return fmt.Errorf("%w (logs in %s)", err, dir)
	}
	fixture.env = env
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: framework.Namespace, Name: "bench-oauth"},
		StringData: map[string]string{"client_id": sim.OAuthClientID(), "client_secret": sim.OAuthClientSecret()}}
	if _, err := env.Kube.CoreV1().Secrets(framework.Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return err
	}
	gw, err := versioned.NewForConfig(env.Direct)
	if err != nil {
		return err
	}
	tn := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: tailnetName},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: sim.TailnetName(), APIBaseURL: sim.APIURL(),
			OAuthSecretName: secret.Name, OAuthSecretNamespace: framework.Namespace}}
	if _, err := gw.GatewayV1alpha1().TailscaleTailnets().Create(ctx, tn, metav1.CreateOptions{}); err != nil {
		return err
	}
	return env.Gateway.Stop()
}

// replica is one replica process and what the benchmark reads of it.
type replica struct {
	*framework.GatewayProcess
	identity string
	client   versioned.Interface
	http     *http.Client
}

// startReplicas starts n replica processes and waits until each counts all n as members and
// one holds the controllers' Lease; the leader comes first in the result. The replicas are
// stopped (SIGTERM: their member Leases are deleted) when the benchmark ends.
func startReplicas(b *testing.B, env *framework.Environment, sim *tailnetsim.Tailnet, n int) []*replica {
	b.Helper()
	var rs []*replica
	for i := range n {
		name := fmt.Sprintf("%s-replica-%d", strings.ReplaceAll(b.Name(), "/", "_"), i)
		p, err := env.StartGatewayProcess(name, "--tailnet-control-url="+sim.ControlURL(),
			"--tailnet-poll-interval="+pollInterval.String(), "--tsnet-state-dir="+b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := p.Stop(); err != nil {
				b.Errorf("stopping %s: %v", name, err)
			}
		})
		cfg := rest.CopyConfig(p.Config)
		cfg.QPS, cfg.Burst = -1, 0
		r := &replica{GatewayProcess: p}
		if r.client, err = versioned.NewForConfig(cfg); err != nil {
			b.Fatal(err)
		}
		if r.http, err = rest.HTTPClientFor(cfg); err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	leases := env.Kube.CoordinationV1().Leases(framework.Namespace)
	var leader string
	waitFor(b, "the replicas to share work under one leader", 3*time.Minute, func(ctx context.Context) (bool, error) {
		for _, r := range rs {
			if err := r.Exited(); err != nil {
				return false, err
			}
			if r.identity == "" {
				id, err := r.MemberIdentity()
				if err != nil || id == "" {
					return false, err
				}
				r.identity = id
			}
		}
		list, err := leases.List(ctx, metav1.ListOptions{LabelSelector: "gateway.tailscale.com/replica-group=" + leaseGroup})
		if err != nil {
			return false, err
		}
		live := 0
		for _, l := range list.Items {
			for _, r := range rs {
				if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == r.identity {
					live++
				}
			}
		}
		l, err := leases.Get(ctx, leaseGroup, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false, nil
		}
		leader = *l.Spec.HolderIdentity
		return live == n && len(list.Items) == n, nil
	})
	for i, r := range rs {
		if r.identity == leader {
			rs[0], rs[i] = rs[i], rs[0]
			return rs
		}
	}
	b.Fatalf("the controllers' Lease is held by %s, none of the replicas", leader)
	return nil
}

// waitFor polls cond every 200ms until it is true, fails or timeout passes.
func waitFor(b *testing.B, what string, timeout time.Duration, cond func(context.Context) (bool, error)) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			b.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// probeCounts returns the replica's probes so far, all and failed, from its /metrics
// (tailscale_gateway_health_probes_total).
func (r *replica) probeCounts() (all, failed float64, err error) {
	resp, err := r.http.Get(r.Config.Host + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s/metrics: %s", r.Config.Host, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tailscale_gateway_health_probes_total{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		all += v
		if strings.Contains(line, `result="failure"`) {
			failed += v
		}
	}
	return all, failed, sc.Err()
}

// cpu returns the process's user+system CPU time, from /proc/<pid>/stat.
func cpu(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	const clockTicks = 100 // USER_HZ on Linux
	var ticks int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// rssMiB returns the process's resident set (VmRSS) in MiB.
func rssMiB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// loadAverage returns the first field of /proc/loadavg, the one-minute load average.
func loadAverage() (float64, error) {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty /proc/loadavg")
	}
	return strconv.ParseFloat(f[0], 64)
}
