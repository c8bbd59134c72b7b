// Package proxyhosts tells which tailnet devices are this installation's proxies, which
// TailscaleServices each one hosts, and whether its pod is Ready. It watches the proxy pods in
// the installation's namespace (label app.kubernetes.io/name=tailscale-gateway-proxy) and reads,
// by name, the state Secret of each (named like its pod, in that namespace), where the replica
// records its node's stable ID under kubestate.NodeIDKey. Secrets are never listed or watched.
//
// A state Secret counts only when it lives in the installation's namespace, where tenants create
// nothing, carries the labels of pkg/controllers/proxydeploy (proxydeploy.ParentOf) and those
// name a TailscaleEndpoints that exists with that UID: a pod name or labels copied elsewhere
// never make a device ours.
package proxyhosts

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
)

// Host is one of this installation's proxies as a tailnet device.
type Host struct {
	// Pod is the proxy's pod, "<namespace>/<name>".
	Pod string
	// Namespace of the TailscaleEndpoints it is a proxy of (the pod is in the installation's).
	Namespace string
	// Services are the TailscaleServices (in Namespace) whose Tailscale Service it hosts.
	Services []string
	// Ready reports a pod that is not terminating and whose Ready condition is True.
	Ready bool
	// Reason says why a host is not ready.
	Reason string
}

// Source watches the proxy pods. Create it with New, start it with Start.
type Source struct {
	kube    kubernetes.Interface
	eps     listers.TailscaleEndpointsLister
	svcs    listers.TailscaleServicesLister
	factory kubeinformers.SharedInformerFactory
	pods    corelisters.PodLister
	synced  cache.InformerSynced

	generation atomic.Uint64
	mu         sync.Mutex
	listeners  []func()
	nodes      map[string]nodeRecord // pod namespace/name -> its state Secret as last read
}

// nodeRecord is what a pod's state Secret said when the pod was at resourceVersion.
type nodeRecord struct {
	uid             types.UID
	resourceVersion string
	nodeID          string               // empty: not joined yet, or the Secret is not ours
	owner           types.NamespacedName // the TailscaleEndpoints the Secret is kept for
}

// New watches the proxy pods in namespace, the installation's; eps and svcs prove ownership and
// name the Services each proxy hosts.
func New(kube kubernetes.Interface, namespace string, eps listers.TailscaleEndpointsLister, svcs listers.TailscaleServicesLister, resync time.Duration) (*Source, error) {
	f := proxydeploy.PodInformers(kube, namespace, resync)
	s := &Source{kube: kube, eps: eps, svcs: svcs, factory: f, pods: f.Core().V1().Pods().Lister(), nodes: map[string]nodeRecord{}}
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.changed() },
		UpdateFunc: func(_, _ any) { s.changed() },
		DeleteFunc: func(any) { s.changed() },
	}); err != nil {
		return nil, fmt.Errorf("proxyhosts: %w", err)
	}
	s.synced = inf.HasSynced
	return s, nil
}

// Start starts the informer until stop is closed.
func (s *Source) Start(stop <-chan struct{}) { s.factory.Start(stop) }

// HasSynced reports whether the pods have been listed once.
func (s *Source) HasSynced() bool { return s.synced() }

// Generation increases with every change of a proxy pod.
func (s *Source) Generation() uint64 { return s.generation.Load() }

// OnChange registers fn, called (on the informer's goroutine: it must not block) after every
// change of a proxy pod.
func (s *Source) OnChange(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

func (s *Source) changed() {
	s.generation.Add(1)
	s.mu.Lock()
	ls := append([]func(){}, s.listeners...)
	s.mu.Unlock()
	for _, fn := range ls {
		fn()
	}
}

// Lookup reports whether the device with stable node ID nodeID is one of this installation's
// proxies, and the state of its pod. A pod's state Secret is read again only when the pod
// changed since it was last read.
func (s *Source) Lookup(ctx context.Context, nodeID string) (Host, bool) {
	if nodeID == "" {
		return Host{}, false
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return Host{}, false
	}
	present := make(map[string]bool, len(pods))
	for _, p := range pods {
		present[p.Namespace+"/"+p.Name] = true
		rec := s.record(ctx, p)
		if rec.nodeID != nodeID {
			continue
		}
		h, ok := s.host(p.Namespace+"/"+p.Name, rec)
		switch {
		case !ok:
		case p.DeletionTimestamp != nil:
			h.Reason = "its pod is terminating"
		case !podReady(p):
			h.Reason = "its pod is not Ready"
		default:
			h.Ready = true
		}
		return h, ok
	}
	// A pod that is gone: its node is ours still, and must not stay a host.
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, rec := range s.nodes {
		if present[key] || rec.nodeID != nodeID {
			continue
		}
		h, ok := s.host(key, rec)
		if !ok {
			delete(s.nodes, key) // its TailscaleEndpoints is gone too
			continue
		}
		h.Reason = "its pod is gone"
		return h, true
	}
	return Host{}, false
}

// host is the Host of the pod (namespace/name) whose state Secret rec describes; ok is false
// when the TailscaleEndpoints it is kept for is gone.
func (s *Source) host(pod string, rec nodeRecord) (Host, bool) {
	owner, err := s.eps.TailscaleEndpoints(rec.owner.Namespace).Get(rec.owner.Name)
	if err != nil {
		return Host{}, false
	}
	return Host{Pod: pod, Namespace: owner.Namespace, Services: proxydeploy.HostedServices(owner, s.svcs)}, true
}

// record returns what p's state Secret says, reading it when p changed since the last read.
func (s *Source) record(ctx context.Context, p *corev1.Pod) nodeRecord {
	key := p.Namespace + "/" + p.Name
	s.mu.Lock()
	rec, ok := s.nodes[key]
	s.mu.Unlock()
	if ok && rec.uid == p.UID && rec.resourceVersion == p.ResourceVersion {
		return rec
	}
	rec = nodeRecord{uid: p.UID, resourceVersion: p.ResourceVersion}
	sec, err := s.kube.CoreV1().Secrets(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		// Not remembered: read again next time.
		klog.FromContext(ctx).V(2).Info("Reading a proxy's state Secret", "pod", key, "err", err)
		return rec
	default:
		if owner, ok := s.ownerOf(sec); ok {
			rec.nodeID, rec.owner = string(sec.Data[kubestate.NodeIDKey]), owner
		}
	}
	s.mu.Lock()
	s.nodes[key] = rec
	s.mu.Unlock()
	return rec
}

// ownerOf returns the TailscaleEndpoints sec is kept for when sec is one of our state Secrets:
// its labels name one that exists with that UID.
func (s *Source) ownerOf(sec *corev1.Secret) (types.NamespacedName, bool) {
	parent, uid, ok := proxydeploy.ParentOf(sec)
	if !ok {
		return types.NamespacedName{}, false
	}
	owner, err := s.eps.TailscaleEndpoints(parent.Namespace).Get(parent.Name)
	if err != nil || owner.UID != uid {
		return types.NamespacedName{}, false
	}
	return parent, true
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
