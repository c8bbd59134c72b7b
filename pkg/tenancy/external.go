package tenancy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"
)

// ExternalServices is the server's rule for TailscaleServices spec.serviceDiscovery.externalServices,
// which make the data plane dial addresses outside the tailnet. Following Envoy Gateway's Backend
// API (off unless extensionApis.enableBackend), they are refused unless Allowed; with CIDRs, only
// IP addresses inside one of them are accepted (a hostname could resolve anywhere).
type ExternalServices struct {
	Allowed bool
	CIDRs   []netip.Prefix
}

// ErrExternalServicesDisabled is returned for any externalServices address while they are off.
var ErrExternalServicesDisabled = errors.New("externalServices are disabled on this server (--allow-external-services)")

// Check returns nil when address may be dialled.
func (e ExternalServices) Check(address string) error {
	if !e.Allowed {
		return ErrExternalServicesDisabled
	}
	if len(e.CIDRs) == 0 {
		return nil
	}
	ip, err := netip.ParseAddr(address)
	if err != nil {
		return fmt.Errorf("%q is not an IP address and --external-service-allowed-cidrs admits IP addresses only", address)
	}
	ip = ip.Unmap()
	for _, p := range e.CIDRs {
		if p.Contains(ip) {
			return nil
		}
	}
	return fmt.Errorf("%s is outside --external-service-allowed-cidrs", address)
}

// ParseCIDRs parses CIDRs as --external-service-allowed-cidrs gives them.
func ParseCIDRs(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("parsing CIDR %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ExternalFlags are the flags that set ExternalServices, shared by the server and the proxy.
type ExternalFlags struct {
	Allow bool
	CIDRs []string
}

// AddFlags adds --allow-external-services and --external-service-allowed-cidrs to fs.
func (f *ExternalFlags) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&f.Allow, "allow-external-services", f.Allow,
		"Accept and serve TailscaleServices spec.serviceDiscovery.externalServices, which make the data plane dial addresses outside the tailnet (off by default, like Envoy Gateway's Backend API).")
	fs.StringSliceVar(&f.CIDRs, "external-service-allowed-cidrs", f.CIDRs,
		"With --allow-external-services, accept only externalServices whose address is an IP inside one of these CIDRs (empty: any address).")
}

// Rule returns the ExternalServices the flags set.
func (f *ExternalFlags) Rule() (ExternalServices, error) {
	cidrs, err := ParseCIDRs(f.CIDRs)
	if err != nil {
		return ExternalServices{}, fmt.Errorf("--external-service-allowed-cidrs: %w", err)
	}
	if len(cidrs) > 0 && !f.Allow {
		return ExternalServices{}, errors.New("--external-service-allowed-cidrs needs --allow-external-services")
	}
	return ExternalServices{Allowed: f.Allow, CIDRs: cidrs}, nil
}
