package tsgateway

// Observability of the Gateway's Envoy proxies (spec.observability): an Envoy Gateway v1.9
// EnvoyProxy generated and owned by the TailscaleGateway, attached through the Gateway's
// spec.infrastructure.parametersRef only when the Gateway has none (docs/concepts/tailscalegateway.md).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// EnvoyProxyGVR is Envoy Gateway's EnvoyProxy.
var EnvoyProxyGVR = schema.GroupVersionResource{Group: "gateway.envoyproxy.io", Version: "v1alpha1", Resource: "envoyproxies"}

const (
	// GeneratedEnvoyProxy is the LabelGenerated value of the generated EnvoyProxy.
	GeneratedEnvoyProxy = "envoy-proxy"
	// AnnotationEnvoyProxyOf, on a Gateway, names the TailscaleGateway (of the Gateway's
	// namespace) that set its spec.infrastructure.parametersRef to its EnvoyProxy: only then is
	// the reference the controller's to change or remove.
	AnnotationEnvoyProxyOf = "gateway.tailscale.com/envoy-proxy-of"
	// EnvoyStatsPort is where Envoy Gateway v1.9's proxies serve /stats/prometheus (its
	// bootstrap's stats listener, a constant: EnvoyProxy has no field for another port).
	EnvoyStatsPort = 19001
	// ZipkinSpansPath is the one path Envoy Gateway's Zipkin provider posts spans to (Zipkin v2
	// JSON), which Jaeger collectors serve on their Zipkin port (9411 by default).
	ZipkinSpansPath = "/api/v2/spans"
	// AccessLogPath is the access log's file sink: the proxy container's standard output.
	AccessLogPath = "/dev/stdout"
)

// The condition reporting spec.observability, and its reasons.
const (
	ConditionObservability        = "ObservabilityReady"
	ReasonObservabilityConfigured = "EnvoyProxyAttached"
	ReasonObservabilityOff        = "ObservabilityNotRequested"
	ReasonObservabilityRefused    = "ObservabilityRefused"
	ReasonParametersRefConflict   = "ParametersRefConflict"
	ReasonEnvoyProxyConflict      = "EnvoyProxyConflict"
	ReasonEnvoyProxyFailed        = "EnvoyProxyFailed"
)

// AccessLogFormat is the JSON line Envoy writes per request (per connection on TCP routes) with
// logging.accessLogs: Envoy command operators by field.
var AccessLogFormat = map[string]string{
	"start_time":       "%START_TIME%",
	"source":           "%DOWNSTREAM_REMOTE_ADDRESS%",
	"destination":      "%UPSTREAM_HOST%",
	"upstream_cluster": "%UPSTREAM_CLUSTER%",
	"route":            "%ROUTE_NAME%",
	"protocol":         "%PROTOCOL%",
	"method":           "%REQ(:METHOD)%",
	"authority":        "%REQ(:AUTHORITY)%",
	"path":             "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"response_code":    "%RESPONSE_CODE%",
	"response_flags":   "%RESPONSE_FLAGS%",
	"bytes_received":   "%BYTES_RECEIVED%",
	"bytes_sent":       "%BYTES_SENT%",
	"duration_ms":      "%DURATION%",
	"request_id":       "%REQ(X-REQUEST-ID)%",
	"traceparent":      "%REQ(TRACEPARENT)%",
}

// EnvoyProxyName is the generated EnvoyProxy's name: "<tailscalegateway>-envoy-proxy".
func EnvoyProxyName(gw string) string { return cutName(gw + "-" + GeneratedEnvoyProxy) }

