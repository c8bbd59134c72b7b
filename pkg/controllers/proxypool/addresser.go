package proxypool

import (
	"net"
	"net/netip"

	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/endpointset"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
)

// Addresser is where an object's egress is reached, for the EDS (an eds.Addresser) and the
// published EndpointSlices (a publish.ProxyAddresser) alike: an object its tailnet's pool
// serves (plan.PooledBy) is reached at the pool Service's cluster IP and the port recorded in
// its status; every other object as Next says (a dedicated proxy's Service, the hand-run proxy,
// or its tailnet address). Moving an object between its pool and a proxy of its own moves its
// address with it, its ports unchanged (they are allocated per scope; see egressScope of
// pkg/cmd/server).
type Addresser struct {
	// Services lists the pools' Services (ManagedInformers) in Namespace.
	Services  corelisters.ServiceLister
	Namespace string
	// Resolve maps a spec.tailnet reference to its TailscaleTailnet's name.
	Resolve func(ref string) (string, bool)
	// Next addresses the objects no pool serves; nil leaves them without an address.
	Next interface {
		Address(*v1alpha1.TailscaleEndpoints, endpointset.Endpoint) (string, uint32, bool)
		ProxyAddress(*v1alpha1.TailscaleEndpoints) (netip.Addr, bool)
	}

	ports plan.EgressAddresser // its Host is unused: only the ports are read
}

// PoolIP is the cluster IP of the pool Service serving obj; ok is false when no pool serves it
// (or its Service has no cluster IP yet).
func (a *Addresser) PoolIP(obj *v1alpha1.TailscaleEndpoints) (ip string, ok bool) {
	name, resolved := a.Resolve(obj.Spec.Tailnet)
	if !resolved || !plan.PooledBy(obj, name, a.Resolve) {
		return "", false
	}
	svc, err := a.Services.Services(a.Namespace).Get(NamesOf(name).Base)
	if err != nil || svc.Labels[ManagedByLabel] != ManagedBy || svc.Labels[PoolLabel] != name || net.ParseIP(svc.Spec.ClusterIP) == nil {
		return "", false
	}
	return svc.Spec.ClusterIP, true
}

// Address implements eds.Addresser.
func (a *Addresser) Address(obj *v1alpha1.TailscaleEndpoints, ep endpointset.Endpoint) (string, uint32, bool) {
	if ip, ok := a.PoolIP(obj); ok {
		if _, port, ok := a.ports.Address(obj, ep); ok {
			return ip, port, true
		}
		return "", 0, false // not allocated yet
	}
	if a.Next == nil {
		return "", 0, false
	}
	return a.Next.Address(obj, ep)
}

// ProxyAddress implements publish.ProxyAddresser.
func (a *Addresser) ProxyAddress(obj *v1alpha1.TailscaleEndpoints) (netip.Addr, bool) {
	if ip, ok := a.PoolIP(obj); ok {
		addr, err := netip.ParseAddr(ip)
		return addr, err == nil
	}
	if a.Next == nil {
		return netip.Addr{}, false
	}
	return a.Next.ProxyAddress(obj)
}
