// Package validation checks objects of the gateway.tailscale.com API group. Every function reports all
// problems it finds, each at the full path of the offending field.
package validation

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/net/http/httpguts"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
)

// Accepted values of enumerated fields.
var (
	supportedProtocols = []gateway.Protocol{
		gateway.ProtocolHTTP, gateway.ProtocolHTTPS, gateway.ProtocolTCP,
		gateway.ProtocolUDP, gateway.ProtocolTLS, gateway.ProtocolGRPC,
	}
	supportedTagSelectorOperators = []gateway.TagSelectorOperator{
		gateway.TagSelectorOpIn, gateway.TagSelectorOpNotIn,
		gateway.TagSelectorOpExists, gateway.TagSelectorOpDoesNotExist,
	}
	supportedStrategies = []gateway.LoadBalancingStrategy{
		gateway.StrategyRoundRobin, gateway.StrategyLeastConnections,
		gateway.StrategyWeighted, gateway.StrategyFailover,
	}
	supportedConnectionTypes        = []string{"ingress", "egress", "bidirectional"}
	supportedProxyProtocols         = []string{string(gateway.ProtocolTCP), string(gateway.ProtocolUDP)}
	supportedFilterTypes            = []string{filterRequestHeaderModifier, filterResponseHeaderModifier, filterURLRewrite}
	supportedCoordinationStrategies = []string{"shared", "exclusive"}
	supportedGatewayStrategies      = []string{"round_robin", "least_request", "random", "ring_hash"}
	supportedTLSModes               = []string{"strict", "permissive", "disabled"}
	supportedLogLevels              = []string{"debug", "info", "warn", "error"}
)

const (
	filterRequestHeaderModifier  = "RequestHeaderModifier"
	filterResponseHeaderModifier = "ResponseHeaderModifier"
	filterURLRewrite             = "URLRewrite"

	gatewayAPIGroup      = "gateway.networking.k8s.io"
	gatewayKind          = "Gateway"
	tailscaleTailnetKind = "TailscaleTailnet"

	tagPrefix        = "tag:"
	svcPrefix        = "svc:"
	servicePlacehold = "{service}"
	maxTagKeyLength  = 63
)

