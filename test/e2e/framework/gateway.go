package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
)

// Gateway is tailscale-gateway-apiserver running in cluster mode inside the test process. It can
// be stopped and started again on the same address.
type Gateway struct {
	// Addr is the host:port the server listens on.
	Addr string
	// HookAddr and XDSAddr are where its Envoy Gateway extension and xDS server listen.
	HookAddr, XDSAddr string

	args   []string
	ca     *x509.CertPool
	cancel context.CancelFunc
	done   chan error
}

// StartGateway parses args as the server's command line, listens on addr (port 0 picks a free
// port) and waits until /readyz, which needs no credentials, answers 200. caFile verifies the
// serving certificate.
func StartGateway(addr string, caPEM []byte, args []string) (*Gateway, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in the serving CA")
	}
	g := &Gateway{Addr: addr, args: args, ca: pool}
	return g, g.Start()
}

// Start runs the server on g.Addr and waits until it is ready.
func (g *Gateway) Start() error {
	if g.cancel != nil {
		return errors.New("the server is already running")
	}
	l, err := net.Listen("tcp", g.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", g.Addr, err)
	}
	g.Addr = l.Addr().String()
	port := l.Addr().(*net.TCPAddr).Port

	o := server.NewOptions()
	fs := pflag.NewFlagSet("tailscale-gateway-apiserver", pflag.ContinueOnError)
	o.AddFlags(fs)
	flags := []string{"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port)}
	if err := fs.Parse(append(flags, g.args...)); err != nil {
		l.Close()
		return fmt.Errorf("parsing flags: %w", err)
	}
	o.RecommendedOptions.SecureServing.Listener = l
	// The extension's ports: free ones the first time, the same ones after a restart.
	for _, ext := range []struct {
		addr *string
		l    *net.Listener
	}{{&g.HookAddr, &o.Extension.HookListener}, {&g.XDSAddr, &o.Extension.XDSListener}} {
		if *ext.addr == "" {
			*ext.addr = "127.0.0.1:0"
		}
		el, err := net.Listen("tcp", *ext.addr)
		if err != nil {
			l.Close()
			return fmt.Errorf("listening on %s: %w", *ext.addr, err)
		}
		*ext.addr, *ext.l = el.Addr().String(), el
	}
	if err := o.Complete(); err != nil {
		l.Close()
		return err
	}
	if err := o.Validate(); err != nil {
		l.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan error, 1)
	go func() { g.done <- o.Run(ctx) }()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: g.ca}}}
	defer client.CloseIdleConnections()
	exited := func() error {
		select {
		case err := <-g.done:
			g.done <- err
			return fmt.Errorf("tailscale-gateway-apiserver exited: %w", err)
		default:
			return nil
		}
	}
	if err := waitReady(client, "https://"+g.Addr+"/readyz", startTimeout, exited); err != nil {
		_ = g.Stop()
		return err
	}
	return nil
}

// Stop shuts the server down gracefully and waits until it has exited.
func (g *Gateway) Stop() error {
	g.Shutdown()
	return g.Wait()
}

// Shutdown tells the server to stop, as a termination signal does, without waiting.
func (g *Gateway) Shutdown() {
	if g.cancel != nil {
		g.cancel()
		g.cancel = nil
	}
}

// Wait waits until the server has exited after Shutdown and returns what it returned.
func (g *Gateway) Wait() error {
	if g.done == nil {
		return nil
	}
	select {
	case err := <-g.done:
		g.done = nil
		return err
	case <-time.After(stopTimeout):
		return fmt.Errorf("tailscale-gateway-apiserver did not stop within %s", stopTimeout)
	}
}

// Port returns the port the server listens on.
func (g *Gateway) Port() (int, error) {
	_, port, err := net.SplitHostPort(g.Addr)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", g.Addr, err)
	}
	return strconv.Atoi(port)
}
