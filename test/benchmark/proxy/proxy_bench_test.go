// Package proxy measures the cmd/tailscale-gateway-proxy process: it runs the real binary, as a
// process of its own, against the standalone server (in-process, embedded etcd) and the
// simulated tailnet, so its CPU and memory can be read from /proc apart from everything else.
package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

const conns = 1000

// BenchmarkProxyProcessAt1000Connections opens 1,000 connections through one egress listener
// of a proxy process to a simulated device's TCP echo and reports the process's RSS with them
// open and idle, its CPU while they are idle, and its CPU while every connection echoes 1 KiB
// every 100 ms (10,000 messages/s, 10 MiB/s each way). Run it with -benchtime 1x.
func BenchmarkProxyProcessAt1000Connections(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{tailnetsim.AllProtocols("dev")}})
	if err != nil {
		b.Fatal(err)
	}
	// tsnet v1.102.5's Server.Close can block forever after many connections; the figures are
	// printed before, and the process exits anyway.
	defer closeWithin(sim.Close, 10*time.Second)
	dev, err := sim.Device("dev")
	if err != nil {
		b.Fatal(err)
	}
	srv := framework.Start(b, "")
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "bench"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{
			{Name: "echo", TailscaleIP: dev.IPv4.String(), TailscaleFQDN: dev.FQDN, Port: int32(dev.TCPPort), Protocol: v1alpha1.ProtocolTCP}}},
	}
	if _, err := srv.Clientset(b).GatewayV1alpha1().TailscaleEndpoints("bench").Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}

	bin := filepath.Join(b.TempDir(), "tailscale-gateway-proxy")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/tailscale-gateway/tailscale-gateway/cmd/tailscale-gateway-proxy")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the proxy: %v\n%s", err, out)
	}
	keyFile := filepath.Join(b.TempDir(), "authkey")
	if err := os.WriteFile(keyFile, []byte(sim.AuthKey()), 0o600); err != nil {
		b.Fatal(err)
	}
	bind := fmt.Sprintf("127.%d.%d.%d", 10+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	metricsAddr := net.JoinHostPort(bind, "9090")
	cmd := exec.CommandContext(ctx, bin, "--kubeconfig", srv.Kubeconfig, "--namespace", "bench", "--endpoints", "bench",
		"--state-dir", b.TempDir(), "--hostname", "proxy-bench", "--control-url", sim.ControlURL(), "--auth-key-file", keyFile,
		"--egress-bind-address", bind, "--metrics-bind-address", metricsAddr)
	logFile, err := os.Create(filepath.Join(b.TempDir(), "proxy.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	pid := cmd.Process.Pid

	// The egress port the server's allocator records for the endpoint.
	var egressPort int32
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := srv.Clientset(b).GatewayV1alpha1().TailscaleEndpoints("bench").Get(c, "bench", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		_, rec := ports.Recorded(o)
		egressPort = rec[ports.Key{Endpoint: "echo", Port: int32(dev.TCPPort)}]
		return egressPort != 0, nil
	})
	if err != nil {
		b.Fatalf("waiting for the egress port: %v", err)
	}
	addr := net.JoinHostPort(bind, strconv.Itoa(int(egressPort)))
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, nil
		}
		c, err := echoConn(addr)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		logs, _ := os.ReadFile(logFile.Name())
		b.Fatalf("waiting for the proxy: %v\n%s", err, logs)
	}
	idleRSS := rssMiB(b, pid)

	open := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for len(open) < conns {
		c, err := echoConn(addr)
		if err != nil {
			b.Fatalf("connection %d: %v", len(open)+1, err)
		}
		open = append(open, c)
	}
	// Read memory once the proxy itself counts every connection as active.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return activeConnections(metricsAddr) >= conns, nil
	})
	if err != nil {
		b.Fatalf("the proxy never counted %d active connections (last %d)", conns, activeConnections(metricsAddr))
	}
	rss := rssMiB(b, pid)
	idleCPU := cpuPercent(b, pid, 5*time.Second, nil)

	var stop sync.WaitGroup
	done := make(chan struct{})
	var errOnce sync.Once
	var loadErr error
	activeCPU := cpuPercent(b, pid, 10*time.Second, func() {
		for _, c := range open {
			stop.Go(func() {
				msg := make([]byte, 1024)
				buf := make([]byte, 1024)
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-done:
						return
					case <-tick.C:
					}
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write(msg); err != nil {
						errOnce.Do(func() { loadErr = err })
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						errOnce.Do(func() { loadErr = err })
						return
					}
				}
			})
		}
	})
	close(done)
	stop.Wait()
	if loadErr != nil {
		b.Fatalf("echo under load: %v", loadErr)
	}
	// Close the connections and let them end on every hop before the processes stop: tsnet
	// v1.102.5's Server.Close can block forever resetting many open connections itself.
	for _, c := range open {
		c.Close()
	}
	open = nil
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `tailscale_gateway_proxy_active_connections{listener="egress/tcp/`) &&
			strings.Contains(string(body), `role="egress",target="bench/bench/echo"} 0`), nil
	})
	if err != nil {
		b.Errorf("the proxy's connections did not end: %v", err)
	}
	fmt.Fprintf(os.Stderr, "proxy process: RSS %.1f MiB with no connections, %.1f MiB with %d; CPU %.1f%% idle, %.1f%% at 10,000 messages/s\n",
		idleRSS, rss, conns, idleCPU, activeCPU)
	b.ReportMetric(idleRSS, "rss-MiB-0conns")
	b.ReportMetric(rss, "rss-MiB-1000conns")
	b.ReportMetric(idleCPU, "cpu-%-idle")
	b.ReportMetric(activeCPU, "cpu-%-10k-msgs/s")
}

func closeWithin(closeFn func() error, d time.Duration) {
	done := make(chan struct{})
	go func() {
		_ = closeFn()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		fmt.Fprintln(os.Stderr, "the simulated tailnet did not close in time")
	}
}

// echoConn dials addr and makes one round trip, so the connection reaches the device.
func echoConn(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{1}); err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rssMiB reads VmRSS of pid.
func rssMiB(b *testing.B, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// cpuPercent is pid's CPU time (user + system) over window as a percentage of one core; start,
// when given, runs at the beginning of the window.
func cpuPercent(b *testing.B, pid int, window time.Duration, start func()) float64 {
	b.Helper()
	t0, c0 := time.Now(), cpuTicks(b, pid)
	if start != nil {
		start()
	}
	time.Sleep(window)
	t1, c1 := time.Now(), cpuTicks(b, pid)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return 100 * float64(c1-c0) / ticksPerSecond / t1.Sub(t0).Seconds()
}

func cpuTicks(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// activeConnections sums tailscale_gateway_proxy_active_connections on the proxy's /metrics.
func activeConnections(metricsAddr string) int {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tailscale_gateway_proxy_active_connections{") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			total += v
		}
	}
	return int(total)
}
