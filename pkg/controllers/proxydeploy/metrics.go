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

// PodInformers returns informers limited to the proxies' pods (their template's labels) in the
// installation's namespace.
func PodInformers(kube kubernetes.Interface, namespace string, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync, kubeinformers.WithNamespace(namespace),
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
// (ownerReference UID) by the StatefulSet kept for the TailscaleEndpoints their labels name,
// that StatefulSet being ours and labelled for that object's UID. The pods live in the
// installation's namespace, where tenants create none; the ownerReference still holds against
// a pod that copies the labels. Each target's counts reach only the TailscaleServices its proxy
// hosts, in its TailscaleEndpoints' namespace.
func MetricsTargets(pods corelisters.PodLister, own Ownership) []requestcounts.Target {
	list, err := pods.List(labels.SelectorFromSet(labels.Set{podNameLabel: podName}))
	if err != nil {
		return nil
	}
	var out []requestcounts.Target
	for _, p := range list {
		ns, name := p.Labels[ParentNamespaceLabel], p.Labels[ParentNameLabel]
		if p.Status.Phase != corev1.PodRunning || net.ParseIP(p.Status.PodIP) == nil || ns == "" || name == "" {
			continue
		}
		obj, err := own.Endpoints.TailscaleEndpoints(ns).Get(name)
		if err != nil {
			continue
		}
		sts, err := own.StatefulSets.StatefulSets(p.Namespace).Get(NamesFor(ns, name).Base)
		if err != nil || !IsKeptFor(sts, obj) || !metav1.IsControlledBy(p, sts) {
			continue
		}
		out = append(out, requestcounts.Target{Key: p.Namespace + "/" + p.Name,
			URL:       "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(MetricsPort)) + "/metrics",
			Namespace: obj.Namespace, Serves: hostedServices(obj, own.Services)})
	}
	return out
}
