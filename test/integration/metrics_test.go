package integration

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// scrape reads and parses the server's /metrics.
func scrape(t *testing.T, s *framework.Server) map[string]*dto.MetricFamily {
	t.Helper()
	client, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(s.Config.Host + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %s: %s", resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// value sums the samples of family whose labels include want (counter, gauge or histogram count).
func value(families map[string]*dto.MetricFamily, family string, want map[string]string) (float64, bool) {
	f, ok := families[family]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// TestMetricsAfterActivity runs the server with controllers and the extension on a simulated
// tailnet, lets it poll, probe, write status, create a VIP service, see an endpoint and the API
// fail and recover (each transition an Event), and serve an EDS stream and a hook call; it checks the tailscale_gateway_* families on its /metrics: present, with sane
// values, and with bounded labels (no address, no per-request value).
func TestMetricsAfterActivity(t *testing.T) {
	events := &eventLog{}
	env := startExtensionEnv(t, withControllers("op-metrics", events))
	gw := env.client.GatewayV1alpha1()
	if _, err := gw.TailscaleEndpoints("sim").Create(ctx(t), simEndpoints(t, env.sim), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitFor(t, "every endpoint healthy", func(o *v1alpha1.TailscaleEndpoints) bool { return o.Status.HealthyEndpoints == 3 })
	if _, err := gw.TailscaleServices("vip").Create(ctx(t), vipServices("web", "svc:web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.sim.SetServiceHost("svc:web", "api-server", true) // served: advertised, auto-approved by tag:web
	(&vipEnv{simEnv: env.simEnv}).object(t, "web", "VIP service ready", func(o *v1alpha1.TailscaleServices) bool {
		return meta.IsStatusConditionTrue(o.Status.Conditions, "VIPServiceReady")
	})
	// Transitions users care about reach them as Events: an endpoint failing and recovering,
	// the tailnet's API failing and recovering.
	if err := env.sim.SetHTTPStatus("api-server", http.StatusInternalServerError); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "sim/backends", "EndpointUnhealthy")
	if err := env.sim.SetHTTPStatus("api-server", http.StatusOK); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "sim/backends", "EndpointHealthy")
	env.sim.InjectErrors(tailnetsim.ErrorInjection{Status: http.StatusServiceUnavailable, Duration: 10 * time.Minute})
	waitEvent(t, events, "/sim", "TailnetSyncLost")
	env.sim.ClearErrorInjections()
	waitEvent(t, events, "/sim", "TailnetSyncRegained")

	const cluster = "httproute/sim/backends/rule/0"
	env.shape(t, cluster, env.backendJSON(t, "tailscaleendpoints", "sim", "backends"))
	env.subscribe(t, false, cluster).waitFor("a load assignment", func(*endpointv3.ClusterLoadAssignment) bool { return true })

	type check struct {
		family string
		labels map[string]string
		ok     func(float64) bool
	}
	positive := func(v float64) bool { return v > 0 }
	checks := []check{
		{"tailscale_gateway_tailscale_api_requests_total", map[string]string{"endpoint": "GET /api/v2/tailnet/{tailnet}/devices", "code": "200"}, positive},
		{"tailscale_gateway_tailscale_api_requests_total", map[string]string{"endpoint": "POST /api/v2/oauth/token", "code": "200"}, positive},
		{"tailscale_gateway_tailscale_api_requests_total", map[string]string{"endpoint": "PUT /api/v2/tailnet/{tailnet}/vip-services/{service}", "code": "200"}, positive},
		{"tailscale_gateway_tailscale_api_requests_total", map[string]string{"endpoint": "POST /api/v2/tailnet/{tailnet}/keys", "code": "200"}, positive},
		{"tailscale_gateway_tailscale_api_request_duration_seconds", map[string]string{"endpoint": "GET /api/v2/tailnet/{tailnet}/devices"}, positive},
		{"tailscale_gateway_tailnet_polls_total", map[string]string{"reason": "Synced"}, positive},
		{"tailscale_gateway_tailnet_sync_transitions_total", map[string]string{"synced": "true"}, positive},
		{"tailscale_gateway_tailnet_synced", map[string]string{"tailnet": "sim"}, func(v float64) bool { return v == 1 }},
		// Polled every 200 ms: a minute is generous on a loaded machine and still says "recent".
		{"tailscale_gateway_tailnet_poll_age_seconds", map[string]string{"tailnet": "sim"}, func(v float64) bool { return v >= 0 && v < 60 }},
		{"tailscale_gateway_health_probes_total", map[string]string{"protocol": "http", "result": "success"}, positive},
		{"tailscale_gateway_health_probes_total", map[string]string{"protocol": "grpc", "result": "success"}, positive},
		{"tailscale_gateway_health_probe_duration_seconds", map[string]string{"protocol": "http", "result": "success"}, positive},
		{"tailscale_gateway_health_transitions_total", map[string]string{"protocol": "http", "to": "Healthy"}, positive},
		{"tailscale_gateway_health_transitions_total", map[string]string{"protocol": "http", "to": "Unhealthy"}, positive},
		{"tailscale_gateway_health_probes_total", map[string]string{"protocol": "http", "result": "failure"}, positive},
		{"tailscale_gateway_tailscale_api_requests_total", map[string]string{"endpoint": "GET /api/v2/tailnet/{tailnet}/devices", "code": "503"}, positive},
		{"tailscale_gateway_tailnet_sync_transitions_total", map[string]string{"synced": "false"}, positive},
		{"tailscale_gateway_tailnet_polls_total", map[string]string{"reason": "APIUnavailable"}, positive},
		{"tailscale_gateway_status_writes_total", map[string]string{"kind": "TailscaleEndpoints", "result": "ok"}, positive},
		{"tailscale_gateway_controller_reconciles_total", map[string]string{"controller": "vipservice", "result": "ok"}, positive},
		{"tailscale_gateway_controller_reconciles_total", map[string]string{"controller": "statuswriter", "result": "ok"}, positive},
		{"tailscale_gateway_controller_reconcile_duration_seconds", map[string]string{"controller": "vipservice"}, positive},
		{"workqueue_adds_total", map[string]string{"name": "statuswriter"}, positive},
		{"workqueue_depth", map[string]string{"name": "vipservice"}, func(v float64) bool { return v >= 0 }},
		{"tailscale_gateway_extension_hook_duration_seconds", map[string]string{"hook": "PostClusterModify"}, positive},
		{"tailscale_gateway_extension_clusters_total", map[string]string{"result": "shaped"}, positive},
		{"tailscale_gateway_xds_streams", nil, positive},
		{"tailscale_gateway_xds_load_assignments", nil, positive},
		{"tailscale_gateway_xds_load_assignment_updates_total", nil, positive},
		{"apiserver_request_total", map[string]string{"group": "gateway.tailscale.com"}, positive},
	}
	var families map[string]*dto.MetricFamily
	var failed []string
	// Counters move as the server works; wait for a scrape where every check holds.
	err := wait.PollUntilContextTimeout(ctx(t), 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		families, failed = scrape(t, env.server), nil
		for _, c := range checks {
			v, found := value(families, c.family, c.labels)
			if !found || !c.ok(v) {
				failed = append(failed, c.family+" "+formatLabels(c.labels))
			}
		}
		return len(failed) == 0, nil
	})
	if err != nil {
		t.Fatalf("metrics not as expected: %s", strings.Join(failed, "; "))
	}

	// Bounded cardinality: no label of ours carries an address, a device, an object's
	// resourceVersion or a request path; and few series in all.
	address := regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}\b|fd7a:|:\d{2,5}\b`)
	series := 0
	for name, f := range families {
		if !strings.HasPrefix(name, "tailscale_gateway_") {
			continue
		}
		for _, m := range f.Metric {
			series++
			for _, l := range m.Label {
				if address.MatchString(l.GetValue()) || strings.Contains(l.GetValue(), "api-server") {
					t.Errorf("%s has a label %s=%q naming an address or device", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	if series == 0 || series > 1000 {
		t.Errorf("%d tailscale_gateway_* series", series)
	}
	t.Logf("%d tailscale_gateway_* series", series)
}

// waitEvent waits until events holds an Event of reason for object ("namespace/name").
func waitEvent(t *testing.T, events *eventLog, object, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx(t), 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return events.has(object, reason), nil
	})
	if err != nil {
		events.mu.Lock()
		defer events.mu.Unlock()
		t.Fatalf("no %s Event for %s: %v; Events: %v", reason, object, err, events.events)
	}
}

func formatLabels(l map[string]string) string {
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}
