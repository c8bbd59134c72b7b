package tailnetsim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	tailscale "tailscale.com/client/tailscale/v2"
	"tailscale.com/net/tsaddr"
)

// startAPIOnly starts a tailnet without tsnet devices (control, DERP and
// the fake API only) plus the given virtual devices.
func startAPIOnly(t *testing.T, virtual ...string) *Tailnet {
	t.Helper()
	tn, err := Start(testContext(t, time.Minute), Options{Logf: quietLogf(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	for _, v := range virtual {
		name, tags, _ := strings.Cut(v, "/")
		var tl []string
		if tags != "" {
			tl = strings.Split(tags, ",")
		}
		if _, err := tn.AddVirtualDevice(name, tl...); err != nil {
			t.Fatal(err)
		}
	}
	return tn
}

func apiStatus(err error) int {
	var ae tailscale.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// rawRequest sends an API request authenticated with the API key.
func rawRequest(t *testing.T, tn *Tailnet, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, tn.APIURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tn.APIKey())
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func TestAPIOAuth(t *testing.T) {
	tn := startAPIOnly(t, "a")
	ctx := testContext(t, 30*time.Second)

	if devs, err := oauthClient(t, tn).Devices().List(ctx); err != nil || len(devs) != 1 {
		t.Fatalf("List with OAuth = %v, %v", devs, err)
	}

	u, _ := url.Parse(tn.APIURL())
	bad := &tailscale.Client{BaseURL: u, Auth: &tailscale.OAuth{ClientID: tn.OAuthClientID(), ClientSecret: "wrong"}}
	_, err := bad.Devices().List(ctx)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
		t.Fatalf("wrong secret: got %v, want a 401 invalid_client token error", err)
	}

	// Credentials in the form body work as well as basic auth.
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {tn.OAuthClientID()}, "client_secret": {tn.OAuthClientSecret()}}
	res, err := http.PostForm(tn.APIURL()+tokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	var tok tokenResponse
	json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn != 3600 {
		t.Fatalf("form token: %d %+v", res.StatusCode, tok)
	}
	form.Set("grant_type", "password")
	if res, err = http.PostForm(tn.APIURL()+tokenPath, form); err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("unsupported grant: %v %v", res.StatusCode, err)
	}
	res.Body.Close()

	// The access token, and the API key (bearer or basic), authenticate; others do not.
	for _, tc := range []struct {
		name  string
		set   func(*http.Request)
		wantS int
	}{
		{"access token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.AccessToken) }, 200},
		{"api key bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tn.APIKey()) }, 200},
		{"api key basic", func(r *http.Request) { r.SetBasicAuth(tn.APIKey(), "") }, 200},
		{"bogus token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer tskey-api-bogus") }, 401},
		{"none", func(*http.Request) {}, 401},
	} {
		req, _ := http.NewRequest("GET", tn.APIURL()+"/api/v2/tailnet/-/devices", nil)
		tc.set(req)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var ae tailscale.APIError
		json.NewDecoder(res.Body).Decode(&ae)
		res.Body.Close()
		if res.StatusCode != tc.wantS || (tc.wantS == 401 && ae.Message == "") {
			t.Errorf("%s: status %d message %q, want %d", tc.name, res.StatusCode, ae.Message, tc.wantS)
		}
	}
}

func TestAPITokenExpiry(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newAPIServer("example.com", "id", "secret", "", "tskey-auth-x", time.Minute, func() time.Time { return now }, nil)
	rec := serve(a, "POST", tokenPath, "grant_type=client_credentials&client_id=id&client_secret=secret", "application/x-www-form-urlencoded", "")
	var tok tokenResponse
	if err := json.Unmarshal(rec.body, &tok); err != nil || rec.status != 200 {
		t.Fatalf("token: %d %s", rec.status, rec.body)
	}
	if got := serve(a, "GET", "/api/v2/tailnet/-/devices", "", "", tok.AccessToken).status; got != 200 {
		t.Fatalf("fresh token: %d", got)
	}
	now = now.Add(time.Minute)
	if got := serve(a, "GET", "/api/v2/tailnet/-/devices", "", "", tok.AccessToken).status; got != 401 {
		t.Fatalf("expired token: %d, want 401", got)
	}
}

func TestAPIErrorInjection(t *testing.T) {
	tn := startAPIOnly(t, "a")
	ctx := testContext(t, 30*time.Second)
	api := oauthClient(t, tn)

	// 500 for the next two requests; the token request is not affected.
	tn.InjectErrors(ErrorInjection{Status: http.StatusInternalServerError, Count: 2})
	for i := range 2 {
		if _, err := api.Devices().List(ctx); apiStatus(err) != 500 {
			t.Fatalf("request %d: got %v, want APIError 500", i, err)
		}
	}
	if _, err := api.Devices().List(ctx); err != nil {
		t.Fatalf("after injection: %v", err)
	}

	// 429 with Retry-After.
	tn.InjectErrors(ErrorInjection{Status: http.StatusTooManyRequests, Count: 1, RetryAfter: 2500 * time.Millisecond})
	res, body := rawRequest(t, tn, "GET", "/api/v2/tailnet/-/devices", "")
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "3" || !json.Valid(body) {
		t.Fatalf("429: status %d Retry-After %q body %q", res.StatusCode, res.Header.Get("Retry-After"), body)
	}

	// A non-JSON HTML error page: the client cannot decode it as an APIError.
	tn.InjectErrors(ErrorInjection{Status: http.StatusBadGateway, Count: 1, Body: HTMLErrorBody, ContentType: "text/html"})
	_, err := api.Devices().List(ctx)
	var se *json.SyntaxError
	if err == nil || apiStatus(err) != 0 || !errors.As(err, &se) {
		t.Fatalf("HTML error: got %v (%T), want a JSON syntax error", err, err)
	}

	// PathPrefix scopes the injection.
	tn.InjectErrors(ErrorInjection{Status: 503, Count: 1, PathPrefix: "/api/v2/tailnet/-/vip-services"})
	if _, err := api.Devices().List(ctx); err != nil {
		t.Fatalf("devices with services-only injection: %v", err)
	}
	if _, err := api.Services().List(ctx); apiStatus(err) != 503 {
		t.Fatalf("services: got %v, want 503", err)
	}

	// IncludeTokenEndpoint fails a fresh client's token request (twice:
	// x/oauth2 retries with the credentials in the form body).
	tn.InjectErrors(ErrorInjection{Status: 500, Count: 2, IncludeTokenEndpoint: true})
	var re *oauth2.RetrieveError
	if _, err := oauthClient(t, tn).Devices().List(ctx); !errors.As(err, &re) || re.Response.StatusCode != 500 {
		t.Fatalf("token endpoint injection: %v", err)
	}

	// Duration-based injection ends by itself.
	tn.InjectErrors(ErrorInjection{Status: 500, Duration: 300 * time.Millisecond})
	if _, err := api.Devices().List(ctx); apiStatus(err) != 500 {
		t.Fatalf("during duration injection: %v", err)
	}
	waitFor(t, 10*time.Second, "duration injection to end", func() error {
		_, err := api.Devices().List(ctx)
		return err
	})

	tn.InjectErrors(ErrorInjection{Status: 500, Count: 100})
	tn.ClearErrorInjections()
	if _, err := api.Devices().List(ctx); err != nil {
		t.Fatalf("after clear: %v", err)
	}
}

func TestAPIRequestCount(t *testing.T) {
	tn := startAPIOnly(t, "a")
	ctx := testContext(t, 30*time.Second)
	api := oauthClient(t, tn)
	n0 := tn.APIRequestCount()
	for range 3 {
		if _, err := api.Devices().List(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := tn.APIRequestCount() - n0; got != 4 { // one token request + three lists
		t.Fatalf("request count delta = %d, want 4", got)
	}
	counts := tn.APIRequestCounts()
	if counts["GET /api/v2/tailnet/{tailnet}/devices"] != 3 || counts["POST /api/v2/oauth/token"] != 1 {
		t.Fatalf("counts = %v", counts)
	}
	rawRequest(t, tn, "GET", "/api/v2/nope", "")
	if tn.APIRequestCounts()["unmatched"] != 1 {
		t.Fatalf("unmatched not counted: %v", tn.APIRequestCounts())
	}
}

func TestAPIDevicesVirtual(t *testing.T) {
	tn := startAPIOnly(t, "a/tag:web", "b")
	ctx := testContext(t, 30*time.Second)
	api := oauthClient(t, tn)
	devs, err := api.Devices().List(ctx)
	if err != nil || len(devs) != 2 {
		t.Fatalf("List = %v, %v", devs, err)
	}
	a := devs[0]
	if a.Hostname != "a" || !a.ConnectedToControl || a.LastSeen != nil || !slices.Equal(a.Tags, []string{"tag:web"}) ||
		a.Name != "a.tailnetsim.ts.net" || len(a.Addresses) != 2 || a.NodeID == "" {
		t.Fatalf("device a = %+v", a)
	}
	for _, id := range []string{a.ID, a.NodeID} {
		d, err := api.Devices().Get(ctx, id)
		if err != nil || d.Hostname != "a" {
			t.Fatalf("Get(%s) = %+v, %v", id, d, err)
		}
	}
	if _, err := api.Devices().Get(ctx, "nNOPE"); !tailscale.IsNotFound(err) {
		t.Fatalf("unknown device: %v", err)
	}

	tn.SetAPIOnline("a", false)
	d, err := api.Devices().Get(ctx, a.NodeID)
	if err != nil || d.ConnectedToControl || d.LastSeen == nil {
		t.Fatalf("offline override: %+v, %v", d, err)
	}

	// The tailnet can be named explicitly; other names are unknown.
	u, _ := url.Parse(tn.APIURL())
	named := &tailscale.Client{BaseURL: u, APIKey: tn.APIKey(), Tailnet: tn.TailnetName()}
	if devs, err := named.Devices().List(ctx); err != nil || len(devs) != 2 {
		t.Fatalf("named tailnet: %v, %v", devs, err)
	}
	other := &tailscale.Client{BaseURL: u, APIKey: tn.APIKey(), Tailnet: "other.example.com"}
	if _, err := other.Devices().List(ctx); !tailscale.IsNotFound(err) {
		t.Fatalf("other tailnet: %v", err)
	}
	if _, err := tn.AddVirtualDevice("a"); err == nil {
		t.Fatal("duplicate virtual device accepted")
	}
}

func TestAPIServices(t *testing.T) {
	tn := startAPIOnly(t)
	ctx := testContext(t, 30*time.Second)
	api := oauthClient(t, tn)
	svcs := api.Services()

	web := tailscale.Service{
		Name:        "svc:web",
		Comment:     "web frontends",
		Annotations: map[string]string{"gateway.tailscale.com/owner": "default/web"},
		Ports:       []string{"tcp:80", "tcp:443"},
		Tags:        []string{"tag:web"},
	}
	if err := svcs.CreateOrUpdate(ctx, web); err != nil {
		t.Fatal(err)
	}
	got, err := svcs.Get(ctx, "svc:web")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Addrs) != 2 {
		t.Fatalf("addrs = %v", got.Addrs)
	}
	v4, v6 := netip.MustParseAddr(got.Addrs[0]), netip.MustParseAddr(got.Addrs[1])
	if !netip.MustParsePrefix("100.100.0.0/16").Contains(v4) || !tsaddr.TailscaleULARange().Contains(v6) {
		t.Fatalf("addrs %v not in 100.100.0.0/16 and fd7a:115c:a1e0::/48", got.Addrs)
	}
	want := web
	want.Addrs = got.Addrs
	if !serviceEqual(*got, want) {
		t.Fatalf("Get = %+v, want %+v", *got, want)
	}

	// Updating without the allocated addresses fails, as in the real API; with them (Get
	// before PUT) it keeps them.
	web.Comment = "updated"
	web.Ports = []string{"tcp:8443"}
	if err := svcs.CreateOrUpdate(ctx, web); apiStatus(err) != 400 {
		t.Fatalf("PUT of an existing service without addrs = %v, want 400", err)
	}
	web.Addrs = []string{"100.100.200.200"}
	if err := svcs.CreateOrUpdate(ctx, web); apiStatus(err) != 400 {
		t.Fatalf("PUT changing the addrs of an existing service = %v, want 400", err)
	}
	web.Addrs = got.Addrs
	if err := svcs.CreateOrUpdate(ctx, web); err != nil {
		t.Fatal(err)
	}
	got2, err := svcs.Get(ctx, "svc:web")
	if err != nil || got2.Comment != "updated" || !slices.Equal(got2.Addrs, got.Addrs) || !slices.Equal(got2.Ports, web.Ports) {
		t.Fatalf("after update: %+v, %v", got2, err)
	}

	// A requested IPv4 is honoured; a second service gets other addresses.
	if err := svcs.CreateOrUpdate(ctx, tailscale.Service{Name: "svc:db", Addrs: []string{"100.100.9.9"}, Ports: []string{"tcp:5432"}}); err != nil {
		t.Fatal(err)
	}
	list, err := svcs.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "svc:db" || list[1].Name != "svc:web" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if list[0].Addrs[0] != "100.100.9.9" || list[0].Addrs[1] == got.Addrs[1] {
		t.Fatalf("svc:db addrs = %v", list[0].Addrs)
	}

	// Validation.
	for _, bad := range []tailscale.Service{
		{Name: "web"},
		{Name: "svc:x", Ports: []string{"80"}},
		{Name: "svc:y", Tags: []string{"web"}},
		{Name: "svc:z", Addrs: []string{"100.100.9.9"}},
	} {
		if err := svcs.CreateOrUpdate(ctx, bad); apiStatus(err) != 400 {
			t.Errorf("CreateOrUpdate(%+v) = %v, want 400", bad, err)
		}
	}

	// The newer /services spelling serves the same state.
	res, body := rawRequest(t, tn, "GET", "/api/v2/tailnet/-/services/svc:web", "")
	var viaServices tailscale.Service
	if res.StatusCode != 200 || json.Unmarshal(body, &viaServices) != nil || !serviceEqual(viaServices, *got2) {
		t.Fatalf("/services/svc:web = %d %s", res.StatusCode, body)
	}
	res, _ = rawRequest(t, tn, "PUT", "/api/v2/tailnet/-/services/svc:api", `{"ports":["tcp:443"]}`)
	if res.StatusCode != 200 {
		t.Fatalf("PUT /services/svc:api = %d", res.StatusCode)
	}
	if _, err := svcs.Get(ctx, "svc:api"); err != nil {
		t.Fatalf("svc:api via vip-services: %v", err)
	}

	for _, name := range []string{"svc:web", "svc:db", "svc:api"} {
		if err := svcs.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svcs.Get(ctx, "svc:web"); !tailscale.IsNotFound(err) {
		t.Fatalf("Get after delete: %v", err)
	}
	if err := svcs.Delete(ctx, "svc:web"); !tailscale.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
	if list, err := svcs.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List after delete: %v, %v", list, err)
	}
}

func serviceEqual(a, b tailscale.Service) bool {
	return a.Name == b.Name && a.Comment == b.Comment && slices.Equal(a.Addrs, b.Addrs) &&
		slices.Equal(a.Ports, b.Ports) && slices.Equal(a.Tags, b.Tags) && len(a.Annotations) == len(b.Annotations) &&
		func() bool {
			for k, v := range a.Annotations {
				if b.Annotations[k] != v {
					return false
				}
			}
			return true
		}()
}

func TestAPIServiceHosts(t *testing.T) {
	tn := startAPIOnly(t, "a/tag:web", "b")
	ctx := testContext(t, 30*time.Second)
	api := oauthClient(t, tn)
	if err := api.Services().CreateOrUpdate(ctx, tailscale.Service{Name: "svc:web", Ports: []string{"tcp:80"}, Tags: []string{"tag:web"}}); err != nil {
		t.Fatal(err)
	}
	tn.SetServiceHost("svc:web", "a", true)
	tn.SetServiceHost("svc:web", "b", true)
	a, _ := tn.Device("a")
	b, _ := tn.Device("b")

	hosts := func(kind string) map[string]serviceHostJSON {
		t.Helper()
		res, body := rawRequest(t, tn, "GET", "/api/v2/tailnet/-/"+kind+"/svc:web/devices", "")
		var out struct {
			Devices []serviceHostJSON `json:"devices"`
		}
		if res.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("hosts: %d %s", res.StatusCode, body)
		}
		m := map[string]serviceHostJSON{}
		for _, h := range out.Devices {
			m[h.StableNodeID] = h
		}
		return m
	}
	approval := func(method, id, body string) approvalJSON {
		t.Helper()
		res, b := rawRequest(t, tn, method, "/api/v2/tailnet/-/services/svc:web/device/"+id+"/approved", body)
		var out approvalJSON
		if res.StatusCode != 200 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("%s approval %s: %d %s", method, id, res.StatusCode, b)
		}
		return out
	}

	for _, kind := range []string{"vip-services", "services"} {
		h := hosts(kind)
		if len(h) != 2 || h[a.NodeID].ApprovalLevel != approvalAuto || h[b.NodeID].ApprovalLevel != approvalNone ||
			!h[a.NodeID].Configured || h[a.NodeID].Hostname != "a" {
			t.Fatalf("%s hosts = %+v", kind, h)
		}
	}
	if got := approval("GET", a.NodeID, ""); !got.Approved || !got.AutoApproved {
		t.Fatalf("a approval = %+v", got)
	}
	if got := approval("POST", b.NodeID, `{"approved": true}`); !got.Approved || got.AutoApproved {
		t.Fatalf("approve b = %+v", got)
	}
	if got := approval("POST", a.ID, `{"approved": false}`); got.Approved {
		t.Fatalf("revoke a = %+v", got)
	}
	h := hosts("services")
	if h[a.NodeID].ApprovalLevel != approvalNone || h[b.NodeID].ApprovalLevel != approvalManual {
		t.Fatalf("after approvals: %+v", h)
	}

	tn.SetServiceHost("svc:web", "b", false)
	if hosts("services")[b.NodeID].Configured {
		t.Fatal("b still configured")
	}
	for _, p := range []string{
		"/api/v2/tailnet/-/services/svc:nope/devices",
		"/api/v2/tailnet/-/services/svc:nope/device/" + a.NodeID + "/approved",
		"/api/v2/tailnet/-/services/svc:web/device/nNOPE/approved",
	} {
		if res, _ := rawRequest(t, tn, "GET", p, ""); res.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", p, res.StatusCode)
		}
	}
	if res, _ := rawRequest(t, tn, "POST", "/api/v2/tailnet/-/services/svc:web/device/"+a.NodeID+"/approved", `{}`); res.StatusCode != 400 {
		t.Errorf("POST approval without body = %d, want 400", res.StatusCode)
	}
}

