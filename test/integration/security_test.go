package integration

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/admission/limits"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/objects"
)

// Finding 11 of the security review: a /status write skips admission, so it must not change any
// metadata. A writer holding only status rights tries to take an object over by adding an owner
// reference (garbage collection would delete it with its "owner"), a finalizer (deletion would
// hang), labels and annotations (selectors and controllers read them); all stay as stored.
func TestSecurityStatusWriteKeepsMetadata(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("sec-status")
	obj := objects.Endpoints("sec-status", "web")
	obj.Annotations = map[string]string{"team": "a"}
	created, err := c.Create(ctx(t), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := created.ObjectMeta.DeepCopy()

	forged := created.DeepCopy()
	forged.Status.TotalEndpoints = 7
	forged.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "victim", UID: "0c4e1b1e-0000-4000-8000-000000000001"}}
	forged.Finalizers = []string{"example.com/hold"}
	forged.Labels = map[string]string{"forged": "yes"}
	forged.Annotations = map[string]string{"forged": "yes"}
	got, err := c.UpdateStatus(ctx(t), forged, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.TotalEndpoints != 7 {
		t.Fatalf("status not written: %+v", got.Status)
	}
	checkMetadata := func(step string) {
		t.Helper()
		stored, err := c.Get(ctx(t), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := stored.ObjectMeta
		if !reflect.DeepEqual(m.OwnerReferences, want.OwnerReferences) || !reflect.DeepEqual(m.Finalizers, want.Finalizers) ||
			!reflect.DeepEqual(m.Labels, want.Labels) || !reflect.DeepEqual(m.Annotations, want.Annotations) {
			t.Fatalf("%s changed metadata: ownerReferences %v finalizers %v labels %v annotations %v, want %v %v %v %v", step,
				m.OwnerReferences, m.Finalizers, m.Labels, m.Annotations, want.OwnerReferences, want.Finalizers, want.Labels, want.Annotations)
		}
	}
	checkMetadata("update of /status")

	// The same through a merge patch and a server-side apply of the status subresource.
	patch := []byte(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"victim","uid":"0c4e1b1e-0000-4000-8000-000000000001"}],` +
		`"finalizers":["example.com/hold"],"labels":{"forged":"yes"},"annotations":{"forged":"yes"}},"status":{"totalEndpoints":8}}`)
	if _, err := c.Patch(ctx(t), "web", types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	checkMetadata("merge patch of /status")
	apply := []byte(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":"web","namespace":"sec-status",` +
		`"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"victim","uid":"0c4e1b1e-0000-4000-8000-000000000001"}],` +
		`"finalizers":["example.com/hold"],"labels":{"forged":"yes"}},"status":{"totalEndpoints":9}}`)
	force := true
	applied, err := c.Patch(ctx(t), "web", types.ApplyPatchType, apply, metav1.PatchOptions{FieldManager: "forger", Force: &force}, "status")
	if err != nil {
		t.Fatal(err)
	}
	if applied.Status.TotalEndpoints != 9 {
		t.Fatalf("applied status not written: %+v", applied.Status)
	}
	checkMetadata("server-side apply of /status")
}

