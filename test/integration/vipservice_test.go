package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/vipservice"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// eventLog is an EventRecorder keeping every Event, for assertions.
type eventLog struct {
	mu     sync.Mutex
	events []string // "<namespace>/<name> <type> <reason> <message>"
}

func (l *eventLog) Event(obj runtime.Object, typ, reason, message string) {
	o, _ := meta.Accessor(obj)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf("%s/%s %s %s %s", o.GetNamespace(), o.GetName(), typ, reason, message))
}

func (l *eventLog) Eventf(obj runtime.Object, typ, reason, format string, args ...any) {
	l.Event(obj, typ, reason, fmt.Sprintf(format, args...))
}

func (l *eventLog) AnnotatedEventf(obj runtime.Object, _ map[string]string, typ, reason, format string, args ...any) {
	l.Eventf(obj, typ, reason, format, args...)
}

// has reports whether an Event of reason was recorded for namespace/name.
func (l *eventLog) has(object, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.events, func(e string) bool {
		return strings.HasPrefix(e, object+" ") && strings.Contains(e, " "+reason+" ")
	})
}

// vipEnv is a server with controllers on a simulated tailnet, and an API client of that
// tailnet standing for the admin console.
type vipEnv struct {
	*simEnv
	events *eventLog
	admin  *tailnet.Client
	id     string
}

func withControllers(id string, events *eventLog) func(*server.Options) {
	return func(o *server.Options) {
		o.Controllers.OperatorID = id
		o.Controllers.Recorder = events
		o.Controllers.Resync = 300 * time.Millisecond
	}
}

func startVIPEnv(t *testing.T, sim *tailnetsim.Tailnet, id string) *vipEnv {
	events := &eventLog{}
	var env *simEnv
	if sim == nil {
		env = startSimEnv(t, withControllers(id, events))
	} else {
		env = startServerOn(t, sim, withControllers(id, events))
	}
	return &vipEnv{simEnv: env, events: events, admin: adminClient(t, env.sim), id: id}
}

func vipServices(name, svc string) *v1alpha1.TailscaleServices {
	return &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: name},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector:         &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			VIPService:       &v1alpha1.VIPServiceSpec{Name: svc, Ports: []string{"tcp:80"}, Tags: []string{"tag:web"}, Comment: "from " + name},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "sim", Labels: map[string]string{"app": name}},
		},
	}
}

// service waits until the tailnet's Service satisfies cond (exists false: it is absent).
func (e *vipEnv) service(t *testing.T, name, what string, cond func(s tailnet.Service, exists bool) bool) tailnet.Service {
	t.Helper()
	var got tailnet.Service
	var exists bool
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		// A list, not a GET of the Service: the tests count the controller's GETs.
		list, err := e.admin.Services(c)
		if err != nil {
			return false, err
		}
		i := slices.IndexFunc(list, func(s tailnet.Service) bool { return s.Name == name })
		got, exists = tailnet.Service{}, i >= 0
		if exists {
			got = list[i]
		}
		return cond(got, exists), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v; last: %+v exists=%v", name, what, err, got, exists)
	}
	return got
}

// object waits until the TailscaleServices satisfies cond.
func (e *vipEnv) object(t *testing.T, name, what string, cond func(*v1alpha1.TailscaleServices) bool) *v1alpha1.TailscaleServices {
	t.Helper()
	var got *v1alpha1.TailscaleServices
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := e.client.GatewayV1alpha1().TailscaleServices("vip").Get(c, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = o
		return cond(o), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v; last status: %+v", name, what, err, got.Status)
	}
	return got
}

func (e *vipEnv) gone(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		_, err := e.client.GatewayV1alpha1().TailscaleServices("vip").Get(c, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s to be deleted: %v", name, err)
	}
}

