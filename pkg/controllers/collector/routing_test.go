package collector

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned/fake"
	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

type noNotify struct{}

func (noNotify) EndpointsChanged(string, string) {}
func (noNotify) TailnetChanged()                 {}

// Finding 8 of the security review: namespace B declaring namespace A's address on another
// tailnet cannot route A's probes through B's tailnet node and turn A's endpoint Unhealthy.
// Each target is dialled through the node of the tailnet its own object names.
func TestSecurityProbesRoutedByTailnetAndAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fake.NewSimpleClientset()
	for _, tn := range []*v1alpha1.TailscaleTailnet{
		{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}, Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "a.ts.net"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}, Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: "b.ts.net"}},
	} {
		if _, err := client.GatewayV1alpha1().TailscaleTailnets().Create(ctx, tn, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	enabled := true
	interval := &metav1.Duration{Duration: 50 * time.Millisecond}
	one := int32(1)
	endpoints := func(ns, tn string) *v1alpha1.TailscaleEndpoints {
		return &v1alpha1.TailscaleEndpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
			Spec: v1alpha1.TailscaleEndpointsSpec{Tailnet: tn, Endpoints: []v1alpha1.TailscaleEndpoint{{Name: "pg",
				TailscaleIP: "100.64.0.10", TailscaleFQDN: "pg." + tn, Port: 5432, Protocol: v1alpha1.ProtocolTCP,
				HealthCheck: &v1alpha1.HealthCheckConfig{Enabled: &enabled, Type: v1alpha1.ProtocolTCP, Interval: interval,
					Timeout: &metav1.Duration{Duration: 40 * time.Millisecond}, HealthyThreshold: &one, UnhealthyThreshold: &one}}}}}
	}
	for _, e := range []*v1alpha1.TailscaleEndpoints{endpoints("a", "a.ts.net"), endpoints("b", "b.ts.net")} {
		if _, err := client.GatewayV1alpha1().TailscaleEndpoints(e.Namespace).Create(ctx, e, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Tailnet team-a has the device; in team-b nothing answers at that address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	c := New(Options{Tailnets: tailnet.NewCache(tailnet.Options{Interval: time.Hour})})
	c.dialNode = func(ctx context.Context, name, network, _ string) (net.Conn, error) {
		if name != "team-a" {
			return nil, errors.New("no such device in tailnet " + name)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, l.Addr().String())
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	if err := c.Configure(factory, noNotify{}, nil); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	go c.Run(ctx)

	status := func(key string) string {
		p, _ := c.Probe(key)
		return p.Status
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return status("a/db/pg") != "" && status("b/db/pg") == "Unhealthy", nil
	}); err != nil {
		t.Fatalf("probes did not run: a %q b %q", status("a/db/pg"), status("b/db/pg"))
	}
	// Several rounds: A stays Healthy however the targets are ordered.
	for range 10 {
		before, _ := c.prober.Result("a/db/pg")
		if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			r, _ := c.prober.Result("a/db/pg")
			return r.LastChecked.After(before.LastChecked), nil
		}); err != nil {
			t.Fatal(err)
		}
		if s := status("a/db/pg"); s != "Healthy" {
			t.Fatalf("namespace a's endpoint is %q: its probe went through another tailnet's node", s)
		}
		c.markTargetsDirty() // the targets are rebuilt, in the lister's order of the moment
	}
}
