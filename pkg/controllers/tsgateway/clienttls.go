package tsgateway

// Client TLS of the Gateway's listeners (spec.security.tlsMode and spec.security.mtls): a
// ClientTrafficPolicy of Envoy Gateway v1.9 with tls.clientValidation, targeting the Gateway,
// generated and owned by the TailscaleGateway (docs/concepts/tailscalegateway.md).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// ClientTrafficPolicyGVR is Envoy Gateway's ClientTrafficPolicy.
var ClientTrafficPolicyGVR = schema.GroupVersionResource{Group: "gateway.envoyproxy.io", Version: "v1alpha1", Resource: "clienttrafficpolicies"}

// The tlsMode values.
const (
	TLSModeStrict     = "strict"
	TLSModePermissive = "permissive"
	TLSModeDisabled   = "disabled"
)

// Envoy Gateway v1.9's clientValidation.mode values the policy uses (its deprecated optional:
// true is VerifyIfGiven).
const (
	ClientValidationRequire = "RequireAndVerify"
	ClientValidationIfGiven = "VerifyIfGiven"
)

// GeneratedClientTLS is the LabelGenerated value of the generated ClientTrafficPolicy.
const GeneratedClientTLS = "client-tls"

// The condition reporting client TLS (security.tlsMode, security.mtls), and its reasons.
const (
	ConditionClientTLS        = "ClientTLSReady"
	ReasonClientTLSConfigured = "ClientValidationConfigured"
	ReasonClientTLSOff        = "ClientValidationOff"
	ReasonClientTLSRefused    = "ClientValidationRefused"
	ReasonClientTLSConflict   = "ClientTrafficPolicyConflict"
	ReasonClientTLSFailed     = "ClientTrafficPolicyFailed"
)

// ClientTLSPolicyName is the generated ClientTrafficPolicy's name: "<tailscalegateway>-client-tls".
func ClientTLSPolicyName(gw string) string { return cutName(gw + "-" + GeneratedClientTLS) }

// StrictTLS reports whether gw's tlsMode is strict: only TLS listeners are published.
func StrictTLS(gw *v1alpha1.TailscaleGateway) bool {
	return gw.Spec.Security != nil && gw.Spec.Security.TLSMode == TLSModeStrict
}

// GenerateClientTLS returns the ClientTrafficPolicy that security asks for, or nil with why
// not (refused, empty when nothing is asked). mtls.enabled makes one: its certificateRef's
// Secret (ca.crt) is the CA client certificates must chain to, required (RequireAndVerify)
// unless tlsMode is permissive (VerifyIfGiven: verified when presented). It is refused when tlsMode is disabled, when
// the Gateway is in another namespace (the policy must be in the Gateway's namespace, and an
// ownerReference cannot cross namespaces), and when the Secret is in another namespace than the
// Gateway (Envoy Gateway reads caCertificateRefs in the policy's namespace). tlsMode strict
// without mtls is refused too: strict asks for client certificates.
func GenerateClientTLS(gw *v1alpha1.TailscaleGateway) (policy *unstructured.Unstructured, refused string) {
	sec := gw.Spec.Security
	if sec == nil {
		return nil, ""
	}
	enabled := sec.MTLS != nil && sec.MTLS.Enabled
	switch {
	case sec.TLSMode == TLSModeDisabled && enabled:
		return nil, "security.mtls is enabled but security.tlsMode is disabled: no client certificate is validated"
	case sec.TLSMode == TLSModeStrict && !enabled:
		return nil, "security.tlsMode strict needs security.mtls (enabled, certificateRef): no client certificate is validated"
	case !enabled:
		return nil, ""
	}
	gwNS, gwName := gatewayKey(gw)
	ref := sec.MTLS.CertificateRef
	switch {
	case gwNS != gw.Namespace:
		return nil, fmt.Sprintf("Gateway %s/%s is in another namespace than this TailscaleGateway: its ClientTrafficPolicy must be in %s, where this TailscaleGateway cannot own objects; no client certificate is validated",
			gwNS, gwName, gwNS)
	case ref == nil || ref.Name == "":
		return nil, "security.mtls.certificateRef is required: no client certificate is validated"
	case ref.Namespace != "" && ref.Namespace != gwNS:
		return nil, fmt.Sprintf("security.mtls.certificateRef names a Secret in %s: Envoy Gateway reads the CA only in the Gateway's namespace %s; no client certificate is validated",
			ref.Namespace, gwNS)
	}
	mode := ClientValidationRequire
	if sec.TLSMode == TLSModePermissive {
		mode = ClientValidationIfGiven
	}
	validation := map[string]any{
		"mode":              mode,
		"caCertificateRefs": []any{map[string]any{"group": "", "kind": "Secret", "name": ref.Name}},
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": ClientTrafficPolicyGVR.GroupVersion().String(),
		"kind":       "ClientTrafficPolicy",
		"spec": map[string]any{
			"targetRefs": []any{map[string]any{"group": gwapiv1.GroupName, "kind": "Gateway", "name": gwName}},
			"tls":        map[string]any{"clientValidation": validation},
		},
	}}
	u.SetName(ClientTLSPolicyName(gw.Name))
	u.SetNamespace(gw.Namespace)
	u.SetLabels(map[string]string{LabelGateway: gw.Name, LabelManagedBy: ManagedBy, LabelGenerated: GeneratedClientTLS})
	u.SetOwnerReferences(ownerRef(gw))
	return u, ""
}

