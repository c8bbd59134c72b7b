package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxypool"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/grpcserve"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/hook"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Endpoint modes of the extension's EDS: which address Envoy dials for a tailnet endpoint.
const (
	// EndpointModeDirect dials the tailnet address itself.
	EndpointModeDirect = "direct"
	// EndpointModeProxy dials the endpoint's egress listener on tailscale-gateway-proxy.
	EndpointModeProxy = "proxy"
)

// ExtensionOptions configure the Envoy Gateway extension server and the xDS server it points
// custom-backend clusters at.
type ExtensionOptions struct {
	Enabled bool
	// BindAddress of the extension's hook service (Envoy Gateway's extensionManager.service).
	BindAddress string
	// XDSBindAddress of the EDS/ADS server.
	XDSBindAddress string
	// XDSAdvertiseAddress is the host:port at which Envoy reaches the xDS server; empty means
	// the address the xDS server listens on.
	XDSAdvertiseAddress string
	// EndpointMode is the address Envoy dials for tailnet endpoints (direct or proxy).
	EndpointMode string
	// ProxyAddress is the IP address of tailscale-gateway-proxy's egress listeners (proxy mode).
	ProxyAddress string
	// HookTLS and XDSTLS are the files of the two ports' TLS with client certificates. Without
	// them a port serves plaintext, which it refuses to do on an address other than loopback.
	HookTLS, XDSTLS grpcserve.TLSFiles
	// XDSServerCAFile is the CA bundle Envoy verifies the xDS serving certificate with (inlined
	// into the xDS cluster the hook adds); required with XDSTLS.
	XDSServerCAFile string
	// EnvoySDSCertificateName and EnvoySDSCertificatePath name the SDS secret, in a file of the
	// Envoy pod, of the client certificate Envoy presents to the xDS server.
	EnvoySDSCertificateName, EnvoySDSCertificatePath string
	// HookListener and XDSListener, when set, are used instead of listening on the bind
	// addresses (tests pass listeners on port 0).
	HookListener, XDSListener net.Listener
}

// NewExtensionOptions returns the defaults: on, hooks on :5005, xDS on :18001, and the endpoint
// mode left to the server's mode: proxy in a cluster (the egress Services of the deployed
// proxies), direct standalone.
func NewExtensionOptions() *ExtensionOptions {
	return &ExtensionOptions{Enabled: true, BindAddress: ":5005", XDSBindAddress: ":18001",
		EnvoySDSCertificateName: hook.EnvoyGatewaySDSCertificateName, EnvoySDSCertificatePath: hook.EnvoyGatewaySDSCertificatePath}
}

// AddFlags adds the extension's flags to fs.
func (o *ExtensionOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "extension", o.Enabled, "Serve the Envoy Gateway extension and its xDS (EDS) server.")
	fs.StringVar(&o.BindAddress, "extension-bind-address", o.BindAddress, "Address of the Envoy Gateway extension's gRPC hook service.")
	fs.StringVar(&o.XDSBindAddress, "xds-bind-address", o.XDSBindAddress, "Address of the xDS (EDS and ADS) server that feeds custom-backend clusters.")
	fs.StringVar(&o.XDSAdvertiseAddress, "xds-advertise-address", o.XDSAdvertiseAddress,
		"host:port at which Envoy reaches the xDS server, e.g. tailscale-gateway-apiserver.tailscale-gateway-system.svc:18001 (default: the address it listens on).")
	fs.StringVar(&o.EndpointMode, "extension-endpoint-mode", o.EndpointMode,
		"Address Envoy dials for tailnet endpoints: direct (the tailnet address; Envoy's nodes must route 100.64.0.0/10) "+
			"or proxy (the endpoint's egress listener on tailscale-gateway-proxy: at --extension-proxy-address, or in a cluster without it "+
			"the cluster IP of the proxy Service deployed for the TailscaleEndpoints, direct for those without spec.proxy). "+
			"Default: proxy in a cluster, direct standalone.")
	fs.StringVar(&o.ProxyAddress, "extension-proxy-address", o.ProxyAddress,
		"IP address of tailscale-gateway-proxy's egress listeners for every TailscaleEndpoints, for --extension-endpoint-mode=proxy "+
			"(required standalone, e.g. 127.0.0.1; in a cluster the deployed proxies' Services are used without it).")
	for _, p := range []struct {
		name, who string
		files     *grpcserve.TLSFiles
	}{{"extension", "Envoy Gateway (extensionManager.service.tls.clientCertificateRef)", &o.HookTLS}, {"xds", "Envoy", &o.XDSTLS}} {
		fs.StringVar(&p.files.CertFile, p.name+"-tls-cert-file", p.files.CertFile,
			"PEM serving certificate of the "+p.name+" port; with its key and client CA the port requires TLS with client certificates (re-read when the file changes). "+
				"Without them the port serves plaintext, on loopback only.")
		fs.StringVar(&p.files.KeyFile, p.name+"-tls-key-file", p.files.KeyFile, "PEM private key of --"+p.name+"-tls-cert-file.")
		fs.StringVar(&p.files.ClientCAFile, p.name+"-client-ca-file", p.files.ClientCAFile,
			"PEM CA bundle that signs the client certificate "+p.who+" presents to the "+p.name+" port.")
		fs.StringSliceVar(&p.files.ClientNames, p.name+"-client-names", p.files.ClientNames,
			"Names (common name or DNS name) a client certificate of the "+p.name+" port must carry; empty accepts any certificate the CA signed.")
	}
	fs.StringVar(&o.XDSServerCAFile, "xds-server-ca-file", o.XDSServerCAFile,
		"PEM CA bundle of the xDS serving certificate, which the xDS cluster the hook adds tells Envoy to trust (required with --xds-tls-cert-file).")
	fs.StringVar(&o.EnvoySDSCertificateName, "xds-envoy-sds-certificate-name", o.EnvoySDSCertificateName,
		"Name of the SDS secret of the client certificate Envoy presents to the xDS server (Envoy Gateway's bootstrap: xds_certificate).")
	fs.StringVar(&o.EnvoySDSCertificatePath, "xds-envoy-sds-certificate-path", o.EnvoySDSCertificatePath,
		"File, in the Envoy pod, of that SDS secret (Envoy Gateway mounts its Secret envoy there: /sds/xds-certificate.json).")
}

