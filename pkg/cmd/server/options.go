// Package server holds the options and the run loop of tailscale-gateway-apiserver.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	apimachineryversion "k8s.io/apimachinery/pkg/version"
	apiserverconfig "k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	basecompatibility "k8s.io/component-base/compatibility"
	baseversion "k8s.io/component-base/version"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/admission/limits"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apiserver"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/embeddedetcd"
	generatedopenapi "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/openapi"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/localpki"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/version"
)

const etcdPathPrefix = "/registry/gateway.tailscale.com"

// Options configure the server.
type Options struct {
	RecommendedOptions *genericoptions.RecommendedOptions

	// Standalone runs without a Kubernetes cluster: embedded etcd (unless etcd servers are given),
	// a local CA, client-certificate authentication and an admin kubeconfig under DataDir.
	// Without it the server runs in cluster mode behind kube-apiserver (cluster.go): delegated
	// authentication and authorization, admission with the core API of --kubeconfig, --etcd-servers.
	Standalone bool
	// DataDir holds the standalone server's etcd data, certificates and kubeconfig.
	DataDir string
	// ShutdownDelay is how long the server keeps serving after it is told to stop, with /readyz
	// failing, so that Services and kube-apiserver stop sending it requests before it closes.
	ShutdownDelay time.Duration

	// Live configures the live status collector built when Collector is nil.
	Live *LiveStatusOptions
	// Extension configures the Envoy Gateway extension and its xDS server.
	Extension *ExtensionOptions
	// Collector supplies live status; when nil and Live is enabled, one is built from Live.
	Collector livestatus.Collector
	// Controllers configure the controllers that change the tailnet (controllers.go).
	Controllers *ControllerOptions
	// Replicas configure how replicas on one etcd share the live-status work (replicas.go).
	Replicas *ReplicaOptions
	// ProxyDeploy configures the deployment of tailscale-gateway-proxy (proxydeploy.go).
	ProxyDeploy *ProxyDeployOptions
	// Tenancy configures which externalServices are accepted (tenancy.go).
	Tenancy *TenancyOptions

	etcd     *embeddedetcd.Server
	replicas *replicaSet
	pki      *localpki.Files
}

// NewOptions returns options with defaults for an aggregated API server.
func NewOptions() *Options {
	o := &Options{
		RecommendedOptions: genericoptions.NewRecommendedOptions(etcdPathPrefix,
			apiserver.Codecs.LegacyCodec(v1alpha1.SchemeGroupVersion)),
		DataDir:     "_output/local",
		Live:        NewLiveStatusOptions(),
		Extension:   NewExtensionOptions(),
		Controllers: NewControllerOptions(),
		Replicas:    NewReplicaOptions(),
		ProxyDeploy: NewProxyDeployOptions(),
		Tenancy:     &TenancyOptions{Limits: limits.Defaults()},
	}
	o.RecommendedOptions.Etcd.StorageConfig.EncodeVersioner = runtime.NewMultiGroupVersioner(
		v1alpha1.SchemeGroupVersion, schema.GroupKind{Group: v1alpha1.GroupName})
	o.RecommendedOptions.SecureServing.BindPort = 8443
	return o
}

// AddFlags adds the server's flags to fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.RecommendedOptions.AddFlags(fs)
	fs.BoolVar(&o.Standalone, "standalone", o.Standalone,
		"Run without a Kubernetes cluster: embedded etcd (unless --etcd-servers is set), a local CA and an admin kubeconfig in --data-dir.")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "Directory of the standalone server's etcd data, certificates and kubeconfig.")
	o.Live.AddFlags(fs)
	o.Extension.AddFlags(fs)
	o.Controllers.AddFlags(fs)
	o.Replicas.AddFlags(fs)
	o.ProxyDeploy.AddFlags(fs)
	o.Tenancy.AddFlags(fs)
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay-duration", o.ShutdownDelay,
		"Time to keep serving after a termination signal while /readyz fails, so endpoints are removed before the listener closes.")
}