// TracingProvider maps a jaegerEndpoint to Envoy Gateway's tracing provider: an http URL with
// the path /api/v2/spans is Zipkin (v2 JSON, 128-bit trace IDs, as W3C trace context carries)
// to its host and port; one without a path (or "/") is OpenTelemetry, OTLP over gRPC, to its
// host and port (Jaeger's OTLP gRPC port is 4317). The port defaults to 80. Anything else is
// refused with why: Envoy sends neither Jaeger's Thrift (/api/traces) nor OTLP over HTTP, and
// Envoy Gateway's provider host gets no TLS. It returns the provider and what it is, in words.
func TracingProvider(endpoint string) (provider map[string]any, what, refused string) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, "", fmt.Sprintf("jaegerEndpoint %q is not a URL", endpoint)
	}
	if u.Scheme != "http" {
		return nil, "", fmt.Sprintf("jaegerEndpoint %q: Envoy Gateway sends traces to a provider host in plaintext only; use http://", endpoint)
	}
	port := 80
	if p := u.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	host := u.Hostname()
	typ := ""
	switch u.Path {
	case ZipkinSpansPath:
		typ = "Zipkin"
		provider = map[string]any{"type": typ, "zipkin": map[string]any{"enable128BitTraceId": true}}
	case "", "/":
		typ = "OpenTelemetry"
		provider = map[string]any{"type": typ}
	default:
		return nil, "", fmt.Sprintf("jaegerEndpoint %q: Envoy cannot send Jaeger's own protocol; name the collector's Zipkin endpoint (http://<host>:9411%s) or its OTLP gRPC port without a path (http://<host>:4317)",
			endpoint, ZipkinSpansPath)
	}
	provider["host"] = host
	provider["port"] = int64(port)
	return provider, fmt.Sprintf("%s to %s", typ, net.JoinHostPort(host, strconv.Itoa(port))), ""
}

// SamplingFraction is samplingRate (0 to 1) as a Gateway API Fraction in lowest terms, exact
// to a millionth (rounded up).
func SamplingFraction(q resource.Quantity) map[string]any {
	num := big.NewInt(q.ScaledValue(resource.Micro))
	den := big.NewInt(1_000_000)
	if g := new(big.Int).GCD(nil, nil, num, den); num.Sign() > 0 && g.Sign() > 0 {
		num.Quo(num, g)
		den.Quo(den, g)
	} else {
		den.SetInt64(1)
	}
	return map[string]any{"numerator": num.Int64(), "denominator": den.Int64()}
}

// GenerateEnvoyProxy returns the EnvoyProxy that spec.observability asks of Envoy (nil when it
// asks nothing), or why nothing may be written (refused), and the parts asked for that it does
// not carry (unrealised, with why). It sets mergeType StrategicMerge, so that what the
// GatewayClass's EnvoyProxy and Envoy Gateway's defaults configure stays:
//   - metrics: spec.telemetry.metrics.prometheus.disable = !enabled (port: EnvoyStatsPort only,
//     see Unsupported);
//   - tracing.enabled with jaegerEndpoint: spec.telemetry.tracing, provider TracingProvider,
//     samplingFraction from samplingRate (unset samples every request, Envoy Gateway's default);
//   - logging.level: spec.logging.level {default: level};
//   - logging.accessLogs: spec.telemetry.accessLog, AccessLogFormat as JSON to AccessLogPath.
//
// The EnvoyProxy must be in the Gateway's namespace (parametersRef is local) and owned by the
// TailscaleGateway there; a Gateway of another namespace is refused.
func GenerateEnvoyProxy(gw *v1alpha1.TailscaleGateway) (ep *unstructured.Unstructured, refused string, unrealised []string) {
	o := gw.Spec.Observability
	if o == nil {
		return nil, "", nil
	}
	telemetry := map[string]any{}
	spec := map[string]any{"mergeType": "StrategicMerge"}
	if m := o.Metrics; m != nil {
		telemetry["metrics"] = map[string]any{"prometheus": map[string]any{"disable": !m.Enabled}}
	}
	if t := o.Tracing; t != nil && t.Enabled {
		if t.JaegerEndpoint == "" {
			unrealised = append(unrealised, "tracing: no jaegerEndpoint to send spans to")
		} else if provider, _, why := TracingProvider(t.JaegerEndpoint); why != "" {
			unrealised = append(unrealised, "tracing: "+why)
		} else {
			tr := map[string]any{"provider": provider}
			if t.SamplingRate != nil {
				tr["samplingFraction"] = SamplingFraction(*t.SamplingRate)
			}
			telemetry["tracing"] = tr
		}
	}
	if l := o.Logging; l != nil {
		if l.Level != "" {
			spec["logging"] = map[string]any{"level": map[string]any{"default": l.Level}}
		}
		if l.AccessLogs {
			fields := map[string]any{}
			for k, v := range AccessLogFormat {
				fields[k] = v
			}
			telemetry["accessLog"] = map[string]any{"settings": []any{map[string]any{
				"format": map[string]any{"type": "JSON", "json": fields},
				"sinks":  []any{map[string]any{"type": "File", "file": map[string]any{"path": AccessLogPath}}},
			}}}
		}
	}
	if len(telemetry) > 0 {
		spec["telemetry"] = telemetry
	}
	if len(spec) == 1 {
		return nil, "", unrealised
	}
	if gwNS, gwName := gatewayKey(gw); gwNS != gw.Namespace {
		return nil, fmt.Sprintf("Gateway %s/%s is in another namespace than this TailscaleGateway: its EnvoyProxy must be in %s, where this TailscaleGateway cannot own objects",
			gwNS, gwName, gwNS), unrealised
	}
	ep = &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": EnvoyProxyGVR.GroupVersion().String(),
		"kind":       "EnvoyProxy",
		"spec":       spec,
	}}
	ep.SetName(EnvoyProxyName(gw.Name))
	ep.SetNamespace(gw.Namespace)
	ep.SetLabels(map[string]string{LabelGateway: gw.Name, LabelManagedBy: ManagedBy, LabelGenerated: GeneratedEnvoyProxy})
	ep.SetOwnerReferences(ownerRef(gw))
	return ep, "", unrealised
}

