package proxydeploy

import (
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/requestcounts"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// PodInformers returns informers limited to the proxies' pods (their template's labels).
func PodInformers(kube kubernetes.Interface, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync,
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = podNameLabel + "=" + podName }))
}

// Ownership is what proves a pod is one of our proxies, and which objects it serves.
type Ownership struct {
	Endpoints    listers.TailscaleEndpointsLister
	Services     listers.TailscaleServicesLister
	StatefulSets appslisters.StatefulSetLister
}

// Ownership returns the controller's listers (its StatefulSets informer runs with Run).
func (c *Controller) Ownership() Ownership {
	return Ownership{Endpoints: c.eps, Services: c.svcs, StatefulSets: c.core.Apps().V1().StatefulSets().Lister()}
}

// MetricsTargets lists the metrics endpoints of the running proxy pods that are ours: controlled
// by the StatefulSet kept for the TailscaleEndpoints they name in ProxyForLabel, itself
// controlled by that object (ownerReference UIDs, not labels, which anyone who creates a pod
// can copy). Each target's counts reach only the TailscaleServices its proxy hosts.
func MetricsTargets(pods corelisters.PodLister, own Ownership) []requestcounts.Target {
	list, err := pods.List(labels.SelectorFromSet(labels.Set{podNameLabel: podName}))
	if err != nil {
		return nil
	}
	var out []requestcounts.Target
	for _, p := range list {
		proxyFor := p.Labels[ProxyForLabel]
		if p.Status.Phase != corev1.PodRunning || net.ParseIP(p.Status.PodIP) == nil || proxyFor == "" {
			continue
		}
		obj, err := own.Endpoints.TailscaleEndpoints(p.Namespace).Get(proxyFor)
		if err != nil {
			continue
		}
		sts, err := own.StatefulSets.StatefulSets(p.Namespace).Get(NamesOf(proxyFor).Base)
		if err != nil || !metav1.IsControlledBy(sts, obj) || !metav1.IsControlledBy(p, sts) {
			continue
		}
		out = append(out, requestcounts.Target{Key: p.Namespace + "/" + p.Name,
			URL:       "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(MetricsPort)) + "/metrics",
			Namespace: p.Namespace, Serves: hostedServices(obj, own.Services)})
	}
	return out
}
