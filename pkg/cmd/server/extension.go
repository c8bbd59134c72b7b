package server

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/eds"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/extension/hook"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
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
	// HookListener and XDSListener, when set, are used instead of listening on the bind
	// addresses (tests pass listeners on port 0).
	HookListener, XDSListener net.Listener
}

// NewExtensionOptions returns the defaults: on, hooks on :5005, xDS on :18001, and the endpoint
// mode left to the server's mode: proxy in a cluster (the egress Services of the deployed
// proxies), direct standalone.
func NewExtensionOptions() *ExtensionOptions {
	return &ExtensionOptions{Enabled: true, BindAddress: ":5005", XDSBindAddress: ":18001"}
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
	eventBroadcaster record.EventBroadcaster
}

// newExtension builds the extension on factory. core, when set, is the Kubernetes API's client
// configuration: HTTPRoutes are read from it and Events written to it.
func (o *ExtensionOptions) newExtension(factory informers.SharedInformerFactory, core *rest.Config, scheme *runtime.Scheme,
	external tenancy.ExternalServices) (_ *extension, err error) {
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

	edsOpts := eds.Options{Addresser: eds.Direct{}, VersionPrefix: versionPrefix(), ExternalServices: external}
	mode := o.EndpointMode
	if mode == "" {
		mode = EndpointModeDirect
		if core != nil {
			mode = EndpointModeProxy
		}
	}
	var proxyServices kubeinformers.SharedInformerFactory
	switch {
	case mode == EndpointModeProxy && o.ProxyAddress != "":
		edsOpts.Addresser = &plan.EgressAddresser{Host: o.ProxyAddress}
	case mode == EndpointModeProxy && core != nil:
		kube, err := kubernetes.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating the core client: %w", err)
		}
		proxyServices = proxydeploy.ManagedInformers(kube, informerResync)
		edsOpts.Addresser = &proxydeploy.ServiceAddresser{Services: proxyServices.Core().V1().Services().Lister(), Direct: eds.Direct{}}
	case mode == EndpointModeProxy:
		return nil, fmt.Errorf("--extension-endpoint-mode=proxy without a cluster needs --extension-proxy-address")
	}
	hookOpts := hook.Options{XDSAddress: advertise, Gateways: factory.Gateway().V1alpha1().TailscaleGateways().Lister(),
		Endpoints: factory.Gateway().V1alpha1().TailscaleEndpoints().Lister(), Defaulter: scheme}
	if core != nil {
		gw, err := gwclient.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating the Gateway API client: %w", err)
		}
		e.routes = gwinformers.NewSharedInformerFactory(gw, informerResync)
		routes := e.routes.Gateway().V1().HTTPRoutes()
		edsOpts.Routes, hookOpts.Routes = routes.Lister(), routes.Lister()
		kube, err := kubernetes.NewForConfig(core)
		if err != nil {
			return nil, fmt.Errorf("creating the core client: %w", err)
		}
		e.eventBroadcaster = record.NewBroadcaster()
		e.eventBroadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
		hookOpts.Recorder = e.eventBroadcaster.NewRecorder(scheme, eventSource)
	}
	e.xds = eds.New(factory, edsOpts)
	if proxyServices != nil {
		// A proxy Service that appears or changes its cluster IP changes the assignments.
		if _, err := proxyServices.Core().V1().Services().Informer().AddEventHandler(e.xds.RouteHandler()); err != nil {
			return nil, err
		}
		e.services = proxyServices
	}
	if e.routes != nil {
		if _, err := e.routes.Gateway().V1().HTTPRoutes().Informer().AddEventHandler(e.xds.RouteHandler()); err != nil {
			return nil, err
		}
	}
	hookOpts.Registrar = e.xds
	if e.hooks, err = hook.New(hookOpts); err != nil {
		return nil, err
	}
	klog.InfoS("Envoy Gateway extension configured", "hooks", e.hookL.Addr().String(), "xds", e.xdsL.Addr().String(),
		"xdsAdvertised", advertise, "endpointMode", mode, "httpRoutes", e.routes != nil)
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