// envoyProxyStale reports whether cur differs from want in what the controller sets: a field of
// want missing or different in cur, or one of the generated fields in cur that want no longer
// has. Defaults the API server adds are not differences: spec.logging.level {default: warn}, the
// CRD's default when spec.logging is unset, stands for no level.
func envoyProxyStale(want, cur *unstructured.Unstructured) bool {
	if !subset(want.Object["spec"], cur.Object["spec"]) {
		return true
	}
	for _, path := range generatedFields {
		_, wanted, _ := unstructured.NestedFieldNoCopy(want.Object, path...)
		v, has, _ := unstructured.NestedFieldNoCopy(cur.Object, path...)
		if !wanted && has && !(path[1] == "logging" && subset(map[string]any{"default": "warn"}, v) && subset(v, map[string]any{"default": "warn"})) {
			return true
		}
	}
	return false
}

// generatedFields are the fields of the EnvoyProxy that observability may set.
var generatedFields = [][]string{{"spec", "telemetry", "tracing"}, {"spec", "telemetry", "accessLog"},
	{"spec", "telemetry", "metrics", "prometheus"}, {"spec", "logging", "level"}}

// overlappingFields are the fields of the EnvoyProxy the controller generates that another
// EnvoyProxy (the GatewayClass's) sets too: strategically merged, ours would replace them.
func overlappingFields(ours, theirs *unstructured.Unstructured) []string {
	var out []string
	for _, path := range generatedFields {
		_, mine, _ := unstructured.NestedFieldNoCopy(ours.Object, path...)
		v, set, _ := unstructured.NestedFieldNoCopy(theirs.Object, path...)
		if mine && set && !subset(v, mustNested(ours.Object, path)) {
			out = append(out, strings.Join(path, "."))
		}
	}
	return out
}

func mustNested(obj map[string]any, path []string) any {
	v, _, _ := unstructured.NestedFieldNoCopy(obj, path...)
	return v
}

// envoyProxyRef is the parametersRef naming the EnvoyProxy name.
func envoyProxyRef(name string) *gwapiv1.LocalParametersReference {
	return &gwapiv1.LocalParametersReference{Group: gwapiv1.Group(EnvoyProxyGVR.Group), Kind: "EnvoyProxy", Name: name}
}

// attachedBy reports whether kgw's parametersRef is the one the TailscaleGateway gwName set.
func attachedBy(kgw *gwapiv1.Gateway, gwName string) bool {
	inf := kgw.Spec.Infrastructure
	return inf != nil && inf.ParametersRef != nil && *inf.ParametersRef == *envoyProxyRef(EnvoyProxyName(gwName)) &&
		kgw.Annotations[AnnotationEnvoyProxyOf] == gwName
}

// observabilityResult is what one reconcile of the EnvoyProxy did.
type observabilityResult struct {
	proxy             string // the EnvoyProxy attached (name), "" when none
	what              []string
	refused, conflict string
	conflictReason    string
	failure           string
	unrealised        []string
}

// patchGateway merge-patches the Gateway's parametersRef and the annotation naming its setter
// (nil removes both, and spec.infrastructure when nothing else is in it), on the
// resourceVersion read: a Gateway changed meanwhile is not touched.
func (c *Controller) patchGateway(ctx context.Context, kgw *gwapiv1.Gateway, ref *gwapiv1.LocalParametersReference, owner string) error {
	var annv any // JSON null removes
	var infra any = map[string]any{"parametersRef": ref}
	if ref != nil {
		annv = owner
	} else if inf := kgw.Spec.Infrastructure; inf == nil || (len(inf.Labels) == 0 && len(inf.Annotations) == 0) {
		infra = nil
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": kgw.ResourceVersion, "annotations": map[string]any{AnnotationEnvoyProxyOf: annv}},
		"spec":     map[string]any{"infrastructure": infra},
	})
	if err != nil {
		return err
	}
	_, err = c.gwClient.GatewayV1().Gateways(kgw.Namespace).Patch(ctx, kgw.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
	return err
}