// TargetsGateway reports whether the ClientTrafficPolicy p targets the Gateway name (in p's
// namespace) through targetRef or targetRefs.
func TargetsGateway(p *unstructured.Unstructured, name string) bool {
	spec, _ := p.Object["spec"].(map[string]any)
	refs, _ := spec["targetRefs"].([]any)
	if one, ok := spec["targetRef"]; ok {
		refs = append(slices.Clone(refs), one)
	}
	for _, r := range refs {
		m, _ := r.(map[string]any)
		group, _ := m["group"].(string)
		kind, _ := m["kind"].(string)
		n, _ := m["name"].(string)
		if group == gwapiv1.GroupName && kind == "Gateway" && n == name {
			return true
		}
	}
	return false
}

// clientTLSResult is what one reconcile of the ClientTrafficPolicy did.
type clientTLSResult struct {
	policy            string // the policy in place (name), "" when none
	mode              string
	refused, conflict string
	failure           string
}

// applyClientTLS creates or updates the ClientTrafficPolicy of GenerateClientTLS and deletes
// one gw generated that is no longer wanted. A ClientTrafficPolicy gw does not control that
// targets the same Gateway (Envoy Gateway applies one per target) is left alone: nothing is
// written and the conflict is reported.
func (c *Controller) applyClientTLS(ctx context.Context, gw *v1alpha1.TailscaleGateway, res *clientTLSResult) error {
	want, refused := GenerateClientTLS(gw)
	res.refused = refused
	if gw.Spec.Security != nil {
		res.mode = gw.Spec.Security.TLSMode
	}
	if c.dyn == nil {
		if want != nil {
			res.failure = "no client configured to write ClientTrafficPolicies"
		}
		return nil
	}
	client := c.dyn.Resource(ClientTrafficPolicyGVR).Namespace(gw.Namespace)
	all, err := client.List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		if want != nil {
			res.failure = "gateway.envoyproxy.io/v1alpha1 ClientTrafficPolicy is not served (Envoy Gateway's CRDs are not installed)"
		}
		return nil
	}
	if apierrors.IsForbidden(err) {
		// Not granted (an older RBAC): nothing can be written or cleaned up; say so when asked.
		if want != nil {
			res.failure = "ClientTrafficPolicies may not be listed (RBAC): get, list, create, update and delete of clienttrafficpolicies.gateway.envoyproxy.io are needed"
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing ClientTrafficPolicies: %w", err)
	}
	generated := labels.SelectorFromSet(labels.Set{LabelGateway: gw.Name, LabelManagedBy: ManagedBy, LabelGenerated: GeneratedClientTLS})
	var cur *unstructured.Unstructured
	var others []string
	var errs []error
	_, gwName := gatewayKey(gw)
	for i := range all.Items {
		p := &all.Items[i]
		switch {
		case want != nil && p.GetName() == want.GetName():
			cur = p
		case controlledBy(p, gw) && generated.Matches(labels.Set(p.GetLabels())):
			// Ours, no longer wanted (mtls turned off, or the name changed).
			uid := types.UID(p.GetUID())
			if err := client.Delete(ctx, p.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
				continue
			}
			c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceDeleted, "Deleted ClientTrafficPolicy %s", p.GetName())
		case want != nil && TargetsGateway(p, gwName):
			others = append(others, p.GetName())
		}
	}
	if want == nil {
		return errors.Join(errs...)
	}
	if cur != nil && !controlledBy(cur, gw) {
		others = append(others, cur.GetName())
	}
	if len(others) > 0 {
		slices.Sort(others)
		res.conflict = fmt.Sprintf("ClientTrafficPolicy %s not written: ClientTrafficPolicy %s, which this TailscaleGateway does not control, already targets Gateway %s/%s and Envoy Gateway applies one per target",
			want.GetName(), strings.Join(others, ", "), gw.Namespace, gwName)
		c.recorder.Event(gw, corev1.EventTypeWarning, ReasonClientTLSConflict, res.conflict)
		return errors.Join(errs...)
	}
	switch {
	case cur == nil:
		if _, err := client.Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return errors.Join(append(errs, err)...)
			}
			res.failure = fmt.Sprintf("ClientTrafficPolicy %s: %v", want.GetName(), err)
			return errors.Join(errs...)
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceCreated, "Created ClientTrafficPolicy %s", want.GetName())
	case !subset(want.Object["spec"], cur.Object["spec"]) || !labelsContain(cur.GetLabels(), want.GetLabels()):
		upd := cur.DeepCopy()
		upd.Object["spec"] = want.Object["spec"]
		upd.SetLabels(mergeLabels(cur.GetLabels(), want.GetLabels()))
		if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsConflict(err) {
				return errors.Join(append(errs, err)...)
			}
			res.failure = fmt.Sprintf("ClientTrafficPolicy %s: %v", want.GetName(), err)
			return errors.Join(errs...)
		}
		c.recorder.Eventf(gw, corev1.EventTypeNormal, EventListenerServiceUpdated, "Updated ClientTrafficPolicy %s", want.GetName())
	}
	res.policy = want.GetName()
	return errors.Join(errs...)
}

// clientTLSCondition reports res.
func clientTLSCondition(gw *v1alpha1.TailscaleGateway, res clientTLSResult) metav1.Condition {
	cond := metav1.Condition{Type: ConditionClientTLS, Status: metav1.ConditionTrue, ObservedGeneration: gw.Generation}
	gwNS, gwName := gatewayKey(gw)
	switch {
	case res.refused != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonClientTLSRefused, res.refused
	case res.conflict != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonClientTLSConflict, res.conflict
	case res.failure != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonClientTLSFailed, res.failure
	case res.policy != "":
		how := "required"
		if res.mode == TLSModePermissive {
			how = "verified when presented (tlsMode permissive)"
		}
		cond.Reason = ReasonClientTLSConfigured
		cond.Message = fmt.Sprintf("ClientTrafficPolicy %s: client certificates on the TLS listeners of Gateway %s/%s are %s, against the CA of Secret %s",
			res.policy, gwNS, gwName, how, gw.Spec.Security.MTLS.CertificateRef.Name)
	default:
		cond.Reason, cond.Message = ReasonClientTLSOff, "security.mtls is not enabled: no client certificate is asked for"
	}
	return cond
}
