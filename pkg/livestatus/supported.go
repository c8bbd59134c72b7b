package livestatus

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// ConditionSupported says which set spec fields have no effect (reason FieldsNotSupported), so
// that none is silently ignored. TailscaleGateway's is written by its controller
// (pkg/controllers/tsgateway), with the same type and reasons; TailscaleTailnet has none, since
// every field of its spec takes effect.
const (
	ConditionSupported       = "Supported"
	ReasonAllFieldsSupported = "AllFieldsSupported"
	ReasonFieldsNotSupported = "FieldsNotSupported"
)

// Ignored is a set field without effect: its path and why.
type Ignored struct{ Path, Why string }

func (i Ignored) String() string { return i.Path + " (" + i.Why + ")" }

// IgnoredEndpointsFields returns the set fields of a TailscaleEndpoints spec that drive nothing:
// none now. endpoints[].metadata goes on the endpoint's Envoy host (backends.EndpointMetadataFilter),
// endpoints[].externalTarget is where the proxy forwards the endpoint's traffic (ports.Wanted).
func IgnoredEndpointsFields(*gateway.TailscaleEndpointsSpec) []Ignored { return nil }

// IgnoredServicesFields returns the set fields of a TailscaleServices spec that drive nothing.
func IgnoredServicesFields(spec *gateway.TailscaleServicesSpec) []Ignored {
	var out []Ignored
	if sd := spec.ServiceDiscovery; sd != nil && sd.VIPServiceSelector != nil && !sd.DiscoverVIPServices &&
		(len(sd.VIPServiceSelector.Tags) > 0 || len(sd.VIPServiceSelector.ServiceNames) > 0) {
		out = append(out, Ignored{"spec.serviceDiscovery.vipServiceSelector", "discoverVIPServices is false: no Tailscale Service is discovered"})
	}
	return out
}

// setSupported sets the Supported condition from the ignored fields of an object.
func setSupported(conds *conditions, ignored []Ignored, generation int64, now time.Time) {
	c := metav1.Condition{Type: ConditionSupported, Status: metav1.ConditionTrue, Reason: ReasonAllFieldsSupported,
		Message: "Every set field takes effect"}
	if len(ignored) > 0 {
		parts := make([]string, len(ignored))
		for i, f := range ignored {
			parts[i] = f.String()
		}
		c.Status, c.Reason = metav1.ConditionFalse, ReasonFieldsNotSupported
		c.Message = "Set but without effect: " + strings.Join(parts, "; ")
	}
	conds.set(c, generation, now)
}