// DetachEnvoyProxy removes, from the Gateways of namespace, the parametersRef that the
// TailscaleGateway namespace/name set (its EnvoyProxy goes with it, by the garbage collector,
// or was deleted by applyEnvoyProxy).
func (c *Controller) detachEnvoyProxy(ctx context.Context, namespace, name string) error {
	list, err := c.kgateways.Gateways(namespace).List(labels.Everything())
	if err != nil {
		return err
	}
	var errs []error
	for _, kgw := range list {
		if !attachedBy(kgw, name) {
			continue
		}
		if err := c.patchGateway(ctx, kgw, nil, ""); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("detaching EnvoyProxy from Gateway %s/%s: %w", kgw.Namespace, kgw.Name, err))
		}
	}
	return errors.Join(errs...)
}

// applyEnvoyProxy creates, updates or deletes the EnvoyProxy of GenerateEnvoyProxy and sets or
// removes the Gateway's parametersRef to it. Nothing is written, and the conflict is reported
// with a Warning Event, when the Gateway's parametersRef names anything else, when an object
// it does not control holds the EnvoyProxy's name, or when the GatewayClass's EnvoyProxy sets
// what ours would override or merges Gateways (Envoy Gateway then ignores Gateways'
// parametersRef). unbound (binding's message) stands for this TailscaleGateway not being the
// Gateway's: it writes nothing and removes what it wrote.
func (c *Controller) applyEnvoyProxy(ctx context.Context, gw *v1alpha1.TailscaleGateway, unbound string, res *observabilityResult) error {
	want, refused, unrealised := GenerateEnvoyProxy(gw)
	res.refused, res.unrealised = refused, unrealised
	if want != nil && unbound != "" {
		want, res.refused = nil, unbound
	}
	if c.dyn == nil {
		if want != nil {
			res.failure = "no client configured to write EnvoyProxies"
		}
		return nil
	}
	gwNS, gwName := gatewayKey(gw)
	client := c.dyn.Resource(EnvoyProxyGVR).Namespace(gw.Namespace)
	all, err := client.List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		if want != nil {
			res.failure = "gateway.envoyproxy.io/v1alpha1 EnvoyProxy is not served (Envoy Gateway's CRDs are not installed)"
		}
		return nil
	case apierrors.IsForbidden(err):
		if want != nil {
			res.failure = "EnvoyProxies may not be listed (RBAC): get, list, watch, create, update and delete of envoyproxies.gateway.envoyproxy.io are needed"
		}
		return nil
	case err != nil:
		return fmt.Errorf("listing EnvoyProxies: %w", err)
	}
	var kgw *gwapiv1.Gateway
	if gwNS == gw.Namespace {
		if kgw, err = c.kgateways.Gateways(gwNS).Get(gwName); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	if want != nil && kgw == nil {
		res.failure = fmt.Sprintf("Gateway %s/%s not found: no EnvoyProxy to attach", gwNS, gwName)
		want = nil
	}
	if want != nil {
		c.observabilityConflicts(ctx, gw, kgw, want, all.Items, res)
		if res.conflict != "" {
			c.recorder.Event(gw, corev1.EventTypeWarning, res.conflictReason, res.conflict)
		}
		if res.conflict != "" || res.refused != "" || res.failure != "" {
			want = nil
		}
	}
	// Without an EnvoyProxy to attach, the Gateway loses the reference this TailscaleGateway set.
	if want == nil && kgw != nil && attachedBy(kgw, gw.Name) {
		if err := c.patchGateway(ctx, kgw, nil, ""); err != nil {
			return fmt.Errorf("detaching EnvoyProxy from Gateway %s/%s: %w", gwNS, gwName, err)
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceUpdated, "Removed the parametersRef of Gateway %s/%s", gwNS, gwName)
	}
	var cur *unstructured.Unstructured
	var errs []error
	generated := labels.SelectorFromSet(labels.Set{LabelGateway: gw.Name, LabelManagedBy: ManagedBy, LabelGenerated: GeneratedEnvoyProxy})
	for i := range all.Items {
		p := &all.Items[i]
		switch {
		case want != nil && p.GetName() == want.GetName():
			cur = p
		case controlledBy(p, gw) && generated.Matches(labels.Set(p.GetLabels())):
			uid := types.UID(p.GetUID())
			if err := client.Delete(ctx, p.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
				continue
			}
			c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceDeleted, "Deleted EnvoyProxy %s", p.GetName())
		}
	}
	if want == nil {
		return errors.Join(errs...)
	}
	switch {
	case cur == nil:
		if _, err := client.Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return errors.Join(append(errs, err)...)
			}
			res.failure = fmt.Sprintf("EnvoyProxy %s: %v", want.GetName(), err)
			return errors.Join(errs...)
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceCreated, "Created EnvoyProxy %s", want.GetName())
	case envoyProxyStale(want, cur) || !labelsContain(cur.GetLabels(), want.GetLabels()):
		upd := cur.DeepCopy()
		upd.Object["spec"] = want.Object["spec"]
		upd.SetLabels(mergeLabels(cur.GetLabels(), want.GetLabels()))
		if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsConflict(err) {
				return errors.Join(append(errs, err)...)
			}
			res.failure = fmt.Sprintf("EnvoyProxy %s: %v", want.GetName(), err)
			return errors.Join(errs...)
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceUpdated, "Updated EnvoyProxy %s", want.GetName())
	}
	// The EnvoyProxy exists before the Gateway names it.
	if !attachedBy(kgw, gw.Name) {
		if err := c.patchGateway(ctx, kgw, envoyProxyRef(want.GetName()), gw.Name); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				return errors.Join(append(errs, err)...) // changed meanwhile: read again
			}
			res.failure = fmt.Sprintf("setting the parametersRef of Gateway %s/%s: %v", gwNS, gwName, err)
			return errors.Join(errs...)
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceUpdated, "Set the parametersRef of Gateway %s/%s to EnvoyProxy %s", gwNS, gwName, want.GetName())
	}
	res.proxy = want.GetName()
	res.what = describeObservability(gw)
	return errors.Join(errs...)
}

