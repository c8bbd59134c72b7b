// Package proxy is tailscale-gateway-proxy: one tsnet node that serves, from the
// TailscaleEndpoints and TailscaleServices it is told to serve (read through the generated
// informers), egress listeners that forward to tailnet endpoints and Tailscale Services whose
// connections it balances over the selected endpoints. Health and the failover tier come from
// the objects' status, written by the server's prober: the proxy never probes.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/balance"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Defaults of Options.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultMaxAttempts = 3
	DefaultRetry       = 5 * time.Second
	// DefaultMaxConnections is the default of Options.MaxConnections.
	DefaultMaxConnections = 10000
	// DefaultDrainGrace is the default of Options.DrainGrace.
	DefaultDrainGrace = 30 * time.Second
)

// Refusal reasons of the proxy's own, next to pkg/accesscontrol's.
const (
	// ReasonConnectionLimit: the listener already had MaxConnections open.
	ReasonConnectionLimit = "connection_limit"
	// ReasonLocalConnection: a connection to tsnet's local forwarding socket of a Service,
	// which carries nothing from the tailnet (the proxy takes Service connections from the
	// node's network stack), so whatever arrives there is a local process's.
	ReasonLocalConnection = "local_connection"
)

// Node is what the proxy needs of its tsnet node; *node.Node (pkg/proxy/node) implements it.
type Node interface {
	Dial(ctx context.Context, network, address string) (net.Conn, error)
	// ListenService advertises a Service port; the proxy accepts nothing from the listener
	// it returns (tsnet's local forwarding socket).
	ListenService(name string, mode tsnet.ServiceMode) (*tsnet.ServiceListener, error)
	// ServiceConns accepts the connections to a Service port from the node's network stack,
	// their RemoteAddr the tailnet caller.
	ServiceConns(name string, port uint16) (net.Listener, error)
}

// Selection names the objects a proxy serves, all in Namespace.
type Selection struct {
	// Namespace holds the objects served; empty, with Tailnet, means every namespace.
	Namespace string
	// Tailnet, when set, makes the proxy its TailscaleTailnet's pool (docs/concepts/proxy-pools.md):
	// it serves the egress of every TailscaleEndpoints whose spec.tailnet resolves to Tailnet,
	// that has no proxy of its own (plan.Dedicated) and that the server has admitted (Accepted
	// True: the tailnet admits its namespace), and hosts the Service of every TailscaleServices
	// with a vipService, itself admitted, that selects one of them. The names and selectors
	// below are then not used.
	Tailnet string
	// Endpoints names the TailscaleEndpoints whose endpoints get egress listeners;
	// EndpointsSelector selects more by label (nil selects none).
	Endpoints         []string
	EndpointsSelector labels.Selector
	// Services names the TailscaleServices whose Tailscale Service the proxy hosts;
	// ServicesSelector selects more by label (nil selects none).
	Services         []string
	ServicesSelector labels.Selector
}

// Options configure a Proxy.
type Options struct {
	// Client reads the objects (the project's API, through kube-apiserver in a cluster).
	Client    versioned.Interface
	Selection Selection
	// Node dials tailnet addresses and hosts Tailscale Services.
	Node Node
	// EgressBindAddress is the IP egress listeners bind to; empty binds every address.
	EgressBindAddress string
	// HostDialer dials backends outside the tailnet (external services); a net.Dialer when nil.
	HostDialer interface {
		DialContext(ctx context.Context, network, address string) (net.Conn, error)
	}
	Metrics *forward.Metrics
	// DialTimeout bounds one dial of a backend; DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// MaxAttempts bounds the backends tried for one connection to a Service port;
	// DefaultMaxAttempts when zero.
	MaxAttempts int
	// Retry is how soon a listener that failed to open is tried again; DefaultRetry when zero.
	Retry time.Duration
	// UDPIdle ends egress UDP sessions; forward.DefaultUDPIdle when zero.
	UDPIdle time.Duration
	// ExternalServices is what externalServices may dial; the zero value dials none.
	ExternalServices tenancy.ExternalServices
	// MaxConnections caps the connections open at once through one listener (an egress port
	// or a Service port); more are refused and counted. DefaultMaxConnections when zero.
	MaxConnections int
	// DrainGrace is how long, once Run's context ends, open connections may go on after the
	// listeners closed (Services withdrawn) before they are closed. DefaultDrainGrace when
	// zero; negative closes them at once.
	DrainGrace time.Duration
	// WhoIs identifies the tailnet callers of hosted Services for their access rule
	// (pkg/accesscontrol); the node's LocalClient WhoIs when nil and Node is a *tsnet.Server.
	WhoIs WhoIsFunc
	// ConnectionLog receives one "Connection" line per connection to a hosted Service whose
	// object asks for it (plan.Service.ConnectionLog); klog's logger when zero.
	ConnectionLog logr.Logger
}

