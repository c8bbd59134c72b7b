package framework

import (
	"context"
	"sync"

	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// ScriptedCollector is a collector whose tailnet and probe state a test sets. It exercises the
// server's live-status paths (overlay, watch, status writer) apart from the Tailscale API and
// the prober, which are tested against real peers elsewhere; benchmarks use it to time the path
// from a detected change to watch events.
type ScriptedCollector struct {
	// Tailnets is the initial tailnet state by reference (TailscaleTailnet name or domain).
	Tailnets map[string]livestatus.Tailnet

	mu     sync.Mutex
	probes map[string]livestatus.Probe
	notify livestatus.Notifier
	policy *tenancy.Policy
}

// Tenancy implements livestatus.Sources: the server's policy, as for the real collector.
func (c *ScriptedCollector) Tenancy() *tenancy.Policy { return c.policy }

var _ livestatus.Collector = &ScriptedCollector{}

// Tailnet implements livestatus.Sources.
func (c *ScriptedCollector) Tailnet(ref string) (livestatus.Tailnet, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.Tailnets[ref]
	return t, ok
}

// Probe implements livestatus.Sources.
func (c *ScriptedCollector) Probe(key string) (livestatus.Probe, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.probes[key]
	return p, ok
}

// Configure implements livestatus.Collector.
func (c *ScriptedCollector) Configure(_ informers.SharedInformerFactory, notify livestatus.Notifier, policy *tenancy.Policy) error {
	c.notify, c.policy = notify, policy
	return nil
}

// Run implements livestatus.Collector.
func (c *ScriptedCollector) Run(ctx context.Context) { <-ctx.Done() }

// SetProbe records a probe result of an endpoint and reports it as a health transition.
func (c *ScriptedCollector) SetProbe(namespace, name, endpoint string, p livestatus.Probe) {
	c.mu.Lock()
	if c.probes == nil {
		c.probes = map[string]livestatus.Probe{}
	}
	c.probes[livestatus.ProbeKey(namespace, name, endpoint)] = p
	c.mu.Unlock()
	c.notify.EndpointsChanged(namespace, name)
}

// SetOnline flips a device's online state and reports a tailnet change.
func (c *ScriptedCollector) SetOnline(tailnet, device string, online bool) {
	c.mu.Lock()
	tn := c.Tailnets[tailnet]
	devices := append([]livestatus.Device(nil), tn.Devices...)
	for i := range devices {
		if devices[i].Name == device {
			devices[i].Online = online
		}
	}
	tn.Devices = devices
	c.Tailnets[tailnet] = tn
	c.mu.Unlock()
	c.notify.TailnetChanged()
}
