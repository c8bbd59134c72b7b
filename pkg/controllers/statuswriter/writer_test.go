package statuswriter

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// staticSources is one tailnet whose single device is online or not.
type staticSources struct{ tailnet livestatus.Tailnet }

func (s staticSources) Tailnet(ref string) (livestatus.Tailnet, bool) {
	return s.tailnet, ref == s.tailnet.Name
}
func (staticSources) Probe(string) (livestatus.Probe, bool) { return livestatus.Probe{}, false }
func (staticSources) Tenancy() *tenancy.Policy              { return nil }

func sources(online bool, lastSeen time.Time) staticSources {
	tn := livestatus.Tailnet{Name: "company.ts.net", Synced: true, LastSync: lastSeen,
		Devices: []livestatus.Device{{Name: "db.company.ts.net", Addresses: []string{"100.64.0.1"}, Online: online, LastSeen: lastSeen}}}
	tn.BuildIndex()
	return staticSources{tn}
}

func endpoints() *v1alpha1.TailscaleEndpoints {
	return &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default", Generation: 1},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []v1alpha1.TailscaleEndpoint{{
			Name: "primary", TailscaleIP: "100.64.0.1", TailscaleFQDN: "db.company.ts.net", Port: 5432,
			Protocol: v1alpha1.ProtocolTCP, HealthCheck: &v1alpha1.HealthCheckConfig{Enabled: ptr.To(false)},
		}}},
	}
}

// syncOnce runs one sync of the TailscaleEndpoints "default/db" with obj in the informer cache
// and returns the status updates it sent.
func syncOnce(t *testing.T, obj *v1alpha1.TailscaleEndpoints, src livestatus.Sources) []*v1alpha1.TailscaleEndpoints {
	t.Helper()
	return syncRecording(t, obj, src, nil)
}

// syncRecording is syncOnce with the writer's Events going to rec.
func syncRecording(t *testing.T, obj *v1alpha1.TailscaleEndpoints, src livestatus.Sources, rec record.EventRecorder) []*v1alpha1.TailscaleEndpoints {
	t.Helper()
	client := fake.NewSimpleClientset(obj)
	factory := informers.NewSharedInformerFactory(client, 0)
	w := New(client, factory, src)
	if rec != nil {
		w.SetRecorder(rec)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	client.ClearActions()
	if err := w.sync(ctx, key{KindEndpoints, obj.Namespace, obj.Name}); err != nil {
		t.Fatal(err)
	}
	var updates []*v1alpha1.TailscaleEndpoints
	for _, a := range client.Actions() {
		if u, ok := a.(clienttesting.UpdateAction); ok && a.GetSubresource() == "status" {
			updates = append(updates, u.GetObject().(*v1alpha1.TailscaleEndpoints))
		}
	}
	return updates
}

func TestWritesTransitionWithoutLiveOnlyFields(t *testing.T) {
	seen := time.Now().Add(-time.Minute)
	updates := syncOnce(t, endpoints(), sources(true, seen))
	if len(updates) != 1 {
		t.Fatalf("got %d status updates, want 1", len(updates))
	}
	st := updates[0].Status
	if len(st.Endpoints) != 1 || st.Endpoints[0].Online == nil || !*st.Endpoints[0].Online || st.Endpoints[0].Status != livestatus.Healthy {
		t.Fatalf("written endpoint status = %+v, want online and Healthy", st.Endpoints)
	}
	if st.Endpoints[0].LastSeen != nil {
		t.Errorf("lastSeen persisted: %v", st.Endpoints[0].LastSeen)
	}
}

// The informer watches through the live-status overlay, so its objects carry live-only fields;
// an object whose persisted part is current must not be written again.
func TestNoWriteWhenOnlyLiveFieldsDiffer(t *testing.T) {
	seen := time.Now().Add(-time.Minute)
	src := sources(true, seen)
	written := syncOnce(t, endpoints(), src)
	if len(written) != 1 {
		t.Fatalf("got %d status updates, want 1", len(written))
	}
	overlaid := written[0].DeepCopy()
	overlaid.Status.Endpoints[0].LastSeen = &metav1.Time{Time: seen}
	if updates := syncOnce(t, overlaid, src); len(updates) != 0 {
		t.Fatalf("got %d status updates of an unchanged object, want none: %+v", len(updates), updates[0].Status)
	}

	// A transition is still written.
	if updates := syncOnce(t, overlaid, sources(false, seen)); len(updates) != 1 {
		t.Fatalf("got %d status updates after the device went offline, want 1", len(updates))
	}
}
