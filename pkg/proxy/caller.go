package proxy

import (
	"context"
	"fmt"
	"net/netip"

	"k8s.io/klog/v2"
	"tailscale.com/client/local"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
)

// WhoIsFunc returns the ACL tags of the tailnet node at addr ("ip:port"); none for an untagged
// (user-owned) device.
type WhoIsFunc func(ctx context.Context, addr string) ([]string, error)

// whoIsOf is the WhoIs of a tsnet node's LocalClient; nil for other nodes.
func whoIsOf(n Node) WhoIsFunc {
	srv, ok := n.(interface {
		LocalClient() (*local.Client, error)
	})
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
