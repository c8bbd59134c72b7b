package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"k8s.io/klog/v2"
	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/wgengine/netstack"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/gvstack"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tsnode"
)

// mappingWait bounds how long a connection to an address not yet known as a Service VIP waits
// for the node's next network map before it is refused: a VIP reaches the node's network stack
// and its network map at about the same time.
const mappingWait = 2 * time.Second

// Node is the proxy's tsnet node with the two changes the proxy's data plane needs over
// tsnet.Server: Dial chooses local ports so that no SYN reuses a port pair a peer may hold in
// TIME_WAIT (tsnode.Dialer), and ServiceConns takes the connections to a hosted Service from
// listening endpoints of the node's own network stack instead of tsnet's forwarding socket.
type Node struct {
	*tsnet.Server
	dialer *tsnode.Dialer
	impl   *netstack.Impl

	stop context.CancelFunc

	mu      sync.Mutex
	vips    map[netip.Addr]tailcfg.ServiceName // this node's Service VIPs, from its network map
	changed chan struct{}                      // closed and replaced when vips changes
	ports   map[uint16]*portListener
}

// Wrap returns the Node of srv, which must be up, and starts following its network map.
func Wrap(srv *tsnet.Server) (*Node, error) {
	d, err := tsnode.NewDialer(srv)
	if err != nil {
		return nil, err
	}
	ns, _ := srv.Sys().Netstack.GetOK()
	impl, ok := ns.(*netstack.Impl)
	if !ok {
		return nil, errors.New("the node has no userspace network stack")
	}
	lc, err := srv.LocalClient()
	if err != nil {
		return nil, fmt.Errorf("local client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := lc.WatchIPNBus(ctx, ipn.NotifyInitialNetMap)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching the node's network map: %w", err)
	}
	n := &Node{Server: srv, dialer: d, impl: impl, stop: cancel, changed: make(chan struct{}), ports: map[uint16]*portListener{}}
	go n.follow(ctx, lc, w)
	return n, nil
}