// observabilityConflicts sets res.conflict (or refused, failure) when want may not be attached
// to kgw: see applyEnvoyProxy.
func (c *Controller) observabilityConflicts(ctx context.Context, gw *v1alpha1.TailscaleGateway, kgw *gwapiv1.Gateway, want *unstructured.Unstructured, existing []unstructured.Unstructured, res *observabilityResult) {
	if inf := kgw.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil && !attachedBy(kgw, gw.Name) {
		r := inf.ParametersRef
		res.conflictReason = ReasonParametersRefConflict
		res.conflict = fmt.Sprintf("EnvoyProxy %s not attached: Gateway %s/%s already has spec.infrastructure.parametersRef (%s %s/%s) that this TailscaleGateway did not set; the Gateway is left alone",
			want.GetName(), kgw.Namespace, kgw.Name, r.Kind, r.Group, r.Name)
		return
	}
	for i := range existing {
		if p := &existing[i]; p.GetName() == want.GetName() && !controlledBy(p, gw) {
			res.conflictReason = ReasonEnvoyProxyConflict
			res.conflict = fmt.Sprintf("EnvoyProxy %s/%s exists and is not controlled by this TailscaleGateway: left alone, nothing attached", p.GetNamespace(), p.GetName())
			return
		}
	}
	class, ok := c.classEnvoyProxy(ctx, kgw, res)
	if !ok || class == nil {
		return
	}
	if merge, _, _ := unstructured.NestedBool(class.Object, "spec", "mergeGateways"); merge {
		res.conflictReason = ReasonEnvoyProxyConflict
		res.conflict = fmt.Sprintf("GatewayClass %s's EnvoyProxy %s/%s sets mergeGateways: Envoy Gateway then ignores a Gateway's parametersRef, so no EnvoyProxy is attached",
			kgw.Spec.GatewayClassName, class.GetNamespace(), class.GetName())
		return
	}
	if fields := overlappingFields(want, class); len(fields) > 0 {
		res.conflictReason = ReasonEnvoyProxyConflict
		res.conflict = fmt.Sprintf("GatewayClass %s's EnvoyProxy %s/%s sets %s otherwise: the Gateway's EnvoyProxy would override the class's, so nothing is attached",
			kgw.Spec.GatewayClassName, class.GetNamespace(), class.GetName(), strings.Join(fields, ", "))
	}
}

