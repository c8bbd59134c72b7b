package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/app"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
	"github.com/tailscale-gateway/tailscale-gateway/test/xdsclient"
)

// proxySim is a simulated tailnet with one device for the proxy tests, registered as the
// TailscaleTailnet name whose own devices carry tag:k8s-operator and whose proxies may carry
// tag:k8s-proxy (the default), tag:web and tag:extra. Control checks minted keys as Tailscale's
// does (single-use keys once, revoked keys never) and accepts a known node's restart without a
// key, so a restart shows whether one is needed.
func proxySim(t *testing.T, name string) (*tailnetsim.Tailnet, *tailnet.Client) {
	t.Helper()
	return startSimSpec(t, name, tailnetsim.Options{
		Devices: []tailnetsim.DeviceSpec{{Hostname: "web-1", HTTPPort: tailnetsim.DefaultHTTPPort}}},
		func(s *v1alpha1.TailscaleTailnetSpec) {
			s.Tags, s.ProxyTags = []string{"tag:k8s-operator"}, []string{"tag:k8s-proxy", "tag:web", "tag:extra"}
		})
}

// mintedKeys lists the descriptions and tags of the auth keys minted in sim.
func mintedKeys(c context.Context, sim *tailnetsim.Tailnet) (map[string][]string, error) {
	req, err := http.NewRequestWithContext(c, http.MethodGet, sim.APIURL()+"/api/v2/tailnet/-/keys", nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(sim.APIKey(), "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Keys []struct {
			ID           string `json:"id"`
			Description  string `json:"description"`
			Capabilities struct {
				Devices struct {
					Create struct {
						Tags []string `json:"tags"`
					} `json:"create"`
				} `json:"devices"`
			} `json:"capabilities"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, k := range body.Keys {
		out[k.ID+" "+k.Description] = k.Capabilities.Devices.Create.Tags
	}
	return out, nil
}

// TestProxyDeployment checks the objects the server deploys for a TailscaleEndpoints with
// spec.proxy, their update (the StatefulSet rolls), a foreign object left alone, the cleanup by
// kube-controller-manager's garbage collector, and runs the proxy with the generated
// configuration: its ServiceAccount's token, its state Secret and auth key Secret.
func TestProxyDeployment(t *testing.T) {
	sim, admin := proxySim(t, "e2e-proxydeploy")
	ns := newNamespace(t, "proxydeploy")
	web, err := sim.Device("web-1")
	if err != nil {
		t.Fatal(err)
	}
	eps := viaKube(t).TailscaleEndpoints(ns)
	obj, err := eps.Create(ctx(t), &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-proxydeploy", Tags: []string{"tag:web"},
			Proxy: &v1alpha1.ProxyConfig{Replicas: ptr.To[int32](2), ConnectionType: proxydeploy.Egress},
			Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "http", TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN,
				Port: int32(web.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kube, sys := env.Kube, framework.Namespace
	n := proxydeploy.NamesFor(ns, "backends")
	owned := func(m metav1.Object) error {
		if !proxydeploy.IsKeptFor(m, obj) || m.GetNamespace() != sys || len(m.GetOwnerReferences()) != 0 {
			return fmt.Errorf("%s/%s is not kept for the endpoints in the installation's namespace: labels %v, owners %v",
				m.GetNamespace(), m.GetName(), m.GetLabels(), m.GetOwnerReferences())
		}
		return nil
	}
	eventually(t, "the proxy's objects", func(c context.Context) (bool, error) {
		_, err := kube.AppsV1().StatefulSets(sys).Get(c, n.Base, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})

	// What was generated.
	sts, err := kube.AppsV1().StatefulSets(sys).Get(ctx(t), n.Base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := kube.CoreV1().Services(sys).Get(ctx(t), n.Base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kube.CoreV1().ServiceAccounts(sys).Get(ctx(t), n.Base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	role, err := kube.RbacV1().Roles(sys).Get(ctx(t), n.Base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := kube.RbacV1().RoleBindings(sys).Get(ctx(t), n.Base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var states, keySecrets []*corev1.Secret
	for i := range 2 {
		s, err := kube.CoreV1().Secrets(sys).Get(ctx(t), n.StateSecret(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, s)
		var k *corev1.Secret
		eventually(t, "the auth key Secret of replica "+fmt.Sprint(i), func(c context.Context) (bool, error) {
			k, err = kube.CoreV1().Secrets(sys).Get(c, n.AuthKeySecret(i), metav1.GetOptions{})
			return err == nil, nil
		})
		keySecrets = append(keySecrets, k)
	}
	pdb, err := kube.PolicyV1().PodDisruptionBudgets(sys).Get(ctx(t), n.Base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil ||
		fmt.Sprint(pdb.Spec.Selector.MatchLabels) != fmt.Sprint(sts.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget spec %+v, StatefulSet selector %v", pdb.Spec, sts.Spec.Selector.MatchLabels)
	}
	eventually(t, "ProxyDeployed=True", func(c context.Context) (bool, error) {
		cur, err := eps.Get(c, "backends", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, proxydeploy.ConditionProxyDeployed)
		return cond != nil && cond.Status == metav1.ConditionTrue && cond.Reason == proxydeploy.ReasonDeployed, nil
	})
	for _, m := range []metav1.Object{sts, svc, sa, role, rb, keySecrets[0], keySecrets[1], states[0], states[1], pdb} {
		if err := owned(m); err != nil {
			t.Error(err)
		}
	}
	if *sts.Spec.Replicas != 2 || sts.Spec.Template.Spec.ServiceAccountName != n.Base {
		t.Errorf("StatefulSet: replicas %d, serviceAccountName %s", *sts.Spec.Replicas, sts.Spec.Template.Spec.ServiceAccountName)
	}
	args := sts.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"--endpoints=backends", "--state-secret=$(POD_NAME)", "--auth-key-secret=$(POD_NAME)-authkey", "--tags=tag:web",
		"--namespace=" + ns, "--secret-namespace=" + sys} {
		if !slices.Contains(args, want) {
			t.Errorf("proxy args %v lack %s", args, want)
		}
	}
	if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--services") }) {
		t.Errorf("an egress proxy hosts services: %v", args)
	}
	// The port the allocator records: the one earlier versions derived, free on this proxy.
	egressPort := recordedPort(t, viaKube(t), ns, "backends", "http", int32(web.HTTPPort))
	if egressPort != ports.EgressPort("backends", "http", int32(web.HTTPPort)) {
		t.Errorf("egress port %d, want the earlier derived %d (an upgrade keeps it)", egressPort, ports.EgressPort("backends", "http", int32(web.HTTPPort)))
	}
	eventually(t, "the Service with the egress port", func(c context.Context) (bool, error) {
		svc, err = kube.CoreV1().Services(sys).Get(c, n.Base, metav1.GetOptions{})
		return err == nil && slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == egressPort && p.TargetPort.IntVal == egressPort }), err
	})
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Errorf("Service has no cluster IP: %q", svc.Spec.ClusterIP)
	}
	t.Run("networkpolicy", func(t *testing.T) { checkProxyNetworkPolicy(t, obj, "e2e-proxydeploy", egressPort) })
	wantRules := proxydeploy.Role(sys, obj).Rules
	if fmt.Sprint(role.Rules) != fmt.Sprint(wantRules) {
		t.Errorf("Role rules %v, want %v", role.Rules, wantRules)
	}
	if rb.RoleRef.Name != n.Base || len(rb.Subjects) != 1 || rb.Subjects[0].Name != n.Base {
		t.Errorf("RoleBinding %v -> %v", rb.Subjects, rb.RoleRef)
	}
	// One key per replica, each its own.
	key0, key1 := string(keySecrets[0].Data[proxydeploy.AuthKeyKey]), string(keySecrets[1].Data[proxydeploy.AuthKeyKey])
	if key0 == "" || key1 == "" || key0 == key1 || key0 == sim.AuthKey() {
		t.Error("the replicas' auth key Secrets do not hold two minted keys")
	}
	keys, err := mintedKeys(ctx(t), sim)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("minted keys %v, want two", keys)
	}
	for desc, tags := range keys {
		if !strings.Contains(desc, " tailscale-gateway-proxy "+ns+"/backends replica ") || !slices.Equal(tags, []string{"tag:web"}) {
			t.Errorf("minted key %q with tags %v", desc, tags)
		}
	}
	seenKeys := []string{key0, key1}
	// No key appears in an Event.
	noKeyInEvents(t, ns, seenKeys)

	// The tenant's namespace holds no proxy Secret, and its editors cannot read the proxies'.
	t.Run("tenant reads no proxy secret", func(t *testing.T) {
		checkTenantReadsNoProxySecret(t, ns, append(secretNames(states), secretNames(keySecrets)...))
	})

	// The proxy, run as replica 0 with what the pod would get: it reads its key with its
	// ServiceAccount, joins, and its key is used up, deleted and refused to anyone else.
	t.Run("proxy", func(t *testing.T) {
		runDeployedProxy(t, sim, admin, ns, sts, keySecrets[0].Annotations[proxydeploy.AuthKeyIDAnnotation], egressPort)
	})
	t.Run("replayed key refused", func(t *testing.T) { wantJoinRefused(t, sim, "replay-0", key0, "invalid key") })

	// The extension's EDS (proxy endpoint mode, the default in a cluster) sends Envoy to the
	// egress Service.
	t.Run("eds", func(t *testing.T) {
		checkEDSDialsProxyService(t, ns, svc.Spec.ClusterIP, int32(web.HTTPPort), egressPort)
	})

	// An update rolls the StatefulSet; the key of replica 1, which has not joined, follows the
	// tags; the joined replica 0 gets none.
	hash := sts.Spec.Template.Annotations[proxydeploy.ConfigHashAnnotation]
	state0, err := kube.CoreV1().Secrets(sys).Get(ctx(t), n.StateSecret(0), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := eps.Get(ctx(t), "backends", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cur.Finalizers, proxydeploy.Finalizer) {
		t.Errorf("finalizers %v lack %s", cur.Finalizers, proxydeploy.Finalizer)
	}
	cur.Spec.Tags = []string{"tag:web", "tag:extra"}
	if _, err := eps.Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the StatefulSet rolled", func(c context.Context) (bool, error) {
		sts, err := kube.AppsV1().StatefulSets(sys).Get(c, n.Base, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return sts.Spec.Template.Annotations[proxydeploy.ConfigHashAnnotation] != hash &&
			slices.Contains(sts.Spec.Template.Spec.Containers[0].Args, "--tags=tag:extra,tag:web"), nil
	})

	// The key's tags changed: it is minted again; so it is when it expires or is revoked.
	var last1 *corev1.Secret
	t.Run("authkey", func(t *testing.T) { last1 = checkKeyRenewal(t, sim, ns, keySecrets[1], state0, &seenKeys) })
	if _, err := kube.CoreV1().Secrets(sys).Get(ctx(t), n.AuthKeySecret(0), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the joined replica 0 got an auth key Secret again: %v", err)
	}

	// Scaling down drops the state and the key of the removed replica, the key revoked.
	cur, err = eps.Get(ctx(t), "backends", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Proxy.Replicas = ptr.To[int32](1)
	if _, err := eps.Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the removed replica's Secrets deleted and the Role narrowed", func(c context.Context) (bool, error) {
		for _, name := range []string{n.StateSecret(1), n.AuthKeySecret(1)} {
			if _, err := kube.CoreV1().Secrets(sys).Get(c, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		role, err := kube.RbacV1().Roles(sys).Get(c, n.Base, metav1.GetOptions{})
		return err == nil && slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Equal(r.ResourceNames, []string{n.StateSecret(0)})
		}) && slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Equal(r.ResourceNames, []string{n.AuthKeySecret(0)})
		}), err
	})
	if last1 != nil {
		id := last1.Annotations[proxydeploy.AuthKeyIDAnnotation]
		eventually(t, "the removed replica's key "+id+" revoked", func(c context.Context) (bool, error) {
			code, err := keyStatus(c, sim, id)
			return code == http.StatusNotFound, err
		})
		wantJoinRefused(t, sim, "replay-1", string(last1.Data[proxydeploy.AuthKeyKey]), "unknown or revoked")
	}
	eventually(t, "the PodDisruptionBudget deleted at one replica", func(c context.Context) (bool, error) {
		_, err := kube.PolicyV1().PodDisruptionBudgets(sys).Get(c, n.Base, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})

	// Scaled to none: replica 0, which joined, is scaled away and its device deleted from the
	// tailnet (the node ID its state Secret recorded), then its state Secret.
	t.Run("device deleted on scale-down", func(t *testing.T) {
		nodeID := string(state0.Data[kubestate.NodeIDKey])
		if _, err := admin.Device(ctx(t), nodeID); nodeID == "" || err != nil {
			t.Fatalf("replica 0's device %q before the scale-down: %v", nodeID, err)
		}
		cur, err := eps.Get(ctx(t), "backends", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Proxy.Replicas = ptr.To[int32](0)
		if _, err := eps.Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "replica 0's device "+nodeID+" deleted and its state Secret gone", func(c context.Context) (bool, error) {
			_, err := admin.Device(c, nodeID)
			if !tailnet.IsNotFound(err) {
				return false, nil
			}
			_, err = kube.CoreV1().Secrets(sys).Get(c, n.StateSecret(0), metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		devs, err := admin.Devices(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			if d.Hostname == n.StateSecret(0) {
				t.Errorf("device %s (%s) is still in the tailnet", d.Hostname, d.NodeID)
			}
		}
	})

	// A foreign object of a proxy's name is left alone and reported.
	otherName := proxydeploy.NamesFor(ns, "other").Base
	foreign := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sys, Name: otherName, Labels: map[string]string{"team": "theirs"}}}
	if _, err := kube.CoreV1().ServiceAccounts(sys).Create(ctx(t), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := eps.Create(ctx(t), &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "e2e-proxydeploy", Proxy: &v1alpha1.ProxyConfig{},
			Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "http", TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN,
				Port: int32(web.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a ProxyObjectConflict Event", func(c context.Context) (bool, error) {
		evs, err := kube.CoreV1().Events(ns).List(c, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
			return e.Reason == proxydeploy.ReasonConflict && e.InvolvedObject.Name == "other" && strings.Contains(e.Message, otherName)
		}), nil
	})
	eventually(t, "ProxyDeployed=False, ObjectConflict", func(c context.Context) (bool, error) {
		cur, err := eps.Get(c, "other", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, proxydeploy.ConditionProxyDeployed)
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == proxydeploy.ReasonObjectConflict &&
			strings.Contains(cond.Message, "ServiceAccount "+otherName), nil
	})
	sa2, err := kube.CoreV1().ServiceAccounts(sys).Get(ctx(t), otherName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sa2.OwnerReferences) != 0 || sa2.Labels[proxydeploy.ManagedByLabel] != "" || sa2.Labels["team"] != "theirs" {
		t.Errorf("the foreign ServiceAccount was changed: labels %v, owners %v", sa2.Labels, sa2.OwnerReferences)
	}
	if _, err := kube.AppsV1().StatefulSets(sys).Get(ctx(t), otherName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a StatefulSet was deployed beside a foreign ServiceAccount: %v", err)
	}

	// An auto-provisioned TailscaleEndpoints gets an ingress proxy hosting its TailscaleServices.
	vip := &v1alpha1.TailscaleServices{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vip"},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector:   &metav1.LabelSelector{MatchLabels: map[string]string{"app": "vip"}},
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:e2e-proxydeploy", Ports: []string{"tcp:80"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "e2e-proxydeploy", Labels: map[string]string{"app": "vip"},
				Proxy: &v1alpha1.ProxyConfig{ConnectionType: proxydeploy.Ingress}},
		}}
	if _, err := viaKube(t).TailscaleServices(ns).Create(ctx(t), vip, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the auto-provisioned endpoints' proxy hosting the TailscaleServices", func(c context.Context) (bool, error) {
		sts, err := kube.AppsV1().StatefulSets(sys).Get(c, proxydeploy.NamesFor(ns, "vip-auto").Base, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		args := sts.Spec.Template.Spec.Containers[0].Args
		return *sts.Spec.Replicas == 1 && slices.Contains(args, "--services=vip") && slices.Contains(args, "--tags=tag:k8s-proxy") &&
			!slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--endpoints") }), nil
	})

	// The tailnet admin narrows the proxies' tags: a proxy asking for tags now outside them goes
	// (its keys revoked) and reports why; none is minted for it.
	t.Run("proxyTags", func(t *testing.T) { checkProxyTagsNarrowed(t, sim, ns, "e2e-proxydeploy") })

	// Deleting the TailscaleEndpoints: its keys are revoked and its objects in the installation's
	// namespace deleted (the finalizer holds it until then; no ownerReference crosses namespaces). Deleting the
	// TailscaleServices deletes the endpoints it provisioned, whose keys are revoked too.
	if err := eps.Delete(ctx(t), "backends", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := viaKube(t).TailscaleServices(ns).Delete(ctx(t), "vip", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every key minted for the namespace revoked and the objects gone", func(c context.Context) (bool, error) {
		keys, err := mintedKeys(c, sim)
		if err != nil {
			return false, err
		}
		for desc := range keys {
			if strings.Contains(desc, " tailscale-gateway-proxy "+ns+"/") {
				return false, nil
			}
		}
		for _, name := range []string{"backends", "vip-auto"} {
			if _, err := eps.Get(c, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		return true, nil
	})
	noKeyInEvents(t, ns, seenKeys)
	eventually(t, "the controller to remove the proxy's objects", func(c context.Context) (bool, error) {
		var left []string
		check := func(kind string, err error) {
			if !apierrors.IsNotFound(err) {
				left = append(left, kind)
			}
		}
		_, err := kube.AppsV1().StatefulSets(sys).Get(c, n.Base, metav1.GetOptions{})
		check("StatefulSet", err)
		_, err = kube.CoreV1().Services(sys).Get(c, n.Base, metav1.GetOptions{})
		check("Service", err)
		_, err = kube.CoreV1().ServiceAccounts(sys).Get(c, n.Base, metav1.GetOptions{})
		check("ServiceAccount", err)
		_, err = kube.RbacV1().Roles(sys).Get(c, n.Base, metav1.GetOptions{})
		check("Role", err)
		_, err = kube.RbacV1().RoleBindings(sys).Get(c, n.Base, metav1.GetOptions{})
		check("RoleBinding", err)
		_, err = kube.CoreV1().Secrets(sys).Get(c, n.AuthKeySecret(0), metav1.GetOptions{})
		check("auth key Secret", err)
		_, err = kube.CoreV1().Secrets(sys).Get(c, n.StateSecret(0), metav1.GetOptions{})
		check("state Secret", err)
		return len(left) == 0, nil
	})
	if _, err := kube.CoreV1().ServiceAccounts(sys).Get(ctx(t), otherName, metav1.GetOptions{}); err != nil {
		t.Errorf("the foreign ServiceAccount: %v", err)
	}
	if err := kube.CoreV1().ServiceAccounts(sys).Delete(ctx(t), otherName, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}

// deployedProxy returns a start function running the proxy in-process as the kubelet would run
// replica 0 of sts in namespace ns (see runDeployedProxy), and that pod's name.
func deployedProxy(t *testing.T, sim *tailnetsim.Tailnet, ns string, sts *appsv1.StatefulSet) (pod string, start func() (stop func())) {
	t.Helper()
	pod = sts.Name + "-0"
	sys := sts.Namespace // the installation's
	pt := sts.Spec.Template.Spec
	token, err := env.Kube.CoreV1().ServiceAccounts(sys).CreateToken(ctx(t), pt.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := env.TokenKubeconfig("proxy-"+ns, token.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	mounts := map[string]string{} // mount path -> local directory
	for _, m := range pt.Containers[0].VolumeMounts {
		dir := filepath.Join(root, m.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mounts[m.MountPath] = dir
		for _, v := range pt.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			s, err := env.Kube.CoreV1().Secrets(sys).Get(ctx(t), v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, b := range s.Data {
				if err := os.WriteFile(filepath.Join(dir, k), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var args []string
	for _, a := range pt.Containers[0].Args {
		a = strings.ReplaceAll(a, "$(POD_NAME)", pod)
		for path, dir := range mounts {
			a = strings.Replace(a, "="+path, "="+dir, 1)
		}
		if strings.HasPrefix(a, "--metrics-bind-address=") {
			a = "--metrics-bind-address=127.0.0.1:0"
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+kubeconfig, "--egress-bind-address=127.0.0.1", "--control-url="+sim.ControlURL())

	start = func() (stop func()) {
		o := app.NewOptions()
		fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(runCtx) }()
		return func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("the proxy stopped: %v", err)
			}
		}
	}
	return pod, start
}

// runDeployedProxy runs the proxy in-process as the kubelet would run replica 0 of sts: the
// container's args with $(POD_NAME) expanded, a token of its ServiceAccount (with which it reads
// its auth key Secret in the installation's namespace and the objects it serves in ns). The test adds what differs here: the kubeconfig, loopback-only
// listeners, the per-test control server. The proxy then carries a request to the tailnet
// device, keeps its node state in its Secret and records its node ID there; the controller
// deletes its auth key Secret and revokes the used key keyID; the proxy restarts as the same
// node without a key.
func runDeployedProxy(t *testing.T, sim *tailnetsim.Tailnet, admin *tailnet.Client, ns string, sts *appsv1.StatefulSet, keyID string, egressPorts ...int32) {
	pod, start := deployedProxy(t, sim, ns, sts)
	sys := sts.Namespace
	get := func(c context.Context) (bool, error) {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for _, port := range egressPorts {
			resp, err := hc.Get("http://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(port)) + "/")
			if err != nil {
				return false, nil
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), "web-1") {
				return false, nil
			}
		}
		return true, nil
	}
	nodeIDs := func(c context.Context) ([]string, error) {
		devs, err := admin.Devices(c)
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, d := range devs {
			if d.Hostname == pod {
				ids = append(ids, d.NodeID)
			}
		}
		return ids, nil
	}

	stop := start()
	eventually(t, "a request through the egress listener to web-1", get)
	state, err := env.Kube.CoreV1().Secrets(sys).Get(ctx(t), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Data) == 0 {
		t.Fatal("the state Secret is empty after the node joined")
	}
	first, err := nodeIDs(ctx(t))
	if err != nil || len(first) != 1 {
		t.Fatalf("devices named %s: %v, %v", pod, first, err)
	}
	if got := string(state.Data[kubestate.NodeIDKey]); got != first[0] {
		t.Errorf("the state Secret records node %q, the device is %s", got, first[0])
	}
	stop()

	// The used key leaves the cluster and the tailnet.
	eventually(t, "the joined replica's auth key Secret deleted and key "+keyID+" revoked", func(c context.Context) (bool, error) {
		_, err := env.Kube.CoreV1().Secrets(sys).Get(c, pod+"-authkey", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		code, err := keyStatus(c, sim, keyID)
		return code == http.StatusNotFound, err
	})

	// Restart without the auth key: the node's state in its Secret is its identity.
	keysBefore, err := mintedKeys(ctx(t), sim)
	if err != nil {
		t.Fatal(err)
	}
	stop = start()
	defer stop()
	eventually(t, "a request through the restarted proxy", get)
	again, err := nodeIDs(ctx(t))
	if err != nil || !slices.Equal(again, first) {
		t.Fatalf("after a restart, devices named %s: %v (before %v), %v", pod, again, first, err)
	}
	keysAfter, err := mintedKeys(ctx(t), sim)
	if err != nil {
		t.Fatal(err)
	}
	if len(keysAfter) != len(keysBefore) {
		t.Errorf("a restart minted a key: %d keys, were %d", len(keysAfter), len(keysBefore))
	}
}

// checkEDSDialsProxyService routes an HTTPRoute to the TailscaleEndpoints "backends" and checks
// that the load assignment names the proxy Service's cluster IP and the endpoint's egress port.
func checkEDSDialsProxyService(t *testing.T, ns, clusterIP string, port, egressPort int32) {
	if err := env.InstallGatewayAPICRDs(); err != nil {
		t.Fatal(err)
	}
	routes, err := gwclient.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	group, kind := gwapiv1.Group(v1alpha1.GroupName), gwapiv1.Kind("TailscaleEndpoints")
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backends"}, Spec: gwapiv1.HTTPRouteSpec{
		CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "eg"}}},
		Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Group: &group, Kind: &kind, Name: "backends", Port: ptr.To(gwapiv1.PortNumber(port))}}}}}}}}
	if _, err := routes.GatewayV1().HTTPRoutes(ns).Create(ctx(t), route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster := "httproute/" + ns + "/backends/rule/0"
	w := watchLoadAssignment(t, env.Gateway.XDSAddr, cluster)
	var last string
	_, err = w.WaitFor(ctx(t), func(r *xdsclient.Response) bool {
		cla := r.LoadAssignment(cluster)
		if cla == nil || len(cla.Endpoints) != 1 || len(cla.Endpoints[0].LbEndpoints) != 1 {
			return false
		}
		sa := cla.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress()
		last = fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
		return sa.GetAddress() == clusterIP && sa.GetPortValue() == uint32(egressPort)
	})
	if err != nil {
		t.Fatalf("the load assignment does not name %s:%d (last %s): %v", clusterIP, egressPort, last, err)
	}
}

// keyStatus is the HTTP status of GET .../keys/{id} in sim's API.
func keyStatus(c context.Context, sim *tailnetsim.Tailnet, id string) (int, error) {
	req, err := http.NewRequestWithContext(c, http.MethodGet, sim.APIURL()+"/api/v2/tailnet/-/keys/"+id, nil)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(sim.APIKey(), "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// checkKeyRenewal follows the auth key Secret of a replica that has not joined (first as it
// was created) after the object's tags changed, then after its key expired and after it was
// revoked: each time a new single-use key is minted with the current tags into the same
// Secret, the replaced key is revoked, the Secret's annotations record the new key's ID, tags
// and expiry (never the key), and the state Secret of the joined replica (state0 before all
// this) is untouched. It returns the Secret as last renewed and adds the keys it saw to seen.
func checkKeyRenewal(t *testing.T, sim *tailnetsim.Tailnet, ns string, first, state0 *corev1.Secret, seen *[]string) *corev1.Secret {
	kube := env.Kube
	wantTags := "tag:extra,tag:web"
	// next waits for the Secret to hold a key other than prev's and returns it.
	next := func(what, prev string) *corev1.Secret {
		t.Helper()
		var got *corev1.Secret
		eventually(t, what, func(c context.Context) (bool, error) {
			s, err := kube.CoreV1().Secrets(first.Namespace).Get(c, first.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			got = s
			return s.Annotations[proxydeploy.AuthKeyIDAnnotation] != prev && s.Annotations[proxydeploy.AuthKeyTagsAnnotation] == wantTags, nil
		})
		if got.UID != first.UID {
			t.Errorf("the auth key Secret was recreated (UID %s, was %s)", got.UID, first.UID)
		}
		key := string(got.Data[proxydeploy.AuthKeyKey])
		if key == "" || slices.Contains(*seen, key) {
			t.Error("the renewed Secret does not hold a newly minted key")
		}
		*seen = append(*seen, key)
		exp, err := time.Parse(time.RFC3339, got.Annotations[proxydeploy.AuthKeyExpiresAnnotation])
		if err != nil || time.Until(exp) < 20*time.Hour || time.Until(exp) > 25*time.Hour {
			t.Errorf("expiry annotation %q (a day from now): %v", got.Annotations[proxydeploy.AuthKeyExpiresAnnotation], err)
		}
		for k, v := range got.Annotations {
			if strings.Contains(v, key) {
				t.Errorf("annotation %s holds the key", k)
			}
		}
		// The replaced key is revoked in the API.
		eventually(t, "key "+prev+" revoked", func(c context.Context) (bool, error) {
			code, err := keyStatus(c, sim, prev)
			return code == http.StatusNotFound, err
		})
		return got
	}
	firstID := first.Annotations[proxydeploy.AuthKeyIDAnnotation]
	if firstID == "" {
		t.Fatalf("the auth key Secret records no key ID: %v", first.Annotations)
	}
	renewed := next("a key minted with the new tags", firstID)
	keys, err := mintedKeys(ctx(t), sim)
	if err != nil {
		t.Fatal(err)
	}
	id := renewed.Annotations[proxydeploy.AuthKeyIDAnnotation]
	for desc, tags := range keys {
		if strings.HasPrefix(desc, id+" ") && strings.Join(tags, ",") != wantTags {
			t.Errorf("key %s minted with tags %v, want %s", id, tags, wantTags)
		}
	}

	// The key expires (its expiry passes in the API).
	if !sim.ExpireAuthKey(id) {
		t.Fatalf("key %s is not in the API", id)
	}
	renewed = next("a key minted after the expiry", id)
	id = renewed.Annotations[proxydeploy.AuthKeyIDAnnotation]

	// The key is revoked in the API.
	req, err := http.NewRequestWithContext(ctx(t), http.MethodDelete, sim.APIURL()+"/api/v2/tailnet/-/keys/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(sim.APIKey(), "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	renewed = next("a key minted after the revocation", id)

	// The node state is untouched: the joined replica keeps its identity.
	s, err := kube.CoreV1().Secrets(first.Namespace).Get(ctx(t), state0.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.UID != state0.UID || s.ResourceVersion != state0.ResourceVersion || len(s.Data) == 0 {
		t.Errorf("state Secret %s changed: UID %s (was %s), resourceVersion %s (was %s), %d keys",
			s.Name, s.UID, state0.UID, s.ResourceVersion, state0.ResourceVersion, len(s.Data))
	}
	// Renewals are Events naming key IDs, never the key (recorded asynchronously).
	eventually(t, "three "+proxydeploy.ReasonKeyRenewed+" Events", func(c context.Context) (bool, error) {
		evs, err := kube.CoreV1().Events(ns).List(c, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		renewals := 0
		for _, e := range evs.Items {
			if e.Reason == proxydeploy.ReasonKeyRenewed {
				renewals += int(max(e.Count, 1))
			}
		}
		return renewals == 3, nil
	})
	noKeyInEvents(t, ns, *seen)
	return renewed
}

// noKeyInEvents fails t if an Event of ns shows one of keys.
func noKeyInEvents(t *testing.T, ns string, keys []string) {
	t.Helper()
	evs, err := env.Kube.CoreV1().Events(ns).List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		for _, k := range keys {
			if strings.Contains(e.Message, k) {
				t.Errorf("Event %s shows an auth key", e.Reason)
			}
		}
	}
}

// wantJoinRefused fails t unless a node presenting key to sim's control is refused with why.
func wantJoinRefused(t *testing.T, sim *tailnetsim.Tailnet, hostname, key, why string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx(t), time.Minute)
	defer cancel()
	s, err := sim.NewNode(c, hostname, key)
	if err == nil {
		s.Close()
		t.Fatalf("%s joined the tailnet with the key", hostname)
	}
	if !strings.Contains(err.Error(), why) {
		t.Fatalf("%s refused for another reason: %v, want %q", hostname, err, why)
	}
}

// checkProxyTagsNarrowed narrows the proxy tags of tailnet to tag:other, outside those of the
// TailscaleEndpoints "backends" (tag:extra, tag:web): its proxy is removed, its key revoked in
// the API, ProxyDeployed says TagsNotPermitted, and no key is minted with the refused tags.
func checkProxyTagsNarrowed(t *testing.T, sim *tailnetsim.Tailnet, ns, tailnetName string) {
	kube := env.Kube
	n := proxydeploy.NamesFor(ns, "backends")
	tnClient := viaKube(t).TailscaleTailnets()
	tn, err := tnClient.Get(ctx(t), tailnetName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := mintedKeys(ctx(t), sim)
	if err != nil {
		t.Fatal(err)
	}
	tn.Spec.ProxyTags = []string{"tag:other"}
	if _, err := tnClient.Update(ctx(t), tn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ProxyDeployed=False, TagsNotPermitted", func(c context.Context) (bool, error) {
		cur, err := viaKube(t).TailscaleEndpoints(ns).Get(c, "backends", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, proxydeploy.ConditionProxyDeployed)
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == proxydeploy.ReasonTagsNotPermitted &&
			strings.Contains(cond.Message, "tags [tag:web, tag:extra] are not among the proxy tags [tag:other]"), nil
	})
	eventually(t, "the refused proxy's StatefulSet and keys removed", func(c context.Context) (bool, error) {
		_, err := kube.AppsV1().StatefulSets(framework.Namespace).Get(c, n.Base, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		keys, err := mintedKeys(c, sim)
		if err != nil {
			return false, err
		}
		for desc := range keys {
			if strings.Contains(desc, " tailscale-gateway-proxy "+ns+"/backends ") {
				return false, nil
			}
		}
		return true, nil
	})
	after, err := mintedKeys(ctx(t), sim)
	if err != nil {
		t.Fatal(err)
	}
	for desc, tags := range after {
		if _, old := before[desc]; !old && slices.ContainsFunc(tags, func(tag string) bool { return tag != "tag:other" }) {
			t.Errorf("key %q minted with tags %v outside the bound", desc, tags)
		}
	}
}

func secretNames(secrets []*corev1.Secret) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s.Name)
	}
	return out
}

// checkTenantReadsNoProxySecret is the regression test of finding 2 (step 3) of the security
// review: the tenant's namespace ns holds no Secret of a proxy, and a user who may edit ns
// (the built-in edit ClusterRole, which reads Secrets, bound there) is refused by
// kube-apiserver's RBAC when getting the proxies' state and key Secrets names in the
// installation's namespace, or listing its Secrets.
func checkTenantReadsNoProxySecret(t *testing.T, ns string, names []string) {
	kube := env.Kube
	list, err := kube.CoreV1().Secrets(ns).List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if s.Labels[proxydeploy.ManagedByLabel] != "" || strings.HasSuffix(s.Name, "-authkey") || len(s.Data[kubestate.NodeIDKey]) > 0 {
			t.Errorf("the tenant's namespace holds the proxy Secret %s (labels %v)", s.Name, s.Labels)
		}
	}
	user := "tenant-editor-" + ns
	if _, err := kube.RbacV1().RoleBindings(ns).Create(ctx(t), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-editor"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	editor, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The binding is in effect once the editor reads Secrets of its own namespace: edit grants
	// that, which is why the proxies' Secrets may not be there.
	eventually(t, "the editor reading Secrets of its namespace", func(c context.Context) (bool, error) {
		_, err := editor.CoreV1().Secrets(ns).List(c, metav1.ListOptions{})
		return err == nil, nil
	})
	if len(names) == 0 {
		t.Fatal("no proxy Secret to try")
	}
	for _, name := range names {
		if _, err := editor.CoreV1().Secrets(framework.Namespace).Get(ctx(t), name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("the tenant's editor got Secret %s/%s: %v, want forbidden", framework.Namespace, name, err)
		}
	}
	if _, err := editor.CoreV1().Secrets(framework.Namespace).List(ctx(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the tenant's editor listed the installation's Secrets: %v, want forbidden", err)
	}
}
