package framework

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// gatewayBinary is the server binary built once per test process from the working tree.
var gatewayBinary struct {
	once sync.Once
	path string
	err  error
}

// BuildGateway builds cmd/tailscale-gateway-apiserver of the repository at root into dir, once
// per test process (later calls return the first build), so replicas run as real processes of
// the code under test rather than of a binary built earlier.
func BuildGateway(root, dir string) (string, error) {
	gatewayBinary.once.Do(func() {
		path := filepath.Join(dir, "tailscale-gateway-apiserver")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/tailscale-gateway-apiserver")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			gatewayBinary.err = fmt.Errorf("building tailscale-gateway-apiserver: %w\n%s", err, out)
			return
		}
		gatewayBinary.path = path
	})
	return gatewayBinary.path, gatewayBinary.err
}

// GatewayProcess is tailscale-gateway-apiserver in cluster mode running as a child process of
// the test: its CPU time is its own and it can be killed without a graceful shutdown.
type GatewayProcess struct {
	// Name names the process in errors and its log file.
	Name string
	// Addr is the host:port the server listens on.
	Addr string
	// Config reaches the server directly as the cluster administrator.
	Config *rest.Config

	p *process
}

// StartGatewayProcess runs the server binary (BuildGateway) as another replica with the
// environment's etcd, certificates and credentials, on a free loopback port with its extension
// and xDS servers on free loopback ports; extra flags come last. It returns once /readyz answers.
func (e *Environment) StartGatewayProcess(name string, extra ...string) (*GatewayProcess, error) {
	bin, err := BuildGateway(e.Root, e.Dir)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := append([]string{"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--extension-bind-address=127.0.0.1:0", "--xds-bind-address=127.0.0.1:0"}, e.gatewayArgs...)
	args = append(args, extra...)
	p, err := startProcess(name, filepath.Join(e.Dir, name+".log"), bin, args...)
	if err != nil {
		return nil, err
	}
	g := &GatewayProcess{Name: name, Addr: addr, p: p}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.servingCA.CertPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	if err := waitReady(client, "https://"+addr+"/readyz", startTimeout, p.exitError); err != nil {
		_ = g.Kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	g.Config = rest.CopyConfig(e.Direct)
	g.Config.Host = "https://" + addr
	return g, nil
}

// Pid is the process's ID.
func (g *GatewayProcess) Pid() int { return g.p.cmd.Process.Pid }

// Stop sends SIGTERM, on which the server shuts down gracefully, and waits for the exit.
func (g *GatewayProcess) Stop() error { return g.p.stop(stopTimeout) }

// Kill sends SIGKILL, so the server cannot clean up (its member Lease stays), and waits for the
// exit.
func (g *GatewayProcess) Kill() error {
	if err := g.p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", g.Name, err)
	}
	select {
	case <-g.p.exited:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s did not exit within %s of SIGKILL", g.Name, stopTimeout)
	}
}

// Exited returns an error describing the exit, with the end of the log, once the process has
// exited, else nil.
func (g *GatewayProcess) Exited() error { return g.p.exitError() }

// LogTail returns the last lines of the process's log.
func (g *GatewayProcess) LogTail() string { return g.p.logTail() }

// memberIdentity finds the replica's member identity in its log.
var memberIdentity = regexp.MustCompile(`"Sharing live-status work with the other replicas" identity="([^"]+)"`)

// MemberIdentity returns the replica's identity among the members sharing work (its member
// Lease's holder), as its log states it once it shares work; "" before.
func (g *GatewayProcess) MemberIdentity() (string, error) {
	data, err := os.ReadFile(g.p.logPath)
	if err != nil {
		return "", err
	}
	if m := memberIdentity.FindSubmatch(data); m != nil {
		return string(m[1]), nil
	}
	return "", nil
}
