package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// benchTargetsEnv makes the test binary serve benchmark targets instead of running tests.
const benchTargetsEnv = "HEALTH_BENCH_TARGETS"

// benchListenersPerProtocol is how many listeners of each protocol the targets share.
const benchListenersPerProtocol = 4

// serveBenchTargets serves every protocol on loopback listeners, prints their addresses as
// JSON on stdout and serves until stdin closes (the benchmark ended).
func serveBenchTargets() error {
	cert, err := newSelfSignedCert()
	if err != nil {
		return err
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}}
	listen := func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	quiet := log.New(io.Discard, "", 0)
	addrs := map[Protocol][]string{}
	for range benchListenersPerProtocol {
		for _, proto := range []Protocol{ProtocolHTTP, ProtocolHTTPS, ProtocolTCP, ProtocolTLS, ProtocolGRPC} {
			ln, err := listen()
			if err != nil {
				return err
			}
			addrs[proto] = append(addrs[proto], ln.Addr().String())
			switch proto {
			case ProtocolHTTP:
				go func() {
					_ = (&http.Server{Handler: ok, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}).Serve(ln)
				}()
			case ProtocolHTTPS:
				// Probes cut short when a benchmark ends make handshake errors; do not log them.
				srv := &http.Server{Handler: ok, TLSConfig: tlsConfig, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}
				go func() { _ = srv.ServeTLS(ln, "", "") }()
			case ProtocolTCP:
				go acceptLoop(ln, func(net.Conn) {})
			case ProtocolTLS:
				go acceptLoop(ln, func(c net.Conn) {
					tc := tls.Server(c, tlsConfig)
					_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
					if tc.Handshake() == nil {
						_, _ = tc.Read(make([]byte, 1)) // until the prober hangs up
					}
				})
			case ProtocolGRPC:
				srv := grpc.NewServer()
				healthpb.RegisterHealthServer(srv, health.NewServer())
				go func() { _ = srv.Serve(ln) }()
			}
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addrs[ProtocolUDP] = append(addrs[ProtocolUDP], pc.LocalAddr().String())
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}()
	}
	if err := json.NewEncoder(os.Stdout).Encode(addrs); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = c.Close() }()
			handle(c)
		}()
	}
}

// startBenchTargets runs serveBenchTargets in a child process.
func startBenchTargets(b *testing.B) (addrs map[Protocol][]string, pid int) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchTargetsEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	if err := json.NewDecoder(stdout).Decode(&addrs); err != nil {
		b.Fatalf("reading target addresses: %v", err)
	}
	return addrs, cmd.Process.Pid
}

// tallyDialer counts dials, i.e. probes, through the prober's default dialer.
type tallyDialer struct {
	Dialer
	n atomic.Int64
}

func (d *tallyDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.n.Add(1)
	return d.Dialer.DialContext(ctx, network, address)
}

// BenchmarkProber10kTargets probes 10,000 targets every 10 s (one op = one interval, after
// one interval of warm-up) against loopback targets served by a child process, and reports
// the prober's CPU use in percent of one core (user+system, and system alone), its RSS, the
// probe rate and the targets' own CPU use. On loopback the kernel runs both ends' TCP
// processing inside the prober's connect, write and close calls, so the system share is an
// overestimate for remote targets.
//
//	go test -run '^$' -bench BenchmarkProber10kTargets ./pkg/health/
//	go test -run '^$' -bench 'BenchmarkProber10kTargets/(mixed|HTTP)$' ./pkg/health/
func BenchmarkProber10kTargets(b *testing.B) {
	addrs, pid := startBenchTargets(b)
	// A mix heavy on the dearer protocols, then each protocol alone.
	b.Run("mixed", func(b *testing.B) {
		benchProber(b, addrs, pid, map[Protocol]int{
			ProtocolHTTP: 50, ProtocolTCP: 20, ProtocolHTTPS: 10, ProtocolGRPC: 10, ProtocolTLS: 5, ProtocolUDP: 5,
		})
	})
	for _, proto := range protocols {
		b.Run(string(proto), func(b *testing.B) { benchProber(b, addrs, pid, map[Protocol]int{proto: 100}) })
	}
}

