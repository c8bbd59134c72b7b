package tsgateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/accesscontrol"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
)

const egNS = "envoy-gateway-system"

// obsGateway is a TailscaleGateway of the Gateway's namespace with the API contract's
// observability example, its Jaeger collector named by its Zipkin endpoint.
func obsGateway() *v1alpha1.TailscaleGateway {
	gw := advancedGateway()
	gw.Namespace = egNS
	rate := resource.MustParse("0.1")
	gw.Spec.Observability = &v1alpha1.ObservabilityConfig{
		Metrics: &v1alpha1.MetricsConfig{Enabled: true, Port: ptr(int32(EnvoyStatsPort))},
		Tracing: &v1alpha1.TracingConfig{Enabled: true, SamplingRate: &rate, JaegerEndpoint: "http://jaeger-collector.observability:9411/api/v2/spans"},
		Logging: &v1alpha1.LoggingConfig{Level: "info", AccessLogs: true},
	}
	return gw
}

func TestGenerateEnvoyProxyGolden(t *testing.T) {
	ep, refused, unrealised := GenerateEnvoyProxy(obsGateway())
	if ep == nil || refused != "" || len(unrealised) != 0 {
		t.Fatalf("EnvoyProxy %v, refused %q, unrealised %v", ep != nil, refused, unrealised)
	}
	assertGolden(t, "envoyproxy-contract-example", ep.Object)

	// OTLP, metrics off, no sampling rate (every request), the level alone.
	gw := obsGateway()
	gw.Spec.Observability.Metrics.Enabled = false
	gw.Spec.Observability.Tracing.JaegerEndpoint = "http://10.0.0.7:4317"
	gw.Spec.Observability.Tracing.SamplingRate = nil
	gw.Spec.Observability.Logging.AccessLogs = false
	ep, _, _ = GenerateEnvoyProxy(gw)
	assertGolden(t, "envoyproxy-otlp", ep.Object["spec"])
}

func TestGenerateEnvoyProxyNothingOrRefused(t *testing.T) {
	for name, o := range map[string]*v1alpha1.ObservabilityConfig{
		"nil":              nil,
		"empty":            {},
		"tracing disabled": {Tracing: &v1alpha1.TracingConfig{JaegerEndpoint: "http://j:9411/api/v2/spans"}},
		"logging without":  {Logging: &v1alpha1.LoggingConfig{}},
	} {
		gw := obsGateway()
		gw.Spec.Observability = o
		if ep, refused, unrealised := GenerateEnvoyProxy(gw); ep != nil || refused != "" || len(unrealised) != 0 {
			t.Errorf("%s: EnvoyProxy %v, refused %q, unrealised %v", name, ep != nil, refused, unrealised)
		}
	}
	// The spec's own example names Jaeger's Thrift endpoint: tracing is not configured, the rest is.
	gw := obsGateway()
	gw.Spec.Observability.Tracing.JaegerEndpoint = "http://jaeger-collector:14268/api/traces"
	ep, _, unrealised := GenerateEnvoyProxy(gw)
	if ep == nil || len(unrealised) != 1 || !strings.Contains(unrealised[0], "Envoy cannot send Jaeger's own protocol") {
		t.Errorf("Thrift endpoint: EnvoyProxy %v, unrealised %v", ep != nil, unrealised)
	}
	if _, ok, _ := unstructured.NestedMap(ep.Object, "spec", "telemetry", "tracing"); ok {
		t.Error("Thrift endpoint: tracing configured")
	}
	gw.Spec.Observability.Tracing.JaegerEndpoint = ""
	if _, _, unrealised := GenerateEnvoyProxy(gw); len(unrealised) != 1 || !strings.Contains(unrealised[0], "no jaegerEndpoint") {
		t.Errorf("no endpoint: unrealised %v", unrealised)
	}
	gw = obsGateway()
	gw.Namespace = "production"
	if ep, refused, _ := GenerateEnvoyProxy(gw); ep != nil || !strings.Contains(refused, "another namespace") {
		t.Errorf("cross-namespace: EnvoyProxy %v, refused %q", ep != nil, refused)
	}
}