// Proxy serves what its Selection names. Create it with New and start it with Run.
type Proxy struct {
	opts     Options
	factory  informers.SharedInformerFactory
	eps      listers.TailscaleEndpointsLister
	svcs     listers.TailscaleServicesLister
	tailnets listers.TailscaleTailnetLister // nil unless Selection.Tailnet is set
	synced   []cache.InformerSynced
	trigger  chan struct{}
	conns    *balance.Conns
	ready    chan struct{}

	handlers sync.WaitGroup // one per accepted connection
	// connCtx bounds what accepted connections do before they are piped (access checks,
	// backend dials): it outlives Run's context, so that connections accepted just before a
	// shutdown are still served, and ends when the drain gives up (stopConns).
	connCtx   context.Context
	stopConns context.CancelFunc
	draining  chan struct{} // closed when shutdown begins
	connsMu   sync.Mutex
	open      map[net.Conn]struct{} // accepted and dialled connections, closed on shutdown
	viaVIP    map[net.Conn]struct{} // of open, those accepted through a Service's VIP
	closing   bool                  // set under connsMu once shutdown began

	mu       sync.Mutex                  // guards the fields below
	egress   map[string]*egressListener  // by plan.Egress.Listener()
	services map[string]*serviceListener // by plan.Service.Listener()
	problems []string
}

// New returns a proxy for opts; nothing is read or served before Run.
func New(opts Options) (*Proxy, error) {
	if opts.Client == nil || opts.Node == nil || opts.Metrics == nil {
		return nil, errors.New("proxy: Client, Node and Metrics are required")
	}
	if opts.Selection.Namespace == "" && opts.Selection.Tailnet == "" {
		return nil, errors.New("proxy: a namespace or a tailnet is required")
	}
	if opts.HostDialer == nil {
		opts.HostDialer = &net.Dialer{}
	}
	if opts.ConnectionLog.GetSink() == nil {
		opts.ConnectionLog = klog.Background().WithName("connection")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.DrainGrace == 0 {
		opts.DrainGrace = DefaultDrainGrace
	}
	if opts.WhoIs == nil {
		opts.WhoIs = whoIsOf(opts.Node)
	}
	f := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithNamespace(opts.Selection.Namespace))
	p := &Proxy{
		opts: opts, factory: f,
		eps:     f.Gateway().V1alpha1().TailscaleEndpoints().Lister(),
		svcs:    f.Gateway().V1alpha1().TailscaleServices().Lister(),
		trigger: make(chan struct{}, 1),
		conns:   balance.NewConns(),
		ready:   make(chan struct{}), draining: make(chan struct{}),
		open: map[net.Conn]struct{}{}, viaVIP: map[net.Conn]struct{}{},
		egress: map[string]*egressListener{}, services: map[string]*serviceListener{},
	}
	p.connCtx, p.stopConns = context.WithCancel(context.Background())
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.kick() },
		UpdateFunc: func(any, any) { p.kick() },
		DeleteFunc: func(any) { p.kick() },
	}
	infs := []cache.SharedIndexInformer{f.Gateway().V1alpha1().TailscaleEndpoints().Informer(), f.Gateway().V1alpha1().TailscaleServices().Informer()}
	if opts.Selection.Tailnet != "" {
		p.tailnets = f.Gateway().V1alpha1().TailscaleTailnets().Lister()
		infs = append(infs, f.Gateway().V1alpha1().TailscaleTailnets().Informer())
	}
	for _, inf := range infs {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("proxy: adding an event handler: %w", err)
		}
		p.synced = append(p.synced, inf.HasSynced)
	}
	return p, nil
}

