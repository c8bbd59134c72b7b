package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"k8s.io/klog/v2"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
)

// proxyProtocolVersion is the PROXY protocol header tsnet prepends to every hosted Service
// connection: tsnet hands them over a loopback socket, so the header is the only place the
// tailnet caller's address is found.
const proxyProtocolVersion = 2

// callerConn is an accepted Service connection whose PROXY protocol header has been read; Read
// returns what reading the header buffered first.
type callerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *callerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes the underlying connection, as forward.Pipe expects of TCP.
func (c *callerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("no half-close")
}

// readCaller reads conn's PROXY protocol header within timeout and returns the connection
// past it and the tailnet caller's address.
func readCaller(conn net.Conn, timeout time.Duration) (*callerConn, netip.AddrPort, error) {
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	h, err := proxyproto.Read(br)
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("reading the PROXY protocol header: %w", err)
	}
	src, _, ok := h.TCPAddrs()
	if !ok {
		return nil, netip.AddrPort{}, fmt.Errorf("the PROXY protocol header carries no TCP source address (%v)", h.SourceAddr)
	}
	ap := src.AddrPort()
	return &callerConn{Conn: conn, r: br}, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// WhoIsFunc returns the ACL tags of the tailnet node at addr ("ip:port"); none for an untagged
// (user-owned) device.
type WhoIsFunc func(ctx context.Context, addr string) ([]string, error)

// whoIsOf is the WhoIs of a tsnet node's LocalClient; nil for other nodes.
func whoIsOf(n Node) WhoIsFunc {
	srv, ok := n.(*tsnet.Server)
	if !ok {
		return nil
	}
	return func(ctx context.Context, addr string) ([]string, error) {
		lc, err := srv.LocalClient()
		if err != nil {
			return nil, fmt.Errorf("local client: %w", err)
		}
		who, err := lc.WhoIs(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("whois %s: %w", addr, err)
		}
		if who.Node == nil {
			return nil, fmt.Errorf("whois %s: no node", addr)
		}
		return who.Node.Tags, nil
	}
}

// admit applies rule to the caller at src: "" admits, else the refusal reason. A rule that
// cannot be applied (no WhoIs, or WhoIs failed) refuses.
func (p *Proxy) admit(ctx context.Context, listener string, rule accesscontrol.Rule, src netip.AddrPort) string {
	if rule.Empty() {
		return ""
	}
	if p.opts.WhoIs == nil {
		klog.V(2).InfoS("Refused: no WhoIs to apply the access rule with", "listener", listener, "caller", src)
		return accesscontrol.ReasonUnknownCaller
	}
	wctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
	defer cancel()
	tags, err := p.opts.WhoIs(wctx, src.String())
	if err != nil {
		klog.V(2).InfoS("Refused: caller not identified", "listener", listener, "caller", src, "err", err)
		return accesscontrol.ReasonUnknownCaller
	}
	reason := rule.Decide(tags)
	if reason != "" {
		klog.V(2).InfoS("Refused by access control", "listener", listener, "caller", src, "tags", tags, "reason", reason)
	}
	return reason
}
