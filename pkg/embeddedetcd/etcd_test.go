package embeddedetcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Finding 12 of the security review: the standalone server's etcd serves only holders of a
// certificate of its own CA. Another local user reaches the port and reads nothing: plain HTTP,
// TLS without a client certificate and a certificate of another CA are all refused; the
// member's client gets in. Its keys are readable by the owner only.
func TestSecurityEtcdRefusesClientsWithoutCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	s, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c := s.ClientTLS()
	good, err := (transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL()}, TLS: good, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/registry/secret", "value"); err != nil {
		t.Fatalf("the member's client: %v", err)
	}

	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	otherCA := filepath.Join(t.TempDir(), "other")
	stranger, err := Start(otherCA) // a member of another CA: its certificate is not ours
	if err != nil {
		t.Fatal(err)
	}
	stranger.Close()
	sc := stranger.ClientTLS()
	strangerCert, err := tls.LoadX509KeyPair(sc.CertFile, sc.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, client := range map[string]*http.Client{
		"plain HTTP":           {Timeout: 10 * time.Second},
		"TLS without a cert":   {Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		"a cert of another CA": {Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{strangerCert}}}},
	} {
		url := s.ClientURL() + "/v3/kv/range"
		if name == "plain HTTP" {
			url = "http" + url[len("https"):]
		}
		resp, err := client.Post(url, "application/json", nil)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: answered %s", name, resp.Status)
		}
	}
	for _, f := range []string{c.KeyFile, filepath.Join(filepath.Dir(c.CAFile), "ca.key")} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want the owner's only", f, fi.Mode())
		}
	}
}