// Validate checks the options.
func (o *ExtensionOptions) Validate() []error {
	if !o.Enabled {
		return nil
	}
	var errs []error
	switch o.EndpointMode {
	case "", EndpointModeDirect:
	case EndpointModeProxy:
		if o.ProxyAddress != "" && net.ParseIP(o.ProxyAddress) == nil {
			errs = append(errs, fmt.Errorf("--extension-proxy-address: %q is not an IP address (Envoy's EDS hosts are IPs)", o.ProxyAddress))
		}
	default:
		errs = append(errs, fmt.Errorf("--extension-endpoint-mode: %q is not one of [%s %s]", o.EndpointMode, EndpointModeDirect, EndpointModeProxy))
	}
	if o.XDSAdvertiseAddress != "" {
		if _, _, err := net.SplitHostPort(o.XDSAdvertiseAddress); err != nil {
			errs = append(errs, fmt.Errorf("--xds-advertise-address: %w", err))
		}
	}
	for prefix, files := range map[string]grpcserve.TLSFiles{"extension": o.HookTLS, "xds": o.XDSTLS} {
		if err := files.Validate(prefix); err != nil {
			errs = append(errs, err)
		}
	}
	if o.XDSTLS.Enabled() && (o.XDSServerCAFile == "" || o.EnvoySDSCertificateName == "" || o.EnvoySDSCertificatePath == "") {
		errs = append(errs, errors.New("--xds-tls-cert-file needs --xds-server-ca-file, --xds-envoy-sds-certificate-name and --xds-envoy-sds-certificate-path"))
	}
	return errs
}

// The proxy mode's addresser; it lives with the proxy's plan so both derive the same ports.
var _ eds.Addresser = &plan.EgressAddresser{}

// extension is the runner of the hook and xDS servers.
type extension struct {
	hooks            *hook.Server
	xds              *eds.Server
	hookL, xdsL      net.Listener
	routes           gwinformers.SharedInformerFactory
	services         kubeinformers.SharedInformerFactory // the proxies' Services (proxy mode in a cluster)
	pools            kubeinformers.SharedInformerFactory // the proxy pools' Services (proxy mode in a cluster)
	grants           cache.SharedIndexInformer           // ReferenceGrants (of routes), when the cluster serves them
	eventBroadcaster record.EventBroadcaster
	tls              []*grpcserve.MutualTLS // the ports' certificates, watched while serving
	xdsCA            *dynamiccertificates.DynamicFileCAContent
}