func TestTracingProvider(t *testing.T) {
	for _, tc := range []struct {
		url, typ, host string
		port           int64
		refused        string
	}{
		{url: "http://jaeger:9411/api/v2/spans", typ: "Zipkin", host: "jaeger", port: 9411},
		{url: "http://jaeger/api/v2/spans", typ: "Zipkin", host: "jaeger", port: 80},
		{url: "http://jaeger:4317", typ: "OpenTelemetry", host: "jaeger", port: 4317},
		{url: "http://[fd7a::1]:4317/", typ: "OpenTelemetry", host: "fd7a::1", port: 4317},
		{url: "http://jaeger-collector:14268/api/traces", refused: "Jaeger's own protocol"},
		{url: "http://otel:4318/v1/traces", refused: "Jaeger's own protocol"},
		{url: "https://jaeger:9411/api/v2/spans", refused: "plaintext only"},
	} {
		p, what, refused := TracingProvider(tc.url)
		if tc.refused != "" {
			if p != nil || !strings.Contains(refused, tc.refused) {
				t.Errorf("%s: provider %v, refused %q, want %q", tc.url, p, refused, tc.refused)
			}
			continue
		}
		if refused != "" || p["type"] != tc.typ || p["host"] != tc.host || p["port"] != tc.port || what == "" {
			t.Errorf("%s: provider %v (%s), refused %q", tc.url, p, what, refused)
		}
	}
}

func TestSamplingFraction(t *testing.T) {
	for in, want := range map[string][2]int64{"0.1": {1, 10}, "0.25": {1, 4}, "1": {1, 1}, "0": {0, 1}, "500m": {1, 2}, "0.0001": {1, 10000}, "0.333": {333, 1000}} {
		f := SamplingFraction(resource.MustParse(in))
		if f["numerator"] != want[0] || f["denominator"] != want[1] {
			t.Errorf("%s: %v, want %d/%d", in, f, want[0], want[1])
		}
	}
}

var epListKinds = map[schema.GroupVersionResource]string{EnvoyProxyGVR: "EnvoyProxyList", ClientTrafficPolicyGVR: "ClientTrafficPolicyList",
	BackendTrafficPolicyGVR: "BackendTrafficPolicyList"}

// obsController is a controller on fake clients holding kgw (and class, when not nil) and the
// EnvoyProxies objs; refresh reloads the Gateway lister from its client after a patch.
type obsController struct {
	*Controller
	rec     *record.FakeRecorder
	gwc     *gwfake.Clientset
	indexer cache.Indexer
}

func newObsController(t *testing.T, kgw *gwapiv1.Gateway, class *gwapiv1.GatewayClass, objs ...runtime.Object) *obsController {
	t.Helper()
	rec := record.NewFakeRecorder(50)
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), epListKinds, objs...)
	gwc := gwfake.NewSimpleClientset()
	ctx := context.Background()
	if _, err := gwc.GatewayV1().Gateways(kgw.Namespace).Create(ctx, kgw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	classes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if class != nil {
		_ = classes.Add(class)
	}
	o := &obsController{Controller: &Controller{dyn: dyn, recorder: rec, gwClient: gwc,
		classes: gwlisters.NewGatewayClassLister(classes)}, rec: rec, gwc: gwc,
		indexer: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})}
	o.kgateways = gwlisters.NewGatewayLister(o.indexer)
	o.refresh(t)
	return o
}

func (o *obsController) refresh(t *testing.T) *gwapiv1.Gateway {
	t.Helper()
	list, err := o.gwc.GatewayV1().Gateways("").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("Gateways %v (%v)", list, err)
	}
	g := list.Items[0].DeepCopy()
	_ = o.indexer.Replace([]any{g}, "")
	return g
}

func (o *obsController) apply(t *testing.T, gw *v1alpha1.TailscaleGateway) (metav1.Condition, *gwapiv1.Gateway) {
	t.Helper()
	var res observabilityResult
	if err := o.applyEnvoyProxy(context.Background(), gw, "", &res); err != nil {
		t.Fatal(err)
	}
	return observabilityCondition(gw, res), o.refresh(t)
}