// owners returns the owner references of a Service.
func owners(t *testing.T, s tailnet.Service) []vipservice.OwnerRef {
	t.Helper()
	var v struct {
		OwnerRefs []vipservice.OwnerRef `json:"ownerRefs"`
	}
	if raw := s.Annotations[vipservice.OwnerAnnotation]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatalf("owner annotation %q: %v", raw, err)
		}
	}
	return v.OwnerRefs
}

func operatorIDs(refs []vipservice.OwnerRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.OperatorID)
	}
	return out
}

func condition(o *v1alpha1.TailscaleServices, typ string) *metav1.Condition {
	return meta.FindStatusCondition(o.Status.Conditions, typ)
}

// calls counts the simulator's requests on one Service (GET and PUT of .../vip-services/{name}).
func calls(sim *tailnetsim.Tailnet) (get, put, del int64) {
	c := sim.APIRequestCounts()
	base := "/api/v2/tailnet/{tailnet}/vip-services/{name}"
	return c["GET "+base], c["PUT "+base], c["DELETE "+base]
}

func TestVIPServiceLifecycle(t *testing.T) {
	env := startVIPEnv(t, nil, "op-a")
	svcs := env.client.GatewayV1alpha1().TailscaleServices("vip")

	// Create: two API calls (GET, PUT), the owner annotation, the finalizer, status and an Event.
	get0, put0, _ := calls(env.sim)
	created, err := svcs.Create(ctx(t), vipServices("web", "svc:web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := env.service(t, "svc:web", "created", func(s tailnet.Service, ok bool) bool { return ok })
	env.sim.SetServiceHost("svc:web", "api-server", true) // served: advertised, auto-approved by tag:web
	refs := owners(t, s)
	if len(refs) != 1 || refs[0].OperatorID != "op-a" || refs[0].Resource == nil || refs[0].Resource.UID != string(created.UID) ||
		refs[0].Resource.Kind != "TailscaleServices" || s.Comment != "from web" || !slices.Equal(s.Ports, []string{"tcp:80"}) {
		t.Fatalf("created service: %+v", s)
	}
	o := env.object(t, "web", "VIP address in status", func(o *v1alpha1.TailscaleServices) bool {
		return o.Status.VIPServiceStatus != nil && len(o.Status.VIPServiceStatus.Addresses) == 2 &&
			o.Status.VIPServiceStatus.LastRegistration != nil && o.Status.ServiceInfo != nil &&
			meta.IsStatusConditionTrue(o.Status.Conditions, "VIPServiceReady")
	})
	if !slices.Equal(o.Status.VIPServiceStatus.Addresses, s.Addrs) || !slices.Contains(o.Finalizers, vipservice.Finalizer) ||
		o.Status.ServiceInfo.OwnerOperator != "op-a" || o.Status.ServiceInfo.ServiceRegistryKey != "sim/svc:web" {
		t.Fatalf("status after create: %+v finalizers %v", o.Status, o.Finalizers)
	}
	if c := condition(o, "Degraded"); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("Degraded: %+v", c)
	}
	if !env.events.has("vip/web", vipservice.ReasonCreated) {
		t.Fatalf("no Created event: %v", env.events.events)
	}
	// kubectl shows the VIP address.
	if out, err := env.server.Kubectl("get", "tssvc", "-n", "vip", "web", "-o", "wide"); err != nil || !strings.Contains(out, s.Addrs[0]) {
		t.Fatalf("kubectl get tssvc: %v\n%s", err, out)
	}

	// Steady state: polls and resyncs (every 300ms) cost no call on the Service.
	get1, put1, _ := calls(env.sim)
	if get1-get0 > 1 || put1-put0 != 1 {
		t.Fatalf("create cost %d GET and %d PUT, want at most 1 and 1", get1-get0, put1-put0)
	}
	waitPolls(t, env.sim, 10)
	if get2, put2, _ := calls(env.sim); get2 != get1 || put2 != put1 {
		t.Fatalf("steady state cost %d GET and %d PUT", get2-get1, put2-put1)
	}

	// Two writers, one status: what is stored holds the status writer's fields (addresses,
	// Ready, VIPServiceReady) and the controller's (Conflict, Degraded, lastRegistration,
	// serviceInfo) after both ran for ten polls and resyncs.
	raw, _ := storedJSON(t, env.server, "/registry/gateway.tailscale.com/gateway.tailscale.com/tailscaleservices/vip/web")
	stored := &v1alpha1.TailscaleServices{}
	if err := json.Unmarshal([]byte(raw), stored); err != nil {
		t.Fatal(err)
	}
	for _, ty := range []string{"Ready", "VIPServiceReady", "Conflict", "Degraded"} {
		if condition(stored, ty) == nil {
			t.Errorf("stored status lacks condition %s: %+v", ty, stored.Status.Conditions)
		}
	}
	if vs := stored.Status.VIPServiceStatus; vs == nil || len(vs.Addresses) != 2 || vs.LastRegistration == nil || stored.Status.ServiceInfo == nil {
		t.Fatalf("stored status lacks a writer's fields: %+v", stored.Status)
	}

	// Update: GET before PUT, addresses carried over.
	updateServices(t, env.simEnv, "web", func(o *v1alpha1.TailscaleServices) {
		o.Spec.VIPService.Comment = "changed"
		o.Spec.VIPService.Ports = []string{"tcp:80", "tcp:443"}
	})
	u := env.service(t, "svc:web", "updated", func(s tailnet.Service, ok bool) bool { return ok && s.Comment == "changed" })
	if !slices.Equal(u.Addrs, s.Addrs) || len(u.Ports) != 2 {
		t.Fatalf("updated service: %+v (addrs were %v)", u, s.Addrs)
	}
	env.object(t, "web", "Updated event", func(*v1alpha1.TailscaleServices) bool { return env.events.has("vip/web", vipservice.ReasonUpdated) })

	// Drift made by hand is repaired: a changed comment, then a deleted Service.
	hand := u
	hand.Comment = "edited in the admin console"
	if err := env.admin.CreateOrUpdateService(ctx(t), hand); err != nil {
		t.Fatal(err)
	}
	env.service(t, "svc:web", "comment repaired", func(s tailnet.Service, ok bool) bool { return ok && s.Comment == "changed" })
	if err := env.admin.DeleteService(ctx(t), "svc:web"); err != nil {
		t.Fatal(err)
	}
	env.service(t, "svc:web", "recreated", func(s tailnet.Service, ok bool) bool { return ok && s.Comment == "changed" })

	// Delete: the finalizer removes the Service first.
	if err := svcs.Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.gone(t, "web")
	env.service(t, "svc:web", "deleted", func(_ tailnet.Service, ok bool) bool { return !ok })
	if !env.events.has("vip/web", vipservice.ReasonDeleted) {
		t.Fatalf("no Deleted event: %v", env.events.events)
	}
}

// waitPolls waits until the simulator has answered n more device lists (the tailnet poller's).
func waitPolls(t *testing.T, sim *tailnetsim.Tailnet, n int64) {
	t.Helper()
	count := func() int64 { return sim.APIRequestCounts()["GET /api/v2/tailnet/{tailnet}/devices"] }
	start := count()
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return count()-start >= n, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d polls: %v", n, err)
	}
}

