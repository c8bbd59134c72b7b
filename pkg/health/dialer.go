package health

import (
	"context"
	"net"
	"net/netip"
)

// Dialer opens connections for probes. *net.Dialer and tsnet's *Server satisfy it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

var _ Dialer = (*net.Dialer)(nil)

// Tailscale's address ranges: the CGNAT range for IPv4 and the tailnet ULA prefix for IPv6.
var (
	tailnetIPv4 = netip.MustParsePrefix("100.64.0.0/10")
	tailnetIPv6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// IsTailnetAddress reports whether address (host:port or a bare host) is an IP literal in the
// tailnet ranges 100.64.0.0/10 or fd7a:115c:a1e0::/48. Host names are never tailnet addresses.
func IsTailnetAddress(address string) bool {
	host := address
	if h, _, err := net.SplitHostPort(address); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.WithZone("").Unmap()
	return tailnetIPv4.Contains(ip) || tailnetIPv6.Contains(ip)
}

// newDirectDialer dials the normal network. Probe connections are short-lived, so TCP
// keep-alive (four socket options per dial) is off.
func newDirectDialer() *net.Dialer {
	return &net.Dialer{KeepAlive: -1}
}

// TailnetDialerFor returns an Options.DialerFor that sends tailnet addresses (see
// IsTailnetAddress) to tailnet and every other address to direct. A nil direct dials the normal
// network, as the Prober does by default. MagicDNS names are not recognised; probe tailnet IPs, or supply your own
// selector.
func TailnetDialerFor(tailnet, direct Dialer) func(address string) Dialer {
	if direct == nil {
		direct = newDirectDialer()
	}
	return func(address string) Dialer {
		if IsTailnetAddress(address) {
			return tailnet
		}
		return direct
	}
}
