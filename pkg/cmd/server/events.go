package server

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/scheme"
)

// eventScheme names the kinds Events may be about: ours and the Kubernetes API's (leader
// election records Events on its coordination.k8s.io Lease).
var eventScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(scheme.AddToScheme(s))
	return s
}()

// eventCorrelation rate-limits the Events of one object from one component, whatever their type
// (a flapping endpoint alternates Warning and Normal): a burst of 10, then one every 5 minutes
// (client-go's spam filter; similar Events are also aggregated).
var eventCorrelation = record.CorrelatorOptions{BurstSize: 10, QPS: 1.0 / 300, SpamKeyFunc: spamKey}

// spamKey is client-go's spam key without the Event's type.
func spamKey(e *corev1.Event) string {
	o := e.InvolvedObject
	return strings.Join([]string{e.Source.Component, e.Source.Host, o.Kind, o.Namespace, o.Name, string(o.UID), o.APIVersion}, "/")
}

// newEventRecorder returns a recorder of component's Events on our objects: to the core API
// when core is set (rate-limited by eventCorrelation) and to the log at -v=2.
func newEventRecorder(core kubernetes.Interface, component string) record.EventRecorder {
	b := record.NewBroadcaster(record.WithCorrelatorOptions(eventCorrelation))
	if core != nil {
		b.StartRecordingToSink(retryingSink{&typedcorev1.EventSinkImpl{Interface: core.CoreV1().Events("")}})
	}
	b.StartStructuredLogging(2)
	return b.NewRecorder(eventScheme, corev1.EventSource{Component: component})
}

// recordTransitions gives the status writer a recorder for the transitions it persists
// (endpoint healthy/unhealthy, tailnet sync lost/regained): Options.Controllers.Recorder when
// set, else Events through core (nil standalone: the log only).
func (r *runners) recordTransitions(o *Options, core *rest.Config) error {
	if r.writer == nil {
		return nil
	}
	if o.Controllers != nil && o.Controllers.Recorder != nil {
		r.writer.SetRecorder(o.Controllers.Recorder)
		return nil
	}
	var kube kubernetes.Interface
	if core != nil {
		k, err := kubernetes.NewForConfig(core)
		if err != nil {
			return fmt.Errorf("creating the core client for Events: %w", err)
		}
		kube = k
	}
	r.writer.SetRecorder(newEventRecorder(kube, "tailscale-gateway-status"))
	return nil
}
