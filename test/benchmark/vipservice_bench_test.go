package benchmark

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// vipBenchObjects is how many TailscaleServices BenchmarkVIPServiceReconcile creates.
const vipBenchObjects = 1000

// BenchmarkVIPServiceReconcile creates 1,000 TailscaleServices, each asking for a Tailscale
// Service, against a simulated tailnet, and measures the time until all 1,000 Services exist,
// the API calls made on the Services per object (GET and PUT of .../vip-services/{name}), and
// those made per object and resync once everything is in place (resync every second, polls
// every second, no drift). Run it with -benchtime 1x.
func BenchmarkVIPServiceReconcile(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	creds := framework.CredentialsDir(b, sim.OAuthClientID(), sim.OAuthClientSecret())
	const resync = time.Second
	s := framework.Start(b, "", func(o *server.Options) {
		o.Live.CredentialsDir = creds
		o.Live.PollInterval = time.Second
		o.Live.APIRequestsPerSecond = -1
		o.Live.JoinTailnets = false
		o.Controllers.OperatorID = "bench"
		o.Controllers.Resync = resync
	})
	client := s.Clientset(b)
	gw := client.GatewayV1alpha1()
	if _, err := gw.TailscaleTailnets().Create(ctx, &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "sim"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: sim.TailnetName(), OAuthSecretName: "ts-oauth", APIBaseURL: sim.APIURL()}},
		metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	admin, err := tailnet.NewClient(tailnet.ClientOptions{Tailnet: sim.TailnetName(), BaseURL: sim.APIURL(),
		Credentials: tailnet.Credentials{APIKey: sim.APIKey()}, Transport: tailnet.TransportOptions{RequestsPerSecond: -1}})
	if err != nil {
		b.Fatal(err)
	}
	counts := func() (get, put int64) {
		c := sim.APIRequestCounts()
		return c["GET /api/v2/tailnet/{tailnet}/vip-services/{name}"], c["PUT /api/v2/tailnet/{tailnet}/vip-services/{name}"]
	}

	for i := range b.N {
		ns := "vip-bench-" + strconv.Itoa(i)
		// The TailscaleServices take their tailnet from the TailscaleEndpoints they select.
		if _, err := gw.TailscaleEndpoints(ns).Create(ctx, &v1alpha1.TailscaleEndpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backends", Labels: map[string]string{"app": "bench"}},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: "sim", Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "a",
				TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.example.ts.net", Port: 80, Protocol: v1alpha1.ProtocolHTTP}}},
		}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		get0, put0 := counts()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, vipBenchObjects)
		work := make(chan int)
		for range 16 {
			wg.Go(func() {
				for j := range work {
					_, err := gw.TailscaleServices(ns).Create(ctx, &v1alpha1.TailscaleServices{
						ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%04d", j)},
						Spec: v1alpha1.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "bench"}},
							VIPService: &v1alpha1.VIPServiceSpec{Name: fmt.Sprintf("svc:b%d-%04d", i, j), Ports: []string{"tcp:80"}}},
					}, metav1.CreateOptions{})
					if err != nil {
						errs <- err
					}
				}
			})
		}
		for j := range vipBenchObjects {
			work <- j
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		created := time.Since(start)
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 15*time.Minute, true, func(c context.Context) (bool, error) {
			list, err := admin.Services(c)
			return err == nil && len(list) >= (i+1)*vipBenchObjects, nil
		})
		if err != nil {
			b.Fatalf("waiting for the Services: %v", err)
		}
		allExist := time.Since(start)
		get1, put1 := counts()

		// Settled: every object's status names its Service; then polls and resyncs cost nothing.
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 15*time.Minute, true, func(c context.Context) (bool, error) {
			list, err := gw.TailscaleServices(ns).List(c, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, o := range list.Items {
				if o.Status.ServiceInfo == nil || o.Status.VIPServiceStatus == nil || len(o.Status.VIPServiceStatus.Addresses) == 0 {
					return false, nil
				}
			}
			return len(list.Items) == vipBenchObjects, nil
		})
		if err != nil {
			b.Fatalf("waiting for status: %v", err)
		}
		get2, put2 := counts()
		polls := func() int64 { return sim.APIRequestCounts()["GET /api/v2/tailnet/{tailnet}/devices"] }
		p0, t0 := polls(), time.Now()
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
			return polls()-p0 >= 10, nil
		}); err != nil {
			b.Fatal(err)
		}
		resyncs := float64(time.Since(t0) / resync)
		get3, put3 := counts()

		b.ReportMetric(created.Seconds(), "s-created")
		b.ReportMetric(allExist.Seconds(), "s-all-exist")
		b.ReportMetric(float64(get1-get0+put1-put0)/vipBenchObjects, "calls/object-create")
		b.ReportMetric(float64(put1-put0)/vipBenchObjects, "puts/object-create")
		b.ReportMetric(float64(get2-get1+put2-put1)/vipBenchObjects, "calls/object-settling")
		b.ReportMetric(float64(get3-get2+put3-put2)/vipBenchObjects/resyncs, "calls/object/resync")
		b.Logf("%d objects: created in %s, all Services exist after %s; create: %d GET %d PUT; settling: %d GET %d PUT; steady (%.0f resyncs): %d GET %d PUT",
			vipBenchObjects, created.Round(time.Millisecond), allExist.Round(time.Millisecond), get1-get0, put1-put0, get2-get1, put2-put1,
			resyncs, get3-get2, put3-put2)
	}
}
