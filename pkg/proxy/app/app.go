// Package app is the command line of tailscale-gateway-proxy: flags, the tsnet node, the API
// client, the metrics endpoint, and the proxy runner.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Options are the command's flags.
type Options struct {
	Kubeconfig string
	Namespace  string
	// SecretNamespace holds StateSecret and AuthKeySecret; Namespace when empty.
	SecretNamespace   string
	Endpoints         []string
	EndpointsSelector string
	Services          []string
	ServicesSelector  string
	// Tailnet makes the proxy its TailscaleTailnet's pool (proxy.Selection.Tailnet).
	Tailnet string

	StateDir      string
	StateSecret   string
	Hostname      string
	ControlURL    string
	AuthKeyFile   string
	AuthKey       string
	AuthKeySecret string
	Tags          []string
	TSNetPort     uint16

	EgressBindAddress  string
	MetricsBindAddress string
	MaxConnections     int
	DrainGrace         time.Duration
	// External sets which externalServices the proxy dials; none by default.
	External tenancy.ExternalFlags
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{Namespace: "default", StateDir: "/var/lib/tailscale-gateway-proxy", Hostname: "tailscale-gateway-proxy",
		MetricsBindAddress: ":9090", MaxConnections: proxy.DefaultMaxConnections, DrainGrace: proxy.DefaultDrainGrace}
}

// AddFlags adds the options to fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the API serving gateway.tailscale.com; empty uses the in-cluster configuration")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of the objects served")
	fs.StringVar(&o.SecretNamespace, "secret-namespace", o.SecretNamespace,
		"namespace of --state-secret and --auth-key-secret (the deployed proxies': the installation's); empty is --namespace")
	fs.StringSliceVar(&o.Endpoints, "endpoints", o.Endpoints, "TailscaleEndpoints whose endpoints get egress listeners")
	fs.StringVar(&o.EndpointsSelector, "endpoints-selector", o.EndpointsSelector, "label selector of more TailscaleEndpoints to serve for egress")
	fs.StringSliceVar(&o.Services, "services", o.Services, "TailscaleServices whose Tailscale Service this proxy hosts")
	fs.StringVar(&o.ServicesSelector, "services-selector", o.ServicesSelector, "label selector of more TailscaleServices to host")
	fs.StringVar(&o.Tailnet, "tailnet", o.Tailnet,
		"TailscaleTailnet whose proxy pool this is: serve every TailscaleEndpoints of that tailnet without spec.proxy, in every namespace the tailnet admits, and host the Services of the TailscaleServices selecting them (instead of --endpoints, --services and their selectors; --namespace is then not used)")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "tsnet state directory; it keeps the node's identity across restarts")
	fs.StringVar(&o.StateSecret, "state-secret", o.StateSecret,
		"Secret in --secret-namespace that keeps the node's identity instead of --state-dir (which then holds only tsnet's logs); it must exist, the proxy gets and updates it")
	fs.StringVar(&o.Hostname, "hostname", o.Hostname, "the node's hostname in the tailnet")
	fs.StringVar(&o.ControlURL, "control-url", o.ControlURL, "coordination server URL; empty means Tailscale's")
	fs.StringVar(&o.AuthKeyFile, "auth-key-file", o.AuthKeyFile, "file holding the auth key that enrolls the node on its first start (not read afterwards)")
	fs.StringVar(&o.AuthKey, "auth-key", o.AuthKey, "auth key for the first start; prefer --auth-key-file, command lines are visible to other processes")
	fs.StringVar(&o.AuthKeySecret, "auth-key-secret", o.AuthKeySecret,
		"Secret in --secret-namespace holding the auth key (key \"authkey\") read, with --state-secret, when that holds no state yet; once joined, the node's ID is recorded in the state Secret")
	fs.StringSliceVar(&o.Tags, "tags", o.Tags, "ACL tags requested at enrollment; hosting a Tailscale Service needs one")
	fs.Uint16Var(&o.TSNetPort, "tsnet-port", o.TSNetPort, "UDP port of WireGuard; 0 picks one")
	fs.StringVar(&o.EgressBindAddress, "egress-bind-address", o.EgressBindAddress, "IP the egress listeners bind to; empty binds every address")
	fs.IntVar(&o.MaxConnections, "max-connections-per-listener", o.MaxConnections,
		"connections open at once through one egress or Service port; more are refused and counted in tailscale_gateway_proxy_refused_total{reason=\"connection_limit\"}")
	fs.DurationVar(&o.DrainGrace, "drain-grace", o.DrainGrace,
		"on SIGTERM, how long open connections may finish after the listeners closed and the Services were withdrawn; keep it below the pod's terminationGracePeriodSeconds")
	o.External.AddFlags(fs)
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "address of /metrics, /healthz and /readyz; empty disables them")
}

