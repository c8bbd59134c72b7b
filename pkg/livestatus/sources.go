// Package livestatus computes the live part of every kind's status from in-memory sources: the
// per-tailnet cache of the Tailscale API and the health prober's results. The same functions serve
// reads (the registry overlay) and transitions (the status writer persists what they compute, less
// the fields that change on every probe).
package livestatus

import (
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Health states of an endpoint.
const (
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
	Unknown   = "Unknown"
)

// Device is what status needs to know of a tailnet device.
type Device struct {
	Name      string
	Addresses []string
	Tags      []string
	Online    bool
	LastSeen  time.Time
}

// ServiceHost is a device that hosts a Tailscale Service.
type ServiceHost struct {
	// Device is the host's stable node ID.
	Device string
	// Hostname is its machine name, when the API gives it.
	Hostname   string
	Approved   bool
	Configured bool
}

// Service is a Tailscale (VIP) Service.
type Service struct {
	Name    string
	DNSName string
	Addrs   []string
	Ports   []string
	Tags    []string
	Hosts   []ServiceHost
}

// Tailnet is the last-known state of one tailnet.
type Tailnet struct {
	// Name is the tailnet's name in the Tailscale API.
	Name           string
	MagicDNSSuffix string
	Devices        []Device
	Services       []Service
	// Synced is false while the last poll failed; Reason and Message say why.
	Synced          bool
	Reason, Message string
	// LastSync is the time of the last successful poll; zero before the first.
	LastSync time.Time

	byAddress, byName map[string]int
}

// BuildIndex indexes devices by address so that lookups do not scan the device list. Call it
// once after filling Devices, before sharing the value.
func (t *Tailnet) BuildIndex() {
	t.byAddress = make(map[string]int, 2*len(t.Devices))
	t.byName = make(map[string]int, len(t.Devices))
	for i, d := range t.Devices {
		for _, a := range d.Addresses {
			t.byAddress[a] = i
		}
		t.byName[trimDot(d.Name)] = i
	}
}

// Probe is the latest result of an endpoint's health check.
type Probe struct {
	Status      string
	LastChecked time.Time
	Latency     time.Duration
	Error       string
	// Persisted is set when another replica probes the endpoint: its health is the persisted
	// one (the transitions that replica writes), and the fields above are empty.
	Persisted bool
}

// Sources are the in-memory sources of live state. Implementations read memory only.
type Sources interface {
	// Tailnet returns the state of the tailnet a TailscaleTailnet name or tailnet domain refers to.
	Tailnet(ref string) (Tailnet, bool)
	// Probe returns the health of the endpoint with the given key (see ProbeKey).
	Probe(key string) (Probe, bool)
	// Tenancy decides which namespaces may use which tailnets and externalServices; nil
	// allows everything.
	Tenancy() *tenancy.Policy
}

// ProbeKey identifies an endpoint of a TailscaleEndpoints in the prober.
func ProbeKey(namespace, name, endpoint string) string {
	return namespace + "/" + name + "/" + endpoint
}

// deviceFor finds the device holding addr, or a device named fqdn.
func (t Tailnet) deviceFor(addr, fqdn string) (Device, bool) {
	if t.byAddress != nil {
		i, ok := t.byAddress[addr]
		if !ok && fqdn != "" {
			i, ok = t.byName[trimDot(fqdn)]
		}
		if !ok {
			return Device{}, false
		}
		return t.Devices[i], true
	}
	for _, d := range t.Devices {
		for _, a := range d.Addresses {
			if a == addr {
				return d, true
			}
		}
	}
	if fqdn != "" {
		for _, d := range t.Devices {
			if trimDot(d.Name) == trimDot(fqdn) {
				return d, true
			}
		}
	}
	return Device{}, false
}

func trimDot(s string) string {
	if len(s) > 0 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}
