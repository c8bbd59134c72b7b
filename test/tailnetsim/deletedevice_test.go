package tailnetsim

import (
	"context"
	"slices"
	"testing"
	"time"

	tailscale "tailscale.com/client/tailscale/v2"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// A device deleted through the API (tailnet.Client.DeleteDevice, DELETE /api/v2/device/{id})
// leaves the device list and the netmap of its peers, and stays out (it joined with a
// single-use key: registering again needs a new one); deleting it again succeeds (404).
func TestDeletedDeviceLeavesTheTailnet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tsnet nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	tn, err := Start(ctx, Options{Logf: quietLogf(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	var once tailscale.CreateKeyRequest
	once.Capabilities.Devices.Create.Preauthorized = true
	single, err := oauthClient(t, tn).Keys().CreateAuthKey(ctx, once)
	if err != nil {
		t.Fatal(err)
	}
	join := func(hostname, key string) *tsnet.Server {
		t.Helper()
		s, err := tn.NewNode(ctx, hostname, key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	// A bystander keeps the watcher's peer list non-empty after the deletion (removeNode).
	watcher, _, doomed := join("watcher", tn.AuthKey()), join("bystander", tn.AuthKey()), join("doomed", single.Key)
	st, err := doomed.Up(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := st.Self.ID
	lc, err := watcher.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	peered := func(c context.Context) (bool, error) {
		s, err := lc.Status(c)
		if err != nil {
			return false, err
		}
		for _, p := range s.Peer {
			if p.ID == id {
				return true, nil
			}
		}
		return false, nil
	}
	waitUntil(t, ctx, "the watcher to see the doomed node", func() bool { ok, _ := peered(ctx); return ok })

	api, err := tailnet.NewClient(tailnet.ClientOptions{Tailnet: tn.TailnetName(), BaseURL: tn.APIURL(),
		Credentials: tailnet.Credentials{APIKey: tn.APIKey()}, Transport: tailnet.TransportOptions{RequestsPerSecond: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.DeleteDevice(ctx, string(id)); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Device(ctx, string(id)); !tailnet.IsNotFound(err) {
		t.Fatalf("the deleted device: %v, want not found", err)
	}
	devs, err := api.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.NodeID == string(id) || d.Hostname == "doomed" {
			t.Fatalf("the deleted device is listed: %+v", d)
		}
	}
	waitUntil(t, ctx, "the deleted node gone from the watcher's netmap", func() bool { ok, err := peered(ctx); return err == nil && !ok })
	if err := api.DeleteDevice(ctx, string(id)); err != nil {
		t.Fatalf("deleting a deleted device: %v, want success", err)
	}
	// Still out a while later: the running node could not register again.
	if devs, err := api.Devices(ctx); err != nil || slices.ContainsFunc(devs, func(d tailnet.Device) bool { return d.Hostname == "doomed" }) {
		t.Fatalf("the deleted node is back: %v %v", devs, err)
	}
}

// waitUntil polls cond every 100ms until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}
