package health

import (
	"maps"
	"strings"
	"time"
)

// Protocol is the kind of probe a Check runs.
type Protocol string

// Probe protocols; they match the API's protocol names.
const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTPS Protocol = "HTTPS"
	ProtocolTCP   Protocol = "TCP"
	ProtocolUDP   Protocol = "UDP"
	ProtocolTLS   Protocol = "TLS"
	ProtocolGRPC  Protocol = "gRPC"
)

var protocols = []Protocol{ProtocolHTTP, ProtocolHTTPS, ProtocolTCP, ProtocolUDP, ProtocolTLS, ProtocolGRPC}

// Defaults for zero fields of a Check; they are the API's documented defaults.
const (
	DefaultPath               = "/"
	DefaultInterval           = 30 * time.Second
	DefaultTimeout            = 10 * time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
	DefaultExpectedStatus     = 200
)

// Check says how and how often a target is probed. Zero fields take the defaults above.
type Check struct {
	// Type is the probe protocol (matched case-insensitively). Defaults to HTTP.
	Type Protocol
	// Path is the HTTP(S) request path, optionally with a query, or the gRPC health service
	// name with a leading "/". Defaults to "/" for HTTP(S).
	Path string
	// Interval between the starts of two probes, jittered by ±10%; a probe may also start up to
	// Interval/20 (at most 50ms) early, see the package doc. Defaults to 30s.
	Interval time.Duration
	// Timeout bounds one probe. Defaults to 10s, or half the interval when that is shorter.
	// A target is never probed twice at once: a probe slower than Interval delays the next.
	Timeout time.Duration
	// HealthyThreshold is the number of consecutive successes that mark a target healthy.
	HealthyThreshold int
	// UnhealthyThreshold is the number of consecutive failures that mark a target unhealthy.
	UnhealthyThreshold int
	// ExpectedStatus is the HTTP status of a healthy answer. Defaults to 200.
	ExpectedStatus int
	// Headers are sent with HTTP(S) probes and as metadata with gRPC probes; a "Host" entry
	// sets the Host header or gRPC authority. Their values never appear in results.
	Headers map[string]string
	// ServerName is the SNI of HTTPS and TLS probes and, unless Headers has "Host", the Host
	// (HTTP) or authority (gRPC). Empty means the host part of the target address.
	ServerName string
}

// withDefaults returns c with zero fields defaulted, the type canonicalised and Headers copied.
func (c Check) withDefaults() Check {
	c.Type = canonicalProtocol(c.Type)
	if c.Path == "" && (c.Type == ProtocolHTTP || c.Type == ProtocolHTTPS) {
		c.Path = DefaultPath
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
		if c.Interval <= DefaultTimeout {
			c.Timeout = c.Interval / 2
		}
	}
	if c.HealthyThreshold < 1 {
		c.HealthyThreshold = DefaultHealthyThreshold
	}
	if c.UnhealthyThreshold < 1 {
		c.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if c.ExpectedStatus == 0 {
		c.ExpectedStatus = DefaultExpectedStatus
	}
	c.Headers = maps.Clone(c.Headers)
	return c
}

// equal reports whether two checks probe the same way.
func (c Check) equal(o Check) bool {
	return c.Type == o.Type && c.Path == o.Path && c.Interval == o.Interval && c.Timeout == o.Timeout &&
		c.HealthyThreshold == o.HealthyThreshold && c.UnhealthyThreshold == o.UnhealthyThreshold &&
		c.ExpectedStatus == o.ExpectedStatus && c.ServerName == o.ServerName && maps.Equal(c.Headers, o.Headers)
}

func canonicalProtocol(p Protocol) Protocol {
	if p == "" {
		return ProtocolHTTP
	}
	for _, known := range protocols {
		if strings.EqualFold(string(p), string(known)) {
			return known
		}
	}
	return p
}

// Target is one address probed with one Check.
type Target struct {
	// Key identifies the target to the caller, e.g. "namespace/name/endpoint". It is opaque here.
	Key string
	// Address is host:port. Hosts may be IP literals or names.
	Address string
	// Via names the network Address belongs to, e.g. the tailnet the endpoint was declared in;
	// the Dialer reads it from the dial's context (ViaFrom). One address in two networks is two
	// routes: whoever declares an address elsewhere cannot redirect another target's probes.
	Via string
	// Check says how the target is probed.
	Check Check
}

// Status is the health of a target.
type Status string

// Statuses of a target. A target is Unknown until a threshold has been reached.
const (
	StatusUnknown   Status = "Unknown"
	StatusHealthy   Status = "Healthy"
	StatusUnhealthy Status = "Unhealthy"
)

// Result is the health of a target and its last probe.
type Result struct {
	// Status is the health after thresholds.
	Status Status
	// LastChecked is when the last probe started; zero before the first probe.
	LastChecked time.Time
	// Latency is how long the last probe took, successful or not.
	Latency time.Duration
	// Error says why the last probe failed; empty when it succeeded.
	Error string
	// ConsecutiveSuccesses and ConsecutiveFailures count the current run of outcomes.
	ConsecutiveSuccesses int
	ConsecutiveFailures  int
}
