// Package framework runs a Kubernetes control plane on loopback for the e2e suite and the
// aggregation benchmarks: etcd (pkg/embeddedetcd, in the test process), kube-apiserver and
// kube-controller-manager built by hack/build-tools.sh, and tailscale-gateway-apiserver in
// cluster mode in the test process, installed with artifacts/deploy and registered as an
// APIService.
package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/embeddedetcd"
)

// Names of artifacts/deploy.
const (
	Namespace          = "tailscale-gateway-system"
	ServiceName        = "tailscale-gateway-apiserver"
	ServiceAccountName = "tailscale-gateway-apiserver"
	APIServiceName     = "v1alpha1.gateway.tailscale.com"
	ServingSecretName  = "tailscale-gateway-apiserver-tls"
)

// serviceHost is the name kube-apiserver verifies the aggregated server's certificate for.
const serviceHost = ServiceName + "." + Namespace + ".svc"

// Environment is a running control plane with tailscale-gateway-apiserver registered.
type Environment struct {
	// Root is the repository root; Dir holds certificates, kubeconfigs and logs.
	Root, Dir string
	// KubeURL is kube-apiserver's address.
	KubeURL string
	// AdminKubeconfig and Admin are the cluster administrator's credentials for kube-apiserver.
	AdminKubeconfig string
	Admin           *rest.Config
	// DirectKubeconfig and Direct reach tailscale-gateway-apiserver directly, without
	// kube-apiserver, as the cluster administrator (its client certificate is trusted through
	// kube-system/extension-apiserver-authentication).
	DirectKubeconfig string
	Direct           *rest.Config
	// Gateway is the aggregated server, which tests may stop and start again.
	Gateway *Gateway
	// Kube is a clientset of kube-apiserver for the administrator.
	Kube kubernetes.Interface
	// Aggregator is a clientset of kube-apiserver's apiregistration.k8s.io for the administrator.
	Aggregator aggregator.Interface

	clusterCA   *CA
	servingCA   *CA
	gatewayArgs []string
	etcds       []*embeddedetcd.Server
	procs       []*process
	// kubeAPIServer is the index of kube-apiserver in procs; startKube starts it (again) with
	// the same port, etcd, certificates and flags.
	kubeAPIServer int
	startKube     func() (*process, error)
}

// Setup starts the environment under dir and returns it once the APIService is Available and
// kube-controller-manager has aggregated the project's ClusterRoles into admin, edit and view.
// gatewayFlags are added to the command line of tailscale-gateway-apiserver.
func Setup(dir string, gatewayFlags ...string) (env *Environment, err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	kubeAPIServerBin, err := ToolPath(root, "kube-apiserver")
	if err != nil {
		return nil, err
	}
	controllerManagerBin, err := ToolPath(root, "kube-controller-manager")
	if err != nil {
		return nil, err
	}
	e := &Environment{Root: root, Dir: dir}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	files, err := e.makePKI()
	if err != nil {
		return nil, err
	}
	kubeEtcd, err := e.startEtcd("kube-etcd")
	if err != nil {
		return nil, err
	}
	files.Etcd = kubeEtcd.Flags()

	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	e.KubeURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	admin, err := e.clusterCA.IssueClient("admin", AdminUser, "system:masters")
	if err != nil {
		return nil, err
	}
	e.AdminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(e.AdminKubeconfig, e.KubeURL, e.clusterCA.CertFile,
		&clientcmdapi.AuthInfo{ClientCertificate: admin.CertFile, ClientKey: admin.KeyFile}); err != nil {
		return nil, err
	}
	if e.Admin, err = restConfig(e.AdminKubeconfig); err != nil {
		return nil, err
	}
	if e.Kube, err = kubernetes.NewForConfig(e.Admin); err != nil {
		return nil, err
	}
	if e.Aggregator, err = aggregator.NewForConfig(e.Admin); err != nil {
		return nil, err
	}
	klog.InfoS("Starting kube-apiserver", "url", e.KubeURL)
	e.startKube = func() (*process, error) { return startKubeAPIServer(kubeAPIServerBin, dir, port, files, e.Admin) }
	p, err := e.startKube()
	if err != nil {
		return nil, err
	}
	e.kubeAPIServer = len(e.procs)
	e.procs = append(e.procs, p)
	if p, err = startControllerManager(controllerManagerBin, dir, e.AdminKubeconfig); err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)

	if err := e.install(); err != nil {
		return nil, err
	}
	if err := e.startGateway(gatewayFlags); err != nil {
		return nil, err
	}
	if err := e.register(); err != nil {
		return nil, err
	}
	if err := e.waitForAggregatedRoles(); err != nil {
		return nil, err
	}
	return e, nil
}