// newExtension builds the extension on factory. core, when set, is the Kubernetes API's client
// configuration: HTTPRoutes and ReferenceGrants are read from it and Events written to it.
// policy decides tenancy; the EDS publishes nothing before waitFor (the informers policy reads)
// have synced.
func (o *ExtensionOptions) newExtension(factory informers.SharedInformerFactory, core *rest.Config, scheme *runtime.Scheme,
	policy *tenancy.Policy, waitFor []cache.InformerSynced) (_ *extension, err error) {
	e := &extension{hookL: o.HookListener, xdsL: o.XDSListener}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.hookL == nil {
		if e.hookL, err = net.Listen("tcp", o.BindAddress); err != nil {
			return nil, fmt.Errorf("listening for the extension: %w", err)
		}
	}
	if e.xdsL == nil {
		if e.xdsL, err = net.Listen("tcp", o.XDSBindAddress); err != nil {
			return nil, fmt.Errorf("listening for xDS: %w", err)
		}
	}
	advertise := o.XDSAdvertiseAddress
	if advertise == "" {
		advertise = e.xdsL.Addr().String()
	}
	hookCreds, err := e.credentials("extension", o.HookTLS, e.hookL)
	if err != nil {
		return nil, err
	}
	xdsCreds, err := e.credentials("xds", o.XDSTLS, e.xdsL)
	if err != nil {
		return nil, err
	}

	edsOpts := eds.Options{Addresser: eds.Direct{}, VersionPrefix: versionPrefix(), ExternalServices: policy.ExternalServices(),
		Creds: xdsCreds, Policy: policy, Synced: waitFor}
	mode := o.EndpointMode
	if mode == "" {
		mode = EndpointModeDirect
		if core != nil {
			mode = EndpointModeProxy
		}
	}
	var proxyServices, poolServices kubeinformers.SharedInformerFactory
	switch {
	case mode == EndpointModeProxy && o.ProxyAddress != "":
		edsOpts.Addresser = &plan.EgressAddresser{Host: o.ProxyAddress}
	case mode == EndpointModeProxy && core != nil:
		kube, err := kubernetes.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating the core client: %w", err)
		}
		proxyServices = proxydeploy.ManagedInformers(kube, serverNamespace(), informerResync)
		poolServices = proxypool.ManagedInformers(kube, serverNamespace(), informerResync)
		edsOpts.Addresser = &proxypool.Addresser{Services: poolServices.Core().V1().Services().Lister(), Namespace: serverNamespace(),
			Resolve: policy.ResolveName, Next: &proxydeploy.ServiceAddresser{Services: proxyServices.Core().V1().Services().Lister(),
				Namespace: serverNamespace(), Direct: eds.Direct{}}}
	case mode == EndpointModeProxy:
		return nil, fmt.Errorf("--extension-endpoint-mode=proxy without a cluster needs --extension-proxy-address")
	}
	hookOpts := hook.Options{XDSAddress: advertise, Gateways: factory.Gateway().V1alpha1().TailscaleGateways().Lister(),
		Endpoints: factory.Gateway().V1alpha1().TailscaleEndpoints().Lister(), Defaulter: scheme, Creds: hookCreds}
	if o.XDSTLS.Enabled() {
		if hookOpts.XDSTLS, e.xdsCA, err = o.xdsClientTLS(advertise); err != nil {
			return nil, err
		}
	}
	if core != nil {
		gw, err := gwclient.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating the Gateway API client: %w", err)
		}
		e.routes = gwinformers.NewSharedInformerFactory(gw, informerResync)
		routes := e.routes.Gateway().V1().HTTPRoutes()
		edsOpts.Routes, hookOpts.Routes = routes.Lister(), routes.Lister()
		edsOpts.RoutesSynced = routes.Informer().HasSynced
		kube, err := kubernetes.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating the core client: %w", err)
		}
		served, err := servesReferenceGrants(kube)
		if err != nil {
			return nil, err
		}
		if served {
			grants := e.routes.Gateway().V1beta1().ReferenceGrants()
			e.grants = grants.Informer()
			edsOpts.Grants = &refgrant.Grants{Lister: grants.Lister()}
			hookOpts.Grants = edsOpts.Grants
			edsOpts.GrantsSynced = grants.Informer().HasSynced
		}
		e.eventBroadcaster = record.NewBroadcaster()
		e.eventBroadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
		hookOpts.Recorder = e.eventBroadcaster.NewRecorder(scheme, eventSource)
		edsOpts.Recorder = hookOpts.Recorder
	}
	e.xds = eds.New(factory, edsOpts)
	if proxyServices != nil {
		// A proxy Service that appears or changes its cluster IP changes the assignments.
		if _, err := proxyServices.Core().V1().Services().Informer().AddEventHandler(e.xds.RouteHandler()); err != nil {
			return nil, err
		}
		e.services = proxyServices
	}
	if poolServices != nil {
		// So does a pool Service, for every object its pool serves.
		if _, err := poolServices.Core().V1().Services().Informer().AddEventHandler(e.xds.RouteHandler()); err != nil {
			return nil, err
		}
		e.pools = poolServices
	}
	if e.routes != nil {
		if _, err := e.routes.Gateway().V1().HTTPRoutes().Informer().AddEventHandler(e.xds.RouteHandler()); err != nil {
			return nil, err
		}
	}
	if e.grants != nil {
		// A ReferenceGrant that appears or goes changes which backendRefs get endpoints.
		if _, err := e.grants.AddEventHandler(e.xds.RouteHandler()); err != nil {
			return nil, err
		}
	}
	hookOpts.Registrar = e.xds
	if e.hooks, err = hook.New(hookOpts); err != nil {
		return nil, err
	}
	klog.InfoS("Envoy Gateway extension configured", "hooks", e.hookL.Addr().String(), "xds", e.xdsL.Addr().String(),
		"xdsAdvertised", advertise, "endpointMode", mode, "httpRoutes", e.routes != nil, "referenceGrants", e.grants != nil,
		"hookTLS", hookCreds != nil, "xdsTLS", xdsCreds != nil)
	return e, nil
}