// classEnvoyProxy returns the EnvoyProxy the Gateway's GatewayClass names (nil when none);
// false when it cannot be read, with res.failure set.
func (c *Controller) classEnvoyProxy(ctx context.Context, kgw *gwapiv1.Gateway, res *observabilityResult) (*unstructured.Unstructured, bool) {
	if c.classes == nil {
		return nil, true
	}
	gc, err := c.classes.Get(string(kgw.Spec.GatewayClassName))
	if apierrors.IsNotFound(err) {
		return nil, true
	}
	if err != nil {
		res.failure = fmt.Sprintf("reading GatewayClass %s: %v", kgw.Spec.GatewayClassName, err)
		return nil, false
	}
	r := gc.Spec.ParametersRef
	if r == nil || string(r.Group) != EnvoyProxyGVR.Group || r.Kind != "EnvoyProxy" || r.Namespace == nil {
		return nil, true
	}
	ep, err := c.dyn.Resource(EnvoyProxyGVR).Namespace(string(*r.Namespace)).Get(ctx, r.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, true
	case err != nil:
		res.failure = fmt.Sprintf("reading GatewayClass %s's EnvoyProxy %s/%s: %v", gc.Name, *r.Namespace, r.Name, err)
		return nil, false
	}
	return ep, true
}

// describeObservability says, per field, what the attached EnvoyProxy does.
func describeObservability(gw *v1alpha1.TailscaleGateway) []string {
	o := gw.Spec.Observability
	var out []string
	if m := o.Metrics; m != nil {
		if m.Enabled {
			out = append(out, fmt.Sprintf("Prometheus metrics on port %d (/stats/prometheus)", EnvoyStatsPort))
		} else {
			out = append(out, "Prometheus metrics off")
		}
	}
	if t := o.Tracing; t != nil && t.Enabled {
		if _, what, why := TracingProvider(t.JaegerEndpoint); why == "" && t.JaegerEndpoint != "" {
			rate := "every request"
			if t.SamplingRate != nil {
				f := SamplingFraction(*t.SamplingRate)
				rate = fmt.Sprintf("%d/%d of requests", f["numerator"], f["denominator"])
			}
			out = append(out, "tracing "+what+", sampling "+rate)
		}
	}
	if l := o.Logging; l != nil {
		if l.Level != "" {
			out = append(out, "log level "+l.Level)
		}
		if l.AccessLogs {
			out = append(out, "JSON access log to "+AccessLogPath)
		}
	}
	return out
}

// observabilityCondition reports res.
func observabilityCondition(gw *v1alpha1.TailscaleGateway, res observabilityResult) metav1.Condition {
	cond := metav1.Condition{Type: ConditionObservability, Status: metav1.ConditionTrue, ObservedGeneration: gw.Generation}
	gwNS, gwName := gatewayKey(gw)
	switch {
	case res.refused != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonObservabilityRefused, res.refused
	case res.conflict != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, res.conflictReason, res.conflict
	case res.failure != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonEnvoyProxyFailed, res.failure
	case len(res.unrealised) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonObservabilityRefused
		cond.Message = "Not configured: " + strings.Join(res.unrealised, "; ")
		if res.proxy != "" {
			cond.Message += fmt.Sprintf(". EnvoyProxy %s on Gateway %s/%s: %s", res.proxy, gwNS, gwName, strings.Join(res.what, ", "))
		}
	case res.proxy != "":
		cond.Reason = ReasonObservabilityConfigured
		cond.Message = fmt.Sprintf("EnvoyProxy %s on Gateway %s/%s: %s", res.proxy, gwNS, gwName, strings.Join(res.what, ", "))
	default:
		cond.Reason, cond.Message = ReasonObservabilityOff, "spec.observability asks nothing of Envoy: no EnvoyProxy is attached"
	}
	return cond
}

// NewEnvoyGatewayInformer is an informer on Envoy Gateway's resource gvr (ClientTrafficPolicyGVR,
// EnvoyProxyGVR) in every namespace, for Options.
func NewEnvoyGatewayInformer(dyn dynamic.Interface, gvr schema.GroupVersionResource, resync time.Duration) cache.SharedIndexInformer {
	return dynamicinformer.NewFilteredDynamicInformer(dyn, gvr, metav1.NamespaceAll, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil).Informer()
}

// ConnectionLog reports whether the proxy hosting gw's listeners logs their connections
// (observability.logging.accessLogs, carried by accesscontrol.AnnotationConnectionLog).
func ConnectionLog(gw *v1alpha1.TailscaleGateway) bool {
	o := gw.Spec.Observability
	return o != nil && o.Logging != nil && o.Logging.AccessLogs
}