// follow keeps the VIPs from w's network maps until ctx ends, watching again when the
// watch breaks.
func (n *Node) follow(ctx context.Context, lc *local.Client, w *local.IPNBusWatcher) {
	for {
		for {
			msg, err := w.Next()
			if err != nil {
				break
			}
			switch {
			case msg.NetMap != nil:
				n.setVIPs(msg.NetMap.SelfNode)
			case msg.SelfChange != nil:
				n.setVIPs(msg.SelfChange.View())
			}
		}
		w.Close()
		for {
			if ctx.Err() != nil {
				return
			}
			var err error
			if w, err = lc.WatchIPNBus(ctx, ipn.NotifyInitialNetMap); err == nil {
				break
			}
			klog.ErrorS(err, "Watching the node's network map again")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// setVIPs records the Service VIPs the control plane gives self (its service-host capability).
func (n *Node) setVIPs(self tailcfg.NodeView) {
	vips := map[netip.Addr]tailcfg.ServiceName{}
	if self.Valid() {
		maps, err := tailcfg.UnmarshalNodeCapViewJSON[tailcfg.ServiceIPMappings](self.CapMap(), tailcfg.NodeAttrServiceHost)
		if err == nil && len(maps) == 1 {
			for svc, addrs := range maps[0] {
				for _, a := range addrs {
					vips[a.Unmap()] = svc
				}
			}
		}
	}
	n.mu.Lock()
	n.vips = vips
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
}

// serviceOf returns the Service whose VIP addr is, waiting up to mappingWait for a network map
// that names it.
func (n *Node) serviceOf(addr netip.Addr) (tailcfg.ServiceName, bool) {
	deadline := time.NewTimer(mappingWait)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		svc, ok := n.vips[addr]
		changed := n.changed
		n.mu.Unlock()
		if ok {
			return svc, true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return "", false
		}
	}
}

// Dial connects to address through the tailnet (tsnode.Dialer).
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return n.dialer.Dial(ctx, network, address)
}

// Close stops following the network map and closes the node (gvstack.Close: it does not hang
// on open connections).
func (n *Node) Close() error {
	n.stop()
	return gvstack.Close(n.Server)
}

// ServiceConns returns a listener of the connections to the VIPs of Service name ("svc:...") on
// TCP port. The node's network stack accepts them on a listening endpoint of port (shared by the
// Services on that port and dispatched by VIP), so the connection's RemoteAddr is the tailnet
// caller and nothing passes through a local socket. A listening endpoint is also where gVisor
// hands a SYN that reuses the port pair of a connection in TIME_WAIT: without one (tsnet accepts
// through netstack's forwarder) that SYN is dropped. Advertise the Service with ListenService
// after this, so that no connection reaches the node before the endpoint exists.
func (n *Node) ServiceConns(name string, port uint16) (net.Listener, error) {
	svc := tailcfg.ServiceName(name)
	n.mu.Lock()
	defer n.mu.Unlock()
	pl := n.ports[port]
	if pl == nil {
		// One dual-stack endpoint: "[::]" takes IPv4 too.
		ln, err := n.impl.ListenTCP("tcp6", netip.AddrPortFrom(netip.IPv6Unspecified(), port).String())
		if err != nil {
			return nil, fmt.Errorf("listening on port %d of the node's network stack: %w", port, err)
		}
		pl = &portListener{node: n, port: port, ln: ln, services: map[tailcfg.ServiceName]*serviceConns{}}
		n.ports[port] = pl
		go pl.serve()
	}
	if _, ok := pl.services[svc]; ok {
		return nil, fmt.Errorf("%s port %d is already listened on", name, port)
	}
	sc := &serviceConns{pl: pl, svc: svc, conns: make(chan net.Conn), done: make(chan struct{})}
	pl.services[svc] = sc
	return sc, nil
}

// portListener is the listening endpoint of one port, shared by the Services on it.
type portListener struct {
	node     *Node
	port     uint16
	ln       *gonet.TCPListener
	services map[tailcfg.ServiceName]*serviceConns // guarded by node.mu
}

// serve accepts until the endpoint closes and hands each connection to its Service.
func (pl *portListener) serve() {
	for {
		c, err := pl.ln.Accept()
		if err != nil {
			return
		}
		go pl.dispatch(c)
	}
}

func (pl *portListener) dispatch(c net.Conn) {
	dst, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		c.Close()
		return
	}
	svc, ok := pl.node.serviceOf(dst.Addr().Unmap())
	pl.node.mu.Lock()
	sc := pl.services[svc]
	pl.node.mu.Unlock()
	if !ok || sc == nil {
		// The node's own address, or a VIP of a Service not served on this port.
		klog.V(2).InfoS("Refused a connection to no hosted Service", "destination", dst, "caller", c.RemoteAddr())
		c.Close()
		return
	}
	select {
	case sc.conns <- c:
	case <-sc.done:
		c.Close()
	}
}

// serviceConns is the listener ServiceConns returns.
type serviceConns struct {
	pl    *portListener
	svc   tailcfg.ServiceName
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (s *serviceConns) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener; the port's endpoint closes with its last Service.
func (s *serviceConns) Close() error {
	s.once.Do(func() {
		close(s.done)
		n := s.pl.node
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(s.pl.services, s.svc)
		if len(s.pl.services) == 0 {
			s.pl.ln.Close()
			delete(n.ports, s.pl.port)
		}
	})
	return nil
}

func (s *serviceConns) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv6unspecified, Port: int(s.pl.port)}
}

// WithdrawServices stops advertising every Service of the node (its AdvertiseServices pref
// emptied) while their listeners go on accepting, and waits until the control plane has taken
// their VIPs from the node (its network map maps none to it, so clients route them to other
// hosts) or ctx ends. Close the listeners after it: closing a Service's listener removes its
// port from the node's serve configuration, and from then on the node's network stack drops
// the packets of that port, SYNs of clients still routed here and those of connections already
// open alike.
func (n *Node) WithdrawServices(ctx context.Context) error {
	lc, err := n.LocalClient()
	if err != nil {
		return fmt.Errorf("local client: %w", err)
	}
	if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{AdvertiseServicesSet: true}); err != nil {
		return fmt.Errorf("withdrawing the Services' advertisements: %w", err)
	}
	for {
		n.mu.Lock()
		left, changed := len(n.vips), n.changed
		n.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("the control plane still maps %d VIPs to the node: %w", left, ctx.Err())
		}
	}
}