func TestVIPServiceForeignAndShared(t *testing.T) {
	a := startVIPEnv(t, nil, "op-a")
	b := startVIPEnv(t, a.sim, "op-b")

	// A Service made by hand (no owner references) is left alone: Conflict.
	foreign := tailnet.Service{Name: "svc:foreign", Ports: []string{"tcp:22"}, Comment: "by hand"}
	if err := a.admin.CreateOrUpdateService(ctx(t), foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx(t), vipServices("foreign", "svc:foreign"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	o := a.object(t, "foreign", "Conflict", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Conflict")
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == "NotManaged"
	})
	if c := condition(o, "VIPServiceReady"); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Conflict" {
		t.Fatalf("VIPServiceReady under conflict: %+v", c)
	}
	if !a.events.has("vip/foreign", vipservice.ReasonConflict) {
		t.Fatalf("no Conflict event: %v", a.events.events)
	}
	if s := a.service(t, "svc:foreign", "untouched", func(_ tailnet.Service, ok bool) bool { return ok }); s.Comment != "by hand" || len(owners(t, s)) != 0 {
		t.Fatalf("foreign service changed: %+v", s)
	}
	// Deleting the object leaves the foreign Service.
	if err := a.client.GatewayV1alpha1().TailscaleServices("vip").Delete(ctx(t), "foreign", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.gone(t, "foreign")
	if _, err := a.admin.Service(ctx(t), "svc:foreign"); err != nil {
		t.Fatalf("foreign service deleted: %v", err)
	}

	// Installation A owns svc:shared; B conflicts until it asks to attach, then is a consumer.
	if _, err := a.client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx(t), vipServices("shared", "svc:shared"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.service(t, "svc:shared", "created by A", func(s tailnet.Service, ok bool) bool { return ok })
	consumer := vipServices("shared", "svc:shared")
	consumer.Spec.VIPService.Comment = "B would say otherwise"
	if _, err := b.client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx(t), consumer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.object(t, "shared", "Conflict with A", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Conflict")
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == "OwnedByAnotherOperator" && strings.Contains(c.Message, "op-a")
	})
	updateServices(t, b.simEnv, "shared", func(o *v1alpha1.TailscaleServices) {
		o.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{DiscoverVIPServices: true,
			VIPServiceSelector: &v1alpha1.VIPServiceSelector{ServiceNames: []string{"svc:shared"}}}
	})
	s := a.service(t, "svc:shared", "B attached", func(s tailnet.Service, ok bool) bool {
		return ok && slices.Equal(operatorIDs(owners(t, s)), []string{"op-a", "op-b"})
	})
	if s.Comment != "from shared" {
		t.Fatalf("a consumer changed the owner's Service: %+v", s)
	}
	if s.Annotations[vipservice.HeartbeatAnnotation] == "" {
		t.Fatalf("shared service without heartbeats: %+v", s.Annotations)
	}
	b.object(t, "shared", "consumer status", func(o *v1alpha1.TailscaleServices) bool {
		si := o.Status.ServiceInfo
		return si != nil && si.MultiOperatorService && si.OwnerOperator == "op-a" && slices.Equal(si.ConsumerOperators, []string{"op-b"}) &&
			!meta.IsStatusConditionTrue(o.Status.Conditions, "Conflict")
	})
	a.object(t, "shared", "owner status", func(o *v1alpha1.TailscaleServices) bool {
		si := o.Status.ServiceInfo
		return si != nil && si.MultiOperatorService && si.OwnerOperator == "op-a" && slices.Equal(si.ConsumerOperators, []string{"op-b"})
	})

	// The owner leaves: the Service stays, B becomes its owner and its spec applies.
	if err := a.client.GatewayV1alpha1().TailscaleServices("vip").Delete(ctx(t), "shared", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.gone(t, "shared")
	a.service(t, "svc:shared", "owned by B", func(s tailnet.Service, ok bool) bool {
		return ok && slices.Equal(operatorIDs(owners(t, s)), []string{"op-b"}) && s.Comment == "B would say otherwise"
	})
	if !a.events.has("vip/shared", vipservice.ReasonReleased) {
		t.Fatalf("no Released event: %v", a.events.events)
	}
	b.object(t, "shared", "B owns", func(o *v1alpha1.TailscaleServices) bool {
		si := o.Status.ServiceInfo
		return si != nil && !si.MultiOperatorService && si.OwnerOperator == "op-b" && len(si.ConsumerOperators) == 0
	})
	// The last owner leaves: the Service goes.
	if err := b.client.GatewayV1alpha1().TailscaleServices("vip").Delete(ctx(t), "shared", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b.gone(t, "shared")
	a.service(t, "svc:shared", "deleted by the last owner", func(_ tailnet.Service, ok bool) bool { return !ok })
}

func TestVIPServiceAPIErrors(t *testing.T) {
	env := startVIPEnv(t, nil, "op-a")
	prefix := "/api/v2/tailnet/" + env.sim.TailnetName() + "/vip-services/svc:flaky"

	// A few 429s and 500s are absorbed by the client's retries.
	env.sim.InjectErrors(tailnetsim.ErrorInjection{Status: 429, RetryAfter: time.Second, Count: 1, PathPrefix: prefix})
	env.sim.InjectErrors(tailnetsim.ErrorInjection{Status: 500, Count: 1, PathPrefix: prefix})
	if _, err := env.client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx(t), vipServices("flaky", "svc:flaky"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.service(t, "svc:flaky", "created through 429 and 500", func(_ tailnet.Service, ok bool) bool { return ok })

	// A lasting outage: Degraded with the API's reason, retries backing off, then recovery.
	env.sim.InjectErrors(tailnetsim.ErrorInjection{Status: 500, Duration: time.Hour, PathPrefix: prefix})
	get0, put0, _ := calls(env.sim)
	outage := time.Now()
	updateServices(t, env.simEnv, "flaky", func(o *v1alpha1.TailscaleServices) { o.Spec.VIPService.Comment = "during the outage" })
	env.object(t, "flaky", "Degraded", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Degraded")
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == tailnet.ReasonAPIUnavailable
	})
	if !env.events.has("vip/flaky", vipservice.ReasonReconcileFailed) {
		t.Fatalf("no ReconcileFailed event: %v", env.events.events)
	}
	get1, put1, _ := calls(env.sim)
	t.Logf("outage of %s until Degraded: %d GET and %d PUT of the Service (client retries included)",
		time.Since(outage).Round(100*time.Millisecond), get1-get0, put1-put0)
	env.sim.ClearErrorInjections()
	env.service(t, "svc:flaky", "updated after the outage", func(s tailnet.Service, ok bool) bool { return ok && s.Comment == "during the outage" })
	env.object(t, "flaky", "Degraded=False", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Degraded")
		return c != nil && c.Status == metav1.ConditionFalse
	})

	// Lasting 429s with Retry-After: Degraded with reason RateLimited, then recovery.
	env.sim.InjectErrors(tailnetsim.ErrorInjection{Status: 429, RetryAfter: time.Second, Duration: time.Hour, PathPrefix: prefix})
	updateServices(t, env.simEnv, "flaky", func(o *v1alpha1.TailscaleServices) { o.Spec.VIPService.Comment = "while rate limited" })
	env.object(t, "flaky", "Degraded=RateLimited", func(o *v1alpha1.TailscaleServices) bool {
		c := condition(o, "Degraded")
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == tailnet.ReasonRateLimited
	})
	env.sim.ClearErrorInjections()
	env.service(t, "svc:flaky", "updated after the rate limit", func(s tailnet.Service, ok bool) bool { return ok && s.Comment == "while rate limited" })
}

// TestTagDiscovery checks that devices matching spec.tagSelectors appear in status.endpoints
// (name, address ip:port, status) and follow tags changed in the tailnet.
func TestTagDiscovery(t *testing.T) {
	env := startSimEnv(t)
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("sim")
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sim", Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim",
			TagSelectors: []v1alpha1.TagSelector{{Key: "web", Operator: v1alpha1.TagSelectorOpExists}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoveryConfig{AutoRegister: ptrFalse(),
				VIPServices: []v1alpha1.VIPServiceConfig{{Name: "web", Port: int32(api.HTTPPort), TargetEndpoint: "api-server"}}}},
	}
	if _, err := eps.Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pg, err := env.sim.Device("postgres")
	if err != nil {
		t.Fatal(err)
	}
	names := func(o *v1alpha1.TailscaleEndpoints) []string {
		var out []string
		for _, e := range o.Status.Endpoints {
			out = append(out, e.Name)
		}
		return out
	}
	got := env.waitFor(t, "api-server discovered", func(o *v1alpha1.TailscaleEndpoints) bool {
		return slices.Equal(names(o), []string{"api-server"})
	})
	if e := got.Status.Endpoints[0]; e.Address != net.JoinHostPort(api.IPv4.String(), strconv.Itoa(api.HTTPPort)) || e.Status != "Healthy" {
		t.Fatalf("discovered endpoint: %+v", e)
	}
	// It is probed (TCP, through the prober's tsnet node).
	got = env.waitFor(t, "a probe of api-server", func(o *v1alpha1.TailscaleEndpoints) bool {
		return len(o.Status.Endpoints) == 1 && o.Status.Endpoints[0].LastChecked != nil && o.Status.Endpoints[0].Status == "Healthy"
	})
	// postgres gains the tag, api-server loses it.
	env.sim.SetDeviceTags("postgres", "tag:db", "tag:web")
	got = env.waitFor(t, "postgres discovered", func(o *v1alpha1.TailscaleEndpoints) bool {
		return slices.Equal(names(o), []string{"api-server", "postgres"})
	})
	if e := got.Status.Endpoints[1]; e.Address != pg.IPv4.String()+":80" {
		t.Fatalf("postgres endpoint: %+v", e)
	}
	env.sim.SetDeviceTags("api-server", "tag:other")
	env.waitFor(t, "api-server no longer discovered", func(o *v1alpha1.TailscaleEndpoints) bool {
		return slices.Equal(names(o), []string{"postgres"}) && o.Status.TotalEndpoints == 1
	})
	// The persisted status (what informers and watchers see) follows too.
	w, err := eps.Watch(ctx(t), metav1.ListOptions{FieldSelector: "metadata.name=backends"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	env.sim.SetDeviceTags("api-server", "tag:web")
	waitForEvent(t, w, func(o *v1alpha1.TailscaleEndpoints) bool {
		return slices.Equal(names(o), []string{"api-server", "postgres"})
	})
}

func ptrFalse() *bool { f := false; return &f }

// TestEndpointsVIPServices checks spec.serviceDiscovery.vipServices with autoRegister: a
// Service per entry, released when the entry or the object goes.
func TestEndpointsVIPServices(t *testing.T) {
	env := startVIPEnv(t, nil, "op-a")
	api, err := env.sim.Device("api-server")
	if err != nil {
		t.Fatal(err)
	}
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("vip")
	obj := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "backends"},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Tags: []string{"tag:web"},
			Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "web", TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN,
				Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}},
			ServiceDiscovery: &v1alpha1.ServiceDiscoveryConfig{VIPServices: []v1alpha1.VIPServiceConfig{
				{Name: "eps-web", Port: 8080, TargetEndpoint: "web"}}}},
	}
	created, err := eps.Create(ctx(t), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := env.service(t, "svc:eps-web", "registered", func(_ tailnet.Service, ok bool) bool { return ok })
	refs := owners(t, s)
	if !slices.Equal(s.Ports, []string{"tcp:8080"}) || len(refs) != 1 || refs[0].Resource.Kind != "TailscaleEndpoints" ||
		refs[0].Resource.UID != string(created.UID) {
		t.Fatalf("registered service: %+v", s)
	}
	var got *v1alpha1.TailscaleEndpoints
	// Until a host serves it, the Service exists but is Pending.
	err = wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := eps.Get(c, "backends", metav1.GetOptions{})
		got = o
		return err == nil && len(o.Status.VIPServices) == 1 && o.Status.VIPServices[0].Status == "Pending", err
	})
	if err != nil {
		t.Fatalf("status.vipServices before a host serves it: %v %+v", err, got.Status)
	}
	env.sim.SetServiceHost(s.Name, "api-server", true) // advertised, auto-approved by tag:web
	err = wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := eps.Get(c, "backends", metav1.GetOptions{})
		got = o
		return err == nil && len(o.Status.VIPServices) == 1 && o.Status.VIPServices[0].Status == "Registered" &&
			o.Status.VIPServices[0].VIPAddress == s.Addrs[0], err
	})
	if err != nil {
		t.Fatalf("status.vipServices: %v %+v", err, got.Status)
	}
	if !slices.Contains(got.Finalizers, vipservice.Finalizer) || got.Annotations[vipservice.RegisteredAnnotation] == "" {
		t.Fatalf("finalizer/annotation: %v %v", got.Finalizers, got.Annotations)
	}

	// Dropping the entry releases (here: deletes) the Service.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := eps.Get(ctx(t), "backends", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Spec.ServiceDiscovery.VIPServices = []v1alpha1.VIPServiceConfig{{Name: "eps-other", Port: 9090, TargetEndpoint: "web"}}
		_, err = eps.Update(ctx(t), cur, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	env.service(t, "svc:eps-web", "released", func(_ tailnet.Service, ok bool) bool { return !ok })
	env.service(t, "svc:eps-other", "registered", func(_ tailnet.Service, ok bool) bool { return ok })

	// Deleting the object releases the rest.
	if err := eps.Delete(ctx(t), "backends", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.service(t, "svc:eps-other", "released on delete", func(_ tailnet.Service, ok bool) bool { return !ok })
	err = wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		_, err := eps.Get(c, "backends", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("TailscaleEndpoints not deleted: %v", err)
	}
}

// TestAutoProvisioning checks endpointTemplate: "<service>-auto" is created while the selector
// matches nothing else, deleted when other endpoints match or the TailscaleServices goes
// (standalone has no garbage collector: the controller deletes it).
func TestAutoProvisioning(t *testing.T) {
	env := startVIPEnv(t, nil, "op-a")
	svcs := env.client.GatewayV1alpha1().TailscaleServices("vip")
	eps := env.client.GatewayV1alpha1().TailscaleEndpoints("vip")
	obj := &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "web"},
		Spec: v1alpha1.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			EndpointTemplate: &v1alpha1.EndpointTemplate{Tailnet: "sim", Tags: []string{"tag:web"},
				Proxy: &v1alpha1.ProxyConfig{Replicas: ptrInt32(2)}, Ports: []v1alpha1.ProxyPort{{Port: 80, Protocol: "TCP"}},
				Labels: map[string]string{"app": "web", "auto-provisioned": "true"}},
		},
	}
	created, err := svcs.Create(ctx(t), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	auto := waitEndpoints(t, env, "web-auto", func(e *v1alpha1.TailscaleEndpoints, ok bool) bool { return ok })
	if auto.Annotations["gateway.tailscale.com/auto-provisioned"] != "true" || len(auto.OwnerReferences) != 1 ||
		auto.OwnerReferences[0].UID != created.UID || auto.Labels["app"] != "web" || auto.Spec.Tailnet != "sim" ||
		len(auto.Spec.Ports) != 1 || auto.Spec.Ports[0].Port != 80 || *auto.Spec.Proxy.Replicas != 2 {
		t.Fatalf("auto-provisioned endpoints: %+v", auto)
	}
	// Kept as it is: no update loop against the server's defaults.
	waitPolls(t, env.sim, 5)
	if again, err := eps.Get(ctx(t), "web-auto", metav1.GetOptions{}); err != nil || again.Generation != auto.Generation {
		t.Fatalf("auto-provisioned endpoints rewritten: generation %d -> %d (%v)", auto.Generation, again.Generation, err)
	}
	// Another TailscaleEndpoints matching the selector makes it unnecessary.
	api, _ := env.sim.Device("api-server")
	manual := &v1alpha1.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vip", Name: "manual", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "web",
			TailscaleIP: api.IPv4.String(), TailscaleFQDN: api.FQDN, Port: int32(api.HTTPPort), Protocol: v1alpha1.ProtocolHTTP}}},
	}
	if _, err := eps.Create(ctx(t), manual, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, env, "web-auto", func(_ *v1alpha1.TailscaleEndpoints, ok bool) bool { return !ok })
	if err := eps.Delete(ctx(t), "manual", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, env, "web-auto", func(_ *v1alpha1.TailscaleEndpoints, ok bool) bool { return ok })
	// The owner goes: so does its endpoints.
	if err := svcs.Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, env, "web-auto", func(_ *v1alpha1.TailscaleEndpoints, ok bool) bool { return !ok })
	if !env.events.has("vip/web", "EndpointsProvisioned") || !env.events.has("vip/web", "EndpointsDeprovisioned") {
		t.Fatalf("events: %v", env.events.events)
	}
}