func (o *obsController) envoyProxies(t *testing.T) []unstructured.Unstructured {
	t.Helper()
	list, err := o.dyn.Resource(EnvoyProxyGVR).Namespace("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func egGateway() *gwapiv1.Gateway {
	return &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: egNS, Name: "envoy-gateway", ResourceVersion: "1"},
		Spec: gwapiv1.GatewaySpec{GatewayClassName: "eg", Listeners: []gwapiv1.Listener{{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType}}}}
}

func parametersRef(g *gwapiv1.Gateway) *gwapiv1.LocalParametersReference {
	if g.Spec.Infrastructure == nil {
		return nil
	}
	return g.Spec.Infrastructure.ParametersRef
}

// The EnvoyProxy is created, then the Gateway's parametersRef set to it; a spec change updates
// it; observability removed deletes it and the reference; the TailscaleGateway deleted removes
// the reference too (its EnvoyProxy goes by the garbage collector).
func TestApplyEnvoyProxyLifecycle(t *testing.T) {
	o := newObsController(t, egGateway(), nil)
	gw := obsGateway()
	cond, kgw := o.apply(t, gw)
	if cond.Status != metav1.ConditionTrue || cond.Reason != ReasonObservabilityConfigured ||
		!strings.Contains(cond.Message, "tracing Zipkin to jaeger-collector.observability:9411, sampling 1/10 of requests") {
		t.Fatalf("condition %+v", cond)
	}
	eps := o.envoyProxies(t)
	if len(eps) != 1 || eps[0].GetName() != "advanced-envoy-proxy" || eps[0].GetNamespace() != egNS || !controlledBy(&eps[0], gw) {
		t.Fatalf("EnvoyProxies %v", eps)
	}
	if r := parametersRef(kgw); r == nil || *r != *envoyProxyRef("advanced-envoy-proxy") || kgw.Annotations[AnnotationEnvoyProxyOf] != "advanced" {
		t.Fatalf("Gateway parametersRef %v, annotations %v", r, kgw.Annotations)
	}

	gw.Spec.Observability.Logging.Level = "debug"
	if cond, _ = o.apply(t, gw); cond.Reason != ReasonObservabilityConfigured {
		t.Fatalf("condition %+v", cond)
	}
	if lvl, _, _ := unstructured.NestedString(o.envoyProxies(t)[0].Object, "spec", "logging", "level", "default"); lvl != "debug" {
		t.Errorf("level %q after the update", lvl)
	}

	// A field turned off goes; the API server's default of spec.logging is no change.
	gw.Spec.Observability.Logging = nil
	o.apply(t, gw)
	ep := o.envoyProxies(t)[0]
	if _, ok, _ := unstructured.NestedFieldNoCopy(ep.Object, "spec", "telemetry", "accessLog"); ok {
		t.Error("the access log outlived logging")
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(ep.Object, "spec", "logging"); ok {
		t.Error("the log level outlived logging")
	}
	want := mustGenerate(t, gw)
	_ = unstructured.SetNestedField(ep.Object, map[string]any{"default": "warn"}, "spec", "logging", "level")
	if envoyProxyStale(want, &ep) {
		t.Error("the CRD's default level makes the EnvoyProxy stale")
	}
	_ = unstructured.SetNestedField(ep.Object, "info", "spec", "logging", "level", "default")
	if !envoyProxyStale(want, &ep) {
		t.Error("a level left from before is not stale")
	}

	gw.Spec.Observability = nil
	cond, kgw = o.apply(t, gw)
	if cond.Reason != ReasonObservabilityOff || len(o.envoyProxies(t)) != 0 || kgw.Spec.Infrastructure != nil || kgw.Annotations[AnnotationEnvoyProxyOf] != "" {
		t.Fatalf("observability removed: condition %+v, EnvoyProxies %d, Gateway %+v", cond, len(o.envoyProxies(t)), kgw)
	}

	gw = obsGateway()
	if _, kgw = o.apply(t, gw); parametersRef(kgw) == nil {
		t.Fatal("not attached again")
	}
	if err := o.detachEnvoyProxy(context.Background(), gw.Namespace, gw.Name); err != nil {
		t.Fatal(err)
	}
	if kgw = o.refresh(t); parametersRef(kgw) != nil || kgw.Annotations[AnnotationEnvoyProxyOf] != "" {
		t.Errorf("after the TailscaleGateway's deletion: %+v", kgw.Spec.Infrastructure)
	}
}

// A Gateway with its own parametersRef is left alone, nothing is written and the conflict is
// reported with a Warning Event; so is an EnvoyProxy of our name that we do not control.
func TestApplyEnvoyProxyParametersRefConflict(t *testing.T) {
	kgw := egGateway()
	kgw.Spec.Infrastructure = &gwapiv1.GatewayInfrastructure{ParametersRef: &gwapiv1.LocalParametersReference{
		Group: "gateway.envoyproxy.io", Kind: "EnvoyProxy", Name: "users-own"}}
	o := newObsController(t, kgw, nil)
	cond, got := o.apply(t, obsGateway())
	if cond.Status != metav1.ConditionFalse || cond.Reason != ReasonParametersRefConflict || !strings.Contains(cond.Message, "users-own") {
		t.Errorf("condition %+v", cond)
	}
	if r := parametersRef(got); r == nil || r.Name != "users-own" || len(got.Annotations) != 0 || len(o.envoyProxies(t)) != 0 {
		t.Errorf("Gateway %+v, EnvoyProxies %d", got, len(o.envoyProxies(t)))
	}
	if e := <-o.rec.Events; !strings.HasPrefix(e, "Warning "+ReasonParametersRefConflict) {
		t.Errorf("event %q", e)
	}
	// Our reference's name without our annotation (someone else's): not ours either.
	kgw.Spec.Infrastructure.ParametersRef.Name = "advanced-envoy-proxy"
	o = newObsController(t, kgw, nil)
	if cond, _ := o.apply(t, obsGateway()); cond.Reason != ReasonParametersRefConflict {
		t.Errorf("unannotated reference: condition %+v", cond)
	}

	taken := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
		"metadata": map[string]any{"name": "advanced-envoy-proxy", "namespace": egNS}, "spec": map[string]any{}}}
	o = newObsController(t, egGateway(), nil, taken)
	cond, got = o.apply(t, obsGateway())
	if cond.Reason != ReasonEnvoyProxyConflict || parametersRef(got) != nil {
		t.Errorf("name taken: condition %+v, parametersRef %v", cond, parametersRef(got))
	}
	if eps := o.envoyProxies(t); len(eps) != 1 || len(eps[0].Object["spec"].(map[string]any)) != 0 {
		t.Errorf("the user's EnvoyProxy was changed: %v", eps)
	}
}

