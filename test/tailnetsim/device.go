package tailnetsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/gvstack"
)

// Default ports served by a device created with AllProtocols.
const (
	DefaultHTTPPort   = 80
	DefaultTCPPort    = 5432
	DefaultUDPPort    = 53
	DefaultGRPCPort   = 50051
	DefaultHealthPath = "/healthz"
)

// DeviceSpec describes one simulated device. A zero port disables that
// protocol on the device.
type DeviceSpec struct {
	// Hostname is the device's machine name; it must be unique.
	Hostname string
	// Tags are requested at registration (tsnet AdvertiseTags), e.g. "tag:web".
	Tags []string
	// HTTPPort serves HTTP: HealthPath answers with the status set by
	// SetHTTPStatus (200 initially), every other path answers 200.
	HTTPPort int
	// HealthPath is the HTTP health path; DefaultHealthPath if empty.
	HealthPath string
	// TCPPort accepts TCP connections and echoes what it reads.
	TCPPort int
	// UDPPort echoes every datagram back to its sender (on IPv4 and IPv6).
	UDPPort int
	// GRPCPort serves grpc.health.v1.Health; the overall status ("") and
	// every name in GRPCServices follow SetGRPCServing (SERVING initially).
	GRPCPort int
	// GRPCServices are extra service names reported by the health server.
	GRPCServices []string
	// Services are Tailscale Services (e.g. "svc:web") this device hosts;
	// the fake API lists it as a host of each.
	Services []string
}

// AllProtocols returns a spec serving HTTP, TCP, UDP and gRPC on the default ports.
func AllProtocols(hostname string, tags ...string) DeviceSpec {
	return DeviceSpec{
		Hostname: hostname,
		Tags:     tags,
		HTTPPort: DefaultHTTPPort,
		TCPPort:  DefaultTCPPort,
		UDPPort:  DefaultUDPPort,
		GRPCPort: DefaultGRPCPort,
	}
}

// Device describes a running simulated device.
type Device struct {
	Hostname string
	// FQDN is the MagicDNS name without the trailing dot.
	FQDN string
	// ID is the API's legacy numeric id; NodeID its stable id (nodeId).
	ID     string
	NodeID string
	IPv4   netip.Addr
	IPv6   netip.Addr
	Tags   []string
	// Ports; zero when the protocol is not served.
	HTTPPort, TCPPort, UDPPort, GRPCPort int
	HealthPath                           string
	// Virtual is true for devices that exist only in the fake API.
	Virtual bool
}

// device is a simulated device whose tsnet node can be stopped and started
// again from the same state directory, keeping its identity.
type device struct {
	spec    DeviceSpec
	dir     string
	authKey string
	control string
	logf    logger.Logf

	httpStatus  atomic.Int32
	grpcServing atomic.Bool

	probesMu sync.Mutex
	probes   map[string]map[netip.Addr]int // health requests by ProbeTagHeader and source

	mu       sync.Mutex
	run      *deviceRun // nil while offline
	ip4, ip6 netip.Addr
	udpPort  uint16 // magicsock port of the first run, reused on restart
}

// deviceRun is one incarnation of a device's tsnet node and its servers.
type deviceRun struct {
	srv    *tsnet.Server
	health *health.Server
	stops  []func()
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func newDevice(spec DeviceSpec, dir, controlURL, authKey string, logf logger.Logf) *device {
	if spec.HealthPath == "" {
		spec.HealthPath = DefaultHealthPath
	}
	d := &device{spec: spec, dir: dir, control: controlURL, authKey: authKey, logf: logf}
	d.httpStatus.Store(http.StatusOK)
	d.grpcServing.Store(true)
	return d
}

// running reports whether the device's tsnet node is up.
func (d *device) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.run != nil
}

func (d *device) addrs() (netip.Addr, netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ip4, d.ip6
}

