package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/node"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

// TestRestartKeepsTheNodeIdentityWithoutAKey runs on a tailnet of its own, whose control server,
// as Tailscale's, lets a node it knows re-register without a key and refuses an unknown node
// without one.
func TestRestartKeepsTheNodeIdentityWithoutAKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tailnetsim.Start(ctx, tailnetsim.Options{Devices: []tailnetsim.DeviceSpec{tailnetsim.AllProtocols("dev")}})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dev, err := sim.Device("dev")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "authkey")
	if err := os.WriteFile(keyFile, []byte(sim.AuthKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := node.Options{Dir: dir, Hostname: "restarted", ControlURL: sim.ControlURL(), AuthKeyFile: keyFile, Tags: []string{"tag:proxy"}}
	identity := func() (id, key string) {
		t.Helper()
		srv, err := node.Start(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		lc, err := srv.LocalClient()
		if err != nil {
			t.Fatal(err)
		}
		st, err := lc.StatusWithoutPeers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The node works: it reaches the device through the tailnet.
		hc := &http.Client{Transport: &http.Transport{DialContext: srv.Dial}, Timeout: 5 * time.Second}
		poll(t, "HTTP through the node", func() bool {
			resp, err := hc.Get("http://" + dev.IPv4.String() + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		return string(st.Self.ID), st.Self.PublicKey.String()
	}

	if node.Enrolled(dir) {
		t.Fatal("a new directory counts as enrolled")
	}
	id1, key1 := identity()
	if !node.Enrolled(dir) {
		t.Fatal("the state directory holds no node state after the first start")
	}
	// The key file is gone: node.Start refuses to start a node without state and without a
	// key, so the second start succeeding means it did not look for one.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	id2, key2 := identity()
	if id1 != id2 || key1 != key2 {
		t.Errorf("identity changed across restart: node %s key %s -> node %s key %s", id1, key1, id2, key2)
	}
	if n := devicesNamed(t, sim, "restarted"); n != 1 {
		t.Errorf("the tailnet lists %d devices named restarted, want 1", n)
	}
	// Without state and without a key, the node refuses to start rather than wait for an
	// interactive login.
	if _, err := node.Start(ctx, node.Options{Dir: t.TempDir(), Hostname: "keyless", ControlURL: sim.ControlURL(), AuthKeyFile: keyFile}); err == nil ||
		!strings.Contains(err.Error(), "auth key file") {
		t.Errorf("start without state or key: %v", err)
	}
}

// devicesNamed counts the devices of the tailnet's API named hostname.
func devicesNamed(t *testing.T, sim *tailnetsim.Tailnet, hostname string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, sim.APIURL()+"/api/v2/tailnet/-/devices", nil)
	req.Header.Set("Authorization", "Bearer "+sim.APIKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Devices []struct {
			Hostname string `json:"hostname"`
		} `json:"devices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range body.Devices {
		if d.Hostname == hostname {
			n++
		}
	}
	return n
}