func ptrInt32(v int32) *int32 { return &v }

func waitEndpoints(t *testing.T, env *vipEnv, name string, cond func(*v1alpha1.TailscaleEndpoints, bool) bool) *v1alpha1.TailscaleEndpoints {
	t.Helper()
	var got *v1alpha1.TailscaleEndpoints
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, time.Minute, true, func(c context.Context) (bool, error) {
		o, err := env.client.GatewayV1alpha1().TailscaleEndpoints("vip").Get(c, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		got = o
		return cond(o, err == nil), nil
	})
	if err != nil {
		t.Fatalf("waiting for TailscaleEndpoints %s: %v (last %+v)", name, err, got)
	}
	return got
}

// TestGeneratedOperatorIDIsKept checks that without --operator-id the controllers use an ID
// generated once and kept in etcd, the same after a restart.
func TestGeneratedOperatorIDIsKept(t *testing.T) {
	env := startVIPEnv(t, nil, "")
	create := func(c *vipEnv, name string) string {
		t.Helper()
		if _, err := c.client.GatewayV1alpha1().TailscaleServices("vip").Create(ctx(t), vipServices(name, "svc:"+name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		s := c.service(t, "svc:"+name, "created", func(_ tailnet.Service, ok bool) bool { return ok })
		refs := owners(t, s)
		if len(refs) != 1 {
			t.Fatalf("owners of %s: %+v", name, refs)
		}
		return refs[0].OperatorID
	}
	first := create(env, "one")
	stored, _ := storedJSON(t, env.server, "/registry/gateway.tailscale.com/tailscale-gateway/operator-id")
	if !strings.HasPrefix(first, "tsgw-") || stored != first {
		t.Fatalf("operator ID %q, stored %q", first, stored)
	}
	env.server.Stop()
	restarted := framework.Start(t, env.server.DataDir, func(o *server.Options) {
		o.Live.CredentialsDir = framework.CredentialsDir(t, env.sim.OAuthClientID(), env.sim.OAuthClientSecret())
		o.Live.PollInterval = 200 * time.Millisecond
		o.Live.APIRequestsPerSecond = -1
		o.Live.ControlURL = env.sim.ControlURL()
	})
	again := &vipEnv{simEnv: &simEnv{sim: env.sim, server: restarted, client: restarted.Clientset(t)}, events: env.events, admin: env.admin}
	if second := create(again, "two"); second != first {
		t.Fatalf("operator ID after a restart %q, before %q", second, first)
	}
}

// updateServices changes a TailscaleServices of namespace vip, retrying on conflicts with the
// controllers' and the status writer's writes.
func updateServices(t *testing.T, env *simEnv, name string, mutate func(*v1alpha1.TailscaleServices)) {
	t.Helper()
	svcs := env.client.GatewayV1alpha1().TailscaleServices("vip")
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		o, err := svcs.Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(o)
		_, err = svcs.Update(ctx(t), o, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
