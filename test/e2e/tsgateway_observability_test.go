package e2e

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/tsgateway"
)

// Through kube-apiserver: a TailscaleGateway's observability becomes an EnvoyProxy that its
// Gateway's parametersRef names (set by a merge patch, with the annotation naming the
// TailscaleGateway); a Gateway that has its own parametersRef is left alone and the conflict
// reported; deleting the TailscaleGateway removes the reference (and the garbage collector the
// EnvoyProxy).
func TestTailscaleGatewayObservabilityEnvoyProxy(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	installEnvoyGatewayCRD(t, "envoyproxies")
	ns := newNamespace(t, "tsgw-obs")
	gwc, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	api := viaKube(t)
	proxies := dyn.Resource(tsgateway.EnvoyProxyGVR).Namespace(ns)
	users := &gwapiv1.LocalParametersReference{Group: "gateway.envoyproxy.io", Kind: "EnvoyProxy", Name: "users-own"}
	for name, ref := range map[string]*gwapiv1.LocalParametersReference{"plain": nil, "owned": users} {
		g := &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwapiv1.GatewaySpec{
			GatewayClassName: "eg", Listeners: []gwapiv1.Listener{{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType}}}}
		if ref != nil {
			g.Spec.Infrastructure = &gwapiv1.GatewayInfrastructure{ParametersRef: ref}
		}
		if _, err := gwc.GatewayV1().Gateways(ns).Create(ctx(t), g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rate := resource.MustParse("0.25")
	obs := &v1alpha1.ObservabilityConfig{
		Tracing: &v1alpha1.TracingConfig{Enabled: true, SamplingRate: &rate, JaegerEndpoint: "http://jaeger.observability:4317"},
		Logging: &v1alpha1.LoggingConfig{Level: "warn", AccessLogs: true}}
	for _, name := range []string{"plain", "owned"} {
		o := &v1alpha1.TailscaleGateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.TailscaleGatewaySpec{
			GatewayRef: v1alpha1.LocalPolicyTargetReference{Name: name}, Observability: obs,
			Tailnets: []v1alpha1.TailnetConfiguration{{Name: "t", TailscaleTailnetRef: v1alpha1.LocalPolicyTargetReference{Name: "absent-tailnet"}}}}}
		if _, err := api.TailscaleGateways(ns).Create(ctx(t), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	reason := func(c context.Context, name string) string {
		got, err := api.TailscaleGateways(ns).Get(c, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if cond := meta.FindStatusCondition(got.Status.Conditions, tsgateway.ConditionObservability); cond != nil {
			return cond.Reason
		}
		return ""
	}
	gateway := func(c context.Context, name string) (*gwapiv1.Gateway, error) {
		return gwc.GatewayV1().Gateways(ns).Get(c, name, metav1.GetOptions{})
	}

	eventually(t, "plain: EnvoyProxy attached", func(c context.Context) (bool, error) {
		g, err := gateway(c, "plain")
		if err != nil {
			return false, err
		}
		_, perr := proxies.Get(c, tsgateway.EnvoyProxyName("plain"), metav1.GetOptions{})
		return reason(c, "plain") == tsgateway.ReasonObservabilityConfigured && perr == nil && g.Spec.Infrastructure != nil &&
			g.Spec.Infrastructure.ParametersRef != nil && g.Spec.Infrastructure.ParametersRef.Name == tsgateway.EnvoyProxyName("plain") &&
			g.Annotations[tsgateway.AnnotationEnvoyProxyOf] == "plain", nil
	})
	eventually(t, "owned: ParametersRefConflict", func(c context.Context) (bool, error) {
		return reason(c, "owned") == tsgateway.ReasonParametersRefConflict, nil
	})
	g, err := gateway(ctx(t), "owned")
	if err != nil {
		t.Fatal(err)
	}
	if r := g.Spec.Infrastructure.ParametersRef; *r != *users || len(g.Annotations) != 0 {
		t.Errorf("the user's Gateway was changed: %+v, annotations %v", r, g.Annotations)
	}
	if _, err := proxies.Get(ctx(t), tsgateway.EnvoyProxyName("owned"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("an EnvoyProxy was written for the conflicting Gateway: %v", err)
	}

	if err := api.TailscaleGateways(ns).Delete(ctx(t), "plain", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the parametersRef removed and the EnvoyProxy collected", func(c context.Context) (bool, error) {
		g, err := gateway(c, "plain")
		if err != nil {
			return false, err
		}
		_, perr := proxies.Get(c, tsgateway.EnvoyProxyName("plain"), metav1.GetOptions{})
		return (g.Spec.Infrastructure == nil || g.Spec.Infrastructure.ParametersRef == nil) && g.Annotations[tsgateway.AnnotationEnvoyProxyOf] == "" &&
			apierrors.IsNotFound(perr), nil
	})
}
