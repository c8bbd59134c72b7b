package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
)

// serviceAccountToken creates a ServiceAccount in ns, binds it to clusterRole in ns when that is
// not empty, and returns a token for it.
func serviceAccountToken(t *testing.T, ns, name, clusterRole string) string {
	t.Helper()
	if _, err := env.Kube.CoreV1().ServiceAccounts(ns).Create(ctx(t), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if clusterRole != "" {
		if _, err := env.Kube.RbacV1().RoleBindings(ns).Create(ctx(t), &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + clusterRole},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := env.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx(t), name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// withToken returns cfg with bearer token instead of its credentials (none when token is empty).
func withToken(cfg *rest.Config, token string) *rest.Config {
	anon := rest.AnonymousClientConfig(cfg)
	anon.BearerToken = token
	return anon
}

// TestRBACThroughAggregation checks the aggregated admin/edit/view roles of artifacts/deploy and
// delegated authorization: kube-apiserver authorizes before it proxies, and the server checks
// again with SubjectAccessReviews for the user kube-apiserver names in its request headers.
func TestRBACThroughAggregation(t *testing.T) {
	ns := newNamespace(t, "rbac")
	other := newNamespace(t, "rbac-other")
	nobodyToken, editorToken := serviceAccountToken(t, ns, "nobody", ""), serviceAccountToken(t, ns, "editor", "edit")
	nobody, editor := gateway(t, withToken(env.Admin, nobodyToken)), gateway(t, withToken(env.Admin, editorToken))
	viewer := gateway(t, withToken(env.Admin, serviceAccountToken(t, ns, "viewer", "view")))

	if _, err := nobody.TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list without grants: %v, want 403", err)
	}
	if _, err := nobody.TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "nobody"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("create without grants: %v, want 403", err)
	}

	// edit: every verb on the namespaced kinds in its namespace, nothing elsewhere.
	if _, err := editor.TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "web"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create as edit: %v", err)
	}
	if _, err := editor.TailscaleServices(ns).Create(ctx(t), objects.Services(ns, "web"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create TailscaleServices as edit: %v", err)
	}
	if _, err := editor.TailscaleGateways(ns).Create(ctx(t), objects.Gateway(ns, "gw"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create TailscaleGateway as edit: %v", err)
	}
	got, err := editor.TailscaleEndpoints(ns).Get(ctx(t), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get as edit: %v", err)
	}
	if _, err := editor.TailscaleEndpoints(ns).Patch(ctx(t), "web", types.JSONPatchType, portPatch(9000), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch as edit: %v", err)
	}
	if _, err := editor.TailscaleEndpoints(ns).UpdateStatus(ctx(t), got, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("status update as edit: %v, want 403 (status belongs to controllers)", err)
	}
	if _, err := editor.TailscaleEndpoints(other).List(ctx(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list in another namespace as edit: %v, want 403", err)
	}
	if _, err := editor.TailscaleTailnets().List(ctx(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list cluster-scoped tailnets as edit in a namespace: %v, want 403", err)
	}

	// view: read only.
	if l, err := viewer.TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); err != nil || len(l.Items) != 1 {
		t.Errorf("list as view: %v", err)
	}
	if _, err := viewer.TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "viewer"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("create as view: %v, want 403", err)
	}
	if err := editor.TailscaleEndpoints(ns).Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete as edit: %v", err)
	}

	for token, want := range map[string]string{nobodyToken: "Forbidden", editorToken: "No resources found"} {
		kubeconfig, err := env.TokenKubeconfig("rbac", token)
		if err != nil {
			t.Fatal(err)
		}
		if out, _ := env.Kubectl(kubeconfig, "get", "tsep", "-n", ns); !strings.Contains(out, want) {
			t.Errorf("kubectl get tsep: %q lacks %q", out, want)
		}
	}
	out, err := env.Kubectl(env.AdminKubeconfig, "auth", "can-i", "deletecollection", "tsep", "-n", ns, "--as=system:serviceaccount:"+ns+":editor")
	if err != nil || strings.TrimSpace(out) != "yes" {
		t.Errorf("kubectl auth can-i deletecollection tsep as editor: %v %s", err, out)
	}
}

// TestNoCredentialsIsUnauthorized checks 401 through kube-apiserver for requests without a token.
func TestNoCredentialsIsUnauthorized(t *testing.T) {
	ns := newNamespace(t, "anonymous")
	if _, err := gateway(t, withToken(env.Admin, "")).TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("list without a token: %v, want 401", err)
	}
	if _, err := gateway(t, withToken(env.Admin, "not-a-token")).TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("list with a bad token: %v, want 401", err)
	}
	// kubectl would prompt for a password without credentials; a plain request shows the answer.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.ClusterCAPEM())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, env.KubeURL+"/apis/gateway.tailscale.com/v1alpha1/namespaces/"+ns+"/tailscaleendpoints", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without credentials: %d, want 401", resp.StatusCode)
	}
}

