package tailnet

import (
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConditionTailnetSynced is the condition type that reports whether the API was read recently.
const ConditionTailnetSynced = "TailnetSynced"

// SyncStatus is whether a tailnet's last poll succeeded, as condition data.
type SyncStatus struct {
	// Synced is true when the last poll succeeded.
	Synced bool
	// Reason is one of the Reason constants.
	Reason string
	// Message is a scrubbed description.
	Message string
	// Since is when Synced or Reason last changed.
	Since time.Time
	// RetryAfter is what a rate-limiting API asked for, if it did.
	RetryAfter time.Duration
}

// Snapshot is the last-known state of one tailnet. It is immutable: its slices and maps are
// shared between readers and must not be modified.
type Snapshot struct {
	// Name is the TailscaleTailnet's name.
	Name string
	// Tailnet is the tailnet's name in the API.
	Tailnet string
	// Devices, sorted by NodeID.
	Devices []Device
	// Services, sorted by Name.
	Services []Service
	// ServiceHosts maps a Service's name to the devices advertising it.
	ServiceHosts map[string][]ServiceHost
	// MagicDNSSuffix is derived from the devices' names, such as "tail1234.ts.net".
	MagicDNSSuffix string

	// LastSync is when a poll last succeeded; zero if none has.
	LastSync time.Time
	// LastAttempt is when the last poll finished.
	LastAttempt time.Time
	// LastError is the last poll's error, scrubbed; empty after a success.
	LastError string
	// Stale is true when the data above is not from the last poll (it failed, or none finished).
	Stale bool
	// Status is the TailnetSynced condition's data.
	Status SyncStatus
	// Generation increases whenever Devices, Services or ServiceHosts change.
	Generation uint64

	idx *index
}

// index speeds up lookups; built once per successful poll.
type index struct {
	byNodeID  map[string]int
	byAddress map[netip.Addr]int
	byName    map[string]int
	services  map[string]int
}

func buildIndex(devices []Device, services []Service) *index {
	ix := &index{
		byNodeID:  make(map[string]int, len(devices)),
		byAddress: make(map[netip.Addr]int, 2*len(devices)),
		byName:    make(map[string]int, 2*len(devices)),
		services:  make(map[string]int, len(services)),
	}
	for i, d := range devices {
		ix.byNodeID[d.NodeID] = i
		if d.ID != "" {
			if _, taken := ix.byNodeID[d.ID]; !taken {
				ix.byNodeID[d.ID] = i
			}
		}
		for _, a := range d.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				ix.byAddress[ip.Unmap()] = i
			}
		}
		if n := normName(d.Name); n != "" {
			ix.byName[n] = i
		}
	}
	for i, s := range services {
		ix.services[s.Name] = i
	}
	return ix
}

func normName(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

// Device finds a device by node ID or legacy ID.
func (s Snapshot) Device(id string) (Device, bool) {
	if s.idx == nil {
		return Device{}, false
	}
	i, ok := s.idx.byNodeID[id]
	if !ok {
		return Device{}, false
	}
	return s.Devices[i], true
}

// DeviceByAddress finds a device by one of its Tailscale addresses.
func (s Snapshot) DeviceByAddress(addr string) (Device, bool) {
	ip, err := netip.ParseAddr(addr)
	if err != nil || s.idx == nil {
		return Device{}, false
	}
	i, ok := s.idx.byAddress[ip.Unmap()]
	if !ok {
		return Device{}, false
	}
	return s.Devices[i], true
}

// DeviceByName finds a device by its MagicDNS name, with or without the trailing dot.
func (s Snapshot) DeviceByName(name string) (Device, bool) {
	if s.idx == nil {
		return Device{}, false
	}
	i, ok := s.idx.byName[normName(name)]
	if !ok {
		return Device{}, false
	}
	return s.Devices[i], true
}

// Service finds a Service by name ("svc:<name>").
func (s Snapshot) Service(name string) (Service, bool) {
	if s.idx == nil {
		return Service{}, false
	}
	i, ok := s.idx.services[name]
	if !ok {
		return Service{}, false
	}
	return s.Services[i], true
}

// ConnectedCount is the number of devices connected to the control plane.
func (s Snapshot) ConnectedCount() int {
	n := 0
	for _, d := range s.Devices {
		if d.ConnectedToControl {
			n++
		}
	}
	return n
}

// Condition returns the TailnetSynced condition for an object at observedGeneration.
func (s Snapshot) Condition(observedGeneration int64) metav1.Condition {
	c := metav1.Condition{
		Type:               ConditionTailnetSynced,
		Status:             metav1.ConditionFalse,
		ObservedGeneration: observedGeneration,
		LastTransitionTime: metav1.NewTime(s.Status.Since),
		Reason:             s.Status.Reason,
		Message:            s.Status.Message,
	}
	if s.Status.Synced {
		c.Status = metav1.ConditionTrue
	}
	if c.Reason == "" {
		c.Reason = ReasonPending
	}
	return c
}

// magicDNSSuffix derives the tailnet's DNS suffix from the first own device name that has one.
func magicDNSSuffix(devices []Device) string {
	for _, d := range devices {
		if d.IsExternal {
			continue
		}
		if _, suffix, ok := strings.Cut(strings.TrimSuffix(d.Name, "."), "."); ok && suffix != "" {
			return suffix
		}
	}
	return ""
}