// makePKI creates the certificates of kube-apiserver, its aggregation layer and the aggregated
// server.
func (e *Environment) makePKI() (kubeAPIServerFiles, error) {
	dir := filepath.Join(e.Dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return kubeAPIServerFiles{}, fmt.Errorf("creating %s: %w", dir, err)
	}
	var f kubeAPIServerFiles
	var err error
	if e.clusterCA, err = NewCA(dir, "cluster-ca"); err != nil {
		return f, err
	}
	frontProxyCA, err := NewCA(dir, "front-proxy-ca")
	if err != nil {
		return f, err
	}
	if e.servingCA, err = NewCA(dir, "tailscale-gateway-ca"); err != nil {
		return f, err
	}
	f.ClientCA, f.FrontProxyCA = e.clusterCA.CertFile, frontProxyCA.CertFile
	if f.Serving, err = e.clusterCA.IssueServing("kube-apiserver", "localhost", "127.0.0.1", "::1", "kubernetes.default.svc"); err != nil {
		return f, err
	}
	if f.FrontProxyClient, err = frontProxyCA.IssueClient("front-proxy-client", FrontProxyUser); err != nil {
		return f, err
	}
	if f.ServiceAccount, err = NewSigningKey(dir, "service-account"); err != nil {
		return f, err
	}
	return f, nil
}

func (e *Environment) startEtcd(name string) (*embeddedetcd.Server, error) {
	s, err := embeddedetcd.Start(filepath.Join(e.Dir, name))
	if err != nil {
		return nil, err
	}
	e.etcds = append(e.etcds, s)
	return s, nil
}

// install runs the documented installation: kubectl apply -k artifacts/deploy, then the serving
// certificate Secret and the APIService's caBundle (README.md of artifacts/deploy).
func (e *Environment) install() error {
	if out, err := e.Kubectl(e.AdminKubeconfig, "apply", "-k", filepath.Join(e.Root, "artifacts", "deploy")); err != nil {
		return fmt.Errorf("kubectl apply -k artifacts/deploy: %w\n%s", err, out)
	}
	return nil
}

// startGateway runs tailscale-gateway-apiserver in cluster mode with its own etcd, as the
// Deployment's sidecar would be, and the credentials of its ServiceAccount.
func (e *Environment) startGateway(flags []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	token, err := e.Kube.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(24 * 3600))}},
		metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating a token for the server's ServiceAccount: %w", err)
	}
	kubeconfig := filepath.Join(e.Dir, "tailscale-gateway.kubeconfig")
	if err := writeKubeconfig(kubeconfig, e.KubeURL, e.clusterCA.CertFile, &clientcmdapi.AuthInfo{Token: token.Status.Token}); err != nil {
		return err
	}
	serving, err := e.servingCA.IssueServing("tailscale-gateway-serving", serviceHost, "localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	if err := e.createServingSecret(ctx, serving); err != nil {
		return err
	}
	etcd, err := e.startEtcd("tailscale-gateway-etcd")
	if err != nil {
		return err
	}
	e.gatewayArgs = append(etcd.Flags(),
		"--tls-cert-file="+serving.CertFile,
		"--tls-private-key-file="+serving.KeyFile,
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
	)
	e.gatewayArgs = append(e.gatewayArgs, flags...)
	if e.Gateway, err = e.StartGateway("127.0.0.1:0"); err != nil {
		return err
	}
	admin, err := e.clusterCA.IssueClient("direct-admin", AdminUser, "system:masters")
	if err != nil {
		return err
	}
	e.DirectKubeconfig = filepath.Join(e.Dir, "direct.kubeconfig")
	if err := writeKubeconfig(e.DirectKubeconfig, "https://"+e.Gateway.Addr, e.servingCA.CertFile,
		&clientcmdapi.AuthInfo{ClientCertificate: admin.CertFile, ClientKey: admin.KeyFile}); err != nil {
		return err
	}
	e.Direct, err = restConfig(e.DirectKubeconfig)
	return err
}

// StartGateway starts another tailscale-gateway-apiserver on addr with the environment's etcd,
// certificates and credentials; extra flags come last.
func (e *Environment) StartGateway(addr string, extra ...string) (*Gateway, error) {
	return StartGateway(addr, e.servingCA.CertPEM, append(append([]string{}, e.gatewayArgs...), extra...))
}

// createServingSecret stores the serving certificate as the Deployment expects it.
func (e *Environment) createServingSecret(ctx context.Context, serving CertKey) error {
	crt, err := os.ReadFile(serving.CertFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(serving.KeyFile)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ServingSecretName, Namespace: Namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": e.servingCA.CertPEM},
	}
	if _, err := e.Kube.CoreV1().Secrets(Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Secret %s: %w", ServingSecretName, err)
	}
	return nil
}

// Close stops everything Setup started.
func (e *Environment) Close() {
	var errs []error
	if e.Gateway != nil {
		errs = append(errs, e.Gateway.Stop())
	}
	for i := len(e.procs) - 1; i >= 0; i-- {
		errs = append(errs, e.procs[i].stop(stopTimeout))
	}
	for _, s := range e.etcds {
		s.Close()
	}
	if err := errors.Join(errs...); err != nil {
		klog.ErrorS(err, "Stopping the e2e environment")
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ServingCAPEM is the CA of the aggregated server's serving certificate, the APIService's caBundle.
func (e *Environment) ServingCAPEM() []byte { return e.servingCA.CertPEM }

// ClusterCAPEM is the CA of kube-apiserver's serving certificate and of client certificates.
func (e *Environment) ClusterCAPEM() []byte { return e.clusterCA.CertPEM }