// secretNamespace is the namespace of the state and auth key Secrets.
func (o *Options) secretNamespace() string {
	if o.SecretNamespace != "" {
		return o.SecretNamespace
	}
	return o.Namespace
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace is required"))
	}
	selects := len(o.Endpoints) > 0 || o.EndpointsSelector != "" || len(o.Services) > 0 || o.ServicesSelector != ""
	switch {
	case o.Tailnet != "" && selects:
		errs = append(errs, errors.New("--tailnet serves its pool's objects: --endpoints, --endpoints-selector, --services and --services-selector are not used with it"))
	case o.Tailnet == "" && !selects:
		errs = append(errs, errors.New("nothing to serve: set --tailnet, --endpoints, --endpoints-selector, --services or --services-selector"))
	}
	for _, s := range []string{o.EndpointsSelector, o.ServicesSelector} {
		if _, err := parseSelector(s); err != nil {
			errs = append(errs, err)
		}
	}
	if o.StateDir == "" {
		errs = append(errs, errors.New("--state-dir is required"))
	}
	if _, err := o.External.Rule(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func parseSelector(s string) (labels.Selector, error) {
	if s == "" {
		return nil, nil
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("label selector %q: %w", s, err)
	}
	return sel, nil
}

// Run joins the tailnet and serves until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading the client configuration: %w", err)
	}
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating the client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := forward.NewMetrics(reg)

	var store *kubestate.Store
	nodeOpts := node.Options{Dir: o.StateDir, Hostname: o.Hostname, ControlURL: o.ControlURL,
		AuthKey: o.AuthKey, AuthKeyFile: o.AuthKeyFile, Tags: o.Tags, Port: o.TSNetPort}
	if o.StateSecret != "" {
		core, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("creating the core client: %w", err)
		}
		if store, err = kubestate.New(ctx, core, o.secretNamespace(), o.StateSecret); err != nil {
			return err
		}
		nodeOpts.Store = store
		if store.Empty() && o.AuthKeySecret != "" {
			if nodeOpts.AuthKey, err = kubestate.ReadAuthKey(ctx, core, o.secretNamespace(), o.AuthKeySecret); err != nil {
				return err
			}
		}
	}
	srv, err := node.Start(ctx, nodeOpts)
	if err != nil {
		return err
	}
	if store != nil {
		if err := markEnrolled(ctx, srv, store); err != nil {
			closeNode(srv)
			return err
		}
	}
	nd, err := node.Wrap(srv)
	if err != nil {
		closeNode(srv)
		return err
	}
	defer closeNode(nd)

	epSel, _ := parseSelector(o.EndpointsSelector)
	svcSel, _ := parseSelector(o.ServicesSelector)
	external, _ := o.External.Rule() // checked by Validate
	sel := proxy.Selection{Namespace: o.Namespace, Endpoints: o.Endpoints, EndpointsSelector: epSel, Services: o.Services, ServicesSelector: svcSel}
	if o.Tailnet != "" {
		sel = proxy.Selection{Tailnet: o.Tailnet} // every namespace
	}
	p, err := proxy.New(proxy.Options{Client: client, Node: nd, Metrics: metrics, EgressBindAddress: o.EgressBindAddress, ExternalServices: external,
		MaxConnections: o.MaxConnections, DrainGrace: o.DrainGrace, Selection: sel})
	if err != nil {
		return err
	}
	if o.MetricsBindAddress != "" {
		stop, err := serveMetrics(o.MetricsBindAddress, reg, p.Ready(), p.Draining())
		if err != nil {
			return err
		}
		defer stop()
	}
	return p.Run(ctx)
}

// closeTimeout bounds how long the node may take to close on exit.
const closeTimeout = 5 * time.Second

// closeNode closes the tsnet node, giving up after closeTimeout: tsnet v1.102.5's Server.Close
// can block forever when its netstack must reset more connections than its outbound queue
// holds (connections closed moments earlier count too). The node's state is on disk already.
func closeNode(srv interface{ Close() error }) {
	done := make(chan struct{})
	go func() {
		srv.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		klog.InfoS("The tsnet node did not close in time; exiting without waiting", "timeout", closeTimeout)
	}
}

// serveMetrics serves /metrics, /healthz and /readyz (ready once the proxy applied its first
// configuration, until it begins to drain).
func serveMetrics(addr string, reg *prometheus.Registry, ready, draining <-chan struct{}) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on the metrics address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-draining:
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
			return
		default:
		}
		select {
		case <-ready:
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, "not ready: waiting for the first configuration", http.StatusServiceUnavailable)
		}
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Metrics server stopped")
		}
	}()
	klog.InfoS("Serving metrics", "address", ln.Addr().String())
	return func() { hs.Close() }, nil
}

// markEnrolled records the joined node's stable ID in its state Secret: the deploying controller
// then removes the replica's single-use auth key.
func markEnrolled(ctx context.Context, srv *tsnet.Server, store *kubestate.Store) error {
	lc, err := srv.LocalClient()
	if err != nil {
		return fmt.Errorf("recording the node's enrollment: %w", err)
	}
	st, err := lc.StatusWithoutPeers(ctx)
	if err != nil || st.Self == nil {
		return fmt.Errorf("recording the node's enrollment: reading its status: %w", err)
	}
	return store.MarkEnrolled(string(st.Self.ID))
}