// Finding 9: whoever may create a TailscaleTailnet cannot make the server read a Secret outside
// the installation's namespace (it holds the rights to read Secrets for proxies elsewhere) nor
// send OAuth credentials in clear to an address of their choosing.
func TestSecurityTailnetCredentialsStayInInstallation(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1().TailscaleTailnets()
	other := objects.Tailnet("sec-other-ns")
	other.Spec.OAuthSecretName = "team-b-db-password"
	other.Spec.OAuthSecretNamespace = "team-b"
	_, err := c.Create(ctx(t), other, metav1.CreateOptions{})
	wantRefused(t, err, "spec.oauthSecretNamespace", "read only from namespace tailscale-gateway-system")

	clear := objects.Tailnet("sec-clear")
	clear.Spec.APIBaseURL = "http://collector.attacker.example"
	_, err = c.Create(ctx(t), clear, metav1.CreateOptions{})
	wantRefused(t, err, "spec.apiBaseURL", "must be https")

	// An admitted tailnet cannot be moved to either afterwards.
	ok := objects.Tailnet("sec-ok")
	ok.Spec.APIBaseURL = "https://api.tailscale.com"
	created, err := c.Create(ctx(t), ok, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	moved := created.DeepCopy()
	moved.Spec.OAuthSecretNamespace = "team-b"
	_, err = c.Update(ctx(t), moved, metav1.UpdateOptions{})
	wantRefused(t, err, "spec.oauthSecretNamespace", "read only from namespace tailscale-gateway-system")
	moved = created.DeepCopy()
	moved.Spec.APIBaseURL = "http://10.0.0.7"
	_, err = c.Update(ctx(t), moved, metav1.UpdateOptions{})
	wantRefused(t, err, "spec.apiBaseURL", "must be https")
}

// Finding 8: with the server's default limits, a health check more frequent than 1s or with a
// timeout under 100ms, and an object of more than 256 endpoints, are refused with their field
// paths; an object admitted under looser limits can still be edited elsewhere.
func TestSecurityProbeLimits(t *testing.T) {
	s := framework.Start(t, "", func(o *server.Options) { o.Live.Enabled = false; o.Tenancy.Limits = limits.Defaults() })
	c := s.Clientset(t).GatewayV1alpha1()

	fast := objects.Endpoints("sec-limits", "fast")
	fast.Spec.Endpoints[0].HealthCheck.Interval = &metav1.Duration{Duration: 100 * time.Millisecond}
	fast.Spec.Endpoints[0].HealthCheck.Timeout = &metav1.Duration{Duration: 10 * time.Millisecond}
	_, err := c.TailscaleEndpoints("sec-limits").Create(ctx(t), fast, metav1.CreateOptions{})
	wantRefused(t, err, "spec.endpoints[0].healthCheck.interval", "must be at least 1s")
	wantRefused(t, err, "spec.endpoints[0].healthCheck.timeout", "must be at least 100ms")

	many := objects.Endpoints("sec-limits", "many")
	tmpl := many.Spec.Endpoints[1]
	many.Spec.Endpoints = nil
	for i := range limits.DefaultMaxEndpointsPerObject + 1 {
		ep := tmpl
		ep.Name = fmt.Sprintf("ep-%d", i)
		many.Spec.Endpoints = append(many.Spec.Endpoints, ep)
	}
	_, err = c.TailscaleEndpoints("sec-limits").Create(ctx(t), many, metav1.CreateOptions{})
	wantRefused(t, err, "spec.endpoints", "must have at most 256 items")
	many.Spec.Endpoints = many.Spec.Endpoints[:limits.DefaultMaxEndpointsPerObject]
	if _, err := c.TailscaleEndpoints("sec-limits").Create(ctx(t), many, metav1.CreateOptions{}); err != nil {
		t.Fatalf("256 endpoints: %v", err)
	}

	svc := objects.Services("sec-limits", "fast")
	svc.Spec.LoadBalancing = &v1alpha1.LoadBalancingConfig{HealthCheck: &v1alpha1.HealthCheckConfig{Interval: &metav1.Duration{Duration: 500 * time.Millisecond}}}
	_, err = c.TailscaleServices("sec-limits").Create(ctx(t), svc, metav1.CreateOptions{})
	wantRefused(t, err, "spec.loadBalancing.healthCheck.interval", "must be at least 1s")
}

// Finding 2: the tags a proxy carries are the tailnet admin's to bound (spec.proxyTags, or
// tag:k8s when unset). A namespace editor asking for the operator's tag, or any tag outside the
// bound, on a TailscaleEndpoints or a TailscaleServices' endpointTemplate is refused with the
// field path, on create and on update; a malformed bound is refused too.
func TestSecurityProxyTagsBoundedByTailnet(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1()
	bad := objects.Tailnet("sec-proxytags-bad")
	bad.Spec.Tailnet = "proxytags-bad.ts.net"
	bad.Spec.ProxyTags = []string{"tag:web", "web"}
	_, err := c.TailscaleTailnets().Create(ctx(t), bad, metav1.CreateOptions{})
	wantRefused(t, err, "spec.proxyTags[1]", `must be "tag:<name>"`)

	tn := objects.Tailnet("sec-proxytags")
	tn.Spec.Tailnet = "proxytags.ts.net"
	tn.Spec.ProxyTags = []string{"tag:proxy", "tag:web"}
	if _, err := c.TailscaleTailnets().Create(ctx(t), tn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := "sec-proxytags"
	eps := objects.Endpoints(ns, "web")
	eps.Spec.Tailnet = "sec-proxytags"
	eps.Spec.Tags = []string{"tag:web", "tag:k8s-operator"}
	_, err = c.TailscaleEndpoints(ns).Create(ctx(t), eps, metav1.CreateOptions{})
	wantRefused(t, err, "spec.tags[1]", "tag:k8s-operator is not among the tags TailscaleTailnet sec-proxytags permits its proxies")

	eps.Spec.Tags = []string{"tag:web"}
	created, err := c.TailscaleEndpoints(ns).Create(ctx(t), eps, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	widened := created.DeepCopy()
	widened.Spec.Tags = []string{"tag:admin", "tag:web"}
	_, err = c.TailscaleEndpoints(ns).Update(ctx(t), widened, metav1.UpdateOptions{})
	wantRefused(t, err, "spec.tags[0]", "tag:admin is not among")

	// Unset, the bound is tag:k8s alone.
	def := objects.Tailnet("sec-proxytags-default")
	def.Spec.Tailnet = "proxytags-default.ts.net"
	if _, err := c.TailscaleTailnets().Create(ctx(t), def, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := objects.Services(ns, "auto")
	svc.Spec.EndpointTemplate = &v1alpha1.EndpointTemplate{Tailnet: "sec-proxytags-default", Tags: []string{"tag:k8s", "tag:web"},
		Labels: map[string]string{"service-type": "web"}}
	_, err = c.TailscaleServices(ns).Create(ctx(t), svc, metav1.CreateOptions{})
	wantRefused(t, err, "spec.endpointTemplate.tags[1]", "tag:web is not among the tags TailscaleTailnet sec-proxytags-default permits its proxies (spec.proxyTags: tag:k8s)")
	svc.Spec.EndpointTemplate.Tags = []string{"tag:k8s"}
	if _, err := c.TailscaleServices(ns).Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
