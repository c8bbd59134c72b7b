package tsgateway

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// mtlsGateway is a TailscaleGateway in the Gateway's namespace asking for client certificates
// signed by the CA of Secret client-ca, in tlsMode mode.
func mtlsGateway(mode string) *v1alpha1.TailscaleGateway {
	gw := advancedGateway()
	gw.Namespace = "envoy-gateway-system"
	gw.Spec.Security = &v1alpha1.SecurityConfig{TLSMode: mode, MTLS: &v1alpha1.MTLSConfig{Enabled: true,
		CertificateRef: &v1alpha1.SecretReference{Name: "client-ca"}}}
	return gw
}

func clientValidation(t *testing.T, p *unstructured.Unstructured) map[string]any {
	t.Helper()
	v, ok, _ := unstructured.NestedMap(p.Object, "spec", "tls", "clientValidation")
	if !ok {
		t.Fatalf("no spec.tls.clientValidation in %v", p.Object)
	}
	return v
}

func TestGenerateClientTLSModes(t *testing.T) {
	for _, tc := range []struct {
		mode     string
		wantMode string
	}{{TLSModeStrict, ClientValidationRequire}, {"", ClientValidationRequire}, {TLSModePermissive, ClientValidationIfGiven}} {
		gw := mtlsGateway(tc.mode)
		p, refused := GenerateClientTLS(gw)
		if refused != "" || p == nil {
			t.Fatalf("mode %q: refused %q", tc.mode, refused)
		}
		if p.GetNamespace() != "envoy-gateway-system" || p.GetName() != "advanced-client-tls" || p.GetKind() != "ClientTrafficPolicy" {
			t.Errorf("mode %q: %s %s/%s", tc.mode, p.GetKind(), p.GetNamespace(), p.GetName())
		}
		if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != gw.UID || ref.Kind != "TailscaleGateway" {
			t.Errorf("mode %q: controller %v", tc.mode, ref)
		}
		if !TargetsGateway(p, "envoy-gateway") {
			t.Errorf("mode %q: targets %v", tc.mode, p.Object["spec"])
		}
		v := clientValidation(t, p)
		refs, _ := v["caCertificateRefs"].([]any)
		if len(refs) != 1 || refs[0].(map[string]any)["kind"] != "Secret" || refs[0].(map[string]any)["name"] != "client-ca" {
			t.Errorf("mode %q: caCertificateRefs %v", tc.mode, refs)
		}
		if v["mode"] != tc.wantMode || v["optional"] != nil {
			t.Errorf("mode %q: clientValidation %v, want mode %s", tc.mode, v, tc.wantMode)
		}
	}
}

func TestGenerateClientTLSRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*v1alpha1.TailscaleGateway)
		want   string
	}{
		"disabled with mtls":  {func(gw *v1alpha1.TailscaleGateway) { gw.Spec.Security.TLSMode = TLSModeDisabled }, "tlsMode is disabled"},
		"strict without mtls": {func(gw *v1alpha1.TailscaleGateway) { gw.Spec.Security.MTLS = nil }, "strict needs security.mtls"},
		"cross-namespace Gateway": {func(gw *v1alpha1.TailscaleGateway) { gw.Namespace = "production" },
			"Gateway envoy-gateway-system/envoy-gateway is in another namespace"},
		"Secret in another namespace": {func(gw *v1alpha1.TailscaleGateway) { gw.Spec.Security.MTLS.CertificateRef.Namespace = "kube-system" },
			"names a Secret in kube-system"},
		"no certificateRef": {func(gw *v1alpha1.TailscaleGateway) { gw.Spec.Security.MTLS.CertificateRef = nil }, "certificateRef is required"},
	} {
		gw := mtlsGateway(TLSModeStrict)
		tc.mutate(gw)
		p, refused := GenerateClientTLS(gw)
		if p != nil || !strings.Contains(refused, tc.want) {
			t.Errorf("%s: policy %v, refused %q, want %q", name, p != nil, refused, tc.want)
		}
	}
	// Nothing asked: nothing generated, nothing refused.
	for _, sec := range []*v1alpha1.SecurityConfig{nil, {TLSMode: TLSModeDisabled}, {TLSMode: TLSModePermissive},
		{MTLS: &v1alpha1.MTLSConfig{Enabled: false, CertificateRef: &v1alpha1.SecretReference{Name: "x"}}}} {
		gw := mtlsGateway("")
		gw.Spec.Security = sec
		if p, refused := GenerateClientTLS(gw); p != nil || refused != "" {
			t.Errorf("security %+v: policy %v, refused %q", sec, p != nil, refused)
		}
	}
	// The Secret's namespace may be spelled out when it is the Gateway's.
	gw := mtlsGateway(TLSModeStrict)
	gw.Spec.Security.MTLS.CertificateRef.Namespace = "envoy-gateway-system"
	if p, refused := GenerateClientTLS(gw); p == nil {
		t.Errorf("Secret in the Gateway's namespace refused: %s", refused)
	}
}

