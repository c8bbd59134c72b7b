package framework

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/rest"
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
	EtcdURL                   string
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
		"--etcd-servers=" + f.EtcdURL,
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
