package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	baseversion "k8s.io/component-base/version"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/localpki"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/version"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

// shared is one server for the tests that do not restart it.
var shared *framework.Server

func TestMain(m *testing.M) {
	os.Exit(runWithServer(m))
}

func runWithServer(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tsgw-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The shared server serves stored status, so that these tests see the registry's own
	// semantics; the live-status tests start servers of their own. It accepts externalServices
	// (the examples have them); tenancy_test.go checks the default, which refuses them.
	shared, err = framework.StartServer(dir, func(o *server.Options) { o.Live.Enabled = false; o.Tenancy.External.Allow = true })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer shared.Stop()
	return m.Run()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestCRUDEveryKind(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1()
	ns := "crud"
	cases := []struct {
		name   string
		create func() (metav1.Object, error)
		get    func() (metav1.Object, error)
		update func(metav1.Object) (metav1.Object, error)
		list   func() (int, error)
		delete func() error
	}{
		{
			name: "TailscaleTailnet",
			create: func() (metav1.Object, error) {
				return c.TailscaleTailnets().Create(ctx(t), objects.Tailnet("crud-tailnet"), metav1.CreateOptions{})
			},
			get: func() (metav1.Object, error) {
				return c.TailscaleTailnets().Get(ctx(t), "crud-tailnet", metav1.GetOptions{})
			},
			update: func(o metav1.Object) (metav1.Object, error) {
				obj := o.(*v1alpha1.TailscaleTailnet)
				obj.Spec.Tags = append(obj.Spec.Tags, "tag:updated")
				return c.TailscaleTailnets().Update(ctx(t), obj, metav1.UpdateOptions{})
			},
			list: func() (int, error) {
				l, err := c.TailscaleTailnets().List(ctx(t), metav1.ListOptions{FieldSelector: "metadata.name=crud-tailnet"})
				if err != nil {
					return 0, err
				}
				return len(l.Items), nil
			},
			delete: func() error { return c.TailscaleTailnets().Delete(ctx(t), "crud-tailnet", metav1.DeleteOptions{}) },
		},
		{
			name: "TailscaleEndpoints",
			create: func() (metav1.Object, error) {
				return c.TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "web"), metav1.CreateOptions{})
			},
			get: func() (metav1.Object, error) { return c.TailscaleEndpoints(ns).Get(ctx(t), "web", metav1.GetOptions{}) },
			update: func(o metav1.Object) (metav1.Object, error) {
				obj := o.(*v1alpha1.TailscaleEndpoints)
				obj.Spec.Endpoints[0].Port = 8081
				return c.TailscaleEndpoints(ns).Update(ctx(t), obj, metav1.UpdateOptions{})
			},
			list: func() (int, error) {
				l, err := c.TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{})
				if err != nil {
					return 0, err
				}
				return len(l.Items), nil
			},
			delete: func() error { return c.TailscaleEndpoints(ns).Delete(ctx(t), "web", metav1.DeleteOptions{}) },
		},
		{
			name: "TailscaleServices",
			create: func() (metav1.Object, error) {
				return c.TailscaleServices(ns).Create(ctx(t), objects.Services(ns, "web"), metav1.CreateOptions{})
			},
			get: func() (metav1.Object, error) { return c.TailscaleServices(ns).Get(ctx(t), "web", metav1.GetOptions{}) },
			update: func(o metav1.Object) (metav1.Object, error) {
				obj := o.(*v1alpha1.TailscaleServices)
				obj.Spec.VIPService.Comment = "updated"
				return c.TailscaleServices(ns).Update(ctx(t), obj, metav1.UpdateOptions{})
			},
			list: func() (int, error) {
				l, err := c.TailscaleServices(ns).List(ctx(t), metav1.ListOptions{})
				if err != nil {
					return 0, err
				}
				return len(l.Items), nil
			},
			delete: func() error { return c.TailscaleServices(ns).Delete(ctx(t), "web", metav1.DeleteOptions{}) },
		},
		{
			name: "TailscaleGateway",
			create: func() (metav1.Object, error) {
				return c.TailscaleGateways(ns).Create(ctx(t), objects.Gateway(ns, "gw"), metav1.CreateOptions{})
			},
			get: func() (metav1.Object, error) { return c.TailscaleGateways(ns).Get(ctx(t), "gw", metav1.GetOptions{}) },
			update: func(o metav1.Object) (metav1.Object, error) {
				obj := o.(*v1alpha1.TailscaleGateway)
				obj.Spec.Tailnets[0].Priority = ptrTo(int32(7))
				return c.TailscaleGateways(ns).Update(ctx(t), obj, metav1.UpdateOptions{})
			},
			list: func() (int, error) {
				l, err := c.TailscaleGateways(ns).List(ctx(t), metav1.ListOptions{})
				if err != nil {
					return 0, err
				}
				return len(l.Items), nil
			},
			delete: func() error { return c.TailscaleGateways(ns).Delete(ctx(t), "gw", metav1.DeleteOptions{}) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			created, err := tc.create()
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if created.GetGeneration() != 1 || created.GetUID() == "" || created.GetResourceVersion() == "" {
				t.Fatalf("create returned generation %d uid %q rv %q", created.GetGeneration(), created.GetUID(), created.GetResourceVersion())
			}
			got, err := tc.get()
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			updated, err := tc.update(got)
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if updated.GetGeneration() != 2 {
				t.Fatalf("generation after a spec change = %d, want 2", updated.GetGeneration())
			}
			if n, err := tc.list(); err != nil || n != 1 {
				t.Fatalf("list: %d items, %v", n, err)
			}
			if err := tc.delete(); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if _, err := tc.get(); !apierrors.IsNotFound(err) {
				t.Fatalf("get after delete: %v, want NotFound", err)
			}
		})
	}
}

