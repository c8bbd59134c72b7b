package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/ipn"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxypool"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/publish"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// TestProxyPool: a tailnet with spec.proxyPool serves TailscaleEndpoints without spec.proxy in
// three namespaces through one pool in the server's namespace. The pool's proxy, run
// in-process as its replica 0 with the generated configuration, carries requests through
// every object's egress port and through the VIP of a TailscaleServices it hosts, from a client
// on the simulated tailnet. A namespace the tailnet stops admitting is no longer served (its
// port leaves the pool's Service and its listener closes). An object moved to a dedicated
// proxy keeps its port, its published address follows it away from the pool, and moved back
// it is served by the pool again at the same address.
func TestProxyPool(t *testing.T) {
	const tn = "e2e-proxypool"
	sim, admin := startSimSpec(t, tn, tailnetsim.Options{
		Devices: []tailnetsim.DeviceSpec{{Hostname: "web-1", HTTPPort: tailnetsim.DefaultHTTPPort}}},
		func(s *v1alpha1.TailscaleTailnetSpec) {
			s.Tags, s.ProxyTags = []string{"tag:k8s-operator"}, []string{"tag:k8s-proxy"}
			s.ProxyPool = &v1alpha1.ProxyPool{Replicas: 1, PodLabels: map[string]string{"team": "net"}}
		})
	web, err := sim.Device("web-1")
	if err != nil {
		t.Fatal(err)
	}
	nsA, nsB, nsC := newNamespace(t, "pool-a"), newNamespace(t, "pool-b"), newNamespace(t, "pool-c")
	objs := map[string]string{nsA: "db", nsB: "cache", nsC: "outside"} // namespace -> object
	for ns, name := range objs {
		if _, err := viaKube(t).TailscaleEndpoints(ns).Create(ctx(t), &v1alpha1.TailscaleEndpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "pooled"}},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: tn, Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "http",
				TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN, Port: int32(web.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := viaKube(t).TailscaleServices(nsA).Create(ctx(t), &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "vip"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pooled"}},
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:e2e-pool", Ports: []string{"tcp:80"},
				// Hosts carrying the Service's tag are approved (the simulator's autoApprovers).
				Tags: []string{"tag:k8s-proxy"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	portOf := func(c context.Context, ns string) (int32, string, error) {
		cur, err := viaKube(t).TailscaleEndpoints(ns).Get(c, objs[ns], metav1.GetOptions{})
		if err != nil {
			return 0, "", err
		}
		scope, rec := ports.Recorded(cur)
		for _, p := range rec {
			return p, scope, nil
		}
		return 0, scope, nil
	}
	port := map[string]int32{}
	eventually(t, "egress ports recorded for the three objects", func(c context.Context) (bool, error) {
		for ns := range objs {
			p, _, err := portOf(c, ns)
			if err != nil || p == 0 {
				return false, err
			}
			port[ns] = p
		}
		return true, nil
	})

	// One pool, in the server's namespace, with every object's port.
	kube, base := env.Kube, proxypool.NamesOf(tn).Base
	poolSvc := func(c context.Context) (*corev1.Service, error) {
		return kube.CoreV1().Services(framework.Namespace).Get(c, base, metav1.GetOptions{})
	}
	hasPort := func(svc *corev1.Service, p int32) bool {
		return slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == p })
	}
	var svc *corev1.Service
	eventuallyShowing(t, "the pool Service with the three objects' ports", func(c context.Context, last *string) (bool, error) {
		svc, err = poolSvc(c)
		if err != nil {
			return false, nil
		}
		*last = fmt.Sprintf("want ports %v; Service ports %v, cluster IP %q; objects:", port, svc.Spec.Ports, svc.Spec.ClusterIP)
		for ns, name := range objs {
			cur, err := viaKube(t).TailscaleEndpoints(ns).Get(c, name, metav1.GetOptions{})
			if err == nil {
				*last += fmt.Sprintf(" %s/%s %+v %+v;", ns, name, cur.Status.Egress, cur.Status.Conditions)
			}
		}
		if cur, err := viaKube(t).TailscaleTailnets().Get(c, tn, metav1.GetOptions{}); err == nil {
			*last += fmt.Sprintf(" tailnet: %+v;", meta.FindStatusCondition(cur.Status.Conditions, proxypool.ConditionReady))
		}
		if evs, err := kube.CoreV1().Events("").List(c, metav1.ListOptions{FieldSelector: "involvedObject.name=" + tn}); err == nil {
			for _, e := range evs.Items {
				*last += fmt.Sprintf(" event %s: %s;", e.Reason, e.Message)
			}
		}
		return svc.Spec.ClusterIP != "" && hasPort(svc, port[nsA]) && hasPort(svc, port[nsB]) && hasPort(svc, port[nsC]), nil
	})
	sts, err := kube.AppsV1().StatefulSets(framework.Namespace).Get(ctx(t), base, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if args := sts.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--tailnet="+tn) || !slices.Contains(args, "--tags=tag:k8s-proxy") ||
		*sts.Spec.Replicas != 1 || sts.Spec.Template.Labels["team"] != "net" {
		t.Fatalf("pool StatefulSet: replicas %d, args %v, labels %v", *sts.Spec.Replicas, args, sts.Spec.Template.Labels)
	}
	eventually(t, "ServedByProxyPool on the three objects and ProxyPoolReady on the tailnet", func(c context.Context) (bool, error) {
		for ns, name := range objs {
			cur, err := viaKube(t).TailscaleEndpoints(ns).Get(c, name, metav1.GetOptions{})
			if err != nil || !meta.IsStatusConditionTrue(cur.Status.Conditions, proxypool.ConditionServed) {
				return false, err
			}
		}
		cur, err := viaKube(t).TailscaleTailnets().Get(c, tn, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		// No kubelet runs the pod here: the pool is in place and waits for its replica.
		cond := meta.FindStatusCondition(cur.Status.Conditions, proxypool.ConditionReady)
		return cond != nil && cond.Reason == proxypool.ReasonProgressing, nil
	})

	// The pool's replica 0, from the generated pod: its ServiceAccount in the server's namespace
	// reads the objects of every namespace and its own Secrets.
	var key *corev1.Secret
	eventually(t, "the auth key Secret of the pool's replica 0", func(c context.Context) (bool, error) {
		key, err = kube.CoreV1().Secrets(framework.Namespace).Get(c, proxypool.NamesOf(tn).AuthKeySecret(0), metav1.GetOptions{})
		return err == nil, nil
	})
	pod, start := deployedProxy(t, sim, framework.Namespace, sts)
	stop := start()
	defer func() { stop() }()
	get := func(p int32) bool {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := hc.Get("http://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(p)) + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "web-1")
	}
	eventually(t, "requests through the pool's egress port of each namespace", func(context.Context) (bool, error) {
		return get(port[nsA]) && get(port[nsB]) && get(port[nsC]), nil
	})
	keyID := key.Annotations[proxydeploy.AuthKeyIDAnnotation]
	eventually(t, "the joined replica's auth key Secret deleted and key "+keyID+" revoked", func(c context.Context) (bool, error) {
		if _, err := kube.CoreV1().Secrets(framework.Namespace).Get(c, pod+"-authkey", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return false, nil
		}
		code, err := keyStatus(c, sim, keyID)
		return code == http.StatusNotFound, err
	})

	// The VIP the pool hosts, from a client on the tailnet.
	t.Run("vip", func(t *testing.T) {
		client, err := sim.NewNode(ctx(t), "pool-client", sim.AuthKey())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		lc, err := client.LocalClient()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lc.EditPrefs(ctx(t), &ipn.MaskedPrefs{RouteAllSet: true, Prefs: ipn.Prefs{RouteAll: true}}); err != nil {
			t.Fatal(err)
		}
		var addr string
		eventually(t, "svc:e2e-pool with an address", func(c context.Context) (bool, error) {
			list, err := admin.Services(c)
			if err != nil {
				return false, err
			}
			for _, s := range list {
				if s.Name == "svc:e2e-pool" && len(s.Addrs) > 0 {
					addr = s.Addrs[0]
				}
			}
			return addr != "", nil
		})
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(c context.Context, network, a string) (net.Conn, error) { return client.Dial(c, network, a) }}}
		eventually(t, "a request through the VIP hosted by the pool", func(context.Context) (bool, error) {
			resp, err := hc.Get("http://" + net.JoinHostPort(addr, "80") + "/")
			if err != nil {
				return false, nil
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.Contains(string(b), "web-1"), nil
		})
	})

	// The tailnet stops admitting nsC: its object is refused, leaves the pool, and its port is
	// no longer served; the others still are.
	cur, err := viaKube(t).TailscaleTailnets().Get(ctx(t), tn, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.AllowedNamespaces = &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{nsA, nsB}}
	if _, err := viaKube(t).TailscaleTailnets().Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, nsC+"'s port out of the pool Service and not served", func(c context.Context) (bool, error) {
		svc, err := poolSvc(c)
		if err != nil {
			return false, err
		}
		return !hasPort(svc, port[nsC]) && !get(port[nsC]), nil
	})
	if !get(port[nsA]) || !get(port[nsB]) {
		t.Fatal("the admitted namespaces are no longer served")
	}

	// Moving db to a dedicated proxy and back keeps its port; its published address leaves the
	// pool and returns.
	published := func(c context.Context) (string, int32, error) {
		list, err := kube.DiscoveryV1().EndpointSlices(nsA).List(c, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + publish.ServiceName(publish.KindEndpoints, "db")})
		if err != nil || len(list.Items) != 1 || len(list.Items[0].Endpoints) != 1 || len(list.Items[0].Ports) != 1 {
			return "", 0, err
		}
		s := list.Items[0]
		return s.Endpoints[0].Addresses[0], *s.Ports[0].Port, nil
	}
	atPool := func(c context.Context) (bool, error) {
		ip, p, err := published(c)
		return ip == svc.Spec.ClusterIP && p == port[nsA], err
	}
	eventually(t, "db published at the pool's address", atPool)
	setProxy := func(proxy *v1alpha1.ProxyConfig) {
		cur, err := viaKube(t).TailscaleEndpoints(nsA).Get(ctx(t), "db", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Proxy = proxy
		if _, err := viaKube(t).TailscaleEndpoints(nsA).Update(ctx(t), cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setProxy(&v1alpha1.ProxyConfig{ConnectionType: proxydeploy.Egress})
	eventually(t, "db on its dedicated proxy: same port, another address, not the pool's", func(c context.Context) (bool, error) {
		p, scope, err := portOf(c, nsA)
		if err != nil || p != port[nsA] || scope == "shared" {
			return false, err
		}
		ip, pub, err := published(c)
		if err != nil || ip == "" || ip == svc.Spec.ClusterIP || pub != port[nsA] {
			return false, err
		}
		obj, err := viaKube(t).TailscaleEndpoints(nsA).Get(c, "db", metav1.GetOptions{})
		if err != nil || meta.FindStatusCondition(obj.Status.Conditions, proxypool.ConditionServed) != nil {
			return false, err
		}
		pool, err := poolSvc(c)
		return err == nil && !hasPort(pool, port[nsA]) && !get(port[nsA]), err
	})
	setProxy(nil)
	eventually(t, "db back on the pool at the same address, served", func(c context.Context) (bool, error) {
		p, scope, err := portOf(c, nsA)
		if err != nil || p != port[nsA] || scope != "shared" {
			return false, err
		}
		ok, err := atPool(c)
		return ok && get(port[nsA]), err
	})
	if !get(port[nsB]) {
		t.Error("cache is no longer served after db moved")
	}
}
