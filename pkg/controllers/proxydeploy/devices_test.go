package proxydeploy

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// deviceAPI records device deletions and fails them with err.
type deviceAPI struct {
	tailnet.API
	deleted, revoked []string
	err              error
}

func (d *deviceAPI) DeleteDevice(_ context.Context, id string) error {
	if d.err != nil {
		return d.err
	}
	d.deleted = append(d.deleted, id)
	return nil
}

func (d *deviceAPI) DeleteAuthKey(_ context.Context, id string) error {
	d.revoked = append(d.revoked, id)
	return nil
}

type oneTailnet struct{ api tailnet.API }

func (o oneTailnet) Resolve(ref string) (string, bool) { return ref, true }
func (o oneTailnet) API(string) (tailnet.API, bool)    { return o.api, true }

// A state Secret is released only once its replica's device is deleted from the tailnet; a
// failure is an error (the Secret and the finalizer stay, the sync is retried with backoff) and
// a Warning Event. A Secret without a node ID (a replica that never joined, an auth key) and
// one of a parent that is gone delete no device.
func TestReleaseDeletesTheReplicasDevice(t *testing.T) {
	obj := testEndpoints(Egress, 2)
	api := &deviceAPI{}
	rec := record.NewFakeRecorder(10)
	c := &Controller{opts: Options{Tailnets: oneTailnet{api}, Recorder: rec}}
	state := StateSecret(installNS, obj, 1)
	state.Data = map[string][]byte{kubestate.NodeIDKey: []byte("nSTABLE1")}

	api.err = errors.New("tailnet API: HTTP 503")
	if err := c.release(context.Background(), obj, state, "scaled away"); err == nil || !strings.Contains(err.Error(), "nSTABLE1") {
		t.Fatalf("a failed device deletion: %v, want an error naming the device", err)
	}
	if ev := <-rec.Events; !strings.Contains(ev, ReasonDeviceDeleteFailed) || !strings.Contains(ev, "nSTABLE1") {
		t.Fatalf("event %q", ev)
	}
	api.err = nil
	if err := c.release(context.Background(), obj, state, "scaled away"); err != nil || len(api.deleted) != 1 || api.deleted[0] != "nSTABLE1" {
		t.Fatalf("release: %v, deleted %v", err, api.deleted)
	}
	for name, s := range map[string]*corev1.Secret{"never joined": StateSecret(installNS, obj, 0), "auth key": AuthKeySecret(installNS, obj, 0, tailnet.AuthKey{}, nil)} {
		if err := c.release(context.Background(), obj, s, "x"); err != nil || len(api.deleted) != 1 {
			t.Fatalf("%s: %v, deleted %v", name, err, api.deleted)
		}
	}
	if err := c.release(context.Background(), gone(obj.Namespace, obj.Name), state, "parent gone"); err != nil || len(api.deleted) != 1 {
		t.Fatalf("a gone parent: %v, deleted %v", err, api.deleted)
	}
}
