package tailnetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"tailscale.com/ipn"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/types/key"
)

// serviceHosts tracks, per host node, the Tailscale Services made routable to it with
// RouteService, since testcontrol's SetNodeCapMap and SetSubnetRoutes replace what was set.
type serviceHosts struct {
	mappings map[key.NodePublic]tailcfg.ServiceIPMappings
}

// RouteService makes the Tailscale Service name ("svc:<label>") with address vip routable from
// clients to host, the way tsnet's own Service tests do on testcontrol, which has no Services
// of its own: host gets the service-host capability mapping name to vip
// (tailcfg.NodeAttrServiceHost) and vip/32 as a subnet route, host is tagged (tag:service-host)
// unless it already has a tag, clients accept routes (RouteAll), and MagicDNS resolves
// <label>.<suffix> to vip. It returns once host holds the capability and every client routes
// vip to host. Several Services can be routed to one host.
func (t *Tailnet) RouteService(ctx context.Context, name, vip string, host *tsnet.Server, clients ...*tsnet.Server) error {
	svc := tailcfg.ServiceName(name)
	if err := svc.Validate(); err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	addr, err := netip.ParseAddr(vip)
	if err != nil {
		return fmt.Errorf("tailnetsim: service address: %w", err)
	}
	hostLC, err := host.LocalClient()
	if err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	st, err := hostLC.StatusWithoutPeers(ctx)
	if err != nil {
		return fmt.Errorf("tailnetsim: host status: %w", err)
	}
	nk := st.Self.PublicKey

	t.mu.Lock()
	if t.svcHosts.mappings == nil {
		t.svcHosts.mappings = map[key.NodePublic]tailcfg.ServiceIPMappings{}
	}
	m := t.svcHosts.mappings[nk]
	if m == nil {
		m = tailcfg.ServiceIPMappings{}
		t.svcHosts.mappings[nk] = m
	}
	m[svc] = []netip.Addr{addr}
	raw, err := json.Marshal(m)
	var routes []netip.Prefix
	for _, addrs := range m {
		for _, a := range addrs {
			routes = append(routes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	t.control.SetNodeCapMap(nk, tailcfg.NodeCapMap{tailcfg.NodeAttrServiceHost: []tailcfg.RawMessage{tailcfg.RawMessage(raw)}})
	t.control.SetSubnetRoutes(nk, routes)
	if n := t.control.Node(nk); n != nil && len(n.Tags) == 0 {
		n.Tags = append(n.Tags, "tag:service-host")
		t.control.UpdateNode(n)
	}
	for _, c := range clients {
		lc, err := c.LocalClient()
		if err != nil {
			return fmt.Errorf("tailnetsim: %w", err)
		}
		if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{RouteAllSet: true, Prefs: ipn.Prefs{RouteAll: true}}); err != nil {
			return fmt.Errorf("tailnetsim: accepting routes: %w", err)
		}
	}
	t.control.AddDNSRecords(tailcfg.DNSRecord{Name: svc.WithoutPrefix() + "." + t.opts.MagicDNSSuffix, Value: vip})

	route := netip.PrefixFrom(addr, addr.BitLen())
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done, why := true, ""
		if st, err := hostLC.StatusWithoutPeers(ctx); err != nil || !st.Self.CapMap.Contains(tailcfg.NodeAttrServiceHost) {
			done, why = false, "host has no service-host capability yet"
		}
		for _, c := range clients {
			lc, _ := c.LocalClient()
			st, err := lc.Status(ctx)
			if err != nil {
				done, why = false, err.Error()
				break
			}
			peer, ok := st.Peer[nk]
			if !ok || peer.PrimaryRoutes == nil || !slices.Contains(peer.PrimaryRoutes.AsSlice(), route) {
				done, why = false, "a client does not route the service address to the host yet"
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tailnetsim: routing %s: %s: %w", name, why, ctx.Err())
		case <-tick.C:
		}
	}
}
