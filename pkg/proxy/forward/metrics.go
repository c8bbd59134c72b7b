// Package forward carries bytes for tailscale-gateway-proxy: it joins an accepted TCP
// connection to a dialled one (Pipe), relays UDP datagrams per client (UDPRelay), and counts
// connections, bytes and dial errors per target as Prometheus metrics.
package forward

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Roles of a listener, the "role" label.
const (
	RoleEgress  = "egress"
	RoleService = "service"
)

// Metrics are the proxy's Prometheus metrics. Labels: role (egress | service), listener (an
// egress listener "egress/<tcp|udp>/<port>" or a Service port "svc:<name>/tcp/<port>") and
// target (the backend key: "<namespace>/<TailscaleEndpoints>/<endpoint>", or
// "<namespace>/<TailscaleServices>/external/<name>" for external services).
type Metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	dialErrors  *prometheus.CounterVec
	noBackend   *prometheus.CounterVec
	refused     *prometheus.CounterVec
	// PortConflicts is the number of egress endpoints left unserved because another endpoint
	// holds their derived port.
	PortConflicts prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"role", "listener", "target"}
	m := &Metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailscale_gateway_proxy_connections_total",
			Help: "Connections (UDP: client sessions) forwarded to a target."}, labels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tailscale_gateway_proxy_active_connections",
			Help: "Connections (UDP: client sessions) open to a target."}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailscale_gateway_proxy_bytes_total",
			Help: "Bytes forwarded; direction is to_target or from_target."}, append(labels, "direction")),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailscale_gateway_proxy_dial_errors_total",
			Help: "Failed dials of a target."}, labels),
		noBackend: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailscale_gateway_proxy_no_backend_total",
			Help: "Connections to a Service port closed because no backend was usable."}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailscale_gateway_proxy_refused_total",
			Help: "Connections refused by a listener; reason is denied_tag, not_allowed or unknown_caller (a Service port's access rule), connection_limit (the listener's cap) or local_connection (a local process on a Service's forwarding socket)."}, []string{"listener", "reason"}),
		PortConflicts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailscale_gateway_proxy_egress_port_conflicts",
			Help: "Egress endpoints not served because another endpoint holds their derived port."}),
	}
	reg.MustRegister(m.connections, m.active, m.bytes, m.dialErrors, m.noBackend, m.refused, m.PortConflicts)
	return m
}

// Counters are the metrics of one (role, listener, target), resolved once.
type Counters struct {
	Connections prometheus.Counter
	Active      prometheus.Gauge
	ToTarget    prometheus.Counter
	FromTarget  prometheus.Counter
	DialErrors  prometheus.Counter
}

// For returns the counters of target behind listener.
func (m *Metrics) For(role, listener, target string) *Counters {
	return &Counters{
		Connections: m.connections.WithLabelValues(role, listener, target),
		Active:      m.active.WithLabelValues(role, listener, target),
		ToTarget:    m.bytes.WithLabelValues(role, listener, target, "to_target"),
		FromTarget:  m.bytes.WithLabelValues(role, listener, target, "from_target"),
		DialErrors:  m.dialErrors.WithLabelValues(role, listener, target),
	}
}

// NoBackend counts a connection to listener refused for want of a usable backend.
func (m *Metrics) NoBackend(listener string) { m.noBackend.WithLabelValues(listener).Inc() }

// Refused counts a connection to listener refused for reason (pkg/accesscontrol).
func (m *Metrics) Refused(listener, reason string) { m.refused.WithLabelValues(listener, reason).Inc() }

// Forget drops the series of a listener that is no longer served.
func (m *Metrics) Forget(listener string) {
	l := prometheus.Labels{"listener": listener}
	m.connections.DeletePartialMatch(l)
	m.active.DeletePartialMatch(l)
	m.bytes.DeletePartialMatch(l)
	m.dialErrors.DeletePartialMatch(l)
	m.noBackend.DeletePartialMatch(l)
	m.refused.DeletePartialMatch(l)
}