func TestAPIKeys(t *testing.T) {
	tn := startAPIOnly(t)
	ctx := testContext(t, 30*time.Second)
	keys := oauthClient(t, tn).Keys()

	var req tailscale.CreateKeyRequest
	req.Description = "prober"
	req.ExpirySeconds = 3600
	req.Capabilities.Devices.Create.Tags = []string{"tag:prober"}
	req.Capabilities.Devices.Create.Ephemeral = true
	req.Capabilities.Devices.Create.Preauthorized = true
	k, err := keys.CreateAuthKey(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if k.Key == tn.AuthKey() || !strings.HasPrefix(k.Key, "tskey-auth-"+k.ID+"-") || k.ID == "" || k.KeyType != "auth" || k.Description != "prober" ||
		!slices.Equal(k.Capabilities.Devices.Create.Tags, []string{"tag:prober"}) || !k.Capabilities.Devices.Create.Ephemeral ||
		k.Expires.Sub(k.Created) != time.Hour {
		t.Fatalf("created key = %+v", k)
	}
	got, err := keys.Get(ctx, k.ID)
	if err != nil || got.Key != "" || got.ID != k.ID {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	list, err := keys.List(ctx, false)
	if err != nil || len(list) != 1 || list[0].ID != k.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if got.Invalid {
		t.Fatalf("a fresh key is invalid: %+v", got)
	}
	if !tn.ExpireAuthKey(k.ID) || tn.ExpireAuthKey("kNOPE") {
		t.Fatal("ExpireAuthKey: wrong existence")
	}
	if got, err := keys.Get(ctx, k.ID); err != nil || !got.Invalid || got.Expires.After(time.Now()) {
		t.Fatalf("Get after expiry = %+v, %v", got, err)
	}
	if err := keys.Delete(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Get(ctx, k.ID); !tailscale.IsNotFound(err) {
		t.Fatalf("Get after delete: %v", err)
	}
	req.Capabilities.Devices.Create.Tags = []string{"prober"}
	if _, err := keys.CreateAuthKey(ctx, req); apiStatus(err) != 400 {
		t.Fatalf("invalid tag: %v", err)
	}
	if _, err := keys.CreateOAuthClient(ctx, tailscale.CreateOAuthClientRequest{Scopes: []string{"all"}}); apiStatus(err) != 400 {
		t.Fatalf("oauth client keys are unsupported: %v", err)
	}
}

// recorded is a response captured by serve.
type recorded struct {
	status int
	header http.Header
	body   []byte
}

// serve sends one request straight to a's handler.
func serve(a http.Handler, method, path, body, contentType, bearer string) recorded {
	req, _ := http.NewRequestWithContext(context.Background(), method, "http://api.test"+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	return recorded{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}
