package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
	"github.com/tailscale-gateway/tailscale-gateway/test/tailnetsim"
)

func localInfo() tailnetsim.Info {
	return tailnetsim.Info{
		APIURL: "http://127.0.0.1:1", Tailnet: "tailnetsim.example.com", MagicDNSSuffix: "tailnetsim.ts.net",
		OAuthClientID: "id", OAuthClientSecret: "secret", ControlURL: "http://127.0.0.1:2", AuthKey: "key",
		Devices: []tailnetsim.DeviceInfo{
			{Hostname: "api-server", FQDN: "api-server.tailnetsim.ts.net", IPv4: "100.64.0.1", HTTPPort: 80, HealthPath: "/healthz"},
			{Hostname: "postgres", FQDN: "postgres.tailnetsim.ts.net", IPv4: "100.64.0.2", TCPPort: 5432},
			{Hostname: "web-backup", FQDN: "web-backup.tailnetsim.ts.net", IPv4: "100.64.0.5", HTTPPort: 80, HealthPath: "/healthz"},
			{Hostname: "laptop", FQDN: "laptop.tailnetsim.ts.net", IPv4: "100.64.0.6"},
		},
	}
}

// TestLiveExamples decodes live-examples.yaml strictly, defaults, converts and validates every
// object as the API server does, and checks the Service demo's objects are there.
func TestLiveExamples(t *testing.T) {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(liveExamples(localInfo()))))
	objects := map[string]runtime.Object{}
	for {
		data, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		js, err := utilyaml.ToJSON(data)
		if err != nil {
			t.Fatalf("invalid YAML: %v\n%s", err, data)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue
		}
		obj, gvk, err := decoder.Decode(js, nil, nil)
		if err != nil {
			t.Fatalf("decoding: %v\n%s", err, data)
		}
		scheme.Default(obj)
		internal, err := scheme.ConvertToVersion(obj, gateway.SchemeGroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		var errs field.ErrorList
		var name string
		switch o := internal.(type) {
		case *gateway.TailscaleTailnet:
			errs, name = validation.ValidateTailscaleTailnet(o), o.Name
		case *gateway.TailscaleEndpoints:
			errs, name = validation.ValidateTailscaleEndpoints(o), o.Name
		case *gateway.TailscaleServices:
			errs, name = validation.ValidateTailscaleServices(o), o.Name
		default:
			t.Fatalf("unexpected %v", gvk)
		}
		if len(errs) > 0 {
			t.Errorf("%s %s: %v", gvk.Kind, name, errs.ToAggregate())
		}
		objects[gvk.Kind+"/"+name] = internal
	}

	eps, ok := objects["TailscaleEndpoints/simulated-devices"].(*gateway.TailscaleEndpoints)
	if !ok || len(eps.Spec.Endpoints) != 3 {
		t.Fatalf("simulated-devices: %+v (want the 3 devices that serve something)", eps)
	}
	for name, ip := range map[string]string{"web-primary": "100.64.0.1", "web-secondary": "100.64.0.5"} {
		e, ok := objects["TailscaleEndpoints/"+name].(*gateway.TailscaleEndpoints)
		if !ok || len(e.Spec.Endpoints) != 1 || e.Spec.Endpoints[0].TailscaleIP != ip || e.Labels["app"] != "simulated-web" {
			t.Errorf("%s: %+v", name, e)
		}
	}
	svc, ok := objects["TailscaleServices/simulated-web"].(*gateway.TailscaleServices)
	if !ok || svc.Spec.LoadBalancing == nil || svc.Spec.LoadBalancing.Strategy != gateway.StrategyFailover ||
		svc.Spec.VIPService == nil || svc.Spec.VIPService.Name != "svc:simulated-web" ||
		len(svc.Spec.VIPService.Tags) != 1 || svc.Spec.VIPService.Tags[0] != localServiceTag {
		t.Fatalf("simulated-web: %+v", svc)
	}
}

// TestWriteLocalUp checks the files hack/local-up.sh reads.
func TestWriteLocalUp(t *testing.T) {
	dir := t.TempDir()
	if err := writeLocalUp(dir, localInfo(), "http://127.0.0.1:3"); err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(filepath.Join(dir, "sim.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"SIM_ADMIN_URL=http://127.0.0.1:3", "SIM_SERVICE=simulated-web", "SIM_SERVICE_TAG=tag:tailscale-gateway",
		"SIM_SERVICE_URL=http://simulated-web.tailnetsim.ts.net/", "SIM_CLIENT=laptop", "SIM_PRIMARY=api-server", "SIM_SECONDARY=web-backup",
	} {
		if !bytes.Contains(env, []byte(line+"\n")) {
			t.Errorf("sim.env lacks %q:\n%s", line, env)
		}
	}
	secret, err := os.ReadFile(filepath.Join(dir, "credentials", localNamespace, localSecret, "client_secret"))
	if err != nil || string(secret) != "secret" {
		t.Errorf("client_secret = %q, %v", secret, err)
	}
}