// TestDelegatedAuthenticationDirect talks to the server without kube-apiserver in between: it
// authenticates tokens with TokenReview, client certificates with the cluster's client CA, and
// trusts request headers only from kube-apiserver's proxy certificate.
func TestDelegatedAuthenticationDirect(t *testing.T) {
	ns := newNamespace(t, "direct")
	editorToken := serviceAccountToken(t, ns, "editor", "edit")
	nobodyToken := serviceAccountToken(t, ns, "nobody", "")

	if _, err := gateway(t, env.Direct).TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "admin"), metav1.CreateOptions{}); err != nil {
		t.Errorf("create with the admin client certificate: %v", err)
	}
	if _, err := gateway(t, withToken(env.Direct, editorToken)).TailscaleEndpoints(ns).Create(ctx(t), objects.Endpoints(ns, "editor"), metav1.CreateOptions{}); err != nil {
		t.Errorf("create with an edit token (TokenReview + SubjectAccessReview): %v", err)
	}
	if _, err := gateway(t, withToken(env.Direct, nobodyToken)).TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list with a token without grants: %v, want 403", err)
	}
	if _, err := gateway(t, withToken(env.Direct, "not-a-token")).TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("list with a bad token: %v, want 401", err)
	}
	// Anonymous requests are authorized like any user: the cluster grants system:anonymous nothing.
	if _, err := gateway(t, withToken(env.Direct, "")).TailscaleEndpoints(ns).List(ctx(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list without credentials: %v, want 403", err)
	}

	// Request headers from anyone but kube-apiserver's proxy certificate are ignored.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.ServingCAPEM())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, env.Direct.Host+"/apis/gateway.tailscale.com/v1alpha1/namespaces/"+ns+"/tailscaleendpoints", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Remote-User", "e2e-admin")
	req.Header.Set("X-Remote-Group", "system:masters")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("spoofed request headers: status %d, want 403 (anonymous)", resp.StatusCode)
	}
}

// TestServerPermissions checks what artifacts/deploy grants the server's ServiceAccount, which the
// server in this suite runs as: what it needs, and not more than that.
func TestServerPermissions(t *testing.T) {
	as := "--as=system:serviceaccount:" + framework.Namespace + ":" + framework.ServiceAccountName
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "tokenreviews.authentication.k8s.io"}, "yes"},
		{[]string{"create", "subjectaccessreviews.authorization.k8s.io"}, "yes"},
		{[]string{"get", "configmaps/extension-apiserver-authentication", "-n", "kube-system"}, "yes"},
		{[]string{"watch", "namespaces"}, "yes"},
		{[]string{"list", "validatingadmissionpolicies.admissionregistration.k8s.io"}, "yes"},
		{[]string{"watch", "flowschemas.flowcontrol.apiserver.k8s.io"}, "yes"},
		{[]string{"get", "secrets", "-n", framework.Namespace}, "yes"},
		// The proxies' objects live in the installation's namespace (a Role there); tenants'
		// namespaces get none of them, and the server reads no tenant Secret.
		{[]string{"get", "secrets", "-n", "default"}, "no"},
		{[]string{"list", "secrets", "-n", framework.Namespace}, "yes"}, // its own, by label, to collect them
		{[]string{"watch", "secrets", "-n", "default"}, "no"},
		{[]string{"create", "statefulsets.apps", "-n", framework.Namespace}, "yes"},
		{[]string{"create", "statefulsets.apps", "-n", "default"}, "no"},
		{[]string{"delete", "poddisruptionbudgets.policy", "-n", framework.Namespace}, "yes"},
		{[]string{"delete", "poddisruptionbudgets.policy", "-n", "default"}, "no"},
		{[]string{"update", "networkpolicies.networking.k8s.io", "-n", framework.Namespace}, "yes"},
		{[]string{"update", "networkpolicies.networking.k8s.io", "-n", "default"}, "no"},
		{[]string{"create", "pods/eviction", "-n", "default"}, "no"},
		{[]string{"create", "roles.rbac.authorization.k8s.io", "-n", framework.Namespace}, "yes"},
		{[]string{"create", "roles.rbac.authorization.k8s.io", "-n", "default"}, "no"},
		{[]string{"escalate", "roles.rbac.authorization.k8s.io", "-n", framework.Namespace}, "no"},
		{[]string{"bind", "roles.rbac.authorization.k8s.io", "-n", framework.Namespace}, "no"},
		{[]string{"create", "pods", "-n", framework.Namespace}, "no"},
		{[]string{"list", "pods", "-n", framework.Namespace}, "yes"}, // the proxies' metrics endpoints and readiness
		{[]string{"list", "pods", "-n", "default"}, "no"},
		{[]string{"create", "deployments.apps", "-n", "default"}, "no"},
		{[]string{"create", "namespaces"}, "no"},
		// The controllers: Events on their objects in any namespace; Leases (theirs and the
		// replicas' member Leases) in their namespace only.
		{[]string{"create", "events", "-n", "default"}, "yes"},
		{[]string{"patch", "events.events.k8s.io", "-n", "default"}, "yes"},
		{[]string{"create", "leases.coordination.k8s.io", "-n", framework.Namespace}, "yes"},
		{[]string{"update", "leases.coordination.k8s.io/tailscale-gateway-controllers", "-n", framework.Namespace}, "yes"},
		{[]string{"list", "leases.coordination.k8s.io", "-n", framework.Namespace}, "yes"},
		{[]string{"update", "leases.coordination.k8s.io/other", "-n", "default"}, "no"},
		{[]string{"create", "leases.coordination.k8s.io", "-n", "default"}, "no"},
	} {
		out, _ := env.Kubectl(env.AdminKubeconfig, append(append([]string{"auth", "can-i"}, tc.args...), as)...)
		// The answer is the last line; warnings about cluster-scoped resources may precede it.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := lines[len(lines)-1]; got != tc.want {
			t.Errorf("can-i %s: %q, want %s", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}