// KubeconfigPath is where a standalone server writes its admin kubeconfig.
func (o *Options) KubeconfigPath() string { return filepath.Join(o.DataDir, "kubeconfig") }

// Complete prepares standalone mode: it creates the PKI, turns off the parts that need a Kubernetes
// cluster, and starts the embedded etcd when no etcd servers are configured.
func (o *Options) Complete() error {
	if !o.Standalone {
		return nil
	}
	if o.DataDir == "" {
		return errors.New("--data-dir is required with --standalone")
	}
	pki, err := localpki.Ensure(filepath.Join(o.DataDir, "pki"))
	if err != nil {
		return err
	}
	o.pki = pki

	// Standalone serves on loopback unless told otherwise: it has no authentication in front of
	// the extension and xDS ports.
	o.Extension.BindAddress = loopbackIfUnspecified(o.Extension.BindAddress)
	o.Extension.XDSBindAddress = loopbackIfUnspecified(o.Extension.XDSBindAddress)

	ro := o.RecommendedOptions
	ro.SecureServing.ServerCert.CertKey.CertFile = pki.ServingCert
	ro.SecureServing.ServerCert.CertKey.KeyFile = pki.ServingKey
	// Only holders of a certificate from the local CA get in; system:masters may do anything,
	// every other identity is denied.
	ro.Authentication.RemoteKubeConfigFileOptional = true
	ro.Authentication.SkipInClusterLookup = true
	ro.Authentication.ClientCert.ClientCA = pki.CACert
	ro.Authorization.RemoteKubeConfigFileOptional = true
	ro.Authorization.AlwaysAllowGroups = []string{localpki.AdminGroup}
	// No core Kubernetes API: no namespaces to check, no priority and fairness configuration.
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Features.EnablePriorityAndFairness = false

	if len(ro.Etcd.StorageConfig.Transport.ServerList) == 0 {
		etcd, err := embeddedetcd.Start(filepath.Join(o.DataDir, "etcd"))
		if err != nil {
			return err
		}
		o.etcd = etcd
		etcd.Transport(&ro.Etcd.StorageConfig.Transport)
	}
	return nil
}

// Validate checks the options.
func (o *Options) Validate() error {
	errs := append(o.RecommendedOptions.Validate(), o.Extension.Validate()...)
	if o.Standalone && o.Extension.Enabled && o.Extension.EndpointMode == EndpointModeProxy && o.Extension.ProxyAddress == "" {
		errs = append(errs, errors.New("--extension-endpoint-mode=proxy needs --extension-proxy-address in standalone mode"))
	}
	errs = append(errs, o.ProxyDeploy.Validate()...)
	return utilerrors.NewAggregate(append(errs, o.Tenancy.Validate()...))
}

// projectVersion keeps the Kubernetes library's binary version for compatibility (feature gates,
// emulation) and reports this project's version on /version.
type projectVersion struct {
	basecompatibility.EffectiveVersion
}

// Info is what /version serves.
func (projectVersion) Info() *apimachineryversion.Info {
	i := version.Get()
	return &i
}