// The GatewayClass's EnvoyProxy: telemetry it sets otherwise, or mergeGateways, leave the Gateway
// alone; settings of its own that ours does not touch do not.
func TestApplyEnvoyProxyGatewayClass(t *testing.T) {
	ns := gwapiv1.Namespace(egNS)
	class := &gwapiv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "eg"}, Spec: gwapiv1.GatewayClassSpec{
		ParametersRef: &gwapiv1.ParametersReference{Group: "gateway.envoyproxy.io", Kind: "EnvoyProxy", Name: "class-proxy", Namespace: &ns}}}
	classProxy := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
			"metadata": map[string]any{"name": "class-proxy", "namespace": egNS}, "spec": spec}}
	}
	for name, tc := range map[string]struct {
		spec   map[string]any
		reason string
		want   string
	}{
		"tracing elsewhere": {map[string]any{"telemetry": map[string]any{"tracing": map[string]any{"provider": map[string]any{"type": "OpenTelemetry", "host": "otel", "port": int64(4317)}}}},
			ReasonEnvoyProxyConflict, "spec.telemetry.tracing"},
		"merged Gateways": {map[string]any{"mergeGateways": true}, ReasonEnvoyProxyConflict, "mergeGateways"},
		"other settings": {map[string]any{"provider": map[string]any{"type": "Kubernetes"}, "logging": map[string]any{"level": map[string]any{"default": "info"}}},
			ReasonObservabilityConfigured, "EnvoyProxy advanced-envoy-proxy"},
	} {
		o := newObsController(t, egGateway(), class, classProxy(tc.spec))
		cond, kgw := o.apply(t, obsGateway())
		if cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.want) {
			t.Errorf("%s: condition %+v", name, cond)
		}
		if attached := parametersRef(kgw) != nil; attached != (tc.reason == ReasonObservabilityConfigured) {
			t.Errorf("%s: attached %v", name, attached)
		}
	}
}

