package tailnetsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	tailscale "tailscale.com/client/tailscale/v2"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/types/key"
)

// serviceHostNode starts a tsnet node the way another process would (its own state, the
// tailnet's control URL and auth key, tags) and hosts svc on port 80 with ListenService, each
// HTTP answer naming the node. It returns the node, its key and the Service listener.
func serviceHostNode(t *testing.T, ctx context.Context, tn *Tailnet, hostname, tag, svc string) (*tsnet.Server, key.NodePublic, *tsnet.ServiceListener) {
	t.Helper()
	s := &tsnet.Server{Dir: t.TempDir(), Hostname: hostname, ControlURL: tn.ControlURL(), AuthKey: tn.AuthKey(),
		AdvertiseTags: []string{tag}, Logf: quietLogf(t)}
	t.Cleanup(func() { s.Close() })
	st, err := s.Up(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, st.Self.PublicKey, serveService(t, s, hostname, svc)
}

// serveService hosts svc on port 80 of s with ListenService, each HTTP answer naming hostname.
func serveService(t *testing.T, s *tsnet.Server, hostname, svc string) *tsnet.ServiceListener {
	t.Helper()
	ln, err := s.ListenService(svc, tsnet.ServiceModeTCP{Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "served by %s\n", hostname)
	}), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln
}

// peerRoutes returns the primary routes the device hostname holds for the peer nk.
func peerRoutes(ctx context.Context, tn *Tailnet, hostname string, nk key.NodePublic) ([]netip.Prefix, error) {
	d, err := tn.device(hostname)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	run := d.run
	d.mu.Unlock()
	lc, err := run.srv.LocalClient()
	if err != nil {
		return nil, err
	}
	st, err := lc.Status(ctx)
	if err != nil {
		return nil, err
	}
	p, ok := st.Peer[nk]
	if !ok {
		return nil, fmt.Errorf("peer %s not in %s's netmap", nk.ShortString(), hostname)
	}
	if p.PrimaryRoutes == nil {
		return nil, nil
	}
	return p.PrimaryRoutes.AsSlice(), nil
}

func hasServiceHostCap(ctx context.Context, s *tsnet.Server) bool {
	lc, err := s.LocalClient()
	if err != nil {
		return false
	}
	st, err := lc.StatusWithoutPeers(ctx)
	return err == nil && st.Self.CapMap.Contains(tailcfg.NodeAttrServiceHost)
}

