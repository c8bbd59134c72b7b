package tsnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
	"tailscale.com/net/tsaddr"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/gvstack"
)

// portTries bounds the local ports one dial tries before it gives up.
const portTries = 256

// Dialer dials through a tsnet node. TCP to an IP address goes through the node's network stack
// from a local port the Dialer chooses, the next one in a sequence of the destination's own
// (RFC 6056 section 3.3.4, as Linux does), instead of the random port gVisor picks for every
// connection: a peer whose stack is gVisor (a tsnet app, tailscaled in userspace networking,
// another proxy) drops, without an answer, a SYN from a port pair it still holds in TIME_WAIT,
// which a random port hits with a probability of (pairs in TIME_WAIT) / (ports in the
// range), a few percent at 100 new connections/s; a sequence reuses a port pair only after
// the whole range, about 49,500 connections to that destination. A port pair the node itself
// still holds is skipped. Anything else (UDP, names, addresses outside the tailnet's ranges)
// is dialled by tsnet as usual.
type Dialer struct {
	srv         *tsnet.Server
	st          *stack.Stack
	first, size uint32
	seed        maphash.Seed

	mu   sync.Mutex
	next map[netip.AddrPort]uint32 // ports used per destination
}

// NewDialer returns a Dialer for srv, which must be up. It fails on a node without the
// userspace network stack the Dialer needs.
func NewDialer(srv *tsnet.Server) (*Dialer, error) {
	st, err := gvstack.Of(srv)
	if err != nil {
		return nil, err
	}
	first, last := st.PortRange()
	return &Dialer{srv: srv, st: st, first: uint32(first), size: uint32(last) - uint32(first) + 1,
		seed: maphash.MakeSeed(), next: map[netip.AddrPort]uint32{}}, nil
}

// Dial connects to address on network through the node.
func (d *Dialer) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || (network != "tcp" && network != "tcp4" && network != "tcp6") {
		return d.srv.Dial(ctx, network, address)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !tsaddr.IsTailscaleIP(ap.Addr()) {
		// Subnet routes and addresses outside the tailnet: tsnet decides how to reach them.
		return d.srv.Dial(ctx, network, address)
	}
	v4, v6 := d.srv.TailscaleIPs()
	local, proto := v4, tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if ap.Addr().Is6() {
		local, proto = v6, ipv6.ProtocolNumber
	}
	if !local.IsValid() {
		return d.srv.Dial(ctx, network, address)
	}
	offset, start := d.reserve(ap)
	for i := range uint32(portTries) {
		port := uint16(d.first + (offset+start+i)%d.size)
		c, err := d.dialFrom(ctx, proto, local, port, ap)
		if errors.Is(err, errPortInUse) {
			continue
		}
		d.skip(ap, i)
		return c, err
	}
	return nil, fmt.Errorf("dialing %s: no free local port in %d tries", address, portTries)
}

// reserve returns the destination's fixed offset in the port range and the position in its
// sequence this dial starts from, taking that position.
func (d *Dialer) reserve(dst netip.AddrPort) (offset, pos uint32) {
	b := dst.Addr().As16()
	var h maphash.Hash
	h.SetSeed(d.seed)
	h.Write(b[:])
	_ = binary.Write(&h, binary.BigEndian, dst.Port())
	offset = uint32(h.Sum64())
	d.mu.Lock()
	pos = d.next[dst]
	d.next[dst] = pos + 1
	d.mu.Unlock()
	return offset, pos
}

// skip moves dst's sequence past n ports a dial found in use.
func (d *Dialer) skip(dst netip.AddrPort, n uint32) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	d.next[dst] += n
	d.mu.Unlock()
}

// errPortInUse is dialFrom's error for a local port, or port pair, already taken.
var errPortInUse = errors.New("local port in use")

// dialFrom connects from local:port to dst; errPortInUse when the port, or the port pair, is
// taken.
func (d *Dialer) dialFrom(ctx context.Context, proto tcpip.NetworkProtocolNumber, local netip.Addr, port uint16, dst netip.AddrPort) (net.Conn, error) {
	var wq waiter.Queue
	ep, terr := d.st.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("creating an endpoint: %s", terr)
	}
	// Reserving the port for this 4-tuple only (SO_REUSEADDR) lets the sequences of
	// different destinations share local ports.
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(local.AsSlice()), Port: port}); terr != nil {
		ep.Close()
		if _, ok := terr.(*tcpip.ErrPortInUse); ok {
			return nil, errPortInUse
		}
		return nil, fmt.Errorf("binding %s port %d: %s", local, port, terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, fmt.Errorf("dialing %s: %w", dst, ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		if _, ok := terr.(*tcpip.ErrPortInUse); ok {
			return nil, errPortInUse
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: errors.New(terr.String())}
	}
	return gonet.NewTCPConn(&wq, ep), nil
}
