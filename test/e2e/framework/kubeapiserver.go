package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// Identities of the e2e cluster's certificates.
const (
	// AdminUser is the cluster administrator: its group system:masters may do anything.
	AdminUser = "e2e-admin"
	// FrontProxyUser is the name kube-apiserver's proxy client certificate carries; aggregated
	// servers trust request headers only from it.
	FrontProxyUser = "front-proxy-client"
)

// kubeAPIServerFiles are the certificates and keys kube-apiserver runs with.
type kubeAPIServerFiles struct {
	ClientCA, FrontProxyCA    string
	Serving, FrontProxyClient CertKey
	ServiceAccount            CertKey // public key in CertFile, private key in KeyFile
	// Etcd are kube-apiserver's etcd flags (embeddedetcd.Server.Flags).
	Etcd []string
}

// startKubeAPIServer runs kube-apiserver on 127.0.0.1:port with RBAC, service account tokens and
// the aggregation layer, and waits until it is ready. admin is a client configuration that may do
// anything.
func startKubeAPIServer(bin, dir string, port int, f kubeAPIServerFiles, admin *rest.Config) (*process, error) {
	args := []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + f.Serving.CertFile,
		"--tls-private-key-file=" + f.Serving.KeyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		// There is no node and no kube-proxy: the "kubernetes" Service needs no endpoints.
		"--endpoint-reconciler-type=none",
		"--authorization-mode=RBAC",
		"--client-ca-file=" + f.ClientCA,
		// Requests without credentials get 401, as in clusters that turn anonymous access off.
		"--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f.ServiceAccount.CertFile,
		"--service-account-signing-key-file=" + f.ServiceAccount.KeyFile,
		// The aggregation layer: kube-apiserver proxies with this client certificate and
		// publishes the request-header settings in kube-system/extension-apiserver-authentication.
		"--requestheader-client-ca-file=" + f.FrontProxyCA,
		"--requestheader-allowed-names=" + FrontProxyUser,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-uid-headers=X-Remote-Uid",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + f.FrontProxyClient.CertFile,
		"--proxy-client-key-file=" + f.FrontProxyClient.KeyFile,
		// Route to an APIService's Service, not its endpoints: an ExternalName Service can then
		// point at the aggregated server on loopback, which endpoints may not name.
		"--enable-aggregator-routing=false",
		"--profiling=false",
		"--v=1",
	}
	args = append(args, f.Etcd...)
	p, err := startProcess("kube-apiserver", filepath.Join(dir, "kube-apiserver.log"), bin, args...)
	if err != nil {
		return nil, err
	}
	client, err := rest.HTTPClientFor(admin)
	if err != nil {
		_ = p.stop(stopTimeout)
		return nil, fmt.Errorf("creating the admin client: %w", err)
	}
	url := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/readyz"
	if err := waitReady(client, url, startTimeout, p.exitError); err != nil {
		_ = p.stop(stopTimeout)
		return nil, fmt.Errorf("kube-apiserver (log %s): %w", p.logPath, err)
	}
	return p, nil
}

// StopKubeAPIServer stops kube-apiserver gracefully (SIGTERM, as a rolling restart of a control
// plane does) and returns once it no longer accepts connections. Clients, kube-controller-manager
// and the aggregated server keep running and retry. The process itself exits later: watches it
// proxies to an aggregated server (kube-controller-manager's of our kinds, any test's) hold it
// until its 60 s shutdown timeout; StartKubeAPIServer waits for that.
func (e *Environment) StopKubeAPIServer() error {
	p := e.procs[e.kubeAPIServer]
	if p.exitError() != nil {
		return nil
	}
	klog.InfoS("Stopping kube-apiserver", "url", e.KubeURL)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	host := strings.TrimPrefix(e.KubeURL, "https://")
	return wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, stopTimeout, true, func(context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", host, time.Second)
		if err != nil {
			return true, nil
		}
		c.Close()
		return false, nil
	})
}

// WaitForKubeAPIServerExit waits until the process StopKubeAPIServer stopped has exited,
// killing it after two minutes.
func (e *Environment) WaitForKubeAPIServerExit() {
	old := e.procs[e.kubeAPIServer]
	select {
	case <-old.exited:
	case <-time.After(2 * stopTimeout):
		_ = old.cmd.Process.Kill()
		<-old.exited
		klog.InfoS("kube-apiserver did not exit after SIGTERM and was killed", "timeout", 2*stopTimeout)
	}
}

// StartKubeAPIServer starts kube-apiserver again after StopKubeAPIServer, once the stopped
// process has exited (WaitForKubeAPIServerExit), on the same port with the same etcd,
// certificates and flags, so that every client reconnects to it, and waits until /readyz answers
// 200. The stopped process's log is kept as kube-apiserver.log.<n>.
func (e *Environment) StartKubeAPIServer() error {
	e.WaitForKubeAPIServerExit()
	old := e.procs[e.kubeAPIServer]
	for n := 1; ; n++ {
		kept := fmt.Sprintf("%s.%d", old.logPath, n)
		if _, err := os.Stat(kept); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(old.logPath, kept); err != nil {
				return fmt.Errorf("keeping the log of the stopped kube-apiserver: %w", err)
			}
			break
		}
	}
	klog.InfoS("Starting kube-apiserver again", "url", e.KubeURL)
	p, err := e.startKube()
	if err != nil {
		return err
	}
	e.procs[e.kubeAPIServer] = p
	return nil
}