func benchProber(b *testing.B, addrs map[Protocol][]string, pid int, shares map[Protocol]int) {
	const n, interval = 10000, 10 * time.Second
	var targets []Target
	for _, proto := range slices.Sorted(maps.Keys(shares)) {
		for i := range n * shares[proto] / 100 {
			targets = append(targets, Target{
				Key:     fmt.Sprintf("bench/%s/%d", proto, i),
				Address: addrs[proto][i%len(addrs[proto])],
				Check:   Check{Type: proto, Interval: interval, Timeout: 5 * time.Second},
			})
		}
	}
	runtime.GC()
	debug.FreeOSMemory()

	dialer := &tallyDialer{Dialer: newDirectDialer()}
	p := New(Options{DialerFor: func(string) Dialer { return dialer }})
	p.Update(targets)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	time.Sleep(interval) // warm-up: first probes are spread over one interval
	user0, sys0 := selfCPU(b)
	child0, probes0, start := childCPU(b, pid), dialer.n.Load(), time.Now()
	b.ResetTimer()
	for range b.N {
		time.Sleep(interval)
	}
	b.StopTimer()
	wall := time.Since(start)
	user, sys := selfCPU(b)
	user, sys = user-user0, sys-sys0
	child, probes := childCPU(b, pid)-child0, dialer.n.Load()-probes0

	// Every probe must have succeeded (targets not yet probed twice are still Unknown).
	failing := 0
	var sample []string
	for key, r := range p.Results() {
		if r.Status == StatusUnhealthy || r.Error != "" {
			if failing++; len(sample) < 5 {
				sample = append(sample, fmt.Sprintf("%s: %s %s", key, r.Status, r.Error))
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(100*(user+sys).Seconds()/wall.Seconds(), "cpu%")
	b.ReportMetric(100*sys.Seconds()/wall.Seconds(), "sys-cpu%")
	b.ReportMetric(procStatusMiB(b, "VmRSS"), "rss-MiB")
	b.ReportMetric(float64(probes)/wall.Seconds(), "probes/s")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	b.ReportMetric(100*child.Seconds()/wall.Seconds(), "targets-cpu%")
	if failing > 0 {
		b.Errorf("%d of %d targets failing, e.g. %q", failing, len(targets), sample)
	}
}

// selfCPU is the user and system CPU time this process has used.
func selfCPU(b *testing.B) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// childCPU is the user+system CPU time of process pid, from /proc/<pid>/stat.
func childCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	const clockTicks = 100 // USER_HZ on Linux
	var ticks int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// procStatusMiB reads a kB field such as VmRSS from /proc/self/status, in MiB.
func procStatusMiB(b *testing.B, field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// BenchmarkProbe measures one probe of each protocol against an in-process local server
// (whose work is included).
func BenchmarkProbe(b *testing.B) {
	hs := health.NewServer()
	addrs := map[Protocol]string{
		ProtocolTCP:  tcpServer(b),
		ProtocolTLS:  newTLSServer(b).Addr,
		ProtocolUDP:  udpServer(b, true),
		ProtocolGRPC: grpcServer(b, hs),
	}
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for proto, tlsOn := range map[Protocol]bool{ProtocolHTTP: false, ProtocolHTTPS: true} {
		ln := listen(b)
		srv := &http.Server{Handler: ok, ReadHeaderTimeout: 10 * time.Second}
		if tlsOn {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSignedCert(b)}}
			go func() { _ = srv.ServeTLS(ln, "", "") }()
		} else {
			go func() { _ = srv.Serve(ln) }()
		}
		b.Cleanup(func() { _ = srv.Close() })
		addrs[proto] = ln.Addr().String()
	}
	// As the Prober runs them: HTTPS probes resume the target's previous session.
	for _, proto := range protocols {
		b.Run(string(proto), func(b *testing.B) {
			benchProbe(b, env{dialer: newDirectDialer(), sessions: &sessionCache{}}, addrs[proto], proto)
		})
	}
	b.Run("HTTPS-no-resumption", func(b *testing.B) {
		benchProbe(b, env{dialer: newDirectDialer()}, addrs[ProtocolHTTPS], ProtocolHTTPS)
	})
}

func benchProbe(b *testing.B, e env, addr string, proto Protocol) {
	t := Target{Address: addr, Check: Check{Type: proto, Timeout: 5 * time.Second}.withDefaults()}
	b.ReportAllocs()
	for b.Loop() {
		if err := runProbe(context.Background(), e, t); err != nil {
			b.Fatal(err)
		}
	}
}
