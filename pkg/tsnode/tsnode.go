// Package tsnode joins the server to tailnets as tsnet nodes, one per tailnet, started on first
// use, so that probes of tailnet addresses travel through the tailnet itself.
package tsnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"k8s.io/klog/v2"
	"tailscale.com/envknob"
	"tailscale.com/logtail"
	"tailscale.com/net/netns"
	"tailscale.com/tsnet"
	"tailscale.com/wgengine/netstack"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/gvstack"
)

// peerWait bounds how long a new node waits for its first peers before it is used.
const peerWait = 30 * time.Second

// TimeWait is how long a node's network stack keeps a connection it closed in TIME_WAIT, instead
// of gVisor's (and Linux's) 60 s. Probes close their connections first (pkg/health), so every
// probe leaves one TIME_WAIT endpoint on the node, rate × TimeWait of them. With 60 s, one replica
// probing 10,000 endpoints every 10 s managed 626 probes/s at 77% of a core and 850 MiB; with 5 s,
// the 1,000/s due at 34% and 413 MiB (BenchmarkReplicas, docs/performance.md). The state only has to outlive
// the peer's retransmission of its FIN, which a tailnet round trip bounds far below this.
const TimeWait = 5 * time.Second

// KeyMinter creates an auth key for a new node of a tailnet.
type KeyMinter func(ctx context.Context, tailnet string) (string, error)

// Options configure the nodes.
type Options struct {
	// Dir holds each node's state under Dir/<tailnet>.
	Dir string
	// Hostname of every node in its tailnet.
	Hostname string
	// ControlURL is the coordination server; empty means Tailscale's.
	ControlURL string
	// MintKey creates the auth key a node joins with.
	MintKey KeyMinter
}

// Nodes holds one node per tailnet. Its methods are safe for concurrent use.
type Nodes struct {
	opts Options

	mu    sync.Mutex
	nodes map[string]*node
}

type node struct {
	ready  chan struct{} // closed once server or err is set
	srv    *tsnet.Server
	dialer *Dialer
	err    error
}

// New returns Nodes that start no node until one is needed. A loopback ControlURL (a local test
// or development control server) keeps every node's traffic on loopback.
func New(opts Options) *Nodes {
	if u, err := url.Parse(opts.ControlURL); err == nil && isLoopback(u.Hostname()) {
		loopbackOnly()
	}
	return &Nodes{opts: opts, nodes: map[string]*node{}}
}

// DialContext dials address through the node of tailnet, starting the node if needed.
func (n *Nodes) DialContext(ctx context.Context, tailnet, network, address string) (net.Conn, error) {
	nd, err := n.node(ctx, tailnet)
	if err != nil {
		return nil, err
	}
	return nd.dialer.Dial(ctx, network, address)
}

// Remove stops the node of tailnet, if any.
func (n *Nodes) Remove(tailnet string) {
	n.mu.Lock()
	nd := n.nodes[tailnet]
	delete(n.nodes, tailnet)
	n.mu.Unlock()
	if nd != nil {
		go func() {
			<-nd.ready
			if nd.srv != nil {
				gvstack.Close(nd.srv)
			}
		}()
	}
}

// Close stops every node.
func (n *Nodes) Close() {
	n.mu.Lock()
	names := make([]string, 0, len(n.nodes))
	for name := range n.nodes {
		names = append(names, name)
	}
	n.mu.Unlock()
	for _, name := range names {
		n.Remove(name)
	}
}

// server returns the running node of tailnet, starting it once; a failed start is retried by
// the next caller.
func (n *Nodes) server(ctx context.Context, tailnet string) (*tsnet.Server, error) {
	nd, err := n.node(ctx, tailnet)
	if err != nil {
		return nil, err
	}
	return nd.srv, nil
}