// Config builds the server configuration.
func (o *Options) Config() (*apiserver.Config, error) {
	ro := o.RecommendedOptions
	if ro.SecureServing.Listener == nil && o.Standalone {
		// Listen before the kubeconfig is written so it names the real port, even for port 0.
		addr := net.JoinHostPort(ro.SecureServing.BindAddress.String(), fmt.Sprint(ro.SecureServing.BindPort))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		ro.SecureServing.Listener = l
	}
	if err := ro.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("creating self-signed certificates: %w", err)
	}

	cfg := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	cfg.ShutdownDelayDuration = o.ShutdownDelay
	if !o.Standalone {
		if err := o.configureCluster(cfg); err != nil {
			return nil, err
		}
	}
	namer := openapi.NewDefinitionNamer(apiserver.Scheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(generatedopenapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIConfig.Info.Title = "tailscale-gateway"
	cfg.OpenAPIConfig.Info.Version = v1alpha1.SchemeGroupVersion.Version
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIV3Config.Info.Title = "tailscale-gateway"
	cfg.OpenAPIV3Config.Info.Version = v1alpha1.SchemeGroupVersion.Version
	cfg.FeatureGate = utilfeature.DefaultFeatureGate
	cfg.EffectiveVersion = projectVersion{basecompatibility.NewEffectiveVersionFromString(baseversion.DefaultKubeBinaryVersion, "", "")}

	if err := ro.ApplyTo(cfg); err != nil {
		return nil, fmt.Errorf("applying options: %w", err)
	}
	if o.Standalone {
		// The delegating options always allow anonymous requests; standalone answers them with 401.
		authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
			Anonymous:                          &apiserverconfig.AnonymousAuthConfig{Enabled: false},
			ClientCertificateCAContentProvider: cfg.SecureServing.ClientCA,
		}.New()
		if err != nil {
			return nil, fmt.Errorf("creating the client certificate authenticator: %w", err)
		}
		cfg.Authentication.Authenticator = authn
	}
	if o.Collector == nil && o.Live.Enabled {
		stateDir := defaultNodeStateDir("")
		if o.Standalone {
			stateDir = defaultNodeStateDir(o.DataDir)
		}
		rs, err := o.newReplicaSet(cfg.ClientConfig)
		if err != nil {
			return nil, err
		}
		c, err := o.Live.newCollector(cfg.ClientConfig, stateDir, rs)
		if err != nil {
			return nil, err
		}
		o.Collector = c
		if rs != nil {
			rs.collector, o.replicas = c, rs
		}
	}
	return &apiserver.Config{GenericConfig: cfg}, nil
}

// Run serves until ctx is done, then shuts down gracefully and stops the embedded etcd.
func (o *Options) Run(ctx context.Context) error {
	if o.etcd != nil {
		defer o.etcd.Close()
	}
	cfg, err := o.Config()
	if err != nil {
		return err
	}
	ten, err := o.tenancyInputs(cfg.GenericConfig)
	if err != nil {
		return err
	}
	r, err := newRunners(cfg.GenericConfig.LoopbackClientConfig, cfg.GenericConfig.ClientConfig, o.Collector, o.Extension, ten)
	if err != nil {
		return err
	}
	r.installAdmission(cfg.GenericConfig, ten)
	if err := r.watchNamespaces(ten); err != nil {
		return err
	}
	cfg.Overlays = r.overlays()
	if r.controllers, err = r.newControllers(o, cfg.GenericConfig.ClientConfig); err != nil {
		return err
	}
	if rs := o.replicas; rs != nil && r.writer != nil && r.controllers != nil {
		rs.writer = r.writer
		r.writer.SetOwnership(rs.writes)
		r.controllers.replicas, r.replicas = rs, rs
	} else if rs != nil {
		// Nothing would lead the polls: poll here, as without sharing.
		rs.collector.Cache().SetPolling(true)
	}
	if err := r.recordTransitions(o, cfg.GenericConfig.ClientConfig); err != nil {
		return err
	}
	server, err := cfg.Complete().New()
	if err != nil {
		return err
	}
	if err := r.install(server.GenericAPIServer); err != nil {
		return err
	}
	if o.Standalone {
		url := "https://" + o.RecommendedOptions.SecureServing.Listener.Addr().String()
		if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", o.DataDir, err)
		}
		if err := o.pki.WriteKubeconfig(o.KubeconfigPath(), url); err != nil {
			return err
		}
		klog.InfoS("Standalone server ready to serve", "url", url, "kubeconfig", o.KubeconfigPath())
	}
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// loopbackIfUnspecified returns addr with 127.0.0.1 as its host when it names none (":5005").
func loopbackIfUnspecified(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}