// run serves until ctx is done.
func (e *extension) run(ctx context.Context) error {
	defer e.close()
	if e.routes != nil {
		e.routes.Start(ctx.Done())
	}
	if e.services != nil {
		e.services.Start(ctx.Done())
	}
	if e.pools != nil {
		e.pools.Start(ctx.Done())
	}
	for _, t := range e.tls {
		go t.Run(ctx)
	}
	if e.xdsCA != nil {
		go e.xdsCA.Run(ctx, 1)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { e.xds.Run(ctx); return nil })
	g.Go(func() error { return e.xds.Serve(ctx, e.xdsL) })
	g.Go(func() error { return e.hooks.Serve(ctx, e.hookL) })
	return g.Wait()
}

func (e *extension) close() {
	if e.eventBroadcaster != nil {
		e.eventBroadcaster.Shutdown()
	}
	for _, l := range []net.Listener{e.hookL, e.xdsL} {
		if l != nil {
			l.Close()
		}
	}
}

// eventSource names the component of the Events the server records.
var eventSource = corev1.EventSource{Component: "tailscale-gateway"}

// versionPrefix distinguishes the xDS versions of this process from other replicas'.
func versionPrefix() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-", host, os.Getpid())
}

// credentials returns the transport credentials of a port from files, nil (plaintext) without
// files; plaintext on a listener other hosts can reach is refused.
func (e *extension) credentials(purpose string, files grpcserve.TLSFiles, l net.Listener) (credentials.TransportCredentials, error) {
	if !files.Enabled() {
		if !grpcserve.IsLoopback(l.Addr()) {
			return nil, fmt.Errorf("%s port %s: %w", purpose, l.Addr(), grpcserve.ErrPlaintext)
		}
		return nil, nil
	}
	m, err := grpcserve.NewMutualTLS(purpose, files)
	if err != nil {
		return nil, err
	}
	e.tls = append(e.tls, m)
	return m.Credentials(), nil
}

// xdsClientTLS is what the hook tells Envoy about the xDS server's TLS: the client certificate
// of the SDS secret in the Envoy pod, the server's CA (read from XDSServerCAFile, re-read when it
// changes) and name (the advertised host).
func (o *ExtensionOptions) xdsClientTLS(advertise string) (*hook.XDSClientTLS, *dynamiccertificates.DynamicFileCAContent, error) {
	host, _, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, nil, fmt.Errorf("--xds-advertise-address: %w", err)
	}
	ca, err := dynamiccertificates.NewDynamicCAContentFromFile("xds-server-ca", o.XDSServerCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--xds-server-ca-file: %w", err)
	}
	return &hook.XDSClientTLS{SDSCertificateName: o.EnvoySDSCertificateName, SDSCertificatePath: o.EnvoySDSCertificatePath,
		ServerName: host, CA: ca.CurrentCABundleContent}, ca, nil
}

// servesReferenceGrants reports whether kube-apiserver serves ReferenceGrants
// (gateway.networking.k8s.io/v1beta1, which Envoy Gateway reads). Without them no reference
// crosses namespaces: no backendRef gets another namespace's endpoints and no TailscaleGateway is
// bound to another namespace's Gateway.
func servesReferenceGrants(kube kubernetes.Interface) (bool, error) {
	list, err := kube.Discovery().ServerResourcesForGroupVersion(gwapiv1b1.GroupVersion.String())
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, fmt.Errorf("discovering ReferenceGrants: %w", err)
	default:
		for _, r := range list.APIResources {
			if r.Name == "referencegrants" {
				return true, nil
			}
		}
	}
	klog.InfoS("kube-apiserver serves no ReferenceGrants: no reference crosses namespaces", "groupVersion", gwapiv1b1.GroupVersion.String())
	return false, nil
}
