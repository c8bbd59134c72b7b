package server

import (
	"errors"
	"fmt"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// authenticationConfigMap is where kube-apiserver publishes the client CA and the request-header
// settings of the aggregation layer, in kube-system.
const authenticationConfigMap = "extension-apiserver-authentication"

// configureCluster adjusts cfg for cluster mode, where the server runs behind kube-apiserver and
// a Service. It is called before the options are applied.
func (o *Options) configureCluster(cfg *genericapiserver.RecommendedConfig) error {
	// On shutdown, drain in-flight requests while answering new ones with 429 Retry-After, then
	// close watches within two seconds: clients move to another replica at once instead of the
	// server waiting up to a minute for their watches to end.
	cfg.ShutdownSendRetryAfter = true

	authn := o.RecommendedOptions.Authentication
	if authn == nil || authn.SkipInClusterLookup || authn.ClientCert.ClientCA != "" || authn.ClientCert.CAContentProvider != nil {
		return nil
	}
	// The delegating options load the request-header settings before serving but the client CA
	// in the background; until it is loaded, client certificates are not asked for and their
	// holders are served as anonymous. Load it here and report readiness only once it is there.
	client, err := delegationClient(authn.RemoteKubeConfigFile)
	if err != nil {
		return err
	}
	ca, err := dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", metav1.NamespaceSystem,
		authenticationConfigMap, "client-ca-file", client)
	if err != nil {
		return fmt.Errorf("watching the client CA in %s/%s: %w", metav1.NamespaceSystem, authenticationConfigMap, err)
	}
	authn.ClientCert.CAContentProvider = ca
	cfg.AddReadyzChecks(healthz.NamedCheck("client-ca", func(*http.Request) error {
		if len(ca.CurrentCABundleContent()) == 0 {
			return errors.New("the client CA of " + metav1.NamespaceSystem + "/" + authenticationConfigMap + " is not loaded yet")
		}
		return nil
	}))
	return nil
}

// delegationClient returns a client for the cluster of --authentication-kubeconfig, or of the
// pod's service account when the flag is empty.
func delegationClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading the delegated authentication kubeconfig: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}
