// Command tailnet-sim runs a local simulated tailnet (see test/tailnetsim):
// a control server, DERP/STUN, a few tsnet devices and a fake Tailscale API,
// all on 127.0.0.1 (or -listen-addr; the API over TLS with -api-tls-cert-file).
// It writes the API URL, OAuth credentials and device addresses as JSON to
// -info-file and runs until interrupted.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// info is what -info-file receives.
type info struct {
	tailnetsim.Info
	AdminURL string `json:"adminURL"`
}

func main() {
	infoFile := flag.String("info-file", "", "write tailnet info (API URL, OAuth credentials, devices) as JSON to this file")
	dir := flag.String("dir", "", "state directory (default: a temporary directory)")
	adminAddr := flag.String("admin-addr", "127.0.0.1:0", "loopback address of the admin API that flips device state")
	clientID := flag.String("oauth-client-id", "", "OAuth client id to accept (default: random)")
	clientSecret := flag.String("oauth-client-secret", "", "OAuth client secret to accept (default: random)")
	localUp := flag.String("local-up-dir", "", "write credentials, sim.env and live-examples.yaml for hack/local-up.sh to this directory")
	flap := flag.Duration("flap", 0, "if set, flip api-server health, grpc-service serving and postgres online state at this interval")
	listenAddr := flag.String("listen-addr", "127.0.0.1", "IPv4 address control, DERP, STUN and the API listen on (the admin API stays on -admin-addr)")
	certFile := flag.String("api-tls-cert-file", "", "serve the API over TLS with this certificate (PEM; with -api-tls-key-file)")
	keyFile := flag.String("api-tls-key-file", "", "private key of -api-tls-cert-file (PEM)")
	noKeyCheck := flag.Bool("no-auth-key-check", false, "accept registrations without the auth key (a known node restarting from its state sends none, as with Tailscale's control server)")
	offlineAfter := flag.Duration("offline-after", 0, "keep routing a node's Tailscale Services this long after its connection to control ended, as Tailscale's control plane takes time to declare a node offline (0: withdraw at once)")
	klog.InitFlags(nil)
	flag.Parse()
	opts := tailnetsim.Options{Dir: *dir, OAuthClientID: *clientID, OAuthClientSecret: *clientSecret,
		ListenAddr: *listenAddr, NoAuthKeyCheck: *noKeyCheck, OfflineAfter: *offlineAfter}
	if (*certFile == "") != (*keyFile == "") {
		klog.ErrorS(nil, "-api-tls-cert-file and -api-tls-key-file go together")
		os.Exit(2)
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			klog.ErrorS(err, "loading the API's certificate")
			os.Exit(1)
		}
		opts.APITLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if err := run(*infoFile, *adminAddr, *localUp, *flap, opts); err != nil {
		klog.ErrorS(err, "tailnet-sim failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(infoFile, adminAddr, localUp string, flap time.Duration, opts tailnetsim.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	web := tailnetsim.DeviceSpec{Hostname: "api-server", Tags: []string{"tag:web"}, HTTPPort: 80, Services: []string{"svc:api-server"}}
	db := tailnetsim.DeviceSpec{Hostname: "postgres", Tags: []string{"tag:db"}, TCPPort: 5432}
	dns := tailnetsim.DeviceSpec{Hostname: "dns", Tags: []string{"tag:dns"}, UDPPort: 53}
	grpcSvc := tailnetsim.DeviceSpec{Hostname: "grpc-service", Tags: []string{"tag:grpc"}, GRPCPort: 50051}
	// The secondary of the failover demo (svc:simulated-web), and a device with no servers to
	// curl from (GET /devices/laptop/fetch on the admin API).
	backup := tailnetsim.DeviceSpec{Hostname: "web-backup", Tags: []string{"tag:web"}, HTTPPort: 80}
	laptop := tailnetsim.DeviceSpec{Hostname: "laptop"}

	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	opts.Devices = []tailnetsim.DeviceSpec{web, db, dns, grpcSvc, backup, laptop}
	opts.Logf = func(format string, args ...any) {
		klog.V(4).Infof(format, args...)
	}
	tn, err := tailnetsim.Start(startCtx, opts)
	if err != nil {
		return fmt.Errorf("start simulated tailnet: %w", err)
	}
	defer tn.Close()

	ln, err := net.Listen("tcp", adminAddr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("admin address %v is not a loopback address", ln.Addr())
	}
	admin := &http.Server{Handler: tn.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go admin.Serve(ln)
	defer admin.Close()

	out := info{Info: tn.Info(), AdminURL: "http://" + ln.Addr().String()}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode info: %w", err)
	}
	b = append(b, '\n')
	if infoFile != "" {
		if err := writeFileAtomic(infoFile, b); err != nil {
			return err
		}
		defer os.Remove(infoFile)
	}
	if localUp != "" {
		if err := writeLocalUp(localUp, out.Info, out.AdminURL); err != nil {
			return err
		}
	}
	os.Stdout.Write(b)
	klog.InfoS("simulated tailnet running", "apiURL", out.APIURL, "adminURL", out.AdminURL, "devices", len(out.Devices), "infoFile", infoFile)

	if flap > 0 {
		go flapLoop(ctx, tn, flap)
	}
	<-ctx.Done()
	klog.InfoS("shutting down")
	return nil
}

// flapLoop alternates the devices between healthy and unhealthy states so
// watchers of the API server see transitions.
func flapLoop(ctx context.Context, tn *tailnetsim.Tailnet, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	healthy := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		healthy = !healthy
		code := http.StatusOK
		if !healthy {
			code = http.StatusInternalServerError
		}
		if err := tn.SetHTTPStatus("api-server", code); err != nil {
			klog.ErrorS(err, "flap")
		}
		if err := tn.SetGRPCServing("grpc-service", healthy); err != nil {
			klog.ErrorS(err, "flap")
		}
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := tn.SetOnline(octx, "postgres", healthy); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "flap")
		}
		cancel()
		klog.InfoS("flapped devices", "healthy", healthy)
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tailnet-sim-*")
	if err != nil {
		return fmt.Errorf("write info file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write info file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write info file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write info file: %w", err)
	}
	return nil
}