// start brings the tsnet node up and starts the protocol servers.
func (d *device) start(ctx context.Context) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run != nil {
		return nil
	}
	// Reusing the UDP port keeps peers' direct paths to this device valid
	// across a restart, before they learn its new endpoints from control.
	srv, err := startNode(ctx, d.dir, d.spec.Hostname, d.control, d.authKey, d.spec.Tags, false, d.udpPort, d.logf)
	if err != nil {
		return fmt.Errorf("device %s: %w", d.spec.Hostname, err)
	}
	r := &deviceRun{srv: srv, conns: map[net.Conn]struct{}{}}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	ip4, ip6 := srv.TailscaleIPs()
	if d.ip4.IsValid() && (ip4 != d.ip4 || ip6 != d.ip6) {
		return fmt.Errorf("device %s: addresses changed across restart: %v/%v -> %v/%v", d.spec.Hostname, d.ip4, d.ip6, ip4, ip6)
	}
	if p := d.spec.HTTPPort; p != 0 {
		if err := d.serveHTTP(r, p); err != nil {
			return err
		}
	}
	if p := d.spec.TCPPort; p != 0 {
		if err := d.serveTCP(r, p); err != nil {
			return err
		}
	}
	if p := d.spec.UDPPort; p != 0 {
		for _, ip := range []netip.Addr{ip4, ip6} {
			if !ip.IsValid() {
				continue
			}
			if err := d.serveUDP(r, netip.AddrPortFrom(ip, uint16(p))); err != nil {
				return err
			}
		}
	}
	if p := d.spec.GRPCPort; p != 0 {
		if err := d.serveGRPC(r, p); err != nil {
			return err
		}
	}
	restart := d.ip4.IsValid()
	d.ip4, d.ip6 = ip4, ip6
	if d.udpPort == 0 {
		d.udpPort = srv.Sys().MagicSock.Get().LocalPort()
	}
	d.run = r
	if restart {
		warmPeers(ctx, srv)
	}
	return nil
}

// warmPeers pings every peer over WireGuard once, best effort. After a
// restart, peers still hold WireGuard sessions with the previous process
// and would only rekey after their send timeout (10-15 s); a handshake
// initiated from this side replaces those sessions at once.
func warmPeers(ctx context.Context, srv *tsnet.Server) {
	lc, err := srv.LocalClient()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := lc.Status(ctx)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, p := range st.Peer {
		if len(p.TailscaleIPs) == 0 {
			continue
		}
		ip := p.TailscaleIPs[0]
		wg.Go(func() { _, _ = lc.Ping(ctx, ip, tailcfg.PingTSMP) })
	}
	wg.Wait()
}

func (d *device) listen(r *deviceRun, port int) (net.Listener, error) {
	ln, err := r.srv.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("device %s: listen tcp :%d: %w", d.spec.Hostname, port, err)
	}
	return ln, nil
}

func (d *device) serveHTTP(r *deviceRun, port int) error {
	ln, err := d.listen(r, port)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc(d.spec.HealthPath, func(w http.ResponseWriter, req *http.Request) {
		d.recordProbe(req)
		code := int(d.httpStatus.Load())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s %d %s\n", d.spec.Hostname, code, http.StatusText(code))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello from %s\n", d.spec.Hostname)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger.StdLogger(d.logf)}
	r.wg.Go(func() { _ = hs.Serve(ln) })
	r.stops = append(r.stops, func() { hs.Close() })
	return nil
}

// recordProbe counts a health request by its ProbeTagHeader and its source address.
func (d *device) recordProbe(req *http.Request) {
	tag := req.Header.Get(ProbeTagHeader)
	if tag == "" {
		return
	}
	src, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return
	}
	d.probesMu.Lock()
	defer d.probesMu.Unlock()
	if d.probes == nil {
		d.probes = map[string]map[netip.Addr]int{}
	}
	if d.probes[tag] == nil {
		d.probes[tag] = map[netip.Addr]int{}
	}
	d.probes[tag][src.Addr().Unmap()]++
}