// The generated ClientTrafficPolicy and EnvoyProxy are watched: deleted by hand, they are made
// again without a resync (the controller's informers have none here).
func TestGeneratedPoliciesAreRestored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw := mtlsGateway(TLSModeStrict)
	gw.Spec.Observability = obsGateway().Spec.Observability
	client := fake.NewSimpleClientset()
	if _, err := client.GatewayV1alpha1().TailscaleGateways(gw.Namespace).Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gwc := gwfake.NewSimpleClientset()
	if _, err := gwc.GatewayV1().Gateways(egNS).Create(ctx, egGateway(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), epListKinds)
	factory := informers.NewSharedInformerFactory(client, 0)
	gwFactory := gwinformers.NewSharedInformerFactory(gwc, 0)
	policies := NewEnvoyGatewayInformer(dyn, ClientTrafficPolicyGVR, 0)
	proxies := NewEnvoyGatewayInformer(dyn, EnvoyProxyGVR, 0)
	c, err := New(client, factory, gwc, gwFactory, Options{Dynamic: dyn, Recorder: record.NewFakeRecorder(1000), Workers: 1,
		ClientTrafficPolicies: policies, EnvoyProxies: proxies})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	gwFactory.Start(ctx.Done())
	go policies.Run(ctx.Done())
	go proxies.Run(ctx.Done())
	go c.Run(ctx)

	for _, r := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{ClientTrafficPolicyGVR, ClientTLSPolicyName(gw.Name)}, {EnvoyProxyGVR, EnvoyProxyName(gw.Name)}} {
		res := c.dyn.Resource(r.gvr).Namespace(egNS)
		exists := func() bool { _, err := res.Get(ctx, r.name, metav1.GetOptions{}); return err == nil }
		if err := waitFor(ctx, exists); err != nil {
			t.Fatalf("%s %s not generated: %v", r.gvr.Resource, r.name, err)
		}
		if err := res.Delete(ctx, r.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := waitFor(ctx, exists); err != nil {
			t.Fatalf("%s %s not restored after its deletion: %v", r.gvr.Resource, r.name, err)
		}
	}
	got, err := client.GatewayV1alpha1().TailscaleGateways(gw.Namespace).Get(ctx, gw.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, ConditionObservability); c == nil || c.Reason != ReasonObservabilityConfigured {
		t.Errorf("%s: %+v", ConditionObservability, c)
	}
}

func mustGenerate(t *testing.T, gw *v1alpha1.TailscaleGateway) *unstructured.Unstructured {
	t.Helper()
	ep, refused, _ := GenerateEnvoyProxy(gw)
	if ep == nil {
		t.Fatalf("nothing generated: %s", refused)
	}
	return ep
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// logging.accessLogs also reaches the proxy hosting the listeners: the connection-log
// annotation on every listener TailscaleServices, removed with the field.
func TestGenerateListenersConnectionLog(t *testing.T) {
	in := listenersInput()
	in.Gateway.Spec.Observability = &v1alpha1.ObservabilityConfig{Logging: &v1alpha1.LoggingConfig{AccessLogs: true}}
	out := GenerateListeners(in)
	if len(out.Services) == 0 {
		t.Fatal("no listener TailscaleServices")
	}
	for _, s := range out.Services {
		if s.Annotations[accesscontrol.AnnotationConnectionLog] != "true" {
			t.Errorf("%s: annotations %v", s.Name, s.Annotations)
		}
	}
	cur := out.Services[0]
	in.Gateway.Spec.Observability = nil
	want := GenerateListeners(in).Services[0]
	if _, ok := want.Annotations[accesscontrol.AnnotationConnectionLog]; ok {
		t.Fatalf("annotations without accessLogs: %v", want.Annotations)
	}
	if _, a, changed := mergeMeta(cur, want); !changed || a[accesscontrol.AnnotationConnectionLog] != "" {
		t.Errorf("merge kept the connection log: %v (changed %v)", a, changed)
	}
}