func (n *Nodes) node(ctx context.Context, tailnet string) (*node, error) {
	n.mu.Lock()
	nd, ok := n.nodes[tailnet]
	if !ok {
		nd = &node{ready: make(chan struct{})}
		n.nodes[tailnet] = nd
		go n.start(tailnet, nd)
	}
	n.mu.Unlock()
	select {
	case <-nd.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the node of tailnet %s: %w", tailnet, ctx.Err())
	}
	if nd.err != nil {
		n.mu.Lock()
		if n.nodes[tailnet] == nd {
			delete(n.nodes, tailnet)
		}
		n.mu.Unlock()
		return nil, nd.err
	}
	return nd, nil
}

func (n *Nodes) start(tailnet string, nd *node) {
	defer close(nd.ready)
	ctx, cancel := context.WithTimeout(context.Background(), 2*peerWait)
	defer cancel()
	key, err := n.opts.MintKey(ctx, tailnet)
	if err != nil {
		nd.err = fmt.Errorf("creating an auth key for tailnet %s: %w", tailnet, err)
		return
	}
	dir := filepath.Join(n.opts.Dir, tailnet)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		nd.err = fmt.Errorf("creating %s: %w", dir, err)
		return
	}
	logger := klog.Background().WithValues("tailnet", tailnet)
	srv := &tsnet.Server{
		Dir:        dir,
		Hostname:   n.opts.Hostname,
		ControlURL: n.opts.ControlURL,
		AuthKey:    key,
		Ephemeral:  true,
		Logf:       func(format string, args ...any) { logger.V(6).Info(fmt.Sprintf(format, args...)) },
		UserLogf:   func(format string, args ...any) { logger.V(2).Info(fmt.Sprintf(format, args...)) },
	}
	if _, err := srv.Up(ctx); err != nil {
		srv.Close()
		nd.err = fmt.Errorf("joining tailnet %s: %w", tailnet, err)
		return
	}
	if err := SetTimeWait(srv, TimeWait); err != nil {
		logger.Error(err, "Keeping the network stack's default TIME_WAIT")
	}
	dialer, err := NewDialer(srv)
	if err != nil {
		srv.Close()
		nd.err = fmt.Errorf("the node of tailnet %s: %w", tailnet, err)
		return
	}
	nd.dialer = dialer
	if err := waitForPeers(ctx, srv); err != nil {
		logger.Info("Node joined but sees no peers yet", "err", err)
	}
	logger.Info("Joined tailnet for probes", "hostname", n.opts.Hostname)
	nd.srv = srv
}

// SetTimeWait sets how long srv's userspace TCP stack keeps connections it closed first in
// TIME_WAIT. Call it once the node is up.
func SetTimeWait(srv *tsnet.Server, d time.Duration) error {
	ns, _ := srv.Sys().Netstack.GetOK()
	impl, ok := ns.(*netstack.Impl)
	if !ok {
		return errors.New("the node has no userspace network stack")
	}
	opt := tcpip.TCPTimeWaitTimeoutOption(d)
	if err := impl.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); err != nil {
		return fmt.Errorf("setting TIME_WAIT to %s: %s", d, err)
	}
	return nil
}

// waitForPeers waits until the node's network map lists at least one peer.
func waitForPeers(ctx context.Context, srv *tsnet.Server) error {
	lc, err := srv.LocalClient()
	if err != nil {
		return fmt.Errorf("local client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, peerWait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := lc.Status(ctx); err == nil && len(st.Peer) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("no peers in the network map")
		case <-tick.C:
		}
	}
}

var loopbackSetup sync.Once

// loopbackOnly keeps tsnet from uploading logs, marking sockets, mapping ports and advertising
// LAN addresses: with a control server on loopback, peers then meet on loopback only.
func loopbackOnly() {
	loopbackSetup.Do(func() {
		logtail.Disable()
		netns.SetEnabled(false)
		envknob.Setenv("TS_DISABLE_PORTMAPPER", "1")
		envknob.Setenv("TS_DEBUG_OMIT_LOCAL_ADDRS", "1")
	})
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