func (p *Proxy) kick() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Ready is closed once the informers have synced and the first configuration is applied.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Draining is closed once Run's context ended and the proxy began to shut down.
func (p *Proxy) Draining() <-chan struct{} { return p.draining }

// Run serves until ctx ends, then closes every listener and connection and waits (up to
// DrainTimeout) for the forwarding goroutines to end: tsnet v1.102.5's Server.Close can block
// forever when it has to reset many open connections itself.
func (p *Proxy) Run(ctx context.Context) error {
	p.factory.Start(ctx.Done())
	defer p.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), p.synced...) {
		return fmt.Errorf("proxy: waiting for the informers: %w", ctx.Err())
	}
	defer p.closeAll()
	retry := time.NewTimer(0)
	defer retry.Stop()
	first := true
	for {
		if failed := p.reconcile(ctx); failed {
			retry.Reset(p.opts.Retry)
		}
		if first {
			close(p.ready)
			first = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.trigger:
		case <-retry.C:
		}
	}
}

// selected returns the objects of the selection, sorted by name.
func (p *Proxy) selected() ([]*v1alpha1.TailscaleEndpoints, []*v1alpha1.TailscaleServices) {
	sel := p.opts.Selection
	if sel.Tailnet != "" {
		return p.pooled()
	}
	eps, _ := p.eps.TailscaleEndpoints(sel.Namespace).List(labels.Everything())
	eps = slices.DeleteFunc(eps, func(o *v1alpha1.TailscaleEndpoints) bool {
		return !slices.Contains(sel.Endpoints, o.Name) && (sel.EndpointsSelector == nil || !sel.EndpointsSelector.Matches(labels.Set(o.Labels)))
	})
	svcs, _ := p.svcs.TailscaleServices(sel.Namespace).List(labels.Everything())
	svcs = slices.DeleteFunc(svcs, func(o *v1alpha1.TailscaleServices) bool {
		return !slices.Contains(sel.Services, o.Name) && (sel.ServicesSelector == nil || !sel.ServicesSelector.Matches(labels.Set(o.Labels)))
	})
	slices.SortFunc(eps, func(a, b *v1alpha1.TailscaleEndpoints) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(svcs, func(a, b *v1alpha1.TailscaleServices) int { return strings.Compare(a.Name, b.Name) })
	return eps, svcs
}

// pooled returns what a pool serves (Selection.Tailnet), sorted by namespace and name.
func (p *Proxy) pooled() ([]*v1alpha1.TailscaleEndpoints, []*v1alpha1.TailscaleServices) {
	ns := p.opts.Selection.Namespace
	all, _ := p.eps.TailscaleEndpoints(ns).List(labels.Everything())
	resolve := func(ref string) (string, bool) {
		t, ok := tenancy.Resolve(p.tailnets, ref)
		if !ok {
			return "", false
		}
		return t.Name, true
	}
	ours := func(o *v1alpha1.TailscaleEndpoints) bool { return plan.PooledBy(o, p.opts.Selection.Tailnet, resolve) }
	eps := slices.DeleteFunc(all, func(o *v1alpha1.TailscaleEndpoints) bool { return !ours(o) })
	svcs, _ := p.svcs.TailscaleServices(ns).List(labels.Everything())
	svcs = slices.DeleteFunc(svcs, func(s *v1alpha1.TailscaleServices) bool {
		return s.Spec.VIPService == nil || !meta.IsStatusConditionTrue(s.Status.Conditions, tenancy.ConditionAccepted) ||
			!slices.ContainsFunc(p.selectOf(s), ours)
	})
	byKey := func(a, b metav1.Object) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()))
	}
	slices.SortFunc(eps, func(a, b *v1alpha1.TailscaleEndpoints) int { return byKey(a, b) })
	slices.SortFunc(svcs, func(a, b *v1alpha1.TailscaleServices) int { return byKey(a, b) })
	return eps, svcs
}

