package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// TestHealthEndpoints checks /healthz, /livez and /readyz on the server directly without
// credentials, as the kubelet's probes reach it, and the named checks /readyz reports.
func TestHealthEndpoints(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.ServingCAPEM())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, "https://"+env.Gateway.Addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s without credentials: %d %s", path, resp.StatusCode, body)
		}
		return string(body)
	}
	for _, path := range []string{"/healthz", "/livez", "/readyz"} {
		if body := get(path); body != "ok" {
			t.Errorf("GET %s = %q, want ok", path, body)
		}
	}
	verbose := get("/readyz?verbose")
	for _, check := range []string{"etcd", "etcd-readiness", "informer-sync", "shutdown", "client-ca",
		"poststarthook/generic-apiserver-start-informers", "poststarthook/priority-and-fairness-config-consumer"} {
		if !strings.Contains(verbose, "[+]"+check+" ok") {
			t.Errorf("/readyz?verbose lacks %s:\n%s", check, verbose)
		}
	}
	livez := get("/livez?verbose")
	if !strings.Contains(livez, "[+]etcd ok") {
		t.Errorf("/livez?verbose lacks etcd:\n%s", livez)
	}

	// Through kube-apiserver, the group's discovery document is served by the server, and
	// clients preferring protobuf (kube-controller-manager's) get JSON: the types have no protobuf.
	out := kubectl(t, "get", "--raw", "/apis/gateway.tailscale.com/v1alpha1")
	if !strings.Contains(out, `"name":"tailscaleendpoints/status"`) {
		t.Errorf("discovery through kube-apiserver:\n%s", out)
	}
	admin, err := rest.HTTPClientFor(env.Admin)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, env.KubeURL+"/apis/gateway.tailscale.com/v1alpha1/tailscaletailnets", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.kubernetes.protobuf, application/json")
	resp, err := admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("list preferring protobuf: %d %s, want 200 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
