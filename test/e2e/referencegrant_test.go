package e2e

import (
	"context"
	"slices"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// Finding 3 (issue 20), through kube-apiserver: an HTTPRoute in one namespace naming another
// namespace's TailscaleEndpoints gets none of its endpoints (and a Warning Event RefNotPermitted)
// until a ReferenceGrant in that namespace permits HTTPRoutes of the first.
func TestCrossNamespaceBackendRefNeedsReferenceGrant(t *testing.T) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	// A replica started after the CRDs: it watches ReferenceGrants (discovered at start).
	replica, err := env.StartGateway("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replica.Stop() })

	attacker, victim := newNamespace(t, "attacker"), newNamespace(t, "victim")
	c := viaKube(t)
	for ns, ip := range map[string]string{attacker: "100.64.1.1", victim: "100.64.1.9"} {
		eps := &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "main", Endpoints: []v1alpha1.TailscaleEndpoint{
				{Name: "pg", TailscaleIP: ip, TailscaleFQDN: "db.ts.net", Port: 5432, Protocol: v1alpha1.ProtocolTCP}}}}
		if _, err := c.TailscaleEndpoints(ns).Create(ctx(t), eps, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	gw, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	group, kind := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Kind("TailscaleEndpoints")
	ref := func(ns *string) gwapiv1.HTTPBackendRef {
		return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
			Group: &group, Kind: &kind, Name: "db", Namespace: (*gwapiv1.Namespace)(ns), Port: ptr.To[gwapiv1.PortNumber](5432)}}}
	}
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: attacker, Name: "steal"}, Spec: gwapiv1.HTTPRouteSpec{
		Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{ref(nil), ref(&victim)}}}}}
	if _, err := gw.GatewayV1().HTTPRoutes(attacker).Create(ctx(t), route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cluster := "httproute/" + attacker + "/steal/rule/0"
	w := watchLoadAssignment(t, replica.XDSAddr, cluster)
	hostsAre := func(want ...string) func(*xdsclient.Response) bool {
		return func(r *xdsclient.Response) bool {
			return slices.Equal(claHosts(r.LoadAssignment(cluster)), want)
		}
	}
	resp, err := w.WaitFor(ctx(t), hostsAre("100.64.1.1"))
	if err != nil {
		t.Fatalf("no load assignment with the route's own endpoint: %v", err)
	}
	if got := claHosts(resp.LoadAssignment(cluster)); slices.Contains(got, "100.64.1.9") {
		t.Fatalf("the other namespace's endpoint was served without a ReferenceGrant: %v", got)
	}
	eventually(t, "a RefNotPermitted Event on the HTTPRoute", func(c context.Context) (bool, error) {
		list, err := env.Kube.CoreV1().Events(attacker).List(c, metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.kind": "HTTPRoute", "involvedObject.name": "steal", "reason": "RefNotPermitted"}.String()})
		return err == nil && len(list.Items) > 0 && list.Items[0].Type == corev1.EventTypeWarning, nil
	})

	grant := &gwapiv1b1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: victim, Name: "let-attacker"}, Spec: gwapiv1b1.ReferenceGrantSpec{
		From: []gwapiv1b1.ReferenceGrantFrom{{Group: gwapiv1.GroupName, Kind: "HTTPRoute", Namespace: gwapiv1.Namespace(attacker)}},
		To:   []gwapiv1b1.ReferenceGrantTo{{Group: gwapiv1.Group(v1alpha1.GroupName), Kind: "TailscaleEndpoints"}}}}
	if _, err := gw.GatewayV1beta1().ReferenceGrants(victim).Create(ctx(t), grant, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx(t), hostsAre("100.64.1.1", "100.64.1.9")); err != nil {
		t.Fatalf("the ReferenceGrant did not admit the other namespace's endpoint: %v", err)
	}
	if err := gw.GatewayV1beta1().ReferenceGrants(victim).Delete(ctx(t), grant.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx(t), hostsAre("100.64.1.1")); err != nil {
		t.Fatalf("the endpoint stayed after the ReferenceGrant was deleted: %v", err)
	}
}

// claHosts are the host addresses of cla, sorted.
func claHosts(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.LbEndpoints {
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	slices.Sort(out)
	return out
}