// selectOf returns the TailscaleEndpoints svc's selector picks in its namespace, sorted by name.
func (p *Proxy) selectOf(svc *v1alpha1.TailscaleServices) []*v1alpha1.TailscaleEndpoints {
	if svc.Spec.Selector == nil {
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(svc.Spec.Selector)
	if err != nil {
		return nil
	}
	out, _ := p.eps.TailscaleEndpoints(svc.Namespace).List(sel)
	slices.SortFunc(out, func(a, b *v1alpha1.TailscaleEndpoints) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// reconcile makes the listeners match the plan of the current objects; failed reports
// whether a listener could not be opened (to be retried).
func (p *Proxy) reconcile(ctx context.Context) (failed bool) {
	eps, svcs := p.selected()
	pl := plan.Build(eps, svcs, p.selectOf, p.opts.ExternalServices)

	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(pl.Problems, p.problems) {
		for _, pr := range pl.Problems {
			klog.InfoS("Not served", "problem", pr)
		}
		p.problems = pl.Problems
	}
	p.opts.Metrics.PortConflicts.Set(float64(pl.PortConflicts))

	wantEgress := map[string]plan.Egress{}
	for _, e := range pl.Egress {
		wantEgress[e.Listener()] = e
	}
	for name, l := range p.egress {
		if e, ok := wantEgress[name]; !ok || e.Key != l.key {
			l.close()
			delete(p.egress, name)
			p.opts.Metrics.Forget(name)
		}
	}
	for name, e := range wantEgress {
		if l, ok := p.egress[name]; ok {
			l.target.Store(&e.Target)
			continue
		}
		l, err := p.openEgress(ctx, e)
		if err != nil {
			klog.ErrorS(err, "Opening an egress listener", "listener", name, "target", e.Key)
			failed = true
			continue
		}
		p.egress[name] = l
		klog.InfoS("Serving egress", "listener", name, "address", l.addr, "target", e.Key, "dials", e.Target)
	}

	wantSvc := map[string]plan.Service{}
	for _, s := range pl.Services {
		wantSvc[s.Listener()] = s
	}
	for name, l := range p.services {
		if _, ok := wantSvc[name]; !ok {
			l.close()
			delete(p.services, name)
			p.opts.Metrics.Forget(name)
			klog.InfoS("Stopped hosting", "listener", name)
		}
	}
	for name, s := range wantSvc {
		if l, ok := p.services[name]; ok {
			// Unchanged backends keep their balancer, and with it the round-robin positions.
			if cur := l.balancer.Load(); cur.Policy() != s.Policy || !slices.Equal(cur.Backends(), s.Backends) {
				l.balancer.Store(balance.New(s.Policy, s.Backends, p.conns))
			}
			if l.connLog.Swap(s.ConnectionLog) != s.ConnectionLog {
				klog.InfoS("Connection log changed", "listener", name, "enabled", s.ConnectionLog)
			}
			if !l.access.Load().Equal(s.Access) {
				l.access.Store(&s.Access)
				klog.InfoS("Access rule changed", "listener", name, "allowedTags", s.Access.Allowed, "deniedTags", s.Access.Denied)
			}
			continue
		}
		bal := balance.New(s.Policy, s.Backends, p.conns)
		l, err := p.openService(ctx, s, bal)
		if err != nil {
			klog.ErrorS(err, "Hosting a Tailscale Service port", "listener", name, "object", s.Object)
			failed = true
			continue
		}
		p.services[name] = l
		klog.InfoS("Hosting", "listener", name, "object", s.Object, "strategy", s.Policy.Strategy, "backends", len(s.Backends))
	}
	return failed
}

// DrainTimeout bounds how long Run waits for connections to end after closing them.
const DrainTimeout = 10 * time.Second

// closeAll stops serving. The Services' advertisements are withdrawn first, so that the control
// plane sends their new connections to other hosts (withdraw); then every listener closes and
// the egress ports stop accepting. Open connections then have DrainGrace to finish; the rest are
// closed, while the node still runs to send their FINs.
func (p *Proxy) closeAll() {
	close(p.draining)
	moved := p.withdraw()
	p.mu.Lock()
	for name, l := range p.services {
		l.close()
		delete(p.services, name)
	}
	for name, l := range p.egress {
		l.close()
		delete(p.egress, name)
	}
	p.mu.Unlock()
	p.connsMu.Lock()
	p.closing = true
	if moved && len(p.viaVIP) > 0 {
		// The node no longer takes its VIPs' packets (they are not in its network map), and
		// their clients send them to another host: these connections cannot go on, and would
		// only hold the drain until its grace ends.
		klog.InfoS("Closing the connections through the withdrawn VIPs", "open", len(p.viaVIP))
		for c := range p.viaVIP {
			c.Close()
		}
	}
	open := len(p.open)
	p.connsMu.Unlock()
	done := make(chan struct{})
	go func() { p.handlers.Wait(); close(done) }()
	if p.opts.DrainGrace > 0 && open > 0 {
		klog.InfoS("Listeners closed; draining open connections", "open", open, "grace", p.opts.DrainGrace)
		grace := time.NewTimer(p.opts.DrainGrace)
		defer grace.Stop()
		select {
		case <-done:
			klog.InfoS("Every connection finished within the grace period")
			return
		case <-grace.C:
		}
	}
	p.stopConns() // dials and access checks still under way end too
	p.connsMu.Lock()
	if n := len(p.open); n > 0 {
		klog.InfoS("Closing the connections still open", "open", n)
	}
	for c := range p.open {
		c.Close()
	}
	p.connsMu.Unlock()
	select {
	case <-done:
	case <-time.After(DrainTimeout):
		klog.InfoS("Connections still open after closing them", "timeout", DrainTimeout)
	}
}

// WithdrawWait bounds how long a proxy that shuts down waits, with its Service listeners still
// accepting, for the control plane to take its Services' VIPs away.
const WithdrawWait = 5 * time.Second

// withdrawer is implemented by a Node (*node.Node) that can withdraw its Services'
// advertisements while their listeners still accept.
type withdrawer interface {
	WithdrawServices(ctx context.Context) error
}

// withdraw stops advertising the hosted Services and waits (up to WithdrawWait) until the
// control plane has moved their VIPs to other hosts, still accepting the connections of
// clients routed here meanwhile; moved reports that it did.
func (p *Proxy) withdraw() (moved bool) {
	p.mu.Lock()
	hosting := len(p.services)
	p.mu.Unlock()
	w, ok := p.opts.Node.(withdrawer)
	if hosting == 0 || !ok {
		return false
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), WithdrawWait)
	defer cancel()
	if err := w.WithdrawServices(ctx); err != nil {
		klog.ErrorS(err, "Withdrawing the Services before closing their listeners", "waited", time.Since(start))
		return false
	}
	klog.InfoS("Services withdrawn: the control plane routes their VIPs elsewhere", "after", time.Since(start))
	return true
}

// trackVIP records c as a connection through a Service's VIP until the returned function is
// called.
func (p *Proxy) trackVIP(c net.Conn) (untrack func()) {
	p.connsMu.Lock()
	p.viaVIP[c] = struct{}{}
	p.connsMu.Unlock()
	return func() {
		p.connsMu.Lock()
		delete(p.viaVIP, c)
		p.connsMu.Unlock()
	}
}

// track records c as open, to be closed on shutdown, until the returned function is called.
func (p *Proxy) track(c net.Conn) (untrack func()) {
	p.connsMu.Lock()
	p.open[c] = struct{}{}
	p.connsMu.Unlock()
	return func() {
		p.connsMu.Lock()
		delete(p.open, c)
		p.connsMu.Unlock()
	}
}

// Served describes what a proxy serves now.
type Served struct {
	// Egress maps each egress target key ("<namespace>/<object>/<endpoint>") to its local
	// listening address, "<network>://<ip>:<port>".
	Egress map[string]string
	// Services are the Service ports hosted, "svc:<name>/tcp/<port>".
	Services []string
	// Problems are parts of the objects not served.
	Problems []string
}

// Served returns what the proxy serves now.
func (p *Proxy) Served() Served {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Served{Egress: map[string]string{}, Problems: slices.Clone(p.problems)}
	for _, l := range p.egress {
		s.Egress[l.key] = l.network + "://" + l.addr
	}
	for name := range p.services {
		s.Services = append(s.Services, name)
	}
	slices.Sort(s.Services)
	return s
}

// egressListener is one egress port.
type egressListener struct {
	key, network, addr string
	target             atomic.Pointer[string]
	close              func()
}

func (p *Proxy) openEgress(ctx context.Context, e plan.Egress) (*egressListener, error) {
	addr := net.JoinHostPort(p.opts.EgressBindAddress, strconv.Itoa(int(e.Port)))
	l := &egressListener{key: e.Key, network: e.Network}
	l.target.Store(&e.Target)
	c := p.opts.Metrics.For(forward.RoleEgress, e.Listener(), e.Key)
	lctx, cancel := context.WithCancel(ctx)
	dial := func(ctx context.Context) (net.Conn, error) {
		return p.opts.Node.Dial(ctx, e.Network, *l.target.Load())
	}
	var lc net.ListenConfig
	switch e.Network {
	case "udp":
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("listening on udp %s: %w", addr, err)
		}
		l.addr = pc.LocalAddr().String()
		relay := &forward.UDPRelay{PC: pc, Dial: dial, Idle: p.opts.UDPIdle, Counters: c}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := relay.Serve(lctx); err != nil {
				klog.ErrorS(err, "Egress UDP relay stopped", "listener", e.Listener())
			}
		}()
		l.close = func() { cancel(); pc.Close(); <-done }
	default:
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("listening on tcp %s: %w", addr, err)
		}
		l.addr = ln.Addr().String()
		go p.acceptLoop(ln, e.Listener(), false, func(conn net.Conn) {
			dctx, dcancel := context.WithTimeout(p.connCtx, p.opts.DialTimeout)
			target, err := dial(dctx)
			dcancel()
			if err != nil {
				c.DialErrors.Inc()
				klog.V(2).InfoS("Egress dial failed", "listener", e.Listener(), "target", e.Key, "err", err)
				conn.Close()
				return
			}
			defer p.track(target)()
			c.Connections.Inc()
			c.Active.Inc()
			forward.Pipe(conn, target, c)
			c.Active.Dec()
		})
		l.close = func() { cancel(); ln.Close() }
	}
	return l, nil
}

