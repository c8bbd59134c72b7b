package tailnet

import "testing"

func TestEndpointTemplate(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v2/tailnet/-/devices":                                 "GET /api/v2/tailnet/{tailnet}/devices",
		"/api/v2/device/nodeABC":                                    "GET /api/v2/device/{device}",
		"/base/api/v2/tailnet/example.com/vip-services/svc:web":     "GET /api/v2/tailnet/{tailnet}/vip-services/{service}",
		"/api/v2/tailnet/t/services/svc:web/devices":                "GET /api/v2/tailnet/{tailnet}/services/{service}/devices",
		"/api/v2/tailnet/t/vip-services/svc:web/device/n1/approved": "GET /api/v2/tailnet/{tailnet}/vip-services/{service}/device/{device}/approved",
		"/api/v2/tailnet/t/keys/k123":                               "GET /api/v2/tailnet/{tailnet}/keys/{key}",
		"/api/v2/oauth/token":                                       "GET /api/v2/oauth/token",
		"/api/v2/tailnet/t/unknown/x/y/z/a/b/c/d":                   "GET /api/v2/tailnet/{tailnet}/other/other/other/other",
		"/elsewhere":                      "GET other",
		"/api/v2/tailnet/devices/devices": "GET /api/v2/tailnet/{tailnet}/devices",
	} {
		if got := endpointTemplate("GET", path); got != want {
			t.Errorf("endpointTemplate(%q) = %q, want %q", path, got, want)
		}
	}
}
