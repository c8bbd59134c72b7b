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
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/requestcounts"
)

// PodInformers returns informers limited to the proxies' pods (their template's labels).
func PodInformers(kube kubernetes.Interface, resync time.Duration) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactoryWithOptions(kube, resync,
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = podNameLabel + "=" + podName }))
}

// MetricsTargets lists the metrics endpoints of the running proxy pods.
func MetricsTargets(pods corelisters.PodLister) []requestcounts.Target {
	list, err := pods.List(labels.SelectorFromSet(labels.Set{podNameLabel: podName}))
	if err != nil {
		return nil
	}
	var out []requestcounts.Target
	for _, p := range list {
		if p.Status.Phase != corev1.PodRunning || net.ParseIP(p.Status.PodIP) == nil || p.Labels[ProxyForLabel] == "" {
			continue
		}
		out = append(out, requestcounts.Target{Key: p.Namespace + "/" + p.Name,
			URL: "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(MetricsPort)) + "/metrics"})
	}
	return out
}