// serviceListener is one hosted Service port.
type serviceListener struct {
	balancer atomic.Pointer[balance.Balancer]
	access   atomic.Pointer[accesscontrol.Rule]
	connLog  atomic.Bool
	close    func()
}

func (p *Proxy) openService(ctx context.Context, s plan.Service, bal *balance.Balancer) (*serviceListener, error) {
	// The node's own listener first, so that no connection reaches tsnet's forwarding socket
	// once the Service is advertised.
	conns, err := p.opts.Node.ServiceConns(s.Name, s.Port)
	if err != nil {
		return nil, fmt.Errorf("listening on %s port %d: %w", s.Name, s.Port, err)
	}
	ln, err := p.opts.Node.ListenService(s.Name, tsnet.ServiceModeTCP{Port: s.Port})
	if err != nil {
		conns.Close()
		return nil, fmt.Errorf("advertising %s port %d: %w", s.Name, s.Port, err)
	}
	l := &serviceListener{}
	l.balancer.Store(bal)
	access := s.Access
	l.access.Store(&access)
	l.connLog.Store(s.ConnectionLog)
	name := s.Listener()
	go refuseLocal(ln, func() { p.opts.Metrics.Refused(name, ReasonLocalConnection) })
	go p.acceptLoop(conns, name, true, func(conn net.Conn) {
		caller, err := netip.ParseAddrPort(conn.RemoteAddr().String())
		if err != nil {
			p.opts.Metrics.Refused(name, accesscontrol.ReasonUnknownCaller)
			conn.Close()
			return
		}
		caller = netip.AddrPortFrom(caller.Addr().Unmap(), caller.Port())
		start := time.Now()
		if reason := p.admit(p.connCtx, name, *l.access.Load(), caller); reason != "" {
			p.opts.Metrics.Refused(name, reason)
			if l.connLog.Load() {
				p.opts.ConnectionLog.Info("Connection", "listener", name, "object", s.Object, "source", caller.String(), "refused", reason)
			}
			conn.Close()
			return
		}
		be, toTarget, fromTarget := p.forwardService(p.connCtx, name, l.balancer.Load(), conn)
		if l.connLog.Load() {
			kv := []any{"listener", name, "object", s.Object, "source", caller.String()}
			if be.Key == "" {
				kv = append(kv, "refused", "no_backend")
			} else {
				kv = append(kv, "destination", be.Key, "destinationAddress", be.Address, "bytesToDestination", toTarget,
					"bytesFromDestination", fromTarget)
			}
			p.opts.ConnectionLog.Info("Connection", append(kv, "duration", time.Since(start).String())...)
		}
	})
	// Closing ln withdraws the Service's advertisement of this port.
	l.close = func() { ln.Close(); conns.Close() }
	return l, nil
}

