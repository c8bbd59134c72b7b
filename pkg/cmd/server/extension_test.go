package server

import (
	"strings"
	"testing"
)

func TestExtensionOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*ExtensionOptions)
		wantErr string
	}{
		{name: "defaults", mutate: func(*ExtensionOptions) {}},
		{name: "proxy mode with an IP", mutate: func(o *ExtensionOptions) { o.EndpointMode, o.ProxyAddress = EndpointModeProxy, "127.0.0.1" }},
		// In a cluster the deployed proxies' Services are the addresses (standalone needs one:
		// Options.Validate).
		{name: "proxy mode without an address", mutate: func(o *ExtensionOptions) { o.EndpointMode = EndpointModeProxy }},
		{name: "proxy mode with a name", mutate: func(o *ExtensionOptions) { o.EndpointMode, o.ProxyAddress = EndpointModeProxy, "proxy.svc" },
			wantErr: "not an IP address"},
		{name: "unknown mode", mutate: func(o *ExtensionOptions) { o.EndpointMode = "tunnel" }, wantErr: "--extension-endpoint-mode"},
		{name: "advertise without a port", mutate: func(o *ExtensionOptions) { o.XDSAdvertiseAddress = "xds.example" },
			wantErr: "--xds-advertise-address"},
		{name: "TLS files named in part", mutate: func(o *ExtensionOptions) { o.HookTLS.CertFile = "tls.crt" },
			wantErr: "--extension-tls-cert-file, --extension-tls-key-file and --extension-client-ca-file go together"},
		{name: "xDS TLS without the CA Envoy trusts", mutate: func(o *ExtensionOptions) {
			o.XDSTLS.CertFile, o.XDSTLS.KeyFile, o.XDSTLS.ClientCAFile = "tls.crt", "tls.key", "ca.crt"
		}, wantErr: "--xds-server-ca-file"},
		{name: "disabled skips checks", mutate: func(o *ExtensionOptions) { o.Enabled, o.EndpointMode = false, "tunnel" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewExtensionOptions()
			tc.mutate(o)
			errs := o.Validate()
			if tc.wantErr == "" {
				if len(errs) != 0 {
					t.Fatalf("Validate() = %v, want no error", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want one error about %s", errs, tc.wantErr)
			}
		})
	}
}

func TestLoopbackIfUnspecified(t *testing.T) {
	for in, want := range map[string]string{":5005": "127.0.0.1:5005", "0.0.0.0:5005": "0.0.0.0:5005",
		"[::1]:18001": "[::1]:18001", "10.1.2.3:1": "10.1.2.3:1", "garbage": "garbage"} {
		if got := loopbackIfUnspecified(in); got != want {
			t.Errorf("loopbackIfUnspecified(%q) = %q, want %q", in, got, want)
		}
	}
}
