package tsgateway

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/refgrant"
)

// bindingGateway is a TailscaleGateway of ns naming the Gateway envoy-gateway-system/envoy-gateway,
// created age hours before a fixed time.
func bindingGateway(ns, name string, age int) *v1alpha1.TailscaleGateway {
	gw := advancedGateway()
	gw.Namespace, gw.Name, gw.UID = ns, name, types.UID(ns+"-"+name)
	gw.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(-age) * time.Hour))
	return gw
}

// Finding 4 (issue 20): a TailscaleGateway of another namespace than its Gateway's is refused
// without a ReferenceGrant (RefNotPermitted, no listener published on its tailnets), and of the
// permitted ones naming one Gateway only the oldest publishes its listeners; the others report
// GatewayConflict.
func TestTailscaleGatewayBinding(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	owner := bindingGateway("envoy-gateway-system", "owner", 1) // the Gateway's namespace
	attacker := bindingGateway("attacker", "steal", 10)         // older, another namespace
	later := bindingGateway("envoy-gateway-system", "later", 0) // same namespace, newer
	granted := bindingGateway("partner", "shared", 5)           // another namespace, permitted below
	tailnet := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "main-tailnet"}, Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "company.ts.net"}}
	client := fake.NewSimpleClientset(tailnet)
	// Created through the clients: the fakes' trackers guess the resource of objects given to
	// NewSimpleClientset from the kind ("tailscalegatewaies", "gatewaies").
	for _, g := range []*v1alpha1.TailscaleGateway{owner, attacker, later, granted} {
		if _, err := client.GatewayV1alpha1().TailscaleGateways(g.Namespace).Create(ctx, g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kgw := &gwapiv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "envoy-gateway-system", Name: "envoy-gateway"},
		Spec: gwapiv1.GatewaySpec{Listeners: []gwapiv1.Listener{{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType}}}}
	gwClient := gwfake.NewSimpleClientset()
	if _, err := gwClient.GatewayV1().Gateways(kgw.Namespace).Create(ctx, kgw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kube := kubefake.NewSimpleClientset(envoyService(corev1.ServicePort{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80}))

	factory := informers.NewSharedInformerFactory(client, 0)
	gwFactory := gwinformers.NewSharedInformerFactory(gwClient, 0)
	envoy := NewEnvoyServiceInformer(kube, 0)
	grants := gwFactory.Gateway().V1beta1().ReferenceGrants().Informer()
	recorder := record.NewFakeRecorder(100)
	c, err := New(client, factory, gwClient, gwFactory, Options{Recorder: recorder, EnvoyServices: envoy, ReferenceGrants: grants})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	gwFactory.Start(ctx.Done())
	go envoy.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		t.Fatal("caches did not sync")
	}

	// state syncs g and returns its Ready reason and the listener TailscaleServices in its namespace.
	state := func(g *v1alpha1.TailscaleGateway) (string, int) {
		t.Helper()
		if err := c.sync(ctx, g.Namespace+"/"+g.Name); err != nil {
			t.Fatalf("sync %s/%s: %v", g.Namespace, g.Name, err)
		}
		got, err := client.GatewayV1alpha1().TailscaleGateways(g.Namespace).Get(ctx, g.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svcs, err := client.GatewayV1alpha1().TailscaleServices(g.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: labels.SelectorFromSet(labels.Set{LabelGateway: g.Name, LabelGenerated: GeneratedListener}).String()})
		if err != nil {
			t.Fatal(err)
		}
		ready := meta.FindStatusCondition(got.Status.Conditions, ConditionReady)
		listeners := meta.FindStatusCondition(got.Status.Conditions, ConditionListenersReady)
		if ready == nil || listeners == nil {
			t.Fatalf("%s/%s: conditions %v", g.Namespace, g.Name, got.Status.Conditions)
		}
		if (ready.Reason == refgrant.ReasonRefNotPermitted || ready.Reason == refgrant.ReasonGatewayConflict) && listeners.Reason != ready.Reason {
			t.Errorf("%s/%s: ListenersReady %s, want %s", g.Namespace, g.Name, listeners.Reason, ready.Reason)
		}
		return ready.Reason, len(svcs.Items)
	}

	if reason, n := state(attacker); reason != refgrant.ReasonRefNotPermitted || n != 0 {
		t.Errorf("attacker: Ready reason %s with %d listener services, want RefNotPermitted and none", reason, n)
	}
	if reason, n := state(owner); reason == refgrant.ReasonGatewayConflict || n != 1 {
		t.Errorf("owner: Ready reason %s with %d listener services, want bound with 1", reason, n)
	}
	if reason, n := state(later); reason != refgrant.ReasonGatewayConflict || n != 0 {
		t.Errorf("later: Ready reason %s with %d listener services, want GatewayConflict and none", reason, n)
	}
	if reason, _ := state(granted); reason != refgrant.ReasonRefNotPermitted {
		t.Errorf("partner before its grant: Ready reason %s, want RefNotPermitted", reason)
	}

	// A ReferenceGrant for TailscaleGateways of partner: partner's (older than owner) is bound now;
	// owner gives up its listeners and reports the conflict.
	grant := &gwapiv1b1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "envoy-gateway-system", Name: "partner"}, Spec: gwapiv1b1.ReferenceGrantSpec{
		From: []gwapiv1b1.ReferenceGrantFrom{{Group: v1alpha1.GroupName, Kind: "TailscaleGateway", Namespace: "partner"}},
		To:   []gwapiv1b1.ReferenceGrantTo{{Group: gwapiv1.GroupName, Kind: "Gateway"}}}}
	if _, err := gwClient.GatewayV1beta1().ReferenceGrants(grant.Namespace).Create(ctx, grant, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !cache.WaitForCacheSync(ctx.Done(), func() bool { _, ok, _ := grants.GetIndexer().GetByKey("envoy-gateway-system/partner"); return ok }) {
		t.Fatal("grant not cached")
	}
	if reason, n := state(granted); reason == refgrant.ReasonRefNotPermitted || reason == refgrant.ReasonGatewayConflict || n != 1 {
		t.Errorf("partner with a grant: Ready reason %s with %d listener services, want bound with 1", reason, n)
	}
	if reason, n := state(owner); reason != refgrant.ReasonGatewayConflict || n != 0 {
		t.Errorf("owner after partner's grant: Ready reason %s with %d listener services, want GatewayConflict and none", reason, n)
	}
	if reason, _ := state(attacker); reason != refgrant.ReasonRefNotPermitted {
		t.Errorf("attacker: Ready reason %s, want RefNotPermitted (the grant is for partner)", reason)
	}
}