// forwardService sends conn to a backend chosen by bal, trying up to MaxAttempts backends
// when dials fail, and returns the backend used (zero when none) and the bytes carried each way.
func (p *Proxy) forwardService(ctx context.Context, listener string, bal *balance.Balancer, conn net.Conn) (used balance.Backend, toTarget, fromTarget int64) {
	var tried []string
	for range p.opts.MaxAttempts {
		be, release, ok := bal.Pick(tried)
		if !ok {
			break
		}
		c := p.opts.Metrics.For(forward.RoleService, listener, be.Key)
		dctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
		var target net.Conn
		var err error
		if be.Tailnet {
			target, err = p.opts.Node.Dial(dctx, be.Network, be.Address)
		} else {
			target, err = p.opts.HostDialer.DialContext(dctx, be.Network, be.Address)
		}
		cancel()
		if err != nil {
			release()
			c.DialErrors.Inc()
			klog.V(2).InfoS("Backend dial failed", "listener", listener, "target", be.Key, "err", err)
			tried = append(tried, be.Key)
			continue
		}
		defer p.track(target)()
		c.Connections.Inc()
		c.Active.Inc()
		toTarget, fromTarget = forward.Pipe(conn, target, c)
		c.Active.Dec()
		release()
		return be, toTarget, fromTarget
	}
	p.opts.Metrics.NoBackend(listener)
	klog.V(2).InfoS("No usable backend", "listener", listener, "tried", tried)
	conn.Close()
	return balance.Backend{}, 0, 0
}

