package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// startSim runs a simulated tailnet (no devices) and a TailscaleTailnet for it whose
// credentials are a Secret, as in a cluster; it returns an API client standing for the admin
// console.
func startSim(t *testing.T, name string) *tailnet.Client {
	t.Helper()
	_, admin := startSimWith(t, name, tailnetsim.Options{})
	return admin
}

// startSimWith is startSim with the simulator's options (devices) and the TailscaleTailnet's
// tags, returning the simulator too.
func startSimWith(t *testing.T, name string, opts tailnetsim.Options, tags ...string) (*tailnetsim.Tailnet, *tailnet.Client) {
	t.Helper()
	return startSimSpec(t, name, opts, func(s *v1alpha1.TailscaleTailnetSpec) { s.Tags = tags })
}

// startSimSpec is startSimWith with the TailscaleTailnet's spec completed by spec.
func startSimSpec(t *testing.T, name string, opts tailnetsim.Options, spec func(*v1alpha1.TailscaleTailnetSpec)) (*tailnetsim.Tailnet, *tailnet.Client) {
	t.Helper()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(sctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: framework.Namespace, Name: name + "-oauth"},
		StringData: map[string]string{"client_id": sim.OAuthClientID(), "client_secret": sim.OAuthClientSecret()}}
	if _, err := env.Kube.CoreV1().Secrets(framework.Namespace).Create(ctx(t), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tn := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: sim.TailnetName(), APIBaseURL: sim.APIURL(),
			OAuthSecretName: secret.Name, OAuthSecretNamespace: framework.Namespace}}
	spec(&tn.Spec)
	if _, err := viaKube(t).TailscaleTailnets().Create(ctx(t), tn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = viaKube(t).TailscaleTailnets().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = env.Kube.CoreV1().Secrets(framework.Namespace).Delete(context.Background(), secret.Name, metav1.DeleteOptions{})
	})
	admin, err := tailnet.NewClient(tailnet.ClientOptions{Tailnet: sim.TailnetName(), BaseURL: sim.APIURL(),
		Credentials: tailnet.Credentials{APIKey: sim.APIKey()}, Transport: tailnet.TransportOptions{RequestsPerSecond: -1}})
	if err != nil {
		t.Fatal(err)
	}
	return sim, admin
}

func serviceExists(c context.Context, admin *tailnet.Client, name string) (bool, error) {
	list, err := admin.Services(c)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(list, func(s tailnet.Service) bool { return s.Name == name }), nil
}

// TestVIPServiceThroughKube creates a Tailscale Service from a TailscaleServices written
// through kube-apiserver: finalizer, Events in the core API, and deletion removing the Service.
func TestVIPServiceThroughKube(t *testing.T) {
	admin := startSim(t, "e2e-vip")
	ns := newNamespace(t, "vip")
	svcs := viaKube(t).TailscaleServices(ns)
	obj := &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector:         &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			VIPService:       &v1alpha1.VIPServiceSpec{Name: "svc:e2e-web", Ports: []string{"tcp:80"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "e2e-vip", Labels: map[string]string{"app": "web"}, Ports: []v1alpha1.ProxyPort{{Port: 80}}},
		},
	}
	if _, err := svcs.Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Tailscale Service", func(c context.Context) (bool, error) { return serviceExists(c, admin, "svc:e2e-web") })
	eventually(t, "the finalizer and web-auto", func(c context.Context) (bool, error) {
		o, err := svcs.Get(c, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		_, err = viaKube(t).TailscaleEndpoints(ns).Get(c, "web-auto", metav1.GetOptions{})
		return slices.Contains(o.Finalizers, vipservice.Finalizer) && err == nil, nil
	})
	eventually(t, "a ServiceCreated Event", func(c context.Context) (bool, error) {
		evs, err := env.Kube.CoreV1().Events(ns).List(c, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
			return e.Reason == vipservice.ReasonCreated && e.InvolvedObject.Kind == "TailscaleServices" && e.InvolvedObject.Name == "web"
		}), nil
	})
	if err := svcs.Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Service deleted with the object", func(c context.Context) (bool, error) {
		exists, err := serviceExists(c, admin, "svc:e2e-web")
		if err != nil || exists {
			return false, err
		}
		_, err = svcs.Get(c, "web", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	eventually(t, "web-auto deleted", func(c context.Context) (bool, error) {
		_, err := viaKube(t).TailscaleEndpoints(ns).Get(c, "web-auto", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// TestOwnerReferenceGarbageCollection checks that kube-controller-manager's garbage collector
// deletes a TailscaleEndpoints whose owning TailscaleServices is gone (the auto-provisioned
// ones rely on it in cluster mode). The dependent here is not auto-provisioned, so only the
// garbage collector deletes it.
func TestOwnerReferenceGarbageCollection(t *testing.T) {
	ns := newNamespace(t, "gc")
	owner, err := viaKube(t).TailscaleServices(ns).Create(ctx(t), &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"},
		Spec:       v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dependent", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "TailscaleServices", Name: owner.Name, UID: owner.UID}}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Ports: []v1alpha1.ProxyPort{{Port: 80}}},
	}
	if _, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := viaKube(t).TailscaleServices(ns).Delete(ctx(t), "owner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the garbage collector to delete the dependent", func(c context.Context) (bool, error) {
		_, err := viaKube(t).TailscaleEndpoints(ns).Get(c, "dependent", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// TestControllersLeaderElection runs a second replica: the controllers' Lease stays with the
// first; when the first stops, the second takes the Lease over and its controllers act.
func TestControllersLeaderElection(t *testing.T) {
	leases := env.Kube.CoordinationV1().Leases(framework.Namespace)
	var first string
	eventually(t, "a holder of the controllers' Lease", func(c context.Context) (bool, error) {
		l, err := leases.Get(c, "tailscale-gateway-controllers", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			first = *l.Spec.HolderIdentity
			return true, nil
		}
		return false, nil
	})
	second, err := env.StartGateway("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	if l, err := leases.Get(ctx(t), "tailscale-gateway-controllers", metav1.GetOptions{}); err != nil || *l.Spec.HolderIdentity != first {
		t.Fatalf("the Lease moved when a second replica started: %v %v", l.Spec.HolderIdentity, err)
	}

	// The first replica stops (releasing the Lease): the second takes over.
	if err := env.Gateway.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Gateway.Start(); err != nil {
			t.Errorf("restarting the first replica: %v", err)
		}
	})
	eventually(t, "the second replica to hold the Lease", func(c context.Context) (bool, error) {
		l, err := leases.Get(c, "tailscale-gateway-controllers", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" && *l.Spec.HolderIdentity != first, err
	})
	// Its controllers act: a template is provisioned (objects written directly to the second
	// replica; kube-apiserver's Service points at the first).
	direct := gateway(t, directTo(second.Addr))
	ns := newNamespace(t, "leader")
	if _, err := direct.TailscaleServices(ns).Create(ctx(t), &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "company.ts.net", Labels: map[string]string{"app": "web"},
				Ports: []v1alpha1.ProxyPort{{Port: 80}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new leader to provision web-auto", func(c context.Context) (bool, error) {
		_, err := direct.TailscaleEndpoints(ns).Get(c, "web-auto", metav1.GetOptions{})
		return err == nil, nil
	})
}
