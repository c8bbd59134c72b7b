package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"tailscale.com/ipn"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/forward"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/e2e/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// hostReplica is one proxy replica run in-process with its own tsnet node, standing in for a
// pod of the deployed StatefulSet: the test writes, as the replica and its kubelet would, the
// node's ID into the replica's state Secret and the pod's Ready condition.
type hostReplica struct {
	pod    string
	node   *node.Node
	reg    *prometheus.Registry
	stop   func()
	nodeID string
}

// served counts the connections this replica forwarded.
func (r *hostReplica) served() float64 {
	mfs, _ := r.reg.Gather()
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "tailscale_gateway_proxy_connections_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestVIPHostAutoApproveAndFailover: a TailscaleServices whose Tailscale Service is hosted by the
// two replicas of a dedicated proxy. Without autoApprove no approval call is made and, the
// tailnet's policy approving nothing (the Service's tag is not the proxies'), no host serves it.
// With autoApprove the controller approves both replicas and never the foreign device that
// advertises the same Service. Then the replica serving a tailnet client dies (its node stops,
// without withdrawing anything) and its pod goes; control still routes the dead node (it
// models a node that vanished, OfflineAfter 10 min): the controller withdraws its approval and
// the client is served by the other replica. The time from the death to that first answer is
// logged (docs/performance.md).
func TestVIPHostAutoApproveAndFailover(t *testing.T) {
	// A tailnet of its own per run: with -count, an earlier run's namespace may still be going.
	ns := newNamespace(t, "hosts")
	tn := "e2e-" + ns
	sim, admin := startSimSpec(t, tn, tailnetsim.Options{OfflineAfter: 10 * time.Minute,
		Devices: []tailnetsim.DeviceSpec{{Hostname: "web-1", HTTPPort: tailnetsim.DefaultHTTPPort}}},
		func(s *v1alpha1.TailscaleTailnetSpec) {
			s.Tags, s.ProxyTags = []string{"tag:k8s-operator"}, []string{"tag:k8s-proxy"}
		})
	web, err := sim.Device("web-1")
	if err != nil {
		t.Fatal(err)
	}
	gw := viaKube(t)
	labels := map[string]string{"app": "front"}
	eps, err := gw.TailscaleEndpoints(ns).Create(ctx(t), &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: labels},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: tn,
			Proxy: &v1alpha1.ProxyConfig{Replicas: ptr.To[int32](2), ConnectionType: proxydeploy.Ingress},
			Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "http", TailscaleIP: web.IPv4.String(), TailscaleFQDN: web.FQDN,
				Port: int32(web.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.TailscaleServices(ns).Create(ctx(t), &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "front"},
		Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:front", Ports: []string{"tcp:80"}, Tags: []string{"tag:front"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n := proxydeploy.NamesFor(ns, eps.Name)
	eventually(t, "the replicas' state Secrets", func(c context.Context) (bool, error) {
		for i := range 2 {
			if _, err := env.Kube.CoreV1().Secrets(framework.Namespace).Get(c, n.StateSecret(i), metav1.GetOptions{}); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	var vip string
	eventually(t, "svc:front in the tailnet", func(c context.Context) (bool, error) {
		s, err := admin.Service(c, "svc:front")
		if err != nil || len(s.Addrs) == 0 {
			return false, nil
		}
		vip = s.Addrs[0]
		return true, nil
	})

	client, err := versioned.NewForConfig(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	replicas := make([]*hostReplica, 2)
	for i := range replicas {
		replicas[i] = startHostReplica(t, sim, client, eps, n.StateSecret(i))
	}
	// A device that is not ours advertising the same Service.
	intruder, err := node.Start(ctx(t), node.Options{Dir: t.TempDir(), Hostname: "intruder", ControlURL: sim.ControlURL(),
		AuthKey: sim.AuthKey(), Tags: []string{"tag:k8s-proxy"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { intruder.Close() })
	if _, err := intruder.ListenService("svc:front", tsnet.ServiceModeTCP{Port: 80}); err != nil {
		t.Fatal(err)
	}
	intruderID := nodeIDOf(t, intruder)

	hostsOf := func(c context.Context) (map[string]tailnet.ServiceHost, error) {
		hs, err := admin.ServiceHosts(c, "svc:front")
		out := map[string]tailnet.ServiceHost{}
		for _, h := range hs {
			out[h.NodeID] = h
		}
		return out, err
	}
	approvalCalls := func() int64 {
		var n int64
		for pattern, count := range sim.APIRequestCounts() {
			if strings.HasPrefix(pattern, "POST ") && strings.HasSuffix(pattern, "/approved") {
				n += count
			}
		}
		return n
	}

	// Without autoApprove: the three hosts advertise, none approved, no call made.
	eventually(t, "the replicas and the intruder advertising svc:front", func(c context.Context) (bool, error) {
		hs, err := hostsOf(c)
		return err == nil && hs[replicas[0].nodeID].Configured && hs[replicas[1].nodeID].Configured && hs[intruderID].Configured, nil
	})
	if got := approvalCalls(); got != 0 {
		t.Fatalf("%d approval calls without autoApprove", got)
	}

	// With autoApprove: both replicas approved, the intruder never.
	obj, err := gw.TailscaleServices(ns).Get(ctx(t), "front", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.Spec.VIPService.AutoApprove = ptr.To(true)
	if _, err := gw.TailscaleServices(ns).Update(ctx(t), obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both replicas approved and HostsApproved saying so", func(c context.Context) (bool, error) {
		hs, err := hostsOf(c)
		if err != nil || !hs[replicas[0].nodeID].Approved || !hs[replicas[1].nodeID].Approved {
			return false, nil
		}
		o, err := gw.TailscaleServices(ns).Get(c, "front", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		cond := meta.FindStatusCondition(o.Status.Conditions, vipservice.ConditionHostsApproved)
		return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, framework.Namespace+"/"+replicas[0].pod) &&
			strings.Contains(cond.Message, framework.Namespace+"/"+replicas[1].pod), nil
	})
	if hs, err := hostsOf(ctx(t)); err != nil || hs[intruderID].Approved {
		t.Fatalf("the intruder is approved: %+v, %v", hs[intruderID], err)
	}

	// A tailnet client served through the VIP; the replica that served it dies.
	cl, err := sim.NewNode(ctx(t), "client", sim.AuthKey())
	if err != nil {
		t.Fatal(err)
	}
	lc, err := cl.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.EditPrefs(ctx(t), &ipn.MaskedPrefs{RouteAllSet: true, Prefs: ipn.Prefs{RouteAll: true}}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: cl.Dial, DisableKeepAlives: true}}
	get := func() bool {
		resp, err := hc.Get("http://" + vip + "/")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), "web-1")
	}
	var before [2]float64
	eventually(t, "the client served through svc:front", func(context.Context) (bool, error) {
		before = [2]float64{replicas[0].served(), replicas[1].served()}
		return get(), nil
	})
	dead, alive := replicas[0], replicas[1]
	if replicas[1].served() > before[1] {
		dead, alive = replicas[1], replicas[0]
	}
	t.Logf("the client is served by %s; killing it", dead.pod)
	died := time.Now()
	dead.stop()
	// The pod is gone as after kubectl delete --force (the kubelet's report).
	if err := env.Kube.CoreV1().Pods(framework.Namespace).Delete(ctx(t), dead.pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	aliveBefore := alive.served()
	eventually(t, "the client served by the other replica", func(context.Context) (bool, error) {
		return get() && alive.served() > aliveBefore, nil
	})
	t.Logf("failover: %s from the death of %s to the first answer through %s", time.Since(died).Round(10*time.Millisecond), dead.pod, alive.pod)
	eventually(t, "HostsApproved naming the dead replica withdrawn", func(c context.Context) (bool, error) {
		o, err := gw.TailscaleServices(ns).Get(c, "front", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		cond := meta.FindStatusCondition(o.Status.Conditions, vipservice.ConditionHostsApproved)
		return cond != nil && strings.Contains(cond.Message, "withdrawn: "+framework.Namespace+"/"+dead.pod), nil
	})
	if hs, err := hostsOf(ctx(t)); err != nil || hs[dead.nodeID].Approved || !hs[alive.nodeID].Approved || hs[intruderID].Approved {
		t.Fatalf("after the failover: dead %+v, alive %+v, intruder %+v (%v)", hs[dead.nodeID], hs[alive.nodeID], hs[intruderID], err)
	}
}

// startHostReplica joins a proxy node for the replica of eps whose pod and state Secret (in the
// installation's namespace) are named name, runs the proxy hosting the TailscaleServices "front"
// of eps' namespace, records the node's ID in the state Secret and creates the Ready pod. stop
// kills the node without withdrawing anything, then stops the proxy.
func startHostReplica(t *testing.T, sim *tailnetsim.Tailnet, client versioned.Interface, eps *v1alpha1.TailscaleEndpoints, name string) *hostReplica {
	ns, sys := eps.Namespace, framework.Namespace
	t.Helper()
	srv, err := node.Start(ctx(t), node.Options{Dir: t.TempDir(), Hostname: name, ControlURL: sim.ControlURL(),
		AuthKey: sim.AuthKey(), Tags: []string{"tag:k8s-proxy"}})
	if err != nil {
		t.Fatal(err)
	}
	nd, err := node.Wrap(srv)
	if err != nil {
		t.Fatal(err)
	}
	r := &hostReplica{pod: name, node: nd, reg: prometheus.NewRegistry(), nodeID: nodeIDOf(t, srv)}
	p, err := proxy.New(proxy.Options{Client: client, Node: nd, Metrics: forward.NewMetrics(r.reg), Retry: 200 * time.Millisecond,
		DrainGrace: -1, Selection: proxy.Selection{Namespace: ns, Services: []string{"front"}}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(runCtx) }()
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		nd.Close() // the node dies first: nothing is withdrawn
		cancel()
		<-done
	}
	t.Cleanup(r.stop)
	<-p.Ready()

	sec, err := env.Kube.CoreV1().Secrets(sys).Get(ctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[kubestate.NodeIDKey] = []byte(r.nodeID)
	if _, err := env.Kube.CoreV1().Secrets(sys).Update(ctx(t), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	podLabels := proxydeploy.ParentLabels(eps.Namespace, eps.Name, eps.UID)
	podLabels["app.kubernetes.io/name"] = "tailscale-gateway-proxy"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sys, Name: name, Labels: podLabels},
		Spec: corev1.PodSpec{ServiceAccountName: proxydeploy.NamesFor(eps.Namespace, eps.Name).Base, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "proxy", Image: "tailscale-gateway-proxy"}}}}
	created, err := env.Kube.CoreV1().Pods(sys).Create(ctx(t), pod, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	created.Status.Phase = corev1.PodRunning
	created.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	if _, err := env.Kube.CoreV1().Pods(sys).UpdateStatus(ctx(t), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return r
}

func nodeIDOf(t *testing.T, s *tsnet.Server) string {
	t.Helper()
	lc, err := s.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	st, err := lc.StatusWithoutPeers(ctx(t))
	if err != nil || st.Self == nil {
		t.Fatal(fmt.Errorf("node status: %w", err))
	}
	return string(st.Self.ID)
}