func TestDefaultsAreApplied(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1()
	ep, err := c.TailscaleEndpoints("defaults").Create(ctx(t), objects.Endpoints("defaults", "web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := ep.Spec.Endpoints[0].HealthCheck
	if hc.Type != v1alpha1.ProtocolHTTP || hc.Interval.Duration != 30*time.Second || hc.Timeout.Duration != 10*time.Second ||
		*hc.HealthyThreshold != 2 || *hc.UnhealthyThreshold != 3 || *hc.ExpectedStatus != 200 {
		t.Fatalf("health check defaults not applied: %+v", hc)
	}
	tn, err := c.TailscaleTailnets().Create(ctx(t), &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tn.Spec.Tailnet != "-" {
		t.Fatalf("tailnet default = %q, want -", tn.Spec.Tailnet)
	}
}

func TestStatusSubresource(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("status")
	obj := objects.Endpoints("status", "web")
	obj.Status.HealthyEndpoints = 42 // ignored on create
	created, err := c.Create(ctx(t), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.Status.HealthyEndpoints != 0 {
		t.Fatalf("status persisted on create: %+v", created.Status)
	}

	// A status write changes status only.
	created.Status.HealthyEndpoints = 2
	created.Status.TotalEndpoints = 3
	created.Spec.Endpoints[0].Port = 1
	afterStatus, err := c.UpdateStatus(ctx(t), created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if afterStatus.Status.HealthyEndpoints != 2 || afterStatus.Spec.Endpoints[0].Port != 8080 || afterStatus.Generation != 1 {
		t.Fatalf("status update: status %+v port %d generation %d", afterStatus.Status, afterStatus.Spec.Endpoints[0].Port, afterStatus.Generation)
	}

	// A main-resource write changes spec only.
	afterStatus.Status.HealthyEndpoints = 0
	afterStatus.Spec.Endpoints[0].Port = 9000
	afterSpec, err := c.Update(ctx(t), afterStatus, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if afterSpec.Status.HealthyEndpoints != 2 || afterSpec.Spec.Endpoints[0].Port != 9000 || afterSpec.Generation != 2 {
		t.Fatalf("spec update: status %+v port %d generation %d", afterSpec.Status, afterSpec.Spec.Endpoints[0].Port, afterSpec.Generation)
	}

	// Metadata-only changes do not bump the generation.
	afterSpec.Labels["extra"] = "yes"
	afterLabels, err := c.Update(ctx(t), afterSpec, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if afterLabels.Generation != 2 {
		t.Fatalf("generation after a label change = %d, want 2", afterLabels.Generation)
	}
}

func TestWatchFromResourceVersion(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("watch")
	first, err := c.Create(ctx(t), objects.Endpoints("watch", "first"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Changes made before the watch starts are replayed from the resourceVersion.
	if _, err := c.Create(ctx(t), objects.Endpoints("watch", "second"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx(t), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx(t), metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	want := []string{"ADDED second", "DELETED first"}
	var got []string
	timeout := time.After(time.Minute)
	for len(got) < len(want) {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed after %v", got)
			}
			if ev.Type == watch.Error {
				t.Fatalf("watch error: %v", ev.Object)
			}
			got = append(got, fmt.Sprintf("%s %s", ev.Type, ev.Object.(*v1alpha1.TailscaleEndpoints).Name))
		case <-timeout:
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestLabelAndFieldSelectors(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("selectors")
	a := objects.Endpoints("selectors", "a")
	a.Labels = map[string]string{"tier": "front"}
	b := objects.Endpoints("selectors", "b")
	b.Labels = map[string]string{"tier": "back"}
	b.Spec.Tailnet = "other.ts.net"
	for _, o := range []*v1alpha1.TailscaleEndpoints{a, b} {
		if _, err := c.Create(ctx(t), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		opts metav1.ListOptions
		want string
	}{
		{metav1.ListOptions{LabelSelector: "tier=front"}, "a"},
		{metav1.ListOptions{LabelSelector: "tier!=front"}, "b"},
		{metav1.ListOptions{FieldSelector: "spec.tailnet=other.ts.net"}, "b"},
		{metav1.ListOptions{FieldSelector: "metadata.name=a"}, "a"},
		{metav1.ListOptions{FieldSelector: "metadata.namespace=selectors,spec.tailnet!=other.ts.net"}, "a"},
	} {
		l, err := c.List(ctx(t), tc.opts)
		if err != nil {
			t.Fatalf("%+v: %v", tc.opts, err)
		}
		var names []string
		for _, i := range l.Items {
			names = append(names, i.Name)
		}
		if strings.Join(names, ",") != tc.want {
			t.Errorf("%+v: got %v, want %s", tc.opts, names, tc.want)
		}
	}
	_, err := c.List(ctx(t), metav1.ListOptions{FieldSelector: "spec.unknown=x"})
	if !apierrors.IsBadRequest(err) {
		t.Errorf("unsupported field selector: %v, want BadRequest", err)
	}
}

func TestInvalidObjectReturnsEveryFieldError(t *testing.T) {
	c := shared.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("invalid")
	obj := objects.Endpoints("invalid", "bad")
	obj.Spec.Endpoints[0].Port = 70000
	obj.Spec.Endpoints[1].TailscaleIP = "10.0.0.1"
	obj.Spec.Endpoints[2].Name = "api-server"
	_, err := c.Create(ctx(t), obj, metav1.CreateOptions{})
	status, ok := err.(apierrors.APIStatus)
	if !ok || status.Status().Code != http.StatusUnprocessableEntity {
		t.Fatalf("create: %v, want 422", err)
	}
	var fields []string
	for _, cause := range status.Status().Details.Causes {
		fields = append(fields, cause.Field)
	}
	got := strings.Join(fields, ",")
	for _, want := range []string{"spec.endpoints[0].port", "spec.endpoints[1].tailscaleIP", "spec.endpoints[2].name"} {
		if !strings.Contains(got, want) {
			t.Errorf("causes %s lack %s", got, want)
		}
	}
}

func TestMalformedBodyIsBadRequest(t *testing.T) {
	client, err := rest.HTTPClientFor(shared.Config)
	if err != nil {
		t.Fatal(err)
	}
	url := shared.Config.Host + "/apis/gateway.tailscale.com/v1alpha1/namespaces/default/tailscaleendpoints"
	resp, err := client.Post(url, "application/json", strings.NewReader(`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints",`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed body: %d, want 400", resp.StatusCode)
	}
}

func TestAuthentication(t *testing.T) {
	url := shared.Config.Host + "/apis/gateway.tailscale.com/v1alpha1/tailscaletailnets"

	// No client certificate: 401.
	anonymous := rest.AnonymousClientConfig(shared.Config)
	client, err := rest.HTTPClientFor(anonymous)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", resp.StatusCode)
	}

	// A certificate from the local CA for another identity: 403.
	pki, err := localpki.Ensure(filepath.Join(shared.DataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.IssueClient("someone", "developers")
	if err != nil {
		t.Fatal(err)
	}
	other := rest.AnonymousClientConfig(shared.Config)
	other.CertData, other.KeyData = certPEM, keyPEM
	cs, err := versioned.NewForConfig(other)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.GatewayV1alpha1().TailscaleTailnets().List(ctx(t), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("other identity: %v, want 403", err)
	}
}

func TestOpenAPIDocumentsFields(t *testing.T) {
	client, err := rest.HTTPClientFor(shared.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/openapi/v2", "/openapi/v3/apis/gateway.tailscale.com/v1alpha1"} {
		resp, err := client.Get(shared.Config.Host + path)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
		}
		raw, _ := json.Marshal(doc)
		if !strings.Contains(string(raw), "TailscaleIP is the endpoint's tailnet address") {
			t.Errorf("%s lacks the doc comment of tailscaleIP", path)
		}
	}
}

// TestVersionIsTheProjects checks that /version reports this project's version, not the Kubernetes
// library's.
func TestVersionIsTheProjects(t *testing.T) {
	cs := shared.Clientset(t)
	got, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	want := version.Get()
	if got.GitVersion != want.GitVersion || got.GitCommit != want.GitCommit || got.Platform != want.Platform {
		t.Fatalf("/version = %+v, want %+v", *got, want)
	}
	if kube := baseversion.Get().GitVersion; got.GitVersion == kube {
		t.Fatalf("/version reports the Kubernetes library version %s", kube)
	}
}

func ptrTo[T any](v T) *T { return &v }
