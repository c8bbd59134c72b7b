package tailnet

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	tsclient "tailscale.com/client/tailscale/v2"
)

// Device is a tailnet device as status needs it. Values from a Snapshot are shared: do not modify.
type Device struct {
	// ID is the legacy numeric identifier.
	ID string
	// NodeID is the preferred, stable identifier.
	NodeID string
	// Name is the MagicDNS name, such as "web-1.tail1234.ts.net".
	Name string
	// Hostname is the machine name.
	Hostname string
	// Addresses are the Tailscale IPv4 and IPv6 addresses.
	Addresses []string
	// Tags are the device's ACL tags.
	Tags []string
	// User is who registered the device (for untagged devices, its owner).
	User string
	OS   string
	// ClientVersion is the Tailscale client version.
	ClientVersion string
	// ConnectedToControl reports whether the device is connected to the control plane now.
	ConnectedToControl bool
	// Online is derived from ConnectedToControl.
	Online bool
	// LastSeen is when the device was last connected; zero while it is connected.
	LastSeen time.Time
	// Created and Expires are the node key's creation and expiry times.
	Created time.Time
	Expires time.Time
	// Authorized reports whether the device is authorized to join the tailnet.
	Authorized bool
	// IsEphemeral reports an ephemeral node.
	IsEphemeral bool
	// IsExternal reports a device shared in from another tailnet.
	IsExternal bool
	// KeyExpiryDisabled reports a key that never expires.
	KeyExpiryDisabled bool
	// UpdateAvailable reports that a newer client exists.
	UpdateAvailable bool
	// AdvertisedRoutes and EnabledRoutes are subnet routes.
	AdvertisedRoutes []string
	EnabledRoutes    []string
}

// Service is a Tailscale Service (a VIP service): a name and stable addresses that several
// devices can host.
type Service struct {
	// Name is "svc:<name>".
	Name string
	// Addrs are the service's IPv4 and IPv6 addresses, assigned by the control plane.
	Addrs []string
	// Ports are "tcp:<port>" (or "do-not-validate").
	Ports       []string
	Tags        []string
	Annotations map[string]string
	Comment     string
}

// DNSLabel returns the service's name without the "svc:" prefix, its MagicDNS label.
func (s Service) DNSLabel() string { return strings.TrimPrefix(s.Name, "svc:") }

// ServiceHost is a device advertising a Service, and how far it got through approval.
type ServiceHost struct {
	// NodeID is the hosting device's stable node ID.
	NodeID string
	// Hostname is the hosting device's machine name, when the API gives it.
	Hostname string
	// ApprovalLevel is "not-approved", "approved:auto" or "approved:manual".
	ApprovalLevel string
	// Approved is derived from ApprovalLevel.
	Approved bool
	// Configured reports whether the device has the service configured. The API's field is
	// decoded from a boolean or a string ("true", "configured", ...).
	Configured bool
}

// AuthKeyOptions describes an auth key to create.
type AuthKeyOptions struct {
	// Tags given to devices that join with the key; required for OAuth clients.
	Tags          []string
	Ephemeral     bool
	Preauthorized bool
	Reusable      bool
	// Expiry of the key; zero lets the API choose (90 days).
	Expiry      time.Duration
	Description string
}

// AuthKey is a created auth key. String never prints the key.
type AuthKey struct {
	ID      string
	Key     string
	Expires time.Time
}

// AuthKeyInfo is what the API reports of an existing auth key (GET .../keys/{id}).
type AuthKeyInfo struct {
	ID      string
	Tags    []string
	Created time.Time
	Expires time.Time
	// Revoked is when the key was revoked, zero if it was not.
	Revoked time.Time
	// Invalid is the API's "invalid": expired or revoked.
	Invalid bool
}

// Usable reports whether devices can still join with the key at now: not invalid, not
// revoked, not expired.
func (k AuthKeyInfo) Usable(now time.Time) bool {
	return !k.Invalid && k.Revoked.IsZero() && (k.Expires.IsZero() || now.Before(k.Expires))
}

// String never prints the key.
func (k AuthKey) String() string { return "AuthKey{ID:" + k.ID + ", Key:" + redacted + "}" }

// GoString keeps %#v from printing the key.
func (k AuthKey) GoString() string { return k.String() }

// deviceFromAPI converts the library's device.
func deviceFromAPI(d tsclient.Device) Device {
	out := Device{
		ID:                 d.ID,
		NodeID:             d.NodeID,
		Name:               d.Name,
		Hostname:           d.Hostname,
		Addresses:          slices.Clone(d.Addresses),
		Tags:               slices.Clone(d.Tags),
		User:               d.User,
		OS:                 d.OS,
		ClientVersion:      d.ClientVersion,
		ConnectedToControl: d.ConnectedToControl,
		Online:             d.ConnectedToControl,
		Created:            d.Created.Time,
		Expires:            d.Expires.Time,
		Authorized:         d.Authorized,
		IsEphemeral:        d.IsEphemeral,
		IsExternal:         d.IsExternal,
		KeyExpiryDisabled:  d.KeyExpiryDisabled,
		UpdateAvailable:    d.UpdateAvailable,
		AdvertisedRoutes:   slices.Clone(d.AdvertisedRoutes),
		EnabledRoutes:      slices.Clone(d.EnabledRoutes),
	}
	if d.LastSeen != nil {
		out.LastSeen = d.LastSeen.Time
	}
	if out.NodeID == "" {
		out.NodeID = d.ID
	}
	return out
}

func serviceFromAPI(s tsclient.Service) Service {
	return Service{
		Name:        s.Name,
		Addrs:       slices.Clone(s.Addrs),
		Ports:       slices.Clone(s.Ports),
		Tags:        slices.Clone(s.Tags),
		Annotations: maps.Clone(s.Annotations),
		Comment:     s.Comment,
	}
}

func serviceToAPI(s Service) tsclient.Service {
	return tsclient.Service{
		Name:        s.Name,
		Addrs:       slices.Clone(s.Addrs),
		Ports:       slices.Clone(s.Ports),
		Tags:        slices.Clone(s.Tags),
		Annotations: maps.Clone(s.Annotations),
		Comment:     s.Comment,
	}
}

// serviceHostJSON is one entry of GET .../services/{name}/devices.
type serviceHostJSON struct {
	StableNodeID  string          `json:"stableNodeID"`
	NodeID        string          `json:"nodeId"`
	Hostname      string          `json:"hostname"`
	ApprovalLevel string          `json:"approvalLevel"`
	Configured    json.RawMessage `json:"configured"`
}

func (h serviceHostJSON) toHost() ServiceHost {
	id := h.StableNodeID
	if id == "" {
		id = h.NodeID
	}
	return ServiceHost{
		NodeID:        id,
		Hostname:      h.Hostname,
		ApprovalLevel: h.ApprovalLevel,
		Approved:      strings.HasPrefix(h.ApprovalLevel, "approved"),
		Configured:    decodeConfigured(h.Configured),
	}
}

// decodeConfigured accepts true/false or a string; strings other than false-like ones mean yes.
func decodeConfigured(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	s = strings.ToLower(strings.TrimSpace(s))
	if v, err := strconv.ParseBool(s); err == nil {
		return v
	}
	switch s {
	case "", "none", "no", "not-configured", "unconfigured":
		return false
	}
	return true
}