// TestServiceRouting checks that the simulator routes a Tailscale Service to a node that hosts it
// with ListenService, the way Tailscale's control plane does (ServicesHash, c2n GET
// /vip-services, approval by tag, capability + route + MagicDNS), without RouteService; that an
// unapproved host is not routed until approved through the API; that routes are withdrawn when
// the listener closes and when the host goes offline; and the admin fetch endpoint.
func TestServiceRouting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tsnet nodes")
	}
	ctx := testContext(t, 4*time.Minute)
	tn, err := Start(ctx, Options{Devices: []DeviceSpec{
		{Hostname: "laptop"},
		{Hostname: "backend", HTTPPort: DefaultHTTPPort},
	}, Logf: quietLogf(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	api := oauthClient(t, tn)
	if err := api.Services().CreateOrUpdate(ctx, tailscale.Service{Name: "svc:web", Ports: []string{"tcp:80"}, Tags: []string{"tag:web"}}); err != nil {
		t.Fatal(err)
	}
	svc, err := api.Services().Get(ctx, "svc:web")
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr(svc.Addrs[0])
	route := netip.PrefixFrom(vip, 32)
	webURL := "http://web." + tn.MagicDNSSuffix() + "/"

	admin := httptest.NewServer(tn.AdminHandler())
	t.Cleanup(admin.Close)
	fetch := func(device, u string) (int, FetchResult, string) {
		t.Helper()
		res, err := http.Get(admin.URL + "/devices/" + device + "/fetch?url=" + url.QueryEscape(u))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out FetchResult
		var raw json.RawMessage
		if err := json.NewDecoder(res.Body).Decode(&raw); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(raw, &out)
		return res.StatusCode, out, string(raw)
	}
	hosts := func() map[string]serviceHostJSON {
		t.Helper()
		res, body := rawRequest(t, tn, "GET", "/api/v2/tailnet/-/vip-services/svc:web/devices", "")
		var out struct {
			Devices []serviceHostJSON `json:"devices"`
		}
		if res.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("hosts: %d %s", res.StatusCode, body)
		}
		m := map[string]serviceHostJSON{}
		for _, h := range out.Devices {
			m[h.Hostname] = h
		}
		return m
	}
	// settled waits for the reconcile that recorded an advertisement to have applied routes.
	settled := func(nk key.NodePublic) string {
		tn.router.applyMu.Lock()
		defer tn.router.applyMu.Unlock()
		return tn.router.applied[nk]
	}

	t.Run("Fetch", func(t *testing.T) {
		code, res, raw := fetch("laptop", "http://backend."+tn.MagicDNSSuffix()+"/")
		if code != 200 || res.Status != 200 || res.Body != "hello from backend\n" || res.Device != "laptop" {
			t.Fatalf("fetch from laptop: %d %s", code, raw)
		}
		for _, c := range []struct{ device, url string }{
			{"nope", "http://backend/"},
			{"laptop", "ftp://backend/"},
			{"laptop", ""},
		} {
			if code, _, raw := fetch(c.device, c.url); code != 400 {
				t.Errorf("fetch %q from %q: %d %s, want 400", c.url, c.device, code, raw)
			}
		}
	})

	host, hostKey, hostLn := serviceHostNode(t, ctx, tn, "host", "tag:web", "svc:web")
	t.Run("Routed", func(t *testing.T) {
		waitFor(t, time.Minute, "laptop reaching svc:web on host through "+webURL, func() error {
			code, res, raw := fetch("laptop", webURL)
			if code != 200 || res.Body != "served by host\n" {
				return errors.New(raw)
			}
			return nil
		})
		if h := hosts()["host"]; !h.Configured || h.ApprovalLevel != approvalAuto {
			t.Fatalf("API host entry = %+v", h)
		}
		if !hasServiceHostCap(ctx, host) {
			t.Fatal("host has no service-host capability")
		}
	})

	other, otherKey, _ := serviceHostNode(t, ctx, tn, "other", "tag:other", "svc:web")
	t.Run("NotApproved", func(t *testing.T) {
		waitFor(t, time.Minute, "the API listing other as an advertising host", func() error {
			if h := hosts()["other"]; !h.Configured || h.ApprovalLevel != approvalNone {
				return fmt.Errorf("other = %+v", h)
			}
			return nil
		})
		if m := settled(otherKey); m != "" && m != "{}" {
			t.Fatalf("other (tag:other, service tags [tag:web]) got %s", m)
		}
		if hasServiceHostCap(ctx, other) {
			t.Fatal("unapproved other has the service-host capability")
		}
		if routes, err := peerRoutes(ctx, tn, "laptop", otherKey); err != nil || len(routes) != 0 {
			t.Fatalf("laptop routes via other: %v, %v", routes, err)
		}
	})

	t.Run("WithdrawnOnClose", func(t *testing.T) {
		if err := hostLn.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "laptop dropping the route to host", func() error {
			routes, err := peerRoutes(ctx, tn, "laptop", hostKey)
			if err != nil || slices.Contains(routes, route) {
				return fmt.Errorf("routes %v, %v", routes, err)
			}
			return nil
		})
		if hasServiceHostCap(ctx, host) {
			t.Fatal("host keeps the service-host capability")
		}
		if h, ok := hosts()["host"]; ok {
			t.Fatalf("API still lists host: %+v", h)
		}
		if _, res, raw := fetch("laptop", webURL); res.Body == "served by host\n" {
			t.Fatalf("svc:web still reaches host's listener: %s", raw)
		}
	})

	// A Service the API learns of after its host advertises it (as in make run, where the proxy
	// may listen before the controllers create the Service) is routed then, and withdrawn when
	// the API deletes it.
	t.Run("ServiceCreatedAndDeletedLater", func(t *testing.T) {
		serveService(t, host, "host", "svc:late")
		waitFor(t, time.Minute, "the router learning that host advertises svc:late", func() error {
			tn.router.mu.Lock()
			defer tn.router.mu.Unlock()
			if a := tn.router.hosts[hostKey]; a == nil || !slices.Contains(a.services, "svc:late") || a.fetching {
				return errors.New("not yet")
			}
			return nil
		})
		if m := settled(hostKey); m != "{}" {
			t.Fatalf("host routed a Service the API does not know: %s", m)
		}
		if err := api.Services().CreateOrUpdate(ctx, tailscale.Service{Name: "svc:late", Ports: []string{"tcp:80"}, Tags: []string{"tag:web"}}); err != nil {
			t.Fatal(err)
		}
		late, err := api.Services().Get(ctx, "svc:late")
		if err != nil {
			t.Fatal(err)
		}
		lateRoute := netip.PrefixFrom(netip.MustParseAddr(late.Addrs[0]), 32)
		waitFor(t, time.Minute, "laptop reaching svc:late on host", func() error {
			code, res, raw := fetch("laptop", "http://late."+tn.MagicDNSSuffix()+"/")
			if code != 200 || res.Body != "served by host\n" {
				return errors.New(raw)
			}
			return nil
		})
		if err := api.Services().Delete(ctx, "svc:late"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "laptop dropping the route of the deleted svc:late", func() error {
			routes, err := peerRoutes(ctx, tn, "laptop", hostKey)
			if err != nil || slices.Contains(routes, lateRoute) {
				return fmt.Errorf("routes %v, %v", routes, err)
			}
			return nil
		})
	})

	t.Run("ApprovedThroughAPI", func(t *testing.T) {
		var otherID string
		for _, d := range tn.liveNodes() {
			if d.node.Key == otherKey {
				otherID = string(d.node.StableID)
			}
		}
		if res, body := rawRequest(t, tn, "POST", "/api/v2/tailnet/-/vip-services/svc:web/device/"+otherID+"/approved", `{"approved": true}`); res.StatusCode != 200 {
			t.Fatalf("approve: %d %s", res.StatusCode, body)
		}
		waitFor(t, time.Minute, "laptop reaching svc:web on other", func() error {
			code, res, raw := fetch("laptop", webURL)
			if code != 200 || res.Body != "served by other\n" {
				return errors.New(raw)
			}
			return nil
		})
	})

	// Two hosts: the primary (other) keeps the route, the second gets the capability only; when
	// the primary goes, the second takes the route over.
	serveService(t, host, "host", "svc:web")
	t.Run("OnePrimaryHost", func(t *testing.T) {
		waitFor(t, time.Minute, "host hosting svc:web beside other", func() error {
			if !hasServiceHostCap(ctx, host) {
				return errors.New("host has no service-host capability yet")
			}
			return nil
		})
		if routes, err := peerRoutes(ctx, tn, "laptop", hostKey); err != nil || len(routes) != 0 {
			t.Fatalf("laptop routes via the second host: %v, %v", routes, err)
		}
		if code, res, raw := fetch("laptop", webURL); code != 200 || res.Body != "served by other\n" {
			t.Fatalf("svc:web moved from its primary host: %s", raw)
		}
	})

	t.Run("WithdrawnOffline", func(t *testing.T) {
		other.Close()
		waitFor(t, time.Minute, "the route to other withdrawn", func() error {
			if m := settled(otherKey); m != "{}" {
				return fmt.Errorf("other still routed: %s", m)
			}
			return nil
		})
		waitFor(t, time.Minute, "laptop dropping the route to other", func() error {
			routes, err := peerRoutes(ctx, tn, "laptop", otherKey)
			if err != nil && !strings.Contains(err.Error(), "not in") {
				return err
			}
			if slices.Contains(routes, route) {
				return fmt.Errorf("routes %v", routes)
			}
			return nil
		})
		waitFor(t, time.Minute, "laptop reaching svc:web on host, the primary now", func() error {
			code, res, raw := fetch("laptop", webURL)
			if code != 200 || res.Body != "served by host\n" {
				return errors.New(raw)
			}
			return nil
		})
	})
}