var ctpListKind = map[schema.GroupVersionResource]string{ClientTrafficPolicyGVR: "ClientTrafficPolicyList"}

func clientTLSController(objs ...runtime.Object) (*Controller, *record.FakeRecorder) {
	rec := record.NewFakeRecorder(20)
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), ctpListKind, objs...)
	return &Controller{dyn: dyn, recorder: rec}, rec
}

func getPolicy(t *testing.T, c *Controller, name string) *unstructured.Unstructured {
	t.Helper()
	p, err := c.dyn.Resource(ClientTrafficPolicyGVR).Namespace("envoy-gateway-system").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return p
}

// The policy follows the spec: created strict, made optional by permissive, back to required by
// strict, and deleted when mtls is turned off.
func TestApplyClientTLSLifecycle(t *testing.T) {
	c, _ := clientTLSController()
	ctx := context.Background()
	gw := mtlsGateway(TLSModeStrict)
	step := func(mode, wantMode string) {
		t.Helper()
		gw.Spec.Security.TLSMode = mode
		var res clientTLSResult
		if err := c.applyClientTLS(ctx, gw, &res); err != nil {
			t.Fatal(err)
		}
		cond := clientTLSCondition(gw, res)
		if res.policy != "advanced-client-tls" || cond.Status != metav1.ConditionTrue || cond.Reason != ReasonClientTLSConfigured {
			t.Fatalf("mode %s: %+v, condition %+v", mode, res, cond)
		}
		p := getPolicy(t, c, "advanced-client-tls")
		if p == nil {
			t.Fatalf("mode %s: no policy", mode)
		}
		if got := clientValidation(t, p)["mode"]; got != wantMode {
			t.Errorf("tlsMode %s: clientValidation.mode %v, want %s", mode, got, wantMode)
		}
	}
	step(TLSModeStrict, ClientValidationRequire)
	step(TLSModePermissive, ClientValidationIfGiven)
	step(TLSModeStrict, ClientValidationRequire)

	gw.Spec.Security.MTLS = nil
	gw.Spec.Security.TLSMode = TLSModePermissive
	var res clientTLSResult
	if err := c.applyClientTLS(ctx, gw, &res); err != nil {
		t.Fatal(err)
	}
	if getPolicy(t, c, "advanced-client-tls") != nil {
		t.Error("the policy outlived mtls")
	}
	if cond := clientTLSCondition(gw, res); cond.Reason != ReasonClientTLSOff {
		t.Errorf("condition %+v", cond)
	}
}

// A user's ClientTrafficPolicy on the same Gateway is left alone and reported, and nothing is
// generated; so is one of ours that a user took the name of.
func TestApplyClientTLSConflict(t *testing.T) {
	users := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "ClientTrafficPolicy",
		"metadata": map[string]any{"name": "users-own", "namespace": "envoy-gateway-system"},
		"spec": map[string]any{"targetRefs": []any{map[string]any{"group": gwapiv1.GroupName, "kind": "Gateway", "name": "envoy-gateway"}},
			"timeout": map[string]any{"http": map[string]any{"idleTimeout": "5s"}}},
	}}
	elsewhere := users.DeepCopy()
	elsewhere.SetName("other-gateway")
	_ = unstructured.SetNestedSlice(elsewhere.Object, []any{map[string]any{"group": gwapiv1.GroupName, "kind": "Gateway", "name": "other"}}, "spec", "targetRefs")
	c, rec := clientTLSController(users, elsewhere)
	gw := mtlsGateway(TLSModeStrict)
	var res clientTLSResult
	if err := c.applyClientTLS(context.Background(), gw, &res); err != nil {
		t.Fatal(err)
	}
	if getPolicy(t, c, "advanced-client-tls") != nil {
		t.Error("generated beside the user's policy")
	}
	if got := getPolicy(t, c, "users-own"); got == nil || got.Object["spec"].(map[string]any)["tls"] != nil {
		t.Errorf("the user's policy was changed: %v", got)
	}
	cond := clientTLSCondition(gw, res)
	if cond.Status != metav1.ConditionFalse || cond.Reason != ReasonClientTLSConflict || !strings.Contains(cond.Message, "users-own") ||
		strings.Contains(cond.Message, "other-gateway") {
		t.Errorf("condition %+v", cond)
	}
	select {
	case e := <-rec.Events:
		if !strings.HasPrefix(e, "Warning "+ReasonClientTLSConflict) {
			t.Errorf("event %q", e)
		}
	default:
		t.Error("no Warning event")
	}

	// Our name taken by an object we do not control: left alone.
	taken := users.DeepCopy()
	taken.SetName("advanced-client-tls")
	_ = unstructured.SetNestedSlice(taken.Object, []any{map[string]any{"group": gwapiv1.GroupName, "kind": "Gateway", "name": "other"}}, "spec", "targetRefs")
	c, _ = clientTLSController(taken)
	res = clientTLSResult{}
	if err := c.applyClientTLS(context.Background(), gw, &res); err != nil {
		t.Fatal(err)
	}
	if got := getPolicy(t, c, "advanced-client-tls"); got == nil || TargetsGateway(got, "envoy-gateway") || res.conflict == "" {
		t.Errorf("conflict %q, object %v", res.conflict, got)
	}
}