// acceptLoop hands each connection accepted on the listener called name to handle on its own
// goroutine until ln closes, refusing those beyond MaxConnections open at once.
func (p *Proxy) acceptLoop(ln net.Listener, name string, viaVIP bool, handle func(net.Conn)) {
	var open atomic.Int64
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if open.Add(1) > int64(p.opts.MaxConnections) {
			open.Add(-1)
			p.opts.Metrics.Refused(name, ReasonConnectionLimit)
			klog.V(2).InfoS("Refused: connection limit reached", "listener", name, "limit", p.opts.MaxConnections)
			conn.Close()
			continue
		}
		p.connsMu.Lock()
		if p.closing {
			p.connsMu.Unlock()
			conn.Close()
			return
		}
		p.handlers.Add(1)
		p.connsMu.Unlock()
		go func() {
			defer p.handlers.Done()
			defer open.Add(-1)
			defer p.track(conn)()
			if viaVIP {
				defer p.trackVIP(conn)()
			}
			handle(conn)
		}()
	}
}

// refuseLocal closes every connection to tsnet's local forwarding socket of a Service until it
// closes, counting each with refused.
func refuseLocal(ln net.Listener, refused func()) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		refused()
		klog.V(2).InfoS("Refused a local connection to a Service's forwarding socket", "from", conn.RemoteAddr())
		conn.Close()
	}
}
