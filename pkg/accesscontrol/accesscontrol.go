// Package accesscontrol is the tag rule tailscale-gateway-proxy applies to the tailnet callers
// of a Tailscale Service it hosts: TailscaleGateway spec.security.accessControl, carried to the
// proxy on the TailscaleServices it applies to as two annotations (pkg/controllers/tsgateway
// writes them on the listener TailscaleServices it generates; any TailscaleServices may carry
// them, which only narrows who reaches its own Service).
//
// A caller is the node WhoIs names for the connection's source address. It is refused when one
// of its tags is denied, or when allowed tags are set and it has none of them. Untagged devices
// (a user's own devices) have no tags: denied tags never refuse them, and allowed tags, once
// set, always do. A tag matches an entry equal to it, or equal to it without the "tag:" prefix
// ("prod-server" matches the node tag "tag:prod-server").
package accesscontrol

import (
	"slices"
	"strings"
)

// Annotations on a TailscaleServices: comma-separated tags.
const (
	AnnotationAllowedTags = "gateway.tailscale.com/access-allowed-tags"
	AnnotationDeniedTags  = "gateway.tailscale.com/access-denied-tags"
)

// AnnotationConnectionLog, "true" on a TailscaleServices, makes the proxy hosting it log every
// connection to it (source, destination, bytes, duration): a TailscaleGateway's
// observability.logging.accessLogs on its listener TailscaleServices.
const AnnotationConnectionLog = "gateway.tailscale.com/connection-log"

// ConnectionLog reports whether annotations ask for connection logs.
func ConnectionLog(annotations map[string]string) bool {
	return annotations[AnnotationConnectionLog] == "true"
}

// Refusal reasons, the reason label of tailscale_gateway_proxy_refused_total.
const (
	// ReasonDeniedTag: the caller carries a denied tag.
	ReasonDeniedTag = "denied_tag"
	// ReasonNotAllowed: allowed tags are set and the caller has none of them (untagged included).
	ReasonNotAllowed = "not_allowed"
	// ReasonUnknownCaller: the caller could not be identified (WhoIs failed); a rule that cannot
	// be applied refuses.
	ReasonUnknownCaller = "unknown_caller"
)

// Rule is the allowed and denied tags of one Service.
type Rule struct {
	Allowed []string
	Denied  []string
}

// Empty reports whether the rule admits everyone without identifying callers.
func (r Rule) Empty() bool { return len(r.Allowed) == 0 && len(r.Denied) == 0 }

// Equal reports whether r and o hold the same tags in the same order.
func (r Rule) Equal(o Rule) bool {
	return slices.Equal(r.Allowed, o.Allowed) && slices.Equal(r.Denied, o.Denied)
}

// Decide returns "" when a caller with tags may connect, else the reason it may not.
func (r Rule) Decide(tags []string) string {
	for _, t := range tags {
		if matchesAny(t, r.Denied) {
			return ReasonDeniedTag
		}
	}
	if len(r.Allowed) == 0 {
		return ""
	}
	for _, t := range tags {
		if matchesAny(t, r.Allowed) {
			return ""
		}
	}
	return ReasonNotAllowed
}

func matchesAny(tag string, entries []string) bool {
	for _, e := range entries {
		if e == tag || "tag:"+e == tag {
			return true
		}
	}
	return false
}

// Annotations returns the annotations that carry r (none for an empty side).
func (r Rule) Annotations() map[string]string {
	out := map[string]string{}
	if len(r.Allowed) > 0 {
		out[AnnotationAllowedTags] = strings.Join(r.Allowed, ",")
	}
	if len(r.Denied) > 0 {
		out[AnnotationDeniedTags] = strings.Join(r.Denied, ",")
	}
	return out
}

// FromAnnotations reads the rule an object's annotations carry.
func FromAnnotations(a map[string]string) Rule {
	return Rule{Allowed: split(a[AnnotationAllowedTags]), Denied: split(a[AnnotationDeniedTags])}
}

func split(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
