package integration

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/objects"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/embeddedetcd"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/localpki"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

// TestReplicasShareExternalEtcd runs two servers on one etcd cluster (--etcd-servers): what one
// writes, the other serves and streams to its watchers.
func TestReplicasShareExternalEtcd(t *testing.T) {
	etcd, err := embeddedetcd.Start(filepath.Join(t.TempDir(), "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	// Both replicas trust one CA, as replicas behind one Service would.
	pkiDir := t.TempDir()
	if _, err := localpki.Ensure(filepath.Join(pkiDir, "pki")); err != nil {
		t.Fatal(err)
	}
	external := func(o *server.Options) {
		etcd.Transport(&o.RecommendedOptions.Etcd.StorageConfig.Transport)
	}
	a := framework.Start(t, pkiDir, external)
	b := framework.Start(t, pkiDir, external)

	w, err := b.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("replicas").Watch(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := a.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("replicas").Create(ctx(t), objects.Endpoints("replicas", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if ev.Type != "ADDED" {
			t.Fatalf("replica b saw %s, want ADDED", ev.Type)
		}
	case <-time.After(time.Minute):
		t.Fatal("replica b saw no event for a write through replica a")
	}
	if _, err := b.Clientset(t).GatewayV1alpha1().TailscaleEndpoints("replicas").Get(ctx(t), "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("replica b: %v", err)
	}
}