// A TailscaleGateway of another namespace than the Gateway generates nothing and says why.
func TestApplyClientTLSCrossNamespace(t *testing.T) {
	c, _ := clientTLSController()
	gw := mtlsGateway(TLSModeStrict)
	gw.Namespace = "production"
	var res clientTLSResult
	if err := c.applyClientTLS(context.Background(), gw, &res); err != nil {
		t.Fatal(err)
	}
	list, err := c.dyn.Resource(ClientTrafficPolicyGVR).Namespace("").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("policies %v (%v)", list, err)
	}
	if cond := clientTLSCondition(gw, res); cond.Status != metav1.ConditionFalse || cond.Reason != ReasonClientTLSRefused ||
		!strings.Contains(cond.Message, "another namespace") {
		t.Errorf("condition %+v", cond)
	}
}

// tlsMode strict publishes the HTTPS listener only and names the others.
func TestGenerateListenersStrictTLS(t *testing.T) {
	in := listenersInput()
	in.Gateway.Spec.Security.TLSMode = TLSModeStrict
	out := GenerateListeners(in)
	if len(out.Listeners) != 1 || out.Listeners[0].Listener != "https" {
		t.Errorf("published %+v, want https only", out.Listeners)
	}
	got := strings.Join(out.Skipped, ",")
	if !strings.Contains(got, "listener http (HTTP, port 80)") || !strings.Contains(got, "listener dns (UDP, port 53)") {
		t.Errorf("skipped %q", got)
	}
	cond := listenersCondition(in.Gateway, listenerResult{out: out, managed: true, gwFound: true})
	if cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "not published (tlsMode strict") {
		t.Errorf("condition %+v", cond)
	}
	in.Gateway.Spec.Security.TLSMode = TLSModePermissive
	if out := GenerateListeners(in); len(out.Listeners) != 2 || len(out.Skipped) != 0 {
		t.Errorf("permissive published %d, skipped %v", len(out.Listeners), out.Skipped)
	}
}

// Without RBAC on ClientTrafficPolicies the reconcile goes on: a wanted policy is reported, and
// a TailscaleGateway not asking for one is not held up.
func TestApplyClientTLSForbidden(t *testing.T) {
	c, _ := clientTLSController()
	c.dyn.(*dynfake.FakeDynamicClient).PrependReactor("list", "clienttrafficpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(ClientTrafficPolicyGVR.GroupResource(), "", errors.New("no RBAC"))
	})
	gw := mtlsGateway(TLSModeStrict)
	var res clientTLSResult
	if err := c.applyClientTLS(context.Background(), gw, &res); err != nil {
		t.Fatal(err)
	}
	if cond := clientTLSCondition(gw, res); cond.Reason != ReasonClientTLSFailed || !strings.Contains(cond.Message, "RBAC") {
		t.Errorf("condition %+v", cond)
	}
	gw.Spec.Security = nil
	res = clientTLSResult{}
	if err := c.applyClientTLS(context.Background(), gw, &res); err != nil || res.failure != "" {
		t.Errorf("not asked: %v, %q", err, res.failure)
	}
}