func (d *device) serveTCP(r *deviceRun, port int) error {
	ln, err := d.listen(r, port)
	if err != nil {
		return err
	}
	r.stops = append(r.stops, func() { ln.Close() })
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !r.track(c) {
				c.Close()
				return
			}
			r.wg.Go(func() {
				defer r.untrack(c)
				_, _ = io.Copy(c, c)
			})
		}
	})
	return nil
}

func (r *deviceRun) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *deviceRun) untrack(c net.Conn) {
	c.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

func (r *deviceRun) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (d *device) serveUDP(r *deviceRun, ap netip.AddrPort) error {
	pc, err := r.srv.ListenPacket("udp", ap.String())
	if err != nil {
		return fmt.Errorf("device %s: listen udp %v: %w", d.spec.Hostname, ap, err)
	}
	r.stops = append(r.stops, func() { pc.Close() })
	r.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) || r.isClosed() {
					return
				}
				continue
			}
			_, _ = pc.WriteTo(buf[:n], src)
		}
	})
	return nil
}

func (d *device) serveGRPC(r *deviceRun, port int) error {
	ln, err := d.listen(r, port)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	r.health = hs
	d.applyGRPCStatus(r)
	r.wg.Go(func() { _ = gs.Serve(ln) })
	r.stops = append(r.stops, func() {
		hs.Shutdown()
		gs.Stop()
	})
	return nil
}

func (d *device) applyGRPCStatus(r *deviceRun) {
	if r == nil || r.health == nil {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if d.grpcServing.Load() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	r.health.SetServingStatus("", st)
	for _, name := range d.spec.GRPCServices {
		r.health.SetServingStatus(name, st)
	}
}

func (d *device) setGRPCServing(serving bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.grpcServing.Store(serving)
	d.applyGRPCStatus(d.run)
}

// stop closes the protocol servers and the tsnet node; the state directory
// is kept so start brings back the same node.
func (d *device) stop() {
	d.mu.Lock()
	r := d.run
	d.run = nil
	d.mu.Unlock()
	if r != nil {
		r.stop()
	}
}

func (r *deviceRun) stop() {
	r.mu.Lock()
	r.closed = true
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
	for c := range conns {
		c.Close()
	}
	gvstack.Close(r.srv) // tsnet's Close alone hangs past 512 connections to reset
	r.wg.Wait()
}

// startNode creates a tsnet node with state in dir that accepts routes, and waits until it is
// running and connected to its home DERP region.
func startNode(ctx context.Context, dir, hostname, controlURL, authKey string, tags []string, ephemeral bool, udpPort uint16, logf logger.Logf) (*tsnet.Server, error) {
	s := &tsnet.Server{
		Port:          udpPort,
		Dir:           dir,
		Hostname:      hostname,
		ControlURL:    controlURL,
		AuthKey:       authKey,
		AdvertiseTags: tags,
		Ephemeral:     ephemeral,
		Logf:          logf,
		UserLogf:      logf,
	}
	if _, err := s.Up(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("tsnet up %s: %w", hostname, err)
	}
	if err := waitHomeDERP(ctx, s); err != nil {
		s.Close()
		return nil, fmt.Errorf("tsnet %s: %w", hostname, err)
	}
	// Tailscale Service addresses reach their hosts as subnet routes.
	if err := acceptRoutes(ctx, s); err != nil {
		s.Close()
		return nil, fmt.Errorf("tsnet %s: %w", hostname, err)
	}
	return s, nil
}

// waitHomeDERP waits until s has picked a home DERP region and received a
// frame from it; before that, DERP drops disco frames addressed to s.
func waitHomeDERP(ctx context.Context, s *tsnet.Server) error {
	h := s.Sys().HealthTracker.Get()
	ms := s.Sys().MagicSock.Get()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if r := ms.GetLastNetcheckReport(ctx); r != nil && r.PreferredDERP != 0 &&
			!h.GetDERPRegionReceivedTime(r.PreferredDERP).IsZero() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for home DERP: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
