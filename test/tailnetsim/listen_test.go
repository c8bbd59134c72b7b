package tailnetsim

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/pki"
)

// TestListenAddrAndAPITLS starts the tailnet on another address than 127.0.0.1 with the API over
// TLS: control, DERP and the API are on that address, the API's certificate is the one given
// (a client trusting only its CA gets the devices), and a device joins through that control
// and DERP and serves HTTP to another device.
func TestListenAddrAndAPITLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tsnet nodes")
	}
	const addr = "127.0.0.2" // loopback, but not the default
	dir := t.TempDir()
	ca, err := pki.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	ck, err := ca.IssueServing("api", addr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(ck.CertFile, ck.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 3*time.Minute)
	tn, err := Start(ctx, Options{Logf: quietLogf(t), ListenAddr: addr,
		APITLS:  &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Devices: []DeviceSpec{{Hostname: "web", HTTPPort: DefaultHTTPPort}, {Hostname: "laptop"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })

	for name, raw := range map[string]string{"API": tn.APIURL(), "control": tn.ControlURL()} {
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() != addr {
			t.Errorf("%s URL %s: not on %s (%v)", name, raw, addr, err)
		}
	}
	if u, _ := url.Parse(tn.APIURL()); u.Scheme != "https" {
		t.Errorf("API URL %s: not https", tn.APIURL())
	}
	for _, n := range tn.derp.derpMap.Regions[1].Nodes {
		if n.IPv4 != addr || n.HostName != addr {
			t.Errorf("DERP node %s at %s/%s, want %s", n.Name, n.HostName, n.IPv4, addr)
		}
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tn.APIURL()+"/api/v2/tailnet/-/devices", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(tn.APIKey(), "")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET devices over TLS trusting only the given CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET devices: %s", resp.Status)
	}

	web, err := tn.Device("web")
	if err != nil {
		t.Fatal(err)
	}
	res, err := tn.Fetch(ctx, "laptop", "http://"+web.IPv4.String()+"/")
	if err != nil || res.Status != http.StatusOK || res.Body != "hello from web\n" {
		t.Fatalf("laptop GET web: %+v, %v", res, err)
	}
}