var (
	// tagNameRE is the part of an ACL tag after "tag:".
	tagNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*$`)
	// tagKeyRE is a key matched by a TagSelector.
	tagKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	// emailLocalRE is the local part of an email-style tailnet name ("user" in "user@example.com").
	emailLocalRE = regexp.MustCompile("^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
	// vipPortRE is a VIP service port: "tcp:443", "udp:53" or a range "tcp:8000-8080".
	vipPortRE = regexp.MustCompile(`^(tcp|udp):([1-9][0-9]{0,4})(?:-([1-9][0-9]{0,4}))?$`)
	// placeholderRE finds template placeholders such as "{service}".
	placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)

	tailnetIPv4 = netip.MustParsePrefix("100.64.0.0/10")
	tailnetIPv6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

	quantityOne = resource.MustParse("1")
)

// ValidateTailscaleTailnet validates a TailscaleTailnet on creation.
func ValidateTailscaleTailnet(obj *gateway.TailscaleTailnet) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMeta(&obj.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleTailnetSpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleTailnetUpdate validates an update of a TailscaleTailnet.
func ValidateTailscaleTailnetUpdate(obj, old *gateway.TailscaleTailnet) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMetaUpdate(&obj.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleTailnetSpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleEndpoints validates a TailscaleEndpoints on creation.
func ValidateTailscaleEndpoints(obj *gateway.TailscaleEndpoints) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMeta(&obj.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleEndpointsSpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleEndpointsUpdate validates an update of a TailscaleEndpoints.
func ValidateTailscaleEndpointsUpdate(obj, old *gateway.TailscaleEndpoints) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMetaUpdate(&obj.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleEndpointsSpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleServices validates a TailscaleServices on creation.
func ValidateTailscaleServices(obj *gateway.TailscaleServices) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMeta(&obj.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleServicesSpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleServicesUpdate validates an update of a TailscaleServices.
func ValidateTailscaleServicesUpdate(obj, old *gateway.TailscaleServices) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMetaUpdate(&obj.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleServicesSpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleGateway validates a TailscaleGateway on creation.
func ValidateTailscaleGateway(obj *gateway.TailscaleGateway) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMeta(&obj.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleGatewaySpec(&obj.Spec, field.NewPath("spec"))...)
}

// ValidateTailscaleGatewayUpdate validates an update of a TailscaleGateway.
func ValidateTailscaleGatewayUpdate(obj, old *gateway.TailscaleGateway) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMetaUpdate(&obj.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateTailscaleGatewaySpec(&obj.Spec, field.NewPath("spec"))...)
}

// --- TailscaleTailnet ---

func validateTailscaleTailnetSpec(spec *gateway.TailscaleTailnetSpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateTailnetName(spec.Tailnet, fldPath.Child("tailnet"))...)
	if spec.OAuthSecretName != "" {
		for _, msg := range utilvalidation.IsDNS1123Subdomain(spec.OAuthSecretName) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("oauthSecretName"), spec.OAuthSecretName, msg))
		}
	}
	if spec.OAuthSecretNamespace != "" {
		for _, msg := range utilvalidation.IsDNS1123Label(spec.OAuthSecretNamespace) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("oauthSecretNamespace"), spec.OAuthSecretNamespace, msg))
		}
	}
	if spec.APIBaseURL != "" {
		allErrs = append(allErrs, ValidateAPIBaseURL(spec.APIBaseURL, fldPath.Child("apiBaseURL"))...)
	}
	allErrs = append(allErrs, validateTags(spec.Tags, fldPath.Child("tags"))...)
	allErrs = append(allErrs, validateTags(spec.ProxyTags, fldPath.Child("proxyTags"))...)
	allErrs = append(allErrs, validateAllowedNamespaces(spec.AllowedNamespaces, fldPath.Child("allowedNamespaces"))...)
	allErrs = append(allErrs, validateProxyPool(spec.ProxyPool, fldPath.Child("proxyPool"))...)
	return allErrs
}

// MaxProxyPoolReplicas bounds spec.proxyPool.replicas: each replica is a tailnet device.
const MaxProxyPoolReplicas = 16

// reservedPodKeyDomain is the label and annotation domain of the server's own pod metadata.
const reservedPodKeyDomain = "gateway.tailscale.com/"

// validateProxyPool checks a tailnet's proxy pool: the replica bound, the container resources
// (cpu and memory, limits at least requests), tolerations as core/v1 validates them, label and
// annotation syntax, no pod key the server sets itself, and the priority class name.
func validateProxyPool(p *gateway.ProxyPool, fldPath *field.Path) field.ErrorList {
	if p == nil {
		return nil
	}
	var allErrs field.ErrorList
	if p.Replicas < 0 || p.Replicas > MaxProxyPoolReplicas {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("replicas"), p.Replicas, fmt.Sprintf("must be between 0 and %d", MaxProxyPoolReplicas)))
	}
	if r := p.Resources; r != nil {
		resPath := fldPath.Child("resources")
		for _, list := range []struct {
			name string
			m    map[string]resource.Quantity
		}{{"requests", r.Requests}, {"limits", r.Limits}} {
			for _, name := range slices.Sorted(maps.Keys(list.m)) {
				q := list.m[name]
				path := resPath.Child(list.name).Key(name)
				if name != "cpu" && name != "memory" {
					allErrs = append(allErrs, field.NotSupported(path, name, []string{"cpu", "memory"}))
					continue
				}
				if q.Sign() < 0 {
					allErrs = append(allErrs, field.Invalid(path, q.String(), "must not be negative"))
				}
			}
		}
		for _, name := range slices.Sorted(maps.Keys(r.Limits)) {
			lim := r.Limits[name]
			if req, ok := r.Requests[name]; ok && lim.Cmp(req) < 0 {
				allErrs = append(allErrs, field.Invalid(resPath.Child("limits").Key(name), lim.String(), "must be at least the request "+req.String()))
			}
		}
	}
	for i, t := range p.Tolerations {
		allErrs = append(allErrs, validateToleration(t, fldPath.Child("tolerations").Index(i))...)
	}
	allErrs = append(allErrs, metav1validation.ValidateLabels(p.NodeSelector, fldPath.Child("nodeSelector"))...)
	allErrs = append(allErrs, metav1validation.ValidateLabels(p.PodLabels, fldPath.Child("podLabels"))...)
	for _, k := range slices.Sorted(maps.Keys(p.PodLabels)) {
		if strings.HasPrefix(k, reservedPodKeyDomain) || k == "app.kubernetes.io/name" {
			allErrs = append(allErrs, field.Forbidden(fldPath.Child("podLabels").Key(k), "the server sets this label on its proxies"))
		}
	}
	allErrs = append(allErrs, apivalidation.ValidateAnnotations(p.PodAnnotations, fldPath.Child("podAnnotations"))...)
	for _, k := range slices.Sorted(maps.Keys(p.PodAnnotations)) {
		if strings.HasPrefix(k, reservedPodKeyDomain) {
			allErrs = append(allErrs, field.Forbidden(fldPath.Child("podAnnotations").Key(k), "the server sets annotations of this domain on its proxies"))
		}
	}
	if p.PriorityClassName != "" {
		for _, msg := range utilvalidation.IsDNS1123Subdomain(p.PriorityClassName) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("priorityClassName"), p.PriorityClassName, msg))
		}
	}
	return allErrs
}

// validateToleration checks t as core/v1 does: a qualified key (required unless the operator
// is Exists), Equal or Exists, no value with Exists, a known effect, and tolerationSeconds
// only with NoExecute.
func validateToleration(t gateway.ProxyToleration, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if t.Key != "" {
		for _, msg := range utilvalidation.IsQualifiedName(t.Key) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("key"), t.Key, msg))
		}
	}
	switch t.Operator {
	case "", "Equal":
		if t.Key == "" {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("operator"), t.Operator, "an empty key requires operator Exists"))
		}
		for _, msg := range utilvalidation.IsValidLabelValue(t.Value) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("value"), t.Value, msg))
		}
	case "Exists":
		if t.Value != "" {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("value"), t.Value, "must be empty with operator Exists"))
		}
	default:
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("operator"), t.Operator, []string{"Equal", "Exists"}))
	}
	switch t.Effect {
	case "", "NoSchedule", "PreferNoSchedule", "NoExecute":
	default:
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("effect"), t.Effect, []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}))
	}
	if t.TolerationSeconds != nil && t.Effect != "NoExecute" {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("tolerationSeconds"), *t.TolerationSeconds, "only with effect NoExecute"))
	}
	return allErrs
}

// validateAllowedNamespaces requires the selector with from: Selector and the names with from:
// Names, and refuses either with another from, where it would be silently ignored.
func validateAllowedNamespaces(an *gateway.AllowedNamespaces, fldPath *field.Path) field.ErrorList {
	if an == nil {
		return nil
	}
	var allErrs field.ErrorList
	selPath, namesPath := fldPath.Child("selector"), fldPath.Child("names")
	switch an.From {
	case gateway.NamespacesFromAll:
	case gateway.NamespacesFromSelector:
		if an.Selector == nil {
			allErrs = append(allErrs, field.Required(selPath, "required with from: Selector"))
		}
	case gateway.NamespacesFromNames:
		if len(an.Names) == 0 {
			allErrs = append(allErrs, field.Required(namesPath, "required with from: Names"))
		}
	default:
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("from"), an.From,
			[]gateway.NamespacesFrom{gateway.NamespacesFromAll, gateway.NamespacesFromSelector, gateway.NamespacesFromNames}))
	}
	if an.Selector != nil {
		if an.From != gateway.NamespacesFromSelector {
			allErrs = append(allErrs, field.Forbidden(selPath, "only used with from: Selector"))
		}
		allErrs = append(allErrs, metav1validation.ValidateLabelSelector(an.Selector, metav1validation.LabelSelectorValidationOptions{}, selPath)...)
	}
	if len(an.Names) > 0 && an.From != gateway.NamespacesFromNames {
		allErrs = append(allErrs, field.Forbidden(namesPath, "only used with from: Names"))
	}
	seen := make(map[string]bool, len(an.Names))
	for i, n := range an.Names {
		for _, msg := range utilvalidation.IsDNS1123Label(n) {
			allErrs = append(allErrs, field.Invalid(namesPath.Index(i), n, msg))
		}
		if seen[n] {
			allErrs = append(allErrs, field.Duplicate(namesPath.Index(i), n))
		}
		seen[n] = true
	}
	return allErrs
}

// validateTailnetName accepts "-" (the credentials' own tailnet), a DNS subdomain such as
// "company.ts.net", or an email-style tailnet name such as "user@example.com".
func validateTailnetName(name string, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, `a tailnet name, a tailnet domain or "-" is required`)}
	}
	if name == gateway.DefaultTailnet || len(utilvalidation.IsDNS1123Subdomain(name)) == 0 {
		return nil
	}
	if local, domain, ok := strings.Cut(name, "@"); ok && emailLocalRE.MatchString(local) &&
		len(utilvalidation.IsDNS1123Subdomain(domain)) == 0 {
		return nil
	}
	return field.ErrorList{field.Invalid(fldPath, name,
		`must be "-", a DNS subdomain (e.g. "company.ts.net" or the name of a TailscaleTailnet) or an email-style tailnet name (e.g. "user@example.com")`)}
}

// --- TailscaleEndpoints ---

func validateTailscaleEndpointsSpec(spec *gateway.TailscaleEndpointsSpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateTailnetName(spec.Tailnet, fldPath.Child("tailnet"))...)

	if len(spec.Endpoints) == 0 && len(spec.TagSelectors) == 0 && spec.Proxy == nil && len(spec.Ports) == 0 {
		allErrs = append(allErrs, field.Required(fldPath.Child("endpoints"),
			"at least one of spec.endpoints, spec.tagSelectors or spec.proxy must be set"))
	}

	endpointNames := make(map[string]bool, len(spec.Endpoints))
	for i := range spec.Endpoints {
		idxPath := fldPath.Child("endpoints").Index(i)
		allErrs = append(allErrs, validateEndpoint(&spec.Endpoints[i], idxPath)...)
		if name := spec.Endpoints[i].Name; name != "" {
			if endpointNames[name] {
				allErrs = append(allErrs, field.Duplicate(idxPath.Child("name"), name))
			}
			endpointNames[name] = true
		}
	}

	if sd := spec.ServiceDiscovery; sd != nil {
		allErrs = append(allErrs, validateServiceDiscoveryConfig(sd, endpointNames, len(spec.Endpoints) > 0, fldPath.Child("serviceDiscovery"))...)
	}
	for i := range spec.TagSelectors {
		allErrs = append(allErrs, validateTagSelector(&spec.TagSelectors[i], fldPath.Child("tagSelectors").Index(i))...)
	}
	allErrs = append(allErrs, validateTags(spec.Tags, fldPath.Child("tags"))...)
	if spec.Proxy != nil {
		allErrs = append(allErrs, validateProxy(spec.Proxy, fldPath.Child("proxy"))...)
	}
	allErrs = append(allErrs, validatePortsBesideProxy(spec.Ports, spec.Proxy, fldPath.Child("ports"))...)
	return allErrs
}

func validateEndpoint(ep *gateway.TailscaleEndpoint, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if ep.Name == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("name"), ""))
	} else {
		for _, msg := range utilvalidation.IsDNS1123Label(ep.Name) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("name"), ep.Name, msg))
		}
	}

	if ep.TailscaleIP == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("tailscaleIP"), ""))
	} else if addr, err := netip.ParseAddr(ep.TailscaleIP); err != nil {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("tailscaleIP"), ep.TailscaleIP, "must be a valid IP address"))
	} else if !tailnetIPv4.Contains(addr) && !tailnetIPv6.Contains(addr) {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("tailscaleIP"), ep.TailscaleIP,
			fmt.Sprintf("must be a tailnet address in %s or %s", tailnetIPv4, tailnetIPv6)))
	}

	if ep.TailscaleFQDN == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("tailscaleFQDN"), ""))
	} else {
		for _, msg := range utilvalidation.IsDNS1123Subdomain(strings.TrimSuffix(ep.TailscaleFQDN, ".")) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("tailscaleFQDN"), ep.TailscaleFQDN, msg))
		}
	}

	allErrs = append(allErrs, validatePort(ep.Port, fldPath.Child("port"))...)

	if ep.Protocol == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("protocol"), ""))
	} else {
		allErrs = append(allErrs, validateProtocol(ep.Protocol, fldPath.Child("protocol"))...)
	}

	if ep.ExternalTarget != "" {
		allErrs = append(allErrs, validateHostPort(ep.ExternalTarget, fldPath.Child("externalTarget"))...)
	}
	allErrs = append(allErrs, validateHealthCheck(ep.HealthCheck, fldPath.Child("healthCheck"))...)
	allErrs = append(allErrs, metav1validation.ValidateLabels(ep.Metadata, fldPath.Child("metadata"))...)
	allErrs = append(allErrs, validateUpstreamTLS(ep.TLS, ep.Protocol, fldPath.Child("tls"))...)
	return allErrs
}

// maxCACertificateBytes bounds an endpoint's CA bundle.
const maxCACertificateBytes = 64 << 10

// validateUpstreamTLS validates an endpoint's tls: only for HTTPS and TLS endpoints, with a
// caCertificate of PEM certificates only.
func validateUpstreamTLS(t *gateway.UpstreamTLSConfig, protocol gateway.Protocol, fldPath *field.Path) field.ErrorList {
	if t == nil {
		return nil
	}
	var allErrs field.ErrorList
	if protocol != gateway.ProtocolHTTPS && protocol != gateway.ProtocolTLS {
		allErrs = append(allErrs, field.Forbidden(fldPath, "only for protocol HTTPS or TLS: Envoy originates TLS to those endpoints only"))
	}
	if t.CACertificate == "" {
		return allErrs
	}
	caPath := fldPath.Child("caCertificate")
	if len(t.CACertificate) > maxCACertificateBytes {
		return append(allErrs, field.TooLong(caPath, "", maxCACertificateBytes))
	}
	if msg := checkCertificatesPEM([]byte(t.CACertificate)); msg != "" {
		allErrs = append(allErrs, field.Invalid(caPath, "<PEM>", msg))
	}
	return allErrs
}

// checkCertificatesPEM returns why data is not a bundle of PEM X.509 certificates ("" when it
// is). Only block types are named: a private key pasted by mistake is not echoed.
func checkCertificatesPEM(data []byte) string {
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Sprintf("holds a %q PEM block: only CERTIFICATE blocks are allowed", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Sprintf("certificate %d does not parse: %v", n+1, err)
		}
		n++
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return "holds data that is not PEM"
	}
	if n == 0 {
		return "must hold at least one PEM CERTIFICATE block"
	}
	return ""
}

// validateHealthCheck validates a health check of an endpoint, a TailscaleServices or a TailscaleGateway.
func validateHealthCheck(hc *gateway.HealthCheckConfig, fldPath *field.Path) field.ErrorList {
	if hc == nil {
		return nil
	}
	var allErrs field.ErrorList
	if hc.Type != "" {
		allErrs = append(allErrs, validateProtocol(hc.Type, fldPath.Child("type"))...)
	}
	if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("path"), hc.Path, "must start with '/'"))
	}
	allErrs = append(allErrs, validatePositiveDuration(hc.Interval, fldPath.Child("interval"))...)
	allErrs = append(allErrs, validatePositiveDuration(hc.Timeout, fldPath.Child("timeout"))...)
	if hc.Interval != nil && hc.Timeout != nil && hc.Interval.Duration > 0 && hc.Timeout.Duration > 0 &&
		hc.Timeout.Duration >= hc.Interval.Duration {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("timeout"), hc.Timeout.Duration.String(),
			fmt.Sprintf("must be less than interval (%s)", hc.Interval.Duration)))
	}
	allErrs = append(allErrs, validateMinimum(hc.HealthyThreshold, 1, fldPath.Child("healthyThreshold"))...)
	allErrs = append(allErrs, validateMinimum(hc.UnhealthyThreshold, 1, fldPath.Child("unhealthyThreshold"))...)
	if hc.ExpectedStatus != nil {
		for _, msg := range utilvalidation.IsInRange(int(*hc.ExpectedStatus), 100, 599) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("expectedStatus"), *hc.ExpectedStatus, msg))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(hc.Headers)) {
		keyPath := fldPath.Child("headers").Key(name)
		if !httpguts.ValidHeaderFieldName(name) {
			allErrs = append(allErrs, field.Invalid(keyPath, name, "must be a valid HTTP header name"))
		}
		if !httpguts.ValidHeaderFieldValue(hc.Headers[name]) {
			allErrs = append(allErrs, field.Invalid(keyPath, hc.Headers[name], "must be a valid HTTP header value"))
		}
	}
	return allErrs
}

func validateServiceDiscoveryConfig(sd *gateway.ServiceDiscoveryConfig, endpointNames map[string]bool, checkTargets bool, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	seen := make(map[string]bool, len(sd.VIPServices))
	for i, vip := range sd.VIPServices {
		idxPath := fldPath.Child("vipServices").Index(i)
		if vip.Name == "" {
			allErrs = append(allErrs, field.Required(idxPath.Child("name"), ""))
		} else {
			// "web" and "svc:web" name the same service.
			label := strings.TrimPrefix(vip.Name, svcPrefix)
			if len(utilvalidation.IsDNS1123Label(label)) > 0 {
				allErrs = append(allErrs, field.Invalid(idxPath.Child("name"), vip.Name,
					`must be a DNS label ("web") or a DNS label prefixed with "svc:" ("svc:web")`))
			} else if seen[label] {
				allErrs = append(allErrs, field.Duplicate(idxPath.Child("name"), vip.Name))
			}
			seen[label] = true
		}
		allErrs = append(allErrs, validatePort(vip.Port, idxPath.Child("port"))...)
		if vip.TargetEndpoint == "" {
			allErrs = append(allErrs, field.Required(idxPath.Child("targetEndpoint"), ""))
		} else if checkTargets && !endpointNames[vip.TargetEndpoint] {
			allErrs = append(allErrs, field.NotFound(idxPath.Child("targetEndpoint"), vip.TargetEndpoint))
		}
	}
	return allErrs
}

func validateTagSelector(ts *gateway.TagSelector, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	switch {
	case ts.Key == "":
		allErrs = append(allErrs, field.Required(fldPath.Child("key"), ""))
	case len(ts.Key) > maxTagKeyLength:
		allErrs = append(allErrs, field.TooLong(fldPath.Child("key"), ts.Key, maxTagKeyLength))
	case !tagKeyRE.MatchString(ts.Key):
		allErrs = append(allErrs, field.Invalid(fldPath.Child("key"), ts.Key,
			"must consist of letters, digits, '-', '_' or '.', and start with a letter or digit"))
	}
	switch ts.Operator {
	case "":
		allErrs = append(allErrs, field.Required(fldPath.Child("operator"), ""))
	case gateway.TagSelectorOpIn, gateway.TagSelectorOpNotIn:
		if len(ts.Values) == 0 {
			allErrs = append(allErrs, field.Required(fldPath.Child("values"),
				fmt.Sprintf("must be non-empty when operator is %s", ts.Operator)))
		}
	case gateway.TagSelectorOpExists, gateway.TagSelectorOpDoesNotExist:
		if len(ts.Values) > 0 {
			allErrs = append(allErrs, field.Forbidden(fldPath.Child("values"),
				fmt.Sprintf("must be empty when operator is %s", ts.Operator)))
		}
	default:
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("operator"), ts.Operator, supportedTagSelectorOperators))
	}
	for i, v := range ts.Values {
		if v == "" {
			allErrs = append(allErrs, field.Required(fldPath.Child("values").Index(i), ""))
		}
	}
	return allErrs
}

func validateProxy(p *gateway.ProxyConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateMinimum(p.Replicas, 0, fldPath.Child("replicas"))...)
	if p.ConnectionType != "" && !slices.Contains(supportedConnectionTypes, p.ConnectionType) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("connectionType"), p.ConnectionType, supportedConnectionTypes))
	}
	return append(allErrs, validateProxyPorts(p.Ports, fldPath.Child("ports"))...)
}

// validatePortsBesideProxy validates ports written beside proxy (as the spec's YAML does):
// the same as proxy.ports, of which only one may be set.
func validatePortsBesideProxy(ports []gateway.ProxyPort, proxy *gateway.ProxyConfig, fldPath *field.Path) field.ErrorList {
	if len(ports) == 0 {
		return nil
	}
	if proxy != nil && len(proxy.Ports) > 0 {
		return field.ErrorList{field.Forbidden(fldPath, "set ports or proxy.ports, not both")}
	}
	return validateProxyPorts(ports, fldPath)
}

func validateProxyPorts(ports []gateway.ProxyPort, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	seen := make(map[gateway.ProxyPort]bool, len(ports))
	for i, port := range ports {
		idxPath := fldPath.Index(i)
		allErrs = append(allErrs, validatePort(port.Port, idxPath.Child("port"))...)
		if port.Protocol != "" && !slices.Contains(supportedProxyProtocols, port.Protocol) {
			allErrs = append(allErrs, field.NotSupported(idxPath.Child("protocol"), port.Protocol, supportedProxyProtocols))
		}
		key := gateway.ProxyPort{Port: port.Port, Protocol: cmp.Or(port.Protocol, string(gateway.ProtocolTCP))}
		if seen[key] {
			allErrs = append(allErrs, field.Duplicate(idxPath, fmt.Sprintf("%d/%s", key.Port, key.Protocol)))
		}
		seen[key] = true
	}
	return allErrs
}

// --- TailscaleServices ---

func validateTailscaleServicesSpec(spec *gateway.TailscaleServicesSpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	selPath := fldPath.Child("selector")
	if spec.Selector == nil {
		allErrs = append(allErrs, field.Required(selPath, "a label selector of TailscaleEndpoints is required"))
	} else {
		allErrs = append(allErrs, metav1validation.ValidateLabelSelector(spec.Selector, metav1validation.LabelSelectorValidationOptions{}, selPath)...)
		if len(spec.Selector.MatchLabels) == 0 && len(spec.Selector.MatchExpressions) == 0 {
			allErrs = append(allErrs, field.Invalid(selPath, spec.Selector,
				"must not be empty: an empty selector selects every TailscaleEndpoints in the namespace"))
		}
	}
	if spec.VIPService != nil {
		allErrs = append(allErrs, validateVIPServiceSpec(spec.VIPService, fldPath.Child("vipService"))...)
	}
	if spec.LoadBalancing != nil {
		allErrs = append(allErrs, validateLoadBalancing(spec.LoadBalancing, fldPath.Child("loadBalancing"))...)
	}
	if spec.ServiceDiscovery != nil {
		allErrs = append(allErrs, validateServiceDiscoverySpec(spec.ServiceDiscovery, fldPath.Child("serviceDiscovery"))...)
	}
	if spec.EndpointTemplate != nil {
		allErrs = append(allErrs, validateEndpointTemplate(spec.EndpointTemplate, spec.Selector, fldPath.Child("endpointTemplate"))...)
	}
	return allErrs
}

func validateVIPServiceSpec(vip *gateway.VIPServiceSpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if vip.Name == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("name"), ""))
	} else {
		allErrs = append(allErrs, validateServiceName(vip.Name, fldPath.Child("name"))...)
	}
	seen := make(map[string]bool, len(vip.Ports))
	for i, p := range vip.Ports {
		idxPath := fldPath.Child("ports").Index(i)
		allErrs = append(allErrs, validateVIPPort(p, idxPath)...)
		if seen[p] {
			allErrs = append(allErrs, field.Duplicate(idxPath, p))
		}
		seen[p] = true
	}
	allErrs = append(allErrs, validateTags(vip.Tags, fldPath.Child("tags"))...)
	allErrs = append(allErrs, apivalidation.ValidateAnnotations(vip.Annotations, fldPath.Child("annotations"))...)
	return allErrs
}

// validateVIPPort accepts "tcp:N", "udp:N" and ranges "tcp:N-M" with 1 <= N <= M <= 65535.
func validateVIPPort(p string, fldPath *field.Path) field.ErrorList {
	const format = `must be "tcp:N", "udp:N" or a range such as "tcp:N-M", with ports 1-65535`
	m := vipPortRE.FindStringSubmatch(p)
	if m == nil {
		return field.ErrorList{field.Invalid(fldPath, p, format)}
	}
	lo, _ := strconv.Atoi(m[2])
	hi := lo
	if m[3] != "" {
		hi, _ = strconv.Atoi(m[3])
	}
	if lo > 65535 || hi > 65535 {
		return field.ErrorList{field.Invalid(fldPath, p, format)}
	}
	if lo > hi {
		return field.ErrorList{field.Invalid(fldPath, p, "the first port of a range must not exceed the last")}
	}
	return nil
}

func validateLoadBalancing(lb *gateway.LoadBalancingConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if lb.Strategy != "" && !slices.Contains(supportedStrategies, lb.Strategy) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("strategy"), lb.Strategy, supportedStrategies))
	}
	allErrs = append(allErrs, validateHealthCheck(lb.HealthCheck, fldPath.Child("healthCheck"))...)

	positive := false
	for _, name := range slices.Sorted(maps.Keys(lb.Weights)) {
		keyPath := fldPath.Child("weights").Key(name)
		for _, msg := range utilvalidation.IsDNS1123Label(name) {
			allErrs = append(allErrs, field.Invalid(keyPath, name, msg))
		}
		w := lb.Weights[name]
		allErrs = append(allErrs, apivalidation.ValidateNonnegativeField(int64(w), keyPath)...)
		positive = positive || w > 0
	}
	if lb.Strategy == gateway.StrategyWeighted {
		if len(lb.Weights) == 0 {
			allErrs = append(allErrs, field.Required(fldPath.Child("weights"), "required when strategy is weighted"))
		} else if !positive {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("weights"), lb.Weights,
				"at least one weight must be greater than zero when strategy is weighted"))
		}
	}

	fcPath := fldPath.Child("failoverConfig")
	if lb.FailoverConfig != nil {
		allErrs = append(allErrs, validateFailoverConfig(lb.FailoverConfig, lb.Strategy == gateway.StrategyFailover, fcPath)...)
	} else if lb.Strategy == gateway.StrategyFailover {
		allErrs = append(allErrs, field.Required(fcPath, "required when strategy is failover"))
	}
	return allErrs
}

func validateFailoverConfig(fc *gateway.FailoverConfig, failover bool, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if failover && len(fc.PrimaryEndpoints) == 0 {
		allErrs = append(allErrs, field.Required(fldPath.Child("primaryEndpoints"), "required when strategy is failover"))
	}
	primary := make(map[string]bool, len(fc.PrimaryEndpoints))
	for i, name := range fc.PrimaryEndpoints {
		allErrs = append(allErrs, validateEndpointRef(name, primary, fldPath.Child("primaryEndpoints").Index(i))...)
		primary[name] = true
	}
	secondary := make(map[string]bool, len(fc.SecondaryEndpoints))
	for i, name := range fc.SecondaryEndpoints {
		idxPath := fldPath.Child("secondaryEndpoints").Index(i)
		allErrs = append(allErrs, validateEndpointRef(name, secondary, idxPath)...)
		if name != "" && primary[name] {
			allErrs = append(allErrs, field.Invalid(idxPath, name, "must not also be listed in primaryEndpoints"))
		}
		secondary[name] = true
	}
	if fc.FailbackDelay != nil && fc.FailbackDelay.Duration < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("failbackDelay"), fc.FailbackDelay.Duration.String(), "must not be negative"))
	}
	return allErrs
}

// validateEndpointRef checks one endpoint name of a failover tier, and that it is not already in seen.
func validateEndpointRef(name string, seen map[string]bool, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "")}
	}
	var allErrs field.ErrorList
	for _, msg := range utilvalidation.IsDNS1123Label(name) {
		allErrs = append(allErrs, field.Invalid(fldPath, name, msg))
	}
	if seen[name] {
		allErrs = append(allErrs, field.Duplicate(fldPath, name))
	}
	return allErrs
}

func validateServiceDiscoverySpec(sd *gateway.ServiceDiscoverySpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if sel := sd.VIPServiceSelector; sel != nil {
		selPath := fldPath.Child("vipServiceSelector")
		allErrs = append(allErrs, validateTags(sel.Tags, selPath.Child("tags"))...)
		seen := make(map[string]bool, len(sel.ServiceNames))
		for i, name := range sel.ServiceNames {
			idxPath := selPath.Child("serviceNames").Index(i)
			if name == "" {
				allErrs = append(allErrs, field.Required(idxPath, ""))
				continue
			}
			allErrs = append(allErrs, validateServiceName(name, idxPath)...)
			if seen[name] {
				allErrs = append(allErrs, field.Duplicate(idxPath, name))
			}
			seen[name] = true
		}
	}
	seen := make(map[string]bool, len(sd.ExternalServices))
	for i := range sd.ExternalServices {
		es := &sd.ExternalServices[i]
		idxPath := fldPath.Child("externalServices").Index(i)
		if es.Name == "" {
			allErrs = append(allErrs, field.Required(idxPath.Child("name"), ""))
		} else {
			for _, msg := range utilvalidation.IsDNS1123Label(es.Name) {
				allErrs = append(allErrs, field.Invalid(idxPath.Child("name"), es.Name, msg))
			}
			if seen[es.Name] {
				allErrs = append(allErrs, field.Duplicate(idxPath.Child("name"), es.Name))
			}
			seen[es.Name] = true
		}
		if es.Address == "" {
			allErrs = append(allErrs, field.Required(idxPath.Child("address"), ""))
		} else if !isHostOrIP(es.Address) {
			allErrs = append(allErrs, field.Invalid(idxPath.Child("address"), es.Address, "must be a DNS subdomain or an IP address"))
		}
		allErrs = append(allErrs, validatePort(es.Port, idxPath.Child("port"))...)
		if es.Protocol != "" {
			allErrs = append(allErrs, validateProtocol(es.Protocol, idxPath.Child("protocol"))...)
		}
		allErrs = append(allErrs, validateMinimum(es.Weight, 0, idxPath.Child("weight"))...)
	}
	return allErrs
}

func validateEndpointTemplate(tmpl *gateway.EndpointTemplate, selector *metav1.LabelSelector, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateTailnetName(tmpl.Tailnet, fldPath.Child("tailnet"))...)
	allErrs = append(allErrs, validateTags(tmpl.Tags, fldPath.Child("tags"))...)
	if tmpl.Proxy != nil {
		allErrs = append(allErrs, validateProxy(tmpl.Proxy, fldPath.Child("proxy"))...)
	}
	allErrs = append(allErrs, validatePortsBesideProxy(tmpl.Ports, tmpl.Proxy, fldPath.Child("ports"))...)
	allErrs = append(allErrs, metav1validation.ValidateLabels(tmpl.Labels, fldPath.Child("labels"))...)
	return allErrs
}

// UnselectedTemplate returns why the TailscaleEndpoints spec.endpointTemplate provisions would
// not be selected by spec.selector ("" when they would be, or when either is absent or invalid:
// an invalid selector is reported by validation). spec/tailscale-services.md's Complete Example
// is such a spec; it is accepted with this as a warning and a status condition.
func UnselectedTemplate(spec *gateway.TailscaleServicesSpec) string {
	tmpl, selector := spec.EndpointTemplate, spec.Selector
	if tmpl == nil || selector == nil || (len(selector.MatchLabels) == 0 && len(selector.MatchExpressions) == 0) {
		return ""
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil || sel.Matches(labels.Set(tmpl.Labels)) {
		return ""
	}
	return fmt.Sprintf("spec.endpointTemplate.labels (%s) do not match spec.selector (%s): the TailscaleEndpoints the template provisions would not be selected, so it would serve nothing",
		labels.Set(tmpl.Labels), sel)
}

// TailscaleServicesWarnings are the admission warnings of a TailscaleServices.
func TailscaleServicesWarnings(o *gateway.TailscaleServices) []string {
	if msg := UnselectedTemplate(&o.Spec); msg != "" {
		return []string{msg}
	}
	return nil
}

// --- TailscaleGateway ---

func validateTailscaleGatewaySpec(spec *gateway.TailscaleGatewaySpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateGatewayRef(&spec.GatewayRef, fldPath.Child("gatewayRef"))...)

	tailnetsPath := fldPath.Child("tailnets")
	if len(spec.Tailnets) == 0 {
		allErrs = append(allErrs, field.Required(tailnetsPath, "at least one tailnet is required"))
	}
	seen := make(map[string]bool, len(spec.Tailnets))
	for i := range spec.Tailnets {
		idxPath := tailnetsPath.Index(i)
		allErrs = append(allErrs, validateTailnetConfiguration(&spec.Tailnets[i], idxPath)...)
		if name := spec.Tailnets[i].Name; name != "" {
			if seen[name] {
				allErrs = append(allErrs, field.Duplicate(idxPath.Child("name"), name))
			}
			seen[name] = true
		}
	}

	if sc := spec.ServiceCoordination; sc != nil && sc.Strategy != "" && !slices.Contains(supportedCoordinationStrategies, sc.Strategy) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("serviceCoordination", "strategy"), sc.Strategy, supportedCoordinationStrategies))
	}
	if spec.LoadBalancing != nil {
		allErrs = append(allErrs, validateGatewayLoadBalancing(spec.LoadBalancing, fldPath.Child("loadBalancing"))...)
	}
	if spec.Security != nil {
		allErrs = append(allErrs, validateSecurity(spec.Security, fldPath.Child("security"))...)
	}
	if spec.Observability != nil {
		allErrs = append(allErrs, validateObservability(spec.Observability, fldPath.Child("observability"))...)
	}
	return allErrs
}

func validateGatewayRef(ref *gateway.LocalPolicyTargetReference, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateRefName(ref.Name, fldPath.Child("name"))...)
	if ref.Namespace != "" {
		for _, msg := range apivalidation.ValidateNamespaceName(ref.Namespace, false) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("namespace"), ref.Namespace, msg))
		}
	}
	if ref.Group != "" && ref.Group != gatewayAPIGroup {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("group"), ref.Group, []string{gatewayAPIGroup}))
	}
	if ref.Kind != "" && ref.Kind != gatewayKind {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("kind"), ref.Kind, []string{gatewayKind}))
	}
	return allErrs
}

func validateTailnetConfiguration(tc *gateway.TailnetConfiguration, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if tc.Name == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("name"), ""))
	} else {
		for _, msg := range utilvalidation.IsDNS1123Label(tc.Name) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("name"), tc.Name, msg))
		}
	}

	refPath := fldPath.Child("tailscaleTailnetRef")
	ref := &tc.TailscaleTailnetRef
	allErrs = append(allErrs, validateRefName(ref.Name, refPath.Child("name"))...)
	if ref.Group != "" && ref.Group != gateway.GroupName {
		allErrs = append(allErrs, field.NotSupported(refPath.Child("group"), ref.Group, []string{gateway.GroupName}))
	}
	if ref.Kind != "" && ref.Kind != tailscaleTailnetKind {
		allErrs = append(allErrs, field.NotSupported(refPath.Child("kind"), ref.Kind, []string{tailscaleTailnetKind}))
	}
	if ref.Namespace != "" {
		allErrs = append(allErrs, field.Forbidden(refPath.Child("namespace"), "TailscaleTailnet is cluster-scoped"))
	}

	allErrs = append(allErrs, validateMinimum(tc.Priority, 0, fldPath.Child("priority"))...)

	if rg := tc.RouteGeneration; rg != nil {
		rgPath := fldPath.Child("routeGeneration")
		if rg.Ingress != nil {
			allErrs = append(allErrs, validateIngressRouteConfig(rg.Ingress, rgPath.Child("ingress"))...)
		}
		if rg.Egress != nil {
			allErrs = append(allErrs, validateEgressRouteConfig(rg.Egress, rgPath.Child("egress"))...)
		}
	}
	return allErrs
}

func validateRefName(name string, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "")}
	}
	var allErrs field.ErrorList
	for _, msg := range apivalidation.NameIsDNSSubdomain(name, false) {
		allErrs = append(allErrs, field.Invalid(fldPath, name, msg))
	}
	return allErrs
}

func validateIngressRouteConfig(in *gateway.IngressRouteConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if in.HostPattern != "" {
		allErrs = append(allErrs, validateHostTemplate(in.HostPattern, true, fldPath.Child("hostPattern"))...)
	}
	if in.PathPrefix != "" {
		allErrs = append(allErrs, validatePathTemplate(in.PathPrefix, false, fldPath.Child("pathPrefix"))...)
	}
	if be := in.DefaultBackend; be != nil {
		bePath := fldPath.Child("defaultBackend")
		allErrs = append(allErrs, validateMinimum(be.Weight, 0, bePath.Child("weight"))...)
		allErrs = append(allErrs, validateHealthCheck(be.HealthCheck, bePath.Child("healthCheck"))...)
	}
	for i := range in.Filters {
		allErrs = append(allErrs, validateHTTPRouteFilter(&in.Filters[i], fldPath.Child("filters").Index(i))...)
	}
	return allErrs
}

func validateHTTPRouteFilter(f *gateway.HTTPRouteFilter, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	members := []struct {
		typ   string
		json  string
		isSet bool
	}{
		{filterRequestHeaderModifier, "requestHeaderModifier", f.RequestHeaderModifier != nil},
		{filterResponseHeaderModifier, "responseHeaderModifier", f.ResponseHeaderModifier != nil},
		{filterURLRewrite, "urlRewrite", f.URLRewrite != nil},
	}
	switch {
	case f.Type == "":
		allErrs = append(allErrs, field.Required(fldPath.Child("type"), ""))
	case !slices.Contains(supportedFilterTypes, f.Type):
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("type"), f.Type, supportedFilterTypes))
	default:
		for _, m := range members {
			switch {
			case m.typ == f.Type && !m.isSet:
				allErrs = append(allErrs, field.Required(fldPath.Child(m.json), "must be set when type is "+f.Type))
			case m.typ != f.Type && m.isSet:
				allErrs = append(allErrs, field.Forbidden(fldPath.Child(m.json), "must not be set when type is "+f.Type))
			}
		}
	}
	if f.RequestHeaderModifier != nil {
		allErrs = append(allErrs, validateHeaderFilter(f.RequestHeaderModifier, fldPath.Child("requestHeaderModifier"))...)
	}
	if f.ResponseHeaderModifier != nil {
		allErrs = append(allErrs, validateHeaderFilter(f.ResponseHeaderModifier, fldPath.Child("responseHeaderModifier"))...)
	}
	if rw := f.URLRewrite; rw != nil {
		rwPath := fldPath.Child("urlRewrite")
		if rw.Hostname != "" {
			allErrs = append(allErrs, validateHostTemplate(rw.Hostname, false, rwPath.Child("hostname"))...)
		}
		if rw.ReplacePrefixMatch != "" {
			allErrs = append(allErrs, validatePathTemplate(rw.ReplacePrefixMatch, true, rwPath.Child("replacePrefixMatch"))...)
		}
	}
	return allErrs
}

func validateHeaderFilter(hf *gateway.HTTPHeaderFilter, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for _, list := range []struct {
		name    string
		headers []gateway.HTTPHeader
	}{{"set", hf.Set}, {"add", hf.Add}} {
		seen := make(map[string]bool, len(list.headers))
		for i, h := range list.headers {
			idxPath := fldPath.Child(list.name).Index(i)
			allErrs = append(allErrs, validateHeaderName(h.Name, seen, idxPath.Child("name"))...)
			// Gateway API refuses an empty value (MinLength 1) in the routes generated from it.
			if h.Value == "" {
				allErrs = append(allErrs, field.Required(idxPath.Child("value"), ""))
			} else if !httpguts.ValidHeaderFieldValue(h.Value) {
				allErrs = append(allErrs, field.Invalid(idxPath.Child("value"), h.Value, "must be a valid HTTP header value"))
			}
		}
	}
	seen := make(map[string]bool, len(hf.Remove))
	for i, name := range hf.Remove {
		allErrs = append(allErrs, validateHeaderName(name, seen, fldPath.Child("remove").Index(i))...)
	}
	return allErrs
}

// validateHeaderName checks an HTTP header name and that it (case-insensitively) is not already in seen.
func validateHeaderName(name string, seen map[string]bool, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "")}
	}
	var allErrs field.ErrorList
	if !httpguts.ValidHeaderFieldName(name) {
		allErrs = append(allErrs, field.Invalid(fldPath, name, "must be a valid HTTP header name"))
	}
	key := strings.ToLower(name)
	if seen[key] {
		allErrs = append(allErrs, field.Duplicate(fldPath, name))
	}
	seen[key] = true
	return allErrs
}

func validateEgressRouteConfig(eg *gateway.EgressRouteConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if eg.HostPattern != "" {
		allErrs = append(allErrs, validateHostTemplate(eg.HostPattern, true, fldPath.Child("hostPattern"))...)
	}
	if eg.PathPrefix != "" {
		allErrs = append(allErrs, validatePathTemplate(eg.PathPrefix, true, fldPath.Child("pathPrefix"))...)
	}
	for i, rule := range eg.RewriteRules {
		idxPath := fldPath.Child("rewriteRules").Index(i)
		if rule.From == "" {
			allErrs = append(allErrs, field.Required(idxPath.Child("from"), ""))
		} else {
			allErrs = append(allErrs, validatePathTemplate(rule.From, true, idxPath.Child("from"))...)
		}
		if rule.To == "" {
			allErrs = append(allErrs, field.Required(idxPath.Child("to"), ""))
		} else {
			allErrs = append(allErrs, validatePathTemplate(rule.To, true, idxPath.Child("to"))...)
		}
	}
	allErrs = append(allErrs, validatePositiveDuration(eg.Timeout, fldPath.Child("timeout"))...)
	if rp := eg.RetryPolicy; rp != nil {
		rpPath := fldPath.Child("retryPolicy")
		allErrs = append(allErrs, validateMinimum(rp.NumRetries, 0, rpPath.Child("numRetries"))...)
		allErrs = append(allErrs, validatePositiveDuration(rp.PerTryTimeout, rpPath.Child("perTryTimeout"))...)
		allErrs = append(allErrs, validatePositiveDuration(rp.BackoffBaseInterval, rpPath.Child("backoffBaseInterval"))...)
		allErrs = append(allErrs, validatePositiveDuration(rp.BackoffMaxInterval, rpPath.Child("backoffMaxInterval"))...)
		if base, maxInterval := rp.BackoffBaseInterval, rp.BackoffMaxInterval; base != nil && maxInterval != nil &&
			base.Duration > 0 && maxInterval.Duration > 0 && maxInterval.Duration < base.Duration {
			allErrs = append(allErrs, field.Invalid(rpPath.Child("backoffMaxInterval"), maxInterval.Duration.String(),
				fmt.Sprintf("must not be less than backoffBaseInterval (%s)", base.Duration)))
		}
	}
	return allErrs
}

// validateHostTemplate checks a host name whose only placeholder is {service}, optionally with a "*." prefix.
func validateHostTemplate(pattern string, allowWildcard bool, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validatePlaceholders(pattern, true, fldPath)...)
	// Unknown placeholders were reported above; do not report them again as bad DNS characters.
	host := placeholderRE.ReplaceAllString(pattern, "x")
	if allowWildcard {
		host = strings.TrimPrefix(host, "*.")
	}
	for _, msg := range utilvalidation.IsDNS1123Subdomain(host) {
		allErrs = append(allErrs, field.Invalid(fldPath, pattern, msg))
	}
	return allErrs
}

// validatePathTemplate checks an HTTP path that starts with "/" and may contain the {service} placeholder.
func validatePathTemplate(path string, allowService bool, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if !strings.HasPrefix(path, "/") {
		allErrs = append(allErrs, field.Invalid(fldPath, path, "must start with '/'"))
	}
	return append(allErrs, validatePlaceholders(path, allowService, fldPath)...)
}

func validatePlaceholders(s string, allowService bool, fldPath *field.Path) field.ErrorList {
	var bad []string
	for _, p := range placeholderRE.FindAllString(s, -1) {
		if p != servicePlacehold || !allowService {
			bad = append(bad, p)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	if !allowService {
		return field.ErrorList{field.Invalid(fldPath, s, "must not contain placeholders, found "+strings.Join(bad, ", "))}
	}
	return field.ErrorList{field.Invalid(fldPath, s,
		fmt.Sprintf("the only placeholder allowed is %s, found %s", servicePlacehold, strings.Join(bad, ", ")))}
}

func validateGatewayLoadBalancing(lb *gateway.GatewayLoadBalancingConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if lb.Strategy != "" && !slices.Contains(supportedGatewayStrategies, lb.Strategy) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("strategy"), lb.Strategy, supportedGatewayStrategies))
	}
	allErrs = append(allErrs, validateHealthCheck(lb.HealthChecking, fldPath.Child("healthChecking"))...)
	if cb := lb.CircuitBreaker; cb != nil {
		cbPath := fldPath.Child("circuitBreaker")
		allErrs = append(allErrs, validateMinimum(cb.MaxConnections, 0, cbPath.Child("maxConnections"))...)
		allErrs = append(allErrs, validateMinimum(cb.MaxPendingRequests, 0, cbPath.Child("maxPendingRequests"))...)
		allErrs = append(allErrs, validateMinimum(cb.MaxRequests, 0, cbPath.Child("maxRequests"))...)
		allErrs = append(allErrs, validateMinimum(cb.MaxRetries, 0, cbPath.Child("maxRetries"))...)
		allErrs = append(allErrs, validateMinimum(cb.ConsecutiveErrors, 0, cbPath.Child("consecutiveErrors"))...)
		allErrs = append(allErrs, validatePositiveDuration(cb.Interval, cbPath.Child("interval"))...)
		allErrs = append(allErrs, validatePositiveDuration(cb.BaseEjectionTime, cbPath.Child("baseEjectionTime"))...)
		if cb.MaxEjectionPercent != nil {
			for _, msg := range utilvalidation.IsInRange(int(*cb.MaxEjectionPercent), 0, 100) {
				allErrs = append(allErrs, field.Invalid(cbPath.Child("maxEjectionPercent"), *cb.MaxEjectionPercent, msg))
			}
		}
	}
	return allErrs
}

func validateSecurity(sec *gateway.SecurityConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if sec.TLSMode != "" && !slices.Contains(supportedTLSModes, sec.TLSMode) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("tlsMode"), sec.TLSMode, supportedTLSModes))
	}
	if m := sec.MTLS; m != nil {
		refPath := fldPath.Child("mtls", "certificateRef")
		if ref := m.CertificateRef; ref != nil {
			allErrs = append(allErrs, validateRefName(ref.Name, refPath.Child("name"))...)
			if ref.Namespace != "" {
				for _, msg := range apivalidation.ValidateNamespaceName(ref.Namespace, false) {
					allErrs = append(allErrs, field.Invalid(refPath.Child("namespace"), ref.Namespace, msg))
				}
			}
		} else if m.Enabled {
			allErrs = append(allErrs, field.Required(refPath, "required when mtls is enabled"))
		}
	}
	if ac := sec.AccessControl; ac != nil {
		acPath := fldPath.Child("accessControl")
		allowed := make(map[string]bool, len(ac.AllowedTags))
		for i, tag := range ac.AllowedTags {
			allErrs = append(allErrs, validateAccessTag(tag, allowed, acPath.Child("allowedTags").Index(i))...)
			allowed[tag] = true
		}
		denied := make(map[string]bool, len(ac.DeniedTags))
		for i, tag := range ac.DeniedTags {
			idxPath := acPath.Child("deniedTags").Index(i)
			allErrs = append(allErrs, validateAccessTag(tag, denied, idxPath)...)
			if tag != "" && allowed[tag] {
				allErrs = append(allErrs, field.Invalid(idxPath, tag, "must not also be listed in allowedTags"))
			}
			denied[tag] = true
		}
	}
	return allErrs
}

// validateAccessTag checks a tag of access control: any non-empty string without whitespace, not in seen.
func validateAccessTag(tag string, seen map[string]bool, fldPath *field.Path) field.ErrorList {
	if tag == "" {
		return field.ErrorList{field.Required(fldPath, "")}
	}
	var allErrs field.ErrorList
	if strings.IndexFunc(tag, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		allErrs = append(allErrs, field.Invalid(fldPath, tag, "must not contain whitespace"))
	}
	if seen[tag] {
		allErrs = append(allErrs, field.Duplicate(fldPath, tag))
	}
	return allErrs
}

func validateObservability(o *gateway.ObservabilityConfig, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if m := o.Metrics; m != nil && m.Port != nil {
		allErrs = append(allErrs, validatePort(*m.Port, fldPath.Child("metrics", "port"))...)
	}
	if t := o.Tracing; t != nil {
		tPath := fldPath.Child("tracing")
		if q := t.SamplingRate; q != nil && (q.Sign() < 0 || q.Cmp(quantityOne) > 0) {
			allErrs = append(allErrs, field.Invalid(tPath.Child("samplingRate"), q.String(), "must be between 0 and 1 inclusive"))
		}
		if t.JaegerEndpoint != "" {
			allErrs = append(allErrs, validateHTTPURL(t.JaegerEndpoint, tPath.Child("jaegerEndpoint"))...)
		}
	}
	if l := o.Logging; l != nil && l.Level != "" && !slices.Contains(supportedLogLevels, l.Level) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("logging", "level"), l.Level, supportedLogLevels))
	}
	return allErrs
}

// --- shared helpers ---

// validateTags checks a set of ACL tags: each "tag:<name>" with a name of letters, digits and '-'
// starting with a letter, and no tag twice.
func validateTags(tags []string, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	seen := make(map[string]bool, len(tags))
	for i, tag := range tags {
		idxPath := fldPath.Index(i)
		if name, ok := strings.CutPrefix(tag, tagPrefix); !ok || !tagNameRE.MatchString(name) {
			allErrs = append(allErrs, field.Invalid(idxPath, tag,
				`must be "tag:<name>" where name starts with a letter and contains only letters, digits and '-'`))
		}
		if seen[tag] {
			allErrs = append(allErrs, field.Duplicate(idxPath, tag))
		}
		seen[tag] = true
	}
	return allErrs
}

// validateServiceName checks a Tailscale service name, "svc:<dns-label>".
func validateServiceName(name string, fldPath *field.Path) field.ErrorList {
	if label, ok := strings.CutPrefix(name, svcPrefix); ok && len(utilvalidation.IsDNS1123Label(label)) == 0 {
		return nil
	}
	return field.ErrorList{field.Invalid(fldPath, name, `must be "svc:" followed by a DNS label, e.g. "svc:web"`)}
}

func validateProtocol(p gateway.Protocol, fldPath *field.Path) field.ErrorList {
	if slices.Contains(supportedProtocols, p) {
		return nil
	}
	return field.ErrorList{field.NotSupported(fldPath, p, supportedProtocols)}
}

func validatePort(port int32, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for _, msg := range utilvalidation.IsValidPortNum(int(port)) {
		allErrs = append(allErrs, field.Invalid(fldPath, port, msg))
	}
	return allErrs
}

// validateMinimum checks that an optional integer is at least lo.
func validateMinimum(v *int32, lo int32, fldPath *field.Path) field.ErrorList {
	if v == nil || *v >= lo {
		return nil
	}
	return field.ErrorList{field.Invalid(fldPath, *v, fmt.Sprintf("must be greater than or equal to %d", lo))}
}

func validatePositiveDuration(d *metav1.Duration, fldPath *field.Path) field.ErrorList {
	if d == nil || d.Duration > 0 {
		return nil
	}
	return field.ErrorList{field.Invalid(fldPath, d.Duration.String(), "must be greater than zero")}
}

// validateHostPort checks "host:port" where host is a DNS subdomain or an IP address ("[::1]:80" for IPv6).
func validateHostPort(hostPort string, fldPath *field.Path) field.ErrorList {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return field.ErrorList{field.Invalid(fldPath, hostPort, "must be host:port")}
	}
	var allErrs field.ErrorList
	if !isHostOrIP(host) {
		allErrs = append(allErrs, field.Invalid(fldPath, hostPort, "host must be a DNS subdomain or an IP address"))
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || len(utilvalidation.IsValidPortNum(int(n))) > 0 {
		allErrs = append(allErrs, field.Invalid(fldPath, hostPort, "port must be between 1 and 65535"))
	}
	return allErrs
}

func isHostOrIP(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return !strings.Contains(host, "%") // no IPv6 zones
	}
	return len(utilvalidation.IsDNS1123Subdomain(host)) == 0
}

// validateHTTPURL checks an absolute http or https URL with a host.
// ValidateAPIBaseURL accepts an https URL, or an http one whose host is a loopback address or
// localhost: the server sends the tailnet's OAuth client secret there, which plain HTTP across a
// network would hand to anyone on the path.
func ValidateAPIBaseURL(raw string, fldPath *field.Path) field.ErrorList {
	if errs := validateHTTPURL(raw, fldPath); len(errs) > 0 {
		return errs
	}
	u, _ := url.Parse(raw)
	if u.Scheme == "https" || isLoopbackHost(u.Hostname()) {
		return nil
	}
	return field.ErrorList{field.Invalid(fldPath, raw, "must be https (http only to a loopback address): the OAuth client secret is sent there")}
}

// isLoopbackHost reports whether host is localhost or a loopback IP address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func validateHTTPURL(raw string, fldPath *field.Path) field.ErrorList {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return field.ErrorList{field.Invalid(fldPath, raw, "must be an absolute http or https URL with a host")}
	}
	return nil
}
