package tailnetsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

func TestAdminHandler(t *testing.T) {
	tn := startAPIOnly(t, "a")
	ctx := testContext(t, 30*time.Second)
	srv := httptest.NewServer(tn.AdminHandler())
	t.Cleanup(srv.Close)
	post := func(path string, form url.Values) int {
		t.Helper()
		res, err := http.PostForm(srv.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	res, err := http.Get(srv.URL + "/info")
	if err != nil {
		t.Fatal(err)
	}
	var info Info
	json.NewDecoder(res.Body).Decode(&info)
	res.Body.Close()
	if info.APIURL != tn.APIURL() || info.OAuthClientSecret != tn.OAuthClientSecret() || len(info.Devices) != 1 {
		t.Fatalf("info = %+v", info)
	}

	api := oauthClient(t, tn)
	a, _ := tn.Device("a")
	if got := post("/devices/a/api-online", url.Values{"online": {"false"}}); got != 200 {
		t.Fatalf("api-online: %d", got)
	}
	if d, err := api.Devices().Get(ctx, a.NodeID); err != nil || d.ConnectedToControl {
		t.Fatalf("after api-online=false: %+v, %v", d, err)
	}
	if got := post("/devices/a/api-online", url.Values{"online": {"clear"}}); got != 200 {
		t.Fatalf("api-online clear: %d", got)
	}
	if d, err := api.Devices().Get(ctx, a.NodeID); err != nil || !d.ConnectedToControl {
		t.Fatalf("after clear: %+v, %v", d, err)
	}

	if got := post("/api/errors", url.Values{"status": {"429"}, "count": {"1"}, "retryAfter": {"2s"}}); got != 200 {
		t.Fatalf("inject: %d", got)
	}
	if _, err := api.Devices().List(ctx); apiStatus(err) != 429 {
		t.Fatalf("after inject: %v", err)
	}

	// Virtual devices have no servers; unknown devices and bad values fail.
	for path, form := range map[string]url.Values{
		"/devices/a/http-status":     {"code": {"500"}},
		"/devices/nope/grpc-serving": {"serving": {"false"}},
		"/devices/nope/api-online":   {"online": {"false"}},
		"/api/errors":                {"status": {"x"}},
	} {
		if got := post(path, form); got != 400 {
			t.Errorf("POST %s = %d, want 400", path, got)
		}
	}
}
