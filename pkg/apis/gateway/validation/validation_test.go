package validation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Expected errors are written as "<ErrorType> <field path>".
func invalid(p string) string      { return string(field.ErrorTypeInvalid) + " " + p }
func required(p string) string     { return string(field.ErrorTypeRequired) + " " + p }
func duplicate(p string) string    { return string(field.ErrorTypeDuplicate) + " " + p }
func notFound(p string) string     { return string(field.ErrorTypeNotFound) + " " + p }
func notSupported(p string) string { return string(field.ErrorTypeNotSupported) + " " + p }
func forbidden(p string) string    { return string(field.ErrorTypeForbidden) + " " + p }
func tooLong(p string) string      { return string(field.ErrorTypeTooLong) + " " + p }

func errKeys(errs field.ErrorList) []string {
	keys := make([]string, 0, len(errs))
	for _, e := range errs {
		keys = append(keys, string(e.Type)+" "+e.Field)
	}
	slices.Sort(keys)
	return keys
}

func checkErrors(t *testing.T, errs field.ErrorList, want []string) {
	t.Helper()
	got := errKeys(errs)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("errors differ\n got: %q\nwant: %q\nfull: %v", got, want, errs)
	}
}

type testCase[T any] struct {
	name   string
	mutate func(*T)
	want   []string
}

func runCases[T any](t *testing.T, base func() *T, validate func(*T) field.ErrorList, cases []testCase[T]) {
	t.Helper()
	names := map[string]bool{}
	for _, tc := range cases {
		if names[tc.name] {
			t.Fatalf("duplicate test case name %q", tc.name)
		}
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			obj := base()
			if tc.mutate != nil {
				tc.mutate(obj)
			}
			checkErrors(t, validate(obj), tc.want)
		})
	}
}

func dur(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

func qty(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

// --- health checks ---

func validHealthCheck() *gateway.HealthCheckConfig {
	return &gateway.HealthCheckConfig{
		Enabled:            ptr.To(true),
		Type:               gateway.ProtocolHTTP,
		Path:               "/api/v1/health",
		Interval:           dur("15s"),
		Timeout:            dur("5s"),
		HealthyThreshold:   ptr.To[int32](3),
		UnhealthyThreshold: ptr.To[int32](2),
		ExpectedStatus:     ptr.To[int32](200),
		Headers: map[string]string{
			"Authorization": "Bearer health-check-token",
			"User-Agent":    "TailscaleGateway/v1.0",
		},
	}
}

func TestValidateHealthCheck(t *testing.T) {
	type hc = gateway.HealthCheckConfig
	validate := func(h *hc) field.ErrorList { return validateHealthCheck(h, field.NewPath("hc")) }
	runCases(t, validHealthCheck, validate, []testCase[hc]{
		{name: "valid"},
		{name: "empty config uses defaults", mutate: func(h *hc) { *h = hc{} }},
		{name: "type gRPC", mutate: func(h *hc) { h.Type = gateway.ProtocolGRPC }},
		{name: "type TCP without path", mutate: func(h *hc) { h.Type, h.Path = gateway.ProtocolTCP, "" }},
		{name: "unsupported type", mutate: func(h *hc) { h.Type = "ICMP" }, want: []string{notSupported("hc.type")}},
		{name: "lower-case type", mutate: func(h *hc) { h.Type = "http" }, want: []string{notSupported("hc.type")}},
		{name: "relative path", mutate: func(h *hc) { h.Path = "health" }, want: []string{invalid("hc.path")}},
		{name: "zero interval", mutate: func(h *hc) { h.Interval = dur("0s") }, want: []string{invalid("hc.interval")}},
		{name: "negative interval", mutate: func(h *hc) { h.Interval = dur("-1s") }, want: []string{invalid("hc.interval")}},
		{name: "zero timeout", mutate: func(h *hc) { h.Timeout = dur("0s") }, want: []string{invalid("hc.timeout")}},
		{name: "timeout equals interval", mutate: func(h *hc) { h.Timeout = dur("15s") }, want: []string{invalid("hc.timeout")}},
		{name: "timeout exceeds interval", mutate: func(h *hc) { h.Timeout = dur("1m") }, want: []string{invalid("hc.timeout")}},
		{name: "timeout without interval", mutate: func(h *hc) { h.Interval = nil; h.Timeout = dur("1h") }},
		{name: "bad interval skips ordering", mutate: func(h *hc) { h.Interval, h.Timeout = dur("-5s"), dur("10s") }, want: []string{invalid("hc.interval")}},
		{name: "healthy threshold zero", mutate: func(h *hc) { h.HealthyThreshold = ptr.To[int32](0) }, want: []string{invalid("hc.healthyThreshold")}},
		{name: "unhealthy threshold negative", mutate: func(h *hc) { h.UnhealthyThreshold = ptr.To[int32](-1) }, want: []string{invalid("hc.unhealthyThreshold")}},
		{name: "thresholds of one", mutate: func(h *hc) { h.HealthyThreshold, h.UnhealthyThreshold = ptr.To[int32](1), ptr.To[int32](1) }},
		{name: "status 99", mutate: func(h *hc) { h.ExpectedStatus = ptr.To[int32](99) }, want: []string{invalid("hc.expectedStatus")}},
		{name: "status 600", mutate: func(h *hc) { h.ExpectedStatus = ptr.To[int32](600) }, want: []string{invalid("hc.expectedStatus")}},
		{name: "status bounds", mutate: func(h *hc) { h.ExpectedStatus = ptr.To[int32](599) }},
		{name: "header name with space", mutate: func(h *hc) { h.Headers["Bad Header"] = "x" }, want: []string{invalid("hc.headers[Bad Header]")}},
		{name: "empty header name", mutate: func(h *hc) { h.Headers[""] = "x" }, want: []string{invalid("hc.headers[]")}},
		{name: "header value with newline", mutate: func(h *hc) { h.Headers["X-Test"] = "a\r\nInjected: yes" }, want: []string{invalid("hc.headers[X-Test]")}},
		{
			name: "all problems at once",
			mutate: func(h *hc) {
				*h = hc{Type: "ICMP", Path: "x", Interval: dur("-1s"), Timeout: dur("-1s"), HealthyThreshold: ptr.To[int32](0),
					UnhealthyThreshold: ptr.To[int32](0), ExpectedStatus: ptr.To[int32](1000), Headers: map[string]string{"a b": "\x00"}}
			},
			want: []string{notSupported("hc.type"), invalid("hc.path"), invalid("hc.interval"), invalid("hc.timeout"),
				invalid("hc.healthyThreshold"), invalid("hc.unhealthyThreshold"), invalid("hc.expectedStatus"),
				invalid("hc.headers[a b]"), invalid("hc.headers[a b]")},
		},
	})
	if errs := validateHealthCheck(nil, field.NewPath("hc")); len(errs) != 0 {
		t.Errorf("nil health check: %v", errs)
	}
}

// --- TailscaleTailnet ---

func validTailnet() *gateway.TailscaleTailnet {
	return &gateway.TailscaleTailnet{
		ObjectMeta: metav1.ObjectMeta{Name: "production-tailnet"},
		Spec: gateway.TailscaleTailnetSpec{
			Tailnet:              "company.ts.net",
			OAuthSecretName:      "tailscale-oauth-secret",
			OAuthSecretNamespace: "tailscale-gateway-system",
			APIBaseURL:           "https://api.tailscale.com",
			Tags:                 []string{"tag:k8s-operator", "tag:production", "tag:cluster-main"},
		},
	}
}

func TestValidateTailscaleTailnet(t *testing.T) {
	type tn = gateway.TailscaleTailnet
	runCases(t, validTailnet, ValidateTailscaleTailnet, []testCase[tn]{
		{name: "valid"},
		{name: "minimal", mutate: func(o *tn) { o.Spec = gateway.TailscaleTailnetSpec{Tailnet: "-"} }},
		{name: "zero object", mutate: func(o *tn) { *o = tn{} }, want: []string{required("metadata.name"), required("spec.tailnet")}},
		{name: "namespace forbidden", mutate: func(o *tn) { o.Namespace = "default" }, want: []string{forbidden("metadata.namespace")}},
		{name: "bad name", mutate: func(o *tn) { o.Name = "Production_Tailnet" }, want: []string{invalid("metadata.name")}},
		{name: "bad label", mutate: func(o *tn) { o.Labels = map[string]string{"bad key": "x"} }, want: []string{invalid("metadata.labels")}},
		{name: "tailnet dash", mutate: func(o *tn) { o.Spec.Tailnet = "-" }},
		{name: "tailnet magic dns domain", mutate: func(o *tn) { o.Spec.Tailnet = "tail1234.ts.net" }},
		{name: "tailnet email", mutate: func(o *tn) { o.Spec.Tailnet = "user@example.com" }},
		{name: "tailnet github", mutate: func(o *tn) { o.Spec.Tailnet = "octocat@github" }},
		{name: "tailnet empty", mutate: func(o *tn) { o.Spec.Tailnet = "" }, want: []string{required("spec.tailnet")}},
		{name: "tailnet upper case", mutate: func(o *tn) { o.Spec.Tailnet = "Company.ts.net" }, want: []string{invalid("spec.tailnet")}},
		{name: "tailnet with space", mutate: func(o *tn) { o.Spec.Tailnet = "my tailnet" }, want: []string{invalid("spec.tailnet")}},
		{name: "tailnet empty local part", mutate: func(o *tn) { o.Spec.Tailnet = "@example.com" }, want: []string{invalid("spec.tailnet")}},
		{name: "tailnet empty domain", mutate: func(o *tn) { o.Spec.Tailnet = "user@" }, want: []string{invalid("spec.tailnet")}},
		{name: "tailnet two ats", mutate: func(o *tn) { o.Spec.Tailnet = "user@@example.com" }, want: []string{invalid("spec.tailnet")}},
		{name: "tailnet bad domain", mutate: func(o *tn) { o.Spec.Tailnet = "user@exa_mple.com" }, want: []string{invalid("spec.tailnet")}},
		{name: "bad oauth secret name", mutate: func(o *tn) { o.Spec.OAuthSecretName = "OAuth_Secret" }, want: []string{invalid("spec.oauthSecretName")}},
		{name: "bad oauth secret namespace", mutate: func(o *tn) { o.Spec.OAuthSecretNamespace = "tailscale.system" }, want: []string{invalid("spec.oauthSecretNamespace")}},
		{name: "http api url", mutate: func(o *tn) { o.Spec.APIBaseURL = "http://localhost:8080/api" }},
		{name: "http api url on loopback", mutate: func(o *tn) { o.Spec.APIBaseURL = "http://127.0.0.1:8080" }},
		{name: "http api url on ipv6 loopback", mutate: func(o *tn) { o.Spec.APIBaseURL = "http://[::1]:8080" }},
		{name: "http api url off loopback", mutate: func(o *tn) { o.Spec.APIBaseURL = "http://attacker.example.com" }, want: []string{invalid("spec.apiBaseURL")}},
		{name: "http api url on a pod address", mutate: func(o *tn) { o.Spec.APIBaseURL = "http://10.0.0.7:80" }, want: []string{invalid("spec.apiBaseURL")}},
		{name: "api url without scheme", mutate: func(o *tn) { o.Spec.APIBaseURL = "api.tailscale.com" }, want: []string{invalid("spec.apiBaseURL")}},
		{name: "api url ftp", mutate: func(o *tn) { o.Spec.APIBaseURL = "ftp://api.tailscale.com" }, want: []string{invalid("spec.apiBaseURL")}},
		{name: "api url without host", mutate: func(o *tn) { o.Spec.APIBaseURL = "https://" }, want: []string{invalid("spec.apiBaseURL")}},
		{name: "api url unparsable", mutate: func(o *tn) { o.Spec.APIBaseURL = "https://bad host/" }, want: []string{invalid("spec.apiBaseURL")}},
		{name: "tag with digits and dashes", mutate: func(o *tn) { o.Spec.Tags = []string{"tag:K8s-1"} }},
		{name: "tag without prefix", mutate: func(o *tn) { o.Spec.Tags[0] = "k8s-operator" }, want: []string{invalid("spec.tags[0]")}},
		{name: "tag empty name", mutate: func(o *tn) { o.Spec.Tags[1] = "tag:" }, want: []string{invalid("spec.tags[1]")}},
		{name: "tag starts with digit", mutate: func(o *tn) { o.Spec.Tags[1] = "tag:1prod" }, want: []string{invalid("spec.tags[1]")}},
		{name: "tag with underscore", mutate: func(o *tn) { o.Spec.Tags[1] = "tag:prod_1" }, want: []string{invalid("spec.tags[1]")}},
		{name: "duplicate tag", mutate: func(o *tn) { o.Spec.Tags[2] = "tag:k8s-operator" }, want: []string{duplicate("spec.tags[2]")}},
		{name: "proxy tags", mutate: func(o *tn) { o.Spec.ProxyTags = []string{"tag:k8s", "tag:web"} }},
		{name: "proxy tag without prefix", mutate: func(o *tn) { o.Spec.ProxyTags = []string{"tag:k8s", "web"} }, want: []string{invalid("spec.proxyTags[1]")}},
		{name: "proxy tag twice", mutate: func(o *tn) { o.Spec.ProxyTags = []string{"tag:k8s", "tag:k8s"} }, want: []string{duplicate("spec.proxyTags[1]")}},
		{name: "proxy pool", mutate: func(o *tn) {
			o.Spec.ProxyPool = &gateway.ProxyPool{Replicas: 2,
				Resources: &gateway.ProxyResources{Requests: map[string]resource.Quantity{"cpu": resource.MustParse("100m")},
					Limits: map[string]resource.Quantity{"cpu": resource.MustParse("1"), "memory": resource.MustParse("256Mi")}},
				Tolerations:  []gateway.ProxyToleration{{Key: "dedicated", Value: "proxies", Effect: "NoSchedule"}, {Operator: "Exists"}, {Key: "k", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: ptr.To[int64](30)}},
				NodeSelector: map[string]string{"kubernetes.io/os": "linux"}, PodLabels: map[string]string{"team": "net"},
				PodAnnotations: map[string]string{"example.com/x": "y"}, PriorityClassName: "system-cluster-critical"}
		}},
		{name: "proxy pool disabled", mutate: func(o *tn) { o.Spec.ProxyPool = &gateway.ProxyPool{} }},
		{name: "proxy pool everything wrong", mutate: func(o *tn) {
			o.Spec.ProxyPool = &gateway.ProxyPool{Replicas: 17,
				Resources: &gateway.ProxyResources{Requests: map[string]resource.Quantity{"cpu": resource.MustParse("2"), "gpu": resource.MustParse("1")},
					Limits: map[string]resource.Quantity{"cpu": resource.MustParse("1"), "memory": resource.MustParse("-1")}},
				Tolerations: []gateway.ProxyToleration{{Value: "x"}, {Key: "k", Operator: "Exists", Value: "v", Effect: "Never"},
					{Key: "bad key", Operator: "Maybe", TolerationSeconds: ptr.To[int64](5)}},
				NodeSelector: map[string]string{"bad key": "x"}, PodLabels: map[string]string{"gateway.tailscale.com/proxy-pool": "other", "app.kubernetes.io/name": "x"},
				PodAnnotations: map[string]string{"gateway.tailscale.com/config-hash": "x"}, PriorityClassName: "Not_A_Name"}
		}, want: []string{invalid("spec.proxyPool.replicas"), notSupported("spec.proxyPool.resources.requests[gpu]"),
			invalid("spec.proxyPool.resources.limits[memory]"), invalid("spec.proxyPool.resources.limits[cpu]"),
			invalid("spec.proxyPool.tolerations[0].operator"), invalid("spec.proxyPool.tolerations[1].value"), notSupported("spec.proxyPool.tolerations[1].effect"),
			invalid("spec.proxyPool.tolerations[2].key"), notSupported("spec.proxyPool.tolerations[2].operator"), invalid("spec.proxyPool.tolerations[2].tolerationSeconds"),
			invalid("spec.proxyPool.nodeSelector"), forbidden("spec.proxyPool.podLabels[app.kubernetes.io/name]"), forbidden("spec.proxyPool.podLabels[gateway.tailscale.com/proxy-pool]"),
			forbidden("spec.proxyPool.podAnnotations[gateway.tailscale.com/config-hash]"), invalid("spec.proxyPool.priorityClassName")}},
		{name: "allowedNamespaces all", mutate: func(o *tn) { o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: gateway.NamespacesFromAll} }},
		{name: "allowedNamespaces selector", mutate: func(o *tn) {
			o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: gateway.NamespacesFromSelector,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}
		}},
		{name: "allowedNamespaces names", mutate: func(o *tn) {
			o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: gateway.NamespacesFromNames, Names: []string{"a", "b"}}
		}},
		{name: "allowedNamespaces selector missing", mutate: func(o *tn) {
			o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: gateway.NamespacesFromSelector}
		}, want: []string{required("spec.allowedNamespaces.selector")}},
		{name: "allowedNamespaces names missing", mutate: func(o *tn) {
			o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: gateway.NamespacesFromNames}
		}, want: []string{required("spec.allowedNamespaces.names")}},
		{name: "allowedNamespaces bad from", mutate: func(o *tn) {
			o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: "Same"}
		}, want: []string{notSupported("spec.allowedNamespaces.from")}},
		{name: "allowedNamespaces selector with All", mutate: func(o *tn) {
			o.Spec.AllowedNamespaces = &gateway.AllowedNamespaces{From: gateway.NamespacesFromAll,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"bad key": "a"}}, Names: []string{"Bad", "Bad"}}
		}, want: []string{forbidden("spec.allowedNamespaces.selector"), invalid("spec.allowedNamespaces.selector.matchLabels"),
			forbidden("spec.allowedNamespaces.names"), invalid("spec.allowedNamespaces.names[0]"), invalid("spec.allowedNamespaces.names[1]"),
			duplicate("spec.allowedNamespaces.names[1]")}},
		{
			name: "all problems at once",
			mutate: func(o *tn) {
				o.Namespace = "default"
				o.Spec = gateway.TailscaleTailnetSpec{OAuthSecretName: "A", OAuthSecretNamespace: "a.b", APIBaseURL: "x", Tags: []string{"x", "x"}}
			},
			want: []string{forbidden("metadata.namespace"), required("spec.tailnet"), invalid("spec.oauthSecretName"),
				invalid("spec.oauthSecretNamespace"), invalid("spec.apiBaseURL"), invalid("spec.tags[0]"),
				invalid("spec.tags[1]"), duplicate("spec.tags[1]")},
		},
	})
}

// --- TailscaleEndpoints ---

func validEndpoints() *gateway.TailscaleEndpoints {
	return &gateway.TailscaleEndpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "web-services", Namespace: "default", Labels: map[string]string{"service-type": "web"}},
		Spec: gateway.TailscaleEndpointsSpec{
			Tailnet: "company.ts.net",
			Endpoints: []gateway.TailscaleEndpoint{
				{
					Name:           "api-server",
					TailscaleIP:    "100.64.0.10",
					TailscaleFQDN:  "api-server.company.ts.net",
					Port:           8080,
					Protocol:       gateway.ProtocolHTTP,
					ExternalTarget: "api.internal.company.com:8080",
					HealthCheck:    validHealthCheck(),
					Metadata:       map[string]string{"team": "backend", "example.com/tier": "api"},
				},
				{
					Name:           "postgres",
					TailscaleIP:    "fd7a:115c:a1e0::b",
					TailscaleFQDN:  "postgres.company.ts.net.",
					Port:           5432,
					Protocol:       gateway.ProtocolTCP,
					ExternalTarget: "10.0.0.5:5432",
					HealthCheck:    &gateway.HealthCheckConfig{Enabled: ptr.To(true), Type: gateway.ProtocolTCP, Interval: dur("60s")},
				},
				{
					Name:           "grpc-service",
					TailscaleIP:    "100.127.255.254",
					TailscaleFQDN:  "grpc.company.ts.net",
					Port:           9090,
					Protocol:       gateway.ProtocolGRPC,
					ExternalTarget: "[fd00::1]:9090",
				},
			},
			ServiceDiscovery: &gateway.ServiceDiscoveryConfig{
				AutoRegister: ptr.To(true),
				VIPServices: []gateway.VIPServiceConfig{
					{Name: "svc:api", Port: 80, TargetEndpoint: "api-server"},
					{Name: "postgres", Port: 5432, TargetEndpoint: "postgres"},
				},
			},
			TagSelectors: []gateway.TagSelector{
				{Key: "env", Operator: gateway.TagSelectorOpIn, Values: []string{"production", "staging"}},
				{Key: "service-type", Operator: gateway.TagSelectorOpExists},
				{Key: "region", Operator: gateway.TagSelectorOpNotIn, Values: []string{"eu"}},
				{Key: "deprecated", Operator: gateway.TagSelectorOpDoesNotExist},
			},
			Tags: []string{"tag:web", "tag:k8s-proxy"},
			Proxy: &gateway.ProxyConfig{
				Replicas:       ptr.To[int32](2),
				ConnectionType: "bidirectional",
				Ports:          []gateway.ProxyPort{{Port: 80, Protocol: "TCP"}, {Port: 53, Protocol: "UDP"}},
			},
		},
	}
}

func TestValidateTailscaleEndpoints(t *testing.T) {
	type te = gateway.TailscaleEndpoints
	const (
		ep0 = "spec.endpoints[0]"
		ep2 = "spec.endpoints[2]"
		vip = "spec.serviceDiscovery.vipServices"
		ts  = "spec.tagSelectors"
	)
	runCases(t, validEndpoints, ValidateTailscaleEndpoints, []testCase[te]{
		{name: "valid"},
		{
			name:   "zero object",
			mutate: func(o *te) { *o = te{} },
			want:   []string{required("metadata.name"), required("metadata.namespace"), required("spec.tailnet"), required("spec.endpoints")},
		},
		{name: "namespace required", mutate: func(o *te) { o.Namespace = "" }, want: []string{required("metadata.namespace")}},
		{name: "bad name", mutate: func(o *te) { o.Name = "web_services" }, want: []string{invalid("metadata.name")}},
		{name: "tailnet empty", mutate: func(o *te) { o.Spec.Tailnet = "" }, want: []string{required("spec.tailnet")}},
		{name: "tailnet dash", mutate: func(o *te) { o.Spec.Tailnet = "-" }},
		{name: "tailnet resource name", mutate: func(o *te) { o.Spec.Tailnet = "production-tailnet" }},
		{name: "tailnet invalid", mutate: func(o *te) { o.Spec.Tailnet = "company ts net" }, want: []string{invalid("spec.tailnet")}},
		{
			name:   "no endpoints tag selectors or proxy",
			mutate: func(o *te) { o.Spec.Endpoints, o.Spec.TagSelectors, o.Spec.Proxy = nil, nil, nil },
			want:   []string{required("spec.endpoints")},
		},
		{name: "only tag selectors", mutate: func(o *te) { o.Spec.Endpoints, o.Spec.Proxy = nil, nil }},
		{name: "only proxy", mutate: func(o *te) { o.Spec.Endpoints, o.Spec.TagSelectors, o.Spec.ServiceDiscovery = nil, nil, nil }},
		{name: "only endpoints, no optional parts", mutate: func(o *te) {
			o.Spec = gateway.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []gateway.TailscaleEndpoint{
				{Name: "a", TailscaleIP: "100.64.0.1", TailscaleFQDN: "a.company.ts.net", Port: 80, Protocol: gateway.ProtocolHTTP},
			}}
		}},
		// Endpoint name.
		{
			name:   "endpoint name empty",
			mutate: func(o *te) { o.Spec.Endpoints[0].Name = "" },
			want:   []string{required(ep0 + ".name"), notFound(vip + "[0].targetEndpoint")},
		},
		{name: "endpoint name underscore", mutate: func(o *te) { o.Spec.Endpoints[2].Name = "grpc_service" }, want: []string{invalid(ep2 + ".name")}},
		{name: "endpoint name upper case", mutate: func(o *te) { o.Spec.Endpoints[2].Name = "GRPC" }, want: []string{invalid(ep2 + ".name")}},
		{name: "endpoint name too long", mutate: func(o *te) { o.Spec.Endpoints[2].Name = strings.Repeat("a", 64) }, want: []string{invalid(ep2 + ".name")}},
		{name: "endpoint name 63 chars", mutate: func(o *te) { o.Spec.Endpoints[2].Name = strings.Repeat("a", 63) }},
		{name: "endpoint name duplicate", mutate: func(o *te) { o.Spec.Endpoints[2].Name = "api-server" }, want: []string{duplicate(ep2 + ".name")}},
		// Upstream TLS.
		{name: "tls on an HTTP endpoint", mutate: func(o *te) { o.Spec.Endpoints[0].TLS = &gateway.UpstreamTLSConfig{} },
			want: []string{forbidden(ep0 + ".tls")}},
		{name: "tls with a CA on an HTTPS endpoint", mutate: func(o *te) {
			o.Spec.Endpoints[0].Protocol, o.Spec.Endpoints[0].TLS = gateway.ProtocolHTTPS, &gateway.UpstreamTLSConfig{CACertificate: selfSignedPEM(t)}
		}},
		{name: "tls CA not PEM", mutate: func(o *te) {
			o.Spec.Endpoints[0].Protocol, o.Spec.Endpoints[0].TLS = gateway.ProtocolTLS, &gateway.UpstreamTLSConfig{CACertificate: "not a certificate"}
		}, want: []string{invalid(ep0 + ".tls.caCertificate")}},
		{name: "tls CA with a private key", mutate: func(o *te) {
			o.Spec.Endpoints[0].Protocol = gateway.ProtocolHTTPS
			o.Spec.Endpoints[0].TLS = &gateway.UpstreamTLSConfig{CACertificate: selfSignedPEM(t) + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}
		}, want: []string{invalid(ep0 + ".tls.caCertificate")}},
		{name: "tls CA too long", mutate: func(o *te) {
			o.Spec.Endpoints[0].Protocol = gateway.ProtocolHTTPS
			o.Spec.Endpoints[0].TLS = &gateway.UpstreamTLSConfig{CACertificate: strings.Repeat(selfSignedPEM(t), 200)}
		}, want: []string{tooLong(ep0 + ".tls.caCertificate")}},
		// Tailscale IP.
		{name: "ip empty", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "" }, want: []string{required(ep0 + ".tailscaleIP")}},
		{name: "ip unparsable", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "api-server" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		{name: "ip private", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "10.0.0.1" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		{name: "ip above cgnat", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "100.128.0.1" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		{name: "ip below cgnat", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "100.63.255.255" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		{name: "ip cgnat bounds", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "100.64.0.0" }},
		{name: "ipv6 in range", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "fd7a:115c:a1e0:ffff::1" }},
		{name: "ipv6 out of range", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "fd7a:115c:a1e1::1" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		{name: "ipv4 mapped ipv6", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "::ffff:100.64.0.1" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		{name: "ip with zone", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleIP = "fd7a:115c:a1e0::1%eth0" }, want: []string{invalid(ep0 + ".tailscaleIP")}},
		// Tailscale FQDN.
		{name: "fqdn empty", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleFQDN = "" }, want: []string{required(ep0 + ".tailscaleFQDN")}},
		{name: "fqdn underscore", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleFQDN = "api_server.company.ts.net" }, want: []string{invalid(ep0 + ".tailscaleFQDN")}},
		{name: "fqdn only dots", mutate: func(o *te) { o.Spec.Endpoints[0].TailscaleFQDN = ".." }, want: []string{invalid(ep0 + ".tailscaleFQDN")}},
		// Port and protocol.
		{name: "port zero", mutate: func(o *te) { o.Spec.Endpoints[0].Port = 0 }, want: []string{invalid(ep0 + ".port")}},
		{name: "port too big", mutate: func(o *te) { o.Spec.Endpoints[2].Port = 65536 }, want: []string{invalid(ep2 + ".port")}},
		{name: "port negative", mutate: func(o *te) { o.Spec.Endpoints[0].Port = -1 }, want: []string{invalid(ep0 + ".port")}},
		{name: "port max", mutate: func(o *te) { o.Spec.Endpoints[0].Port = 65535 }},
		{name: "protocol empty", mutate: func(o *te) { o.Spec.Endpoints[0].Protocol = "" }, want: []string{required(ep0 + ".protocol")}},
		{name: "protocol lower case", mutate: func(o *te) { o.Spec.Endpoints[0].Protocol = "http" }, want: []string{notSupported(ep0 + ".protocol")}},
		{name: "protocol unknown", mutate: func(o *te) { o.Spec.Endpoints[0].Protocol = "SCTP" }, want: []string{notSupported(ep0 + ".protocol")}},
		{name: "protocols HTTPS TLS UDP", mutate: func(o *te) {
			o.Spec.Endpoints[0].Protocol, o.Spec.Endpoints[1].Protocol, o.Spec.Endpoints[2].Protocol = gateway.ProtocolHTTPS, gateway.ProtocolTLS, gateway.ProtocolUDP
		}},
		// External target.
		{name: "external target empty", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "" }},
		{name: "external target no port", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "api.internal.company.com" }, want: []string{invalid(ep0 + ".externalTarget")}},
		{name: "external target port zero", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "api:0" }, want: []string{invalid(ep0 + ".externalTarget")}},
		{name: "external target port too big", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "api:99999" }, want: []string{invalid(ep0 + ".externalTarget")}},
		{name: "external target named port", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "api:http" }, want: []string{invalid(ep0 + ".externalTarget")}},
		{name: "external target bad host", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "bad_host:80" }, want: []string{invalid(ep0 + ".externalTarget")}},
		{name: "external target empty host", mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = ":80" }, want: []string{invalid(ep0 + ".externalTarget")}},
		{
			name:   "external target bad host and port",
			mutate: func(o *te) { o.Spec.Endpoints[0].ExternalTarget = "bad_host:0" },
			want:   []string{invalid(ep0 + ".externalTarget"), invalid(ep0 + ".externalTarget")},
		},
		// Metadata.
		{name: "metadata bad key", mutate: func(o *te) { o.Spec.Endpoints[0].Metadata["bad key"] = "x" }, want: []string{invalid(ep0 + ".metadata")}},
		{name: "metadata long value", mutate: func(o *te) { o.Spec.Endpoints[0].Metadata["team"] = strings.Repeat("x", 64) }, want: []string{invalid(ep0 + ".metadata")}},
		// Health check is validated with the shared function.
		{name: "health check nil", mutate: func(o *te) { o.Spec.Endpoints[0].HealthCheck = nil }},
		{name: "health check bad interval", mutate: func(o *te) { o.Spec.Endpoints[0].HealthCheck.Interval = dur("0s") }, want: []string{invalid(ep0 + ".healthCheck.interval")}},
		{name: "health check bad header", mutate: func(o *te) { o.Spec.Endpoints[0].HealthCheck.Headers["X Y"] = "z" }, want: []string{invalid(ep0 + ".healthCheck.headers[X Y]")}},
		// VIP services.
		{name: "service discovery nil", mutate: func(o *te) { o.Spec.ServiceDiscovery = nil }},
		{name: "vip name empty", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[0].Name = "" }, want: []string{required(vip + "[0].name")}},
		{name: "vip name invalid", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[0].Name = "Web_1" }, want: []string{invalid(vip + "[0].name")}},
		{name: "vip name bare prefix", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[0].Name = "svc:" }, want: []string{invalid(vip + "[0].name")}},
		{name: "vip name other prefix", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[0].Name = "tag:api" }, want: []string{invalid(vip + "[0].name")}},
		{name: "vip name duplicate", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[1].Name = "svc:api" }, want: []string{duplicate(vip + "[1].name")}},
		{name: "vip name duplicate across forms", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[1].Name = "api" }, want: []string{duplicate(vip + "[1].name")}},
		{name: "vip port zero", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[0].Port = 0 }, want: []string{invalid(vip + "[0].port")}},
		{name: "vip target empty", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[0].TargetEndpoint = "" }, want: []string{required(vip + "[0].targetEndpoint")}},
		{name: "vip target unknown", mutate: func(o *te) { o.Spec.ServiceDiscovery.VIPServices[1].TargetEndpoint = "mysql" }, want: []string{notFound(vip + "[1].targetEndpoint")}},
		{name: "vip target unchecked without static endpoints", mutate: func(o *te) {
			o.Spec.Endpoints = nil
			o.Spec.ServiceDiscovery.VIPServices[1].TargetEndpoint = "web-service"
		}},
		// Tag selectors.
		{name: "tag selector key empty", mutate: func(o *te) { o.Spec.TagSelectors[0].Key = "" }, want: []string{required(ts + "[0].key")}},
		{name: "tag selector key bad start", mutate: func(o *te) { o.Spec.TagSelectors[0].Key = "-env" }, want: []string{invalid(ts + "[0].key")}},
		{name: "tag selector key bad char", mutate: func(o *te) { o.Spec.TagSelectors[0].Key = "env:prod" }, want: []string{invalid(ts + "[0].key")}},
		{name: "tag selector key too long", mutate: func(o *te) { o.Spec.TagSelectors[0].Key = strings.Repeat("k", 64) }, want: []string{tooLong(ts + "[0].key")}},
		{name: "tag selector key all chars", mutate: func(o *te) { o.Spec.TagSelectors[0].Key = "1Env.tier_a-b" }},
		{name: "tag selector operator empty", mutate: func(o *te) { o.Spec.TagSelectors[1].Operator = "" }, want: []string{required(ts + "[1].operator")}},
		{name: "tag selector operator unknown", mutate: func(o *te) { o.Spec.TagSelectors[1].Operator = "Equals" }, want: []string{notSupported(ts + "[1].operator")}},
		{name: "tag selector In without values", mutate: func(o *te) { o.Spec.TagSelectors[0].Values = nil }, want: []string{required(ts + "[0].values")}},
		{name: "tag selector NotIn without values", mutate: func(o *te) { o.Spec.TagSelectors[2].Values = []string{} }, want: []string{required(ts + "[2].values")}},
		{name: "tag selector Exists with values", mutate: func(o *te) { o.Spec.TagSelectors[1].Values = []string{"x"} }, want: []string{forbidden(ts + "[1].values")}},
		{name: "tag selector DoesNotExist with values", mutate: func(o *te) { o.Spec.TagSelectors[3].Values = []string{"x"} }, want: []string{forbidden(ts + "[3].values")}},
		{name: "tag selector empty value", mutate: func(o *te) { o.Spec.TagSelectors[0].Values[1] = "" }, want: []string{required(ts + "[0].values[1]")}},
		// Tags.
		{name: "tag without prefix", mutate: func(o *te) { o.Spec.Tags[0] = "web" }, want: []string{invalid("spec.tags[0]")}},
		{name: "tag duplicate", mutate: func(o *te) { o.Spec.Tags[1] = "tag:web" }, want: []string{duplicate("spec.tags[1]")}},
		// Proxy.
		{name: "proxy zero replicas", mutate: func(o *te) { o.Spec.Proxy.Replicas = ptr.To[int32](0) }},
		{name: "proxy defaults unset", mutate: func(o *te) { o.Spec.Proxy = &gateway.ProxyConfig{} }},
		{name: "proxy negative replicas", mutate: func(o *te) { o.Spec.Proxy.Replicas = ptr.To[int32](-1) }, want: []string{invalid("spec.proxy.replicas")}},
		{name: "proxy connection types", mutate: func(o *te) { o.Spec.Proxy.ConnectionType = "egress" }},
		{name: "proxy connection type unknown", mutate: func(o *te) { o.Spec.Proxy.ConnectionType = "both" }, want: []string{notSupported("spec.proxy.connectionType")}},
		{name: "proxy port zero", mutate: func(o *te) { o.Spec.Proxy.Ports[0].Port = 0 }, want: []string{invalid("spec.proxy.ports[0].port")}},
		{name: "proxy port protocol unknown", mutate: func(o *te) { o.Spec.Proxy.Ports[1].Protocol = "HTTP" }, want: []string{notSupported("spec.proxy.ports[1].protocol")}},
		{name: "proxy port protocol unset", mutate: func(o *te) { o.Spec.Proxy.Ports[0].Protocol = "" }},
		{name: "proxy port same number other protocol", mutate: func(o *te) { o.Spec.Proxy.Ports[1].Port = 80 }},
		{name: "proxy port duplicate", mutate: func(o *te) {
			o.Spec.Proxy.Ports = append(o.Spec.Proxy.Ports, gateway.ProxyPort{Port: 80})
		}, want: []string{duplicate("spec.proxy.ports[2]")}},
		{
			name: "all problems at once",
			mutate: func(o *te) {
				o.Namespace = ""
				o.Spec.Tailnet = ""
				o.Spec.Endpoints[0] = gateway.TailscaleEndpoint{Name: "A", TailscaleIP: "1.1.1.1", TailscaleFQDN: "_", Port: 0, Protocol: "FTP",
					ExternalTarget: "x", HealthCheck: &gateway.HealthCheckConfig{Path: "h"}, Metadata: map[string]string{"a b": ""}}
				o.Spec.Endpoints[1].Name = "grpc-service"
				o.Spec.ServiceDiscovery.VIPServices[0] = gateway.VIPServiceConfig{}
				o.Spec.TagSelectors[0] = gateway.TagSelector{}
				o.Spec.Tags = []string{"web"}
				o.Spec.Proxy.Replicas = ptr.To[int32](-2)
			},
			want: []string{
				required("metadata.namespace"), required("spec.tailnet"),
				invalid(ep0 + ".name"), invalid(ep0 + ".tailscaleIP"), invalid(ep0 + ".tailscaleFQDN"), invalid(ep0 + ".port"),
				notSupported(ep0 + ".protocol"), invalid(ep0 + ".externalTarget"), invalid(ep0 + ".healthCheck.path"), invalid(ep0 + ".metadata"),
				duplicate(ep2 + ".name"), notFound(vip + "[1].targetEndpoint"),
				required(vip + "[0].name"), invalid(vip + "[0].port"), required(vip + "[0].targetEndpoint"),
				required(ts + "[0].key"), required(ts + "[0].operator"),
				invalid("spec.tags[0]"), invalid("spec.proxy.replicas"),
			},
		},
	})
}

// --- TailscaleServices ---

func validServices() *gateway.TailscaleServices {
	return &gateway.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Name: "web-service", Namespace: "production"},
		Spec: gateway.TailscaleServicesSpec{
			Selector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"service-type": "web", "environment": "production"},
				MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "region", Operator: metav1.LabelSelectorOpIn, Values: []string{"east", "west"}},
				},
			},
			VIPService: &gateway.VIPServiceSpec{
				Name:        "svc:web-service",
				Ports:       []string{"tcp:80", "tcp:443", "udp:53", "tcp:8000-8080"},
				Tags:        []string{"tag:web-service", "tag:production"},
				Comment:     "Production web service",
				AutoApprove: ptr.To(true),
				Annotations: map[string]string{"environment": "production", "team": "backend"},
			},
			LoadBalancing: &gateway.LoadBalancingConfig{
				Strategy: gateway.StrategyRoundRobin,
				HealthCheck: &gateway.HealthCheckConfig{
					Enabled: ptr.To(true), Path: "/health", Interval: dur("30s"), Timeout: dur("5s"),
					HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](3),
				},
				Weights: map[string]int32{"web-east": 70, "web-west": 30},
				FailoverConfig: &gateway.FailoverConfig{
					PrimaryEndpoints:   []string{"web-east"},
					SecondaryEndpoints: []string{"web-west"},
					FailbackDelay:      dur("60s"),
				},
			},
			ServiceDiscovery: &gateway.ServiceDiscoverySpec{
				DiscoverVIPServices: true,
				VIPServiceSelector: &gateway.VIPServiceSelector{
					Tags:         []string{"tag:shared-service"},
					ServiceNames: []string{"svc:external-api", "svc:database"},
				},
				ExternalServices: []gateway.ExternalService{
					{Name: "external-api", Address: "api.example.com", Port: 443, Protocol: gateway.ProtocolHTTPS, Weight: ptr.To[int32](10)},
					{Name: "legacy-api", Address: "10.1.2.3", Port: 8080, Protocol: gateway.ProtocolHTTP},
				},
			},
			EndpointTemplate: &gateway.EndpointTemplate{
				Tailnet: "production-tailnet",
				Tags:    []string{"tag:auto-web", "tag:k8s"},
				Proxy: &gateway.ProxyConfig{
					Replicas: ptr.To[int32](3), ConnectionType: "bidirectional",
					Ports: []gateway.ProxyPort{{Port: 80, Protocol: "TCP"}},
				},
				Labels: map[string]string{"service-type": "web", "environment": "production", "region": "east", "auto-provisioned": "true"},
			},
		},
	}
}

func TestValidateTailscaleServices(t *testing.T) {
	type tsvc = gateway.TailscaleServices
	const (
		lb  = "spec.loadBalancing"
		fc  = "spec.loadBalancing.failoverConfig"
		sd  = "spec.serviceDiscovery"
		ext = "spec.serviceDiscovery.externalServices"
		tpl = "spec.endpointTemplate"
	)
	runCases(t, validServices, ValidateTailscaleServices, []testCase[tsvc]{
		{name: "valid"},
		{name: "zero object", mutate: func(o *tsvc) { *o = tsvc{} }, want: []string{required("metadata.name"), required("metadata.namespace"), required("spec.selector")}},
		{name: "minimal", mutate: func(o *tsvc) {
			o.Spec = gateway.TailscaleServicesSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
		}},
		{name: "namespace required", mutate: func(o *tsvc) { o.Namespace = "" }, want: []string{required("metadata.namespace")}},
		// Selector.
		{name: "selector nil", mutate: func(o *tsvc) { o.Spec.Selector = nil }, want: []string{required("spec.selector")}},
		{name: "selector empty", mutate: func(o *tsvc) { o.Spec.Selector = &metav1.LabelSelector{} }, want: []string{invalid("spec.selector")}},
		{name: "selector only expressions", mutate: func(o *tsvc) { o.Spec.Selector.MatchLabels = nil }},
		{name: "selector bad label key", mutate: func(o *tsvc) { o.Spec.Selector.MatchLabels["bad key"] = "x" }, want: []string{invalid("spec.selector.matchLabels")}},
		{name: "selector bad operator", mutate: func(o *tsvc) { o.Spec.Selector.MatchExpressions[0].Operator = "Equals" }, want: []string{invalid("spec.selector.matchExpressions[0].operator")}},
		{name: "selector In without values", mutate: func(o *tsvc) { o.Spec.Selector.MatchExpressions[0].Values = nil }, want: []string{required("spec.selector.matchExpressions[0].values")}},
		// VIP service.
		{name: "vip service nil", mutate: func(o *tsvc) { o.Spec.VIPService = nil }},
		{name: "vip name empty", mutate: func(o *tsvc) { o.Spec.VIPService.Name = "" }, want: []string{required("spec.vipService.name")}},
		{name: "vip name without prefix", mutate: func(o *tsvc) { o.Spec.VIPService.Name = "web-service" }, want: []string{invalid("spec.vipService.name")}},
		{name: "vip name bad label", mutate: func(o *tsvc) { o.Spec.VIPService.Name = "svc:Web.Service" }, want: []string{invalid("spec.vipService.name")}},
		{name: "vip port without protocol", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[0] = "80" }, want: []string{invalid("spec.vipService.ports[0]")}},
		{name: "vip port bad protocol", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[0] = "http:80" }, want: []string{invalid("spec.vipService.ports[0]")}},
		{name: "vip port upper case", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[0] = "TCP:80" }, want: []string{invalid("spec.vipService.ports[0]")}},
		{name: "vip port zero", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[0] = "tcp:0" }, want: []string{invalid("spec.vipService.ports[0]")}},
		{name: "vip port leading zero", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[0] = "tcp:080" }, want: []string{invalid("spec.vipService.ports[0]")}},
		{name: "vip port too big", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[2] = "udp:65536" }, want: []string{invalid("spec.vipService.ports[2]")}},
		{name: "vip port range reversed", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[3] = "tcp:9000-8000" }, want: []string{invalid("spec.vipService.ports[3]")}},
		{name: "vip port range end too big", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[3] = "tcp:1-70000" }, want: []string{invalid("spec.vipService.ports[3]")}},
		{name: "vip port full range", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[3] = "udp:1-65535" }},
		{name: "vip port duplicate", mutate: func(o *tsvc) { o.Spec.VIPService.Ports[1] = "tcp:80" }, want: []string{duplicate("spec.vipService.ports[1]")}},
		{name: "vip tag invalid", mutate: func(o *tsvc) { o.Spec.VIPService.Tags[1] = "production" }, want: []string{invalid("spec.vipService.tags[1]")}},
		{name: "vip tag duplicate", mutate: func(o *tsvc) { o.Spec.VIPService.Tags[1] = "tag:web-service" }, want: []string{duplicate("spec.vipService.tags[1]")}},
		{name: "vip annotation bad key", mutate: func(o *tsvc) { o.Spec.VIPService.Annotations["bad key"] = "x" }, want: []string{invalid("spec.vipService.annotations")}},
		{name: "vip annotation prefixed key", mutate: func(o *tsvc) { o.Spec.VIPService.Annotations["example.com/Owner"] = "x" }},
		// Load balancing.
		{name: "load balancing nil", mutate: func(o *tsvc) { o.Spec.LoadBalancing = nil }},
		{name: "strategy unset", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Strategy = "" }},
		{name: "strategy least connections", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Strategy = gateway.StrategyLeastConnections }},
		{name: "strategy unknown", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Strategy = "round_robin" }, want: []string{notSupported(lb + ".strategy")}},
		{name: "health check timeout not below interval", mutate: func(o *tsvc) { o.Spec.LoadBalancing.HealthCheck.Timeout = dur("30s") }, want: []string{invalid(lb + ".healthCheck.timeout")}},
		{name: "weight key invalid", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Weights["Web_East"] = 1 }, want: []string{invalid(lb + ".weights[Web_East]")}},
		{name: "weight negative", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Weights["web-west"] = -1 }, want: []string{invalid(lb + ".weights[web-west]")}},
		{name: "weight zero", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Weights["web-west"] = 0 }},
		{name: "weighted", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Strategy = gateway.StrategyWeighted }},
		{name: "weighted without weights", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.Strategy = gateway.StrategyWeighted
			o.Spec.LoadBalancing.Weights = nil
		}, want: []string{required(lb + ".weights")}},
		{name: "weighted with zero weights", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.Strategy = gateway.StrategyWeighted
			o.Spec.LoadBalancing.Weights = map[string]int32{"web-east": 0, "web-west": 0}
		}, want: []string{invalid(lb + ".weights")}},
		{name: "failover", mutate: func(o *tsvc) { o.Spec.LoadBalancing.Strategy = gateway.StrategyFailover }},
		{name: "failover without config", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.Strategy = gateway.StrategyFailover
			o.Spec.LoadBalancing.FailoverConfig = nil
		}, want: []string{required(fc)}},
		{name: "failover without primaries", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.Strategy = gateway.StrategyFailover
			o.Spec.LoadBalancing.FailoverConfig.PrimaryEndpoints = nil
		}, want: []string{required(fc + ".primaryEndpoints")}},
		{name: "failover config without primaries unused", mutate: func(o *tsvc) { o.Spec.LoadBalancing.FailoverConfig.PrimaryEndpoints = nil }},
		{name: "primary twice", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.FailoverConfig.PrimaryEndpoints = []string{"web-east", "web-east"}
		}, want: []string{duplicate(fc + ".primaryEndpoints[1]")}},
		{name: "secondary twice", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.FailoverConfig.SecondaryEndpoints = []string{"web-west", "web-central", "web-west"}
		}, want: []string{duplicate(fc + ".secondaryEndpoints[2]")}},
		{name: "endpoint in both tiers", mutate: func(o *tsvc) {
			o.Spec.LoadBalancing.FailoverConfig.SecondaryEndpoints = []string{"web-west", "web-east"}
		}, want: []string{invalid(fc + ".secondaryEndpoints[1]")}},
		{name: "tier name empty", mutate: func(o *tsvc) { o.Spec.LoadBalancing.FailoverConfig.PrimaryEndpoints[0] = "" }, want: []string{required(fc + ".primaryEndpoints[0]")}},
		{name: "tier name invalid", mutate: func(o *tsvc) { o.Spec.LoadBalancing.FailoverConfig.SecondaryEndpoints[0] = "web.west" }, want: []string{invalid(fc + ".secondaryEndpoints[0]")}},
		{name: "failback delay zero", mutate: func(o *tsvc) { o.Spec.LoadBalancing.FailoverConfig.FailbackDelay = dur("0s") }},
		{name: "failback delay negative", mutate: func(o *tsvc) { o.Spec.LoadBalancing.FailoverConfig.FailbackDelay = dur("-1s") }, want: []string{invalid(fc + ".failbackDelay")}},
		// Service discovery.
		{name: "service discovery nil", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery = nil }},
		{name: "selector tag invalid", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.VIPServiceSelector.Tags[0] = "shared" }, want: []string{invalid(sd + ".vipServiceSelector.tags[0]")}},
		{name: "service name without prefix", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.VIPServiceSelector.ServiceNames[0] = "external-api" }, want: []string{invalid(sd + ".vipServiceSelector.serviceNames[0]")}},
		{name: "service name empty", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.VIPServiceSelector.ServiceNames[1] = "" }, want: []string{required(sd + ".vipServiceSelector.serviceNames[1]")}},
		{name: "service name duplicate", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.VIPServiceSelector.ServiceNames[1] = "svc:external-api" }, want: []string{duplicate(sd + ".vipServiceSelector.serviceNames[1]")}},
		{name: "external name empty", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Name = "" }, want: []string{required(ext + "[0].name")}},
		{name: "external name invalid", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Name = "External_API" }, want: []string{invalid(ext + "[0].name")}},
		{name: "external name duplicate", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[1].Name = "external-api" }, want: []string{duplicate(ext + "[1].name")}},
		{name: "external address empty", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Address = "" }, want: []string{required(ext + "[0].address")}},
		{name: "external address invalid", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Address = "api.example.com:443" }, want: []string{invalid(ext + "[0].address")}},
		{name: "external address ipv6", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[1].Address = "2001:db8::1" }},
		{name: "external port zero", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Port = 0 }, want: []string{invalid(ext + "[0].port")}},
		{name: "external protocol unset", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Protocol = "" }},
		{name: "external protocol unknown", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Protocol = "FTP" }, want: []string{notSupported(ext + "[0].protocol")}},
		{name: "external weight negative", mutate: func(o *tsvc) { o.Spec.ServiceDiscovery.ExternalServices[0].Weight = ptr.To[int32](-1) }, want: []string{invalid(ext + "[0].weight")}},
		// Endpoint template.
		{name: "template nil", mutate: func(o *tsvc) { o.Spec.EndpointTemplate = nil }},
		{name: "template tailnet empty", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Tailnet = "" }, want: []string{required(tpl + ".tailnet")}},
		{name: "template tailnet domain", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Tailnet = "company.ts.net" }},
		{name: "template tailnet invalid", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Tailnet = "Production Tailnet" }, want: []string{invalid(tpl + ".tailnet")}},
		{name: "template tag invalid", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Tags[0] = "auto-web" }, want: []string{invalid(tpl + ".tags[0]")}},
		{name: "template proxy replicas negative", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Proxy.Replicas = ptr.To[int32](-1) }, want: []string{invalid(tpl + ".proxy.replicas")}},
		{name: "template proxy connection type", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Proxy.ConnectionType = "sideways" }, want: []string{notSupported(tpl + ".proxy.connectionType")}},
		{name: "template proxy port", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Proxy.Ports[0].Port = 70000 }, want: []string{invalid(tpl + ".proxy.ports[0].port")}},
		{name: "template label key invalid", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Labels["bad key"] = "x" }, want: []string{invalid(tpl + ".labels")}},
		// Accepted with a warning (TestTailscaleServicesWarnings).
		{name: "template labels miss match label", mutate: func(o *tsvc) { delete(o.Spec.EndpointTemplate.Labels, "environment") }},
		{name: "template labels fail expression", mutate: func(o *tsvc) { o.Spec.EndpointTemplate.Labels["region"] = "central" }},
		{name: "template labels unchecked with invalid selector", mutate: func(o *tsvc) {
			o.Spec.Selector.MatchExpressions[0].Operator = "Equals"
			o.Spec.EndpointTemplate.Labels = nil
		}, want: []string{invalid("spec.selector.matchExpressions[0].operator")}},
		{name: "template labels unchecked without selector", mutate: func(o *tsvc) {
			o.Spec.Selector = nil
			o.Spec.EndpointTemplate.Labels = nil
		}, want: []string{required("spec.selector")}},
		{
			name: "all problems at once",
			mutate: func(o *tsvc) {
				o.Spec.Selector = &metav1.LabelSelector{}
				o.Spec.VIPService = &gateway.VIPServiceSpec{Ports: []string{"tcp:80", "tcp:80"}, Tags: []string{"x"}}
				o.Spec.LoadBalancing = &gateway.LoadBalancingConfig{Strategy: gateway.StrategyWeighted, Weights: map[string]int32{"a": -1}}
				o.Spec.ServiceDiscovery.ExternalServices = []gateway.ExternalService{{}}
				o.Spec.EndpointTemplate.Tailnet = ""
			},
			want: []string{
				invalid("spec.selector"), required("spec.vipService.name"), duplicate("spec.vipService.ports[1]"),
				invalid("spec.vipService.tags[0]"), invalid(lb + ".weights[a]"), invalid(lb + ".weights"),
				required(ext + "[0].name"), required(ext + "[0].address"), invalid(ext + "[0].port"),
				required(tpl + ".tailnet"),
			},
		},
	})
}

// --- TailscaleGateway ---

func validGateway() *gateway.TailscaleGateway {
	return &gateway.TailscaleGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "production-gateway", Namespace: "production"},
		Spec: gateway.TailscaleGatewaySpec{
			GatewayRef: gateway.LocalPolicyTargetReference{
				Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "envoy-gateway", Namespace: "envoy-gateway-system",
			},
			Tailnets: []gateway.TailnetConfiguration{
				{
					Name: "prod-tailnet",
					TailscaleTailnetRef: gateway.LocalPolicyTargetReference{
						Group: gateway.GroupName, Kind: "TailscaleTailnet", Name: "prod-tailnet",
					},
					Priority:         ptr.To[int32](100),
					ServiceDiscovery: &gateway.TailnetServiceDiscovery{Enabled: true},
					RouteGeneration: &gateway.RouteGenerationConfig{
						Ingress: &gateway.IngressRouteConfig{
							Enabled:     true,
							HostPattern: "{service}.prod.company.ts.net",
							PathPrefix:  "/",
							DefaultBackend: &gateway.BackendConfig{
								Weight:      ptr.To[int32](100),
								HealthCheck: &gateway.HealthCheckConfig{Enabled: ptr.To(true), Interval: dur("15s"), Timeout: dur("5s")},
							},
							Filters: []gateway.HTTPRouteFilter{
								{Type: "RequestHeaderModifier", RequestHeaderModifier: &gateway.HTTPHeaderFilter{
									Set:    []gateway.HTTPHeader{{Name: "X-Env", Value: "prod"}},
									Add:    []gateway.HTTPHeader{{Name: "X-Gateway-Version", Value: "v1.0.0"}, {Name: "X-Request-ID", Value: "{request_id}"}},
									Remove: []string{"X-Debug", "X-Internal"},
								}},
								{Type: "ResponseHeaderModifier", ResponseHeaderModifier: &gateway.HTTPHeaderFilter{
									Add: []gateway.HTTPHeader{{Name: "X-Served-By", Value: "tailscale-gateway"}},
								}},
								{Type: "URLRewrite", URLRewrite: &gateway.HTTPURLRewriteFilter{
									Hostname: "{service}.internal.company.com", ReplacePrefixMatch: "/",
								}},
							},
						},
						Egress: &gateway.EgressRouteConfig{
							Enabled:      true,
							HostPattern:  "{service}.internal.company.com",
							PathPrefix:   "/api/{service}/",
							RewriteRules: []gateway.RewriteRule{{From: "/api/{service}/", To: "/"}},
							Timeout:      dur("30s"),
							RetryPolicy: &gateway.RetryPolicy{
								NumRetries: ptr.To[int32](3), PerTryTimeout: dur("10s"),
								BackoffBaseInterval: dur("1s"), BackoffMaxInterval: dur("10s"),
							},
						},
					},
				},
				{
					Name:                "staging-tailnet",
					TailscaleTailnetRef: gateway.LocalPolicyTargetReference{Name: "staging-tailnet"},
					Priority:            ptr.To[int32](50),
					RouteGeneration: &gateway.RouteGenerationConfig{
						Ingress: &gateway.IngressRouteConfig{Enabled: true, HostPattern: "*.staging.company.ts.net", PathPrefix: "/staging/"},
					},
				},
			},
			ServiceCoordination: &gateway.ServiceCoordinationConfig{Enabled: true, Strategy: "shared"},
			LoadBalancing: &gateway.GatewayLoadBalancingConfig{
				Strategy: "least_request",
				HealthChecking: &gateway.HealthCheckConfig{
					Enabled: ptr.To(true), Interval: dur("15s"), Timeout: dur("5s"),
					HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](3),
				},
				CircuitBreaker: &gateway.CircuitBreakerConfig{
					Enabled: true, MaxConnections: ptr.To[int32](1000), MaxPendingRequests: ptr.To[int32](100),
					MaxRequests: ptr.To[int32](1000), MaxRetries: ptr.To[int32](3), ConsecutiveErrors: ptr.To[int32](5),
					Interval: dur("30s"), BaseEjectionTime: dur("30s"), MaxEjectionPercent: ptr.To[int32](50),
				},
			},
			Security: &gateway.SecurityConfig{
				TLSMode: "strict",
				MTLS: &gateway.MTLSConfig{
					Enabled:        true,
					CertificateRef: &gateway.SecretReference{Name: "gateway-mtls-cert", Namespace: "tailscale-gateway-system"},
				},
				AccessControl: &gateway.AccessControlConfig{
					AllowedTags: []string{"prod:server", "enterprise:user"},
					DeniedTags:  []string{"dev:testing"},
				},
			},
			Observability: &gateway.ObservabilityConfig{
				Metrics: &gateway.MetricsConfig{Enabled: true, Port: ptr.To[int32](9090)},
				Tracing: &gateway.TracingConfig{Enabled: true, SamplingRate: qty("0.1"), JaegerEndpoint: "http://jaeger-collector:14268/api/traces"},
				Logging: &gateway.LoggingConfig{Level: "info", AccessLogs: true},
			},
		},
	}
}

func TestValidateTailscaleGateway(t *testing.T) {
	type tg = gateway.TailscaleGateway
	const (
		t0  = "spec.tailnets[0]"
		ref = "spec.tailnets[0].tailscaleTailnetRef"
		ing = "spec.tailnets[0].routeGeneration.ingress"
		eg  = "spec.tailnets[0].routeGeneration.egress"
		f0  = "spec.tailnets[0].routeGeneration.ingress.filters[0]"
		cb  = "spec.loadBalancing.circuitBreaker"
		sec = "spec.security"
		obs = "spec.observability"
	)
	ingress := func(o *tg) *gateway.IngressRouteConfig { return o.Spec.Tailnets[0].RouteGeneration.Ingress }
	egress := func(o *tg) *gateway.EgressRouteConfig { return o.Spec.Tailnets[0].RouteGeneration.Egress }
	filter := func(o *tg, i int) *gateway.HTTPRouteFilter { return &ingress(o).Filters[i] }
	reqHeaders := func(o *tg) *gateway.HTTPHeaderFilter { return filter(o, 0).RequestHeaderModifier }
	retry := func(o *tg) *gateway.RetryPolicy { return egress(o).RetryPolicy }
	breaker := func(o *tg) *gateway.CircuitBreakerConfig { return o.Spec.LoadBalancing.CircuitBreaker }

	runCases(t, validGateway, ValidateTailscaleGateway, []testCase[tg]{
		{name: "valid"},
		{
			name:   "zero object",
			mutate: func(o *tg) { *o = tg{} },
			want:   []string{required("metadata.name"), required("metadata.namespace"), required("spec.gatewayRef.name"), required("spec.tailnets")},
		},
		{name: "minimal", mutate: func(o *tg) {
			o.Spec = gateway.TailscaleGatewaySpec{
				GatewayRef: gateway.LocalPolicyTargetReference{Name: "gw"},
				Tailnets:   []gateway.TailnetConfiguration{{Name: "main", TailscaleTailnetRef: gateway.LocalPolicyTargetReference{Name: "main"}}},
			}
		}},
		{name: "namespace required", mutate: func(o *tg) { o.Namespace = "" }, want: []string{required("metadata.namespace")}},
		// Gateway reference.
		{name: "gateway name empty", mutate: func(o *tg) { o.Spec.GatewayRef.Name = "" }, want: []string{required("spec.gatewayRef.name")}},
		{name: "gateway name invalid", mutate: func(o *tg) { o.Spec.GatewayRef.Name = "Envoy_Gateway" }, want: []string{invalid("spec.gatewayRef.name")}},
		{name: "gateway namespace invalid", mutate: func(o *tg) { o.Spec.GatewayRef.Namespace = "envoy.system" }, want: []string{invalid("spec.gatewayRef.namespace")}},
		{name: "gateway namespace unset", mutate: func(o *tg) { o.Spec.GatewayRef.Namespace = "" }},
		{name: "gateway kind unset", mutate: func(o *tg) { o.Spec.GatewayRef.Kind, o.Spec.GatewayRef.Group = "", "" }},
		{name: "gateway kind wrong", mutate: func(o *tg) { o.Spec.GatewayRef.Kind = "Service" }, want: []string{notSupported("spec.gatewayRef.kind")}},
		{name: "gateway group wrong", mutate: func(o *tg) { o.Spec.GatewayRef.Group = "apps" }, want: []string{notSupported("spec.gatewayRef.group")}},
		// Tailnets.
		{name: "no tailnets", mutate: func(o *tg) { o.Spec.Tailnets = nil }, want: []string{required("spec.tailnets")}},
		{name: "tailnet name empty", mutate: func(o *tg) { o.Spec.Tailnets[0].Name = "" }, want: []string{required(t0 + ".name")}},
		{name: "tailnet name invalid", mutate: func(o *tg) { o.Spec.Tailnets[0].Name = "prod.tailnet" }, want: []string{invalid(t0 + ".name")}},
		{name: "tailnet name duplicate", mutate: func(o *tg) { o.Spec.Tailnets[1].Name = "prod-tailnet" }, want: []string{duplicate("spec.tailnets[1].name")}},
		{name: "tailnet ref name empty", mutate: func(o *tg) { o.Spec.Tailnets[0].TailscaleTailnetRef.Name = "" }, want: []string{required(ref + ".name")}},
		{name: "tailnet ref name invalid", mutate: func(o *tg) { o.Spec.Tailnets[0].TailscaleTailnetRef.Name = "Prod_Tailnet" }, want: []string{invalid(ref + ".name")}},
		{name: "tailnet ref name subdomain", mutate: func(o *tg) { o.Spec.Tailnets[0].TailscaleTailnetRef.Name = "prod.company" }},
		{name: "tailnet ref kind wrong", mutate: func(o *tg) { o.Spec.Tailnets[0].TailscaleTailnetRef.Kind = "Tailnet" }, want: []string{notSupported(ref + ".kind")}},
		{name: "tailnet ref group wrong", mutate: func(o *tg) { o.Spec.Tailnets[0].TailscaleTailnetRef.Group = "tailscale.com" }, want: []string{notSupported(ref + ".group")}},
		{name: "tailnet ref namespace", mutate: func(o *tg) { o.Spec.Tailnets[0].TailscaleTailnetRef.Namespace = "default" }, want: []string{forbidden(ref + ".namespace")}},
		{name: "priority negative", mutate: func(o *tg) { o.Spec.Tailnets[0].Priority = ptr.To[int32](-1) }, want: []string{invalid(t0 + ".priority")}},
		{name: "priority zero", mutate: func(o *tg) { o.Spec.Tailnets[0].Priority = ptr.To[int32](0) }},
		{name: "route generation empty", mutate: func(o *tg) { o.Spec.Tailnets[0].RouteGeneration = &gateway.RouteGenerationConfig{} }},
		// Host patterns.
		{name: "host pattern fixed", mutate: func(o *tg) { ingress(o).HostPattern = "api.company.ts.net" }},
		{name: "host pattern wildcard", mutate: func(o *tg) { ingress(o).HostPattern = "*.{service}.company.ts.net" }},
		{name: "host pattern service in label", mutate: func(o *tg) { ingress(o).HostPattern = "{service}-api.company.ts.net" }},
		{name: "host pattern upper case", mutate: func(o *tg) { ingress(o).HostPattern = "{service}.Company.ts.net" }, want: []string{invalid(ing + ".hostPattern")}},
		{name: "host pattern other placeholder", mutate: func(o *tg) { ingress(o).HostPattern = "{svc}.company.ts.net" }, want: []string{invalid(ing + ".hostPattern")}},
		{name: "host pattern two bad placeholders", mutate: func(o *tg) { ingress(o).HostPattern = "{service}-{env}.{region}.ts.net" }, want: []string{invalid(ing + ".hostPattern")}},
		{name: "host pattern bad placeholder and bad dns", mutate: func(o *tg) { ingress(o).HostPattern = "{env}.bad_domain" }, want: []string{invalid(ing + ".hostPattern"), invalid(ing + ".hostPattern")}},
		{name: "host pattern unbalanced brace", mutate: func(o *tg) { ingress(o).HostPattern = "{service.company.ts.net" }, want: []string{invalid(ing + ".hostPattern")}},
		{name: "host pattern double wildcard", mutate: func(o *tg) { ingress(o).HostPattern = "*.*.company.ts.net" }, want: []string{invalid(ing + ".hostPattern")}},
		{name: "egress host pattern other placeholder", mutate: func(o *tg) { egress(o).HostPattern = "{namespace}.internal" }, want: []string{invalid(eg + ".hostPattern")}},
		// Path prefixes.
		{name: "ingress path relative", mutate: func(o *tg) { ingress(o).PathPrefix = "api/" }, want: []string{invalid(ing + ".pathPrefix")}},
		{name: "ingress path placeholder", mutate: func(o *tg) { ingress(o).PathPrefix = "/{service}/" }, want: []string{invalid(ing + ".pathPrefix")}},
		{name: "egress path relative", mutate: func(o *tg) { egress(o).PathPrefix = "prod/{service}/" }, want: []string{invalid(eg + ".pathPrefix")}},
		{name: "egress path other placeholder", mutate: func(o *tg) { egress(o).PathPrefix = "/prod/{name}/" }, want: []string{invalid(eg + ".pathPrefix")}},
		{name: "egress path relative and other placeholder", mutate: func(o *tg) { egress(o).PathPrefix = "{name}" }, want: []string{invalid(eg + ".pathPrefix"), invalid(eg + ".pathPrefix")}},
		// Default backend.
		{name: "backend weight negative", mutate: func(o *tg) { ingress(o).DefaultBackend.Weight = ptr.To[int32](-1) }, want: []string{invalid(ing + ".defaultBackend.weight")}},
		{name: "backend health check", mutate: func(o *tg) { ingress(o).DefaultBackend.HealthCheck.ExpectedStatus = ptr.To[int32](700) }, want: []string{invalid(ing + ".defaultBackend.healthCheck.expectedStatus")}},
		// Filters.
		{name: "filter type empty", mutate: func(o *tg) { filter(o, 0).Type = "" }, want: []string{required(f0 + ".type")}},
		{name: "filter type unknown", mutate: func(o *tg) { filter(o, 0).Type = "RequestMirror" }, want: []string{notSupported(f0 + ".type")}},
		{name: "filter member missing", mutate: func(o *tg) { filter(o, 0).RequestHeaderModifier = nil }, want: []string{required(f0 + ".requestHeaderModifier")}},
		{name: "filter extra member", mutate: func(o *tg) {
			filter(o, 0).URLRewrite = &gateway.HTTPURLRewriteFilter{ReplacePrefixMatch: "/"}
		}, want: []string{forbidden(f0 + ".urlRewrite")}},
		{name: "filter wrong member", mutate: func(o *tg) {
			f := filter(o, 2)
			f.URLRewrite, f.ResponseHeaderModifier = nil, &gateway.HTTPHeaderFilter{}
		}, want: []string{required(ing + ".filters[2].urlRewrite"), forbidden(ing + ".filters[2].responseHeaderModifier")}},
		{name: "header name invalid", mutate: func(o *tg) { reqHeaders(o).Set[0].Name = "X Env" }, want: []string{invalid(f0 + ".requestHeaderModifier.set[0].name")}},
		{name: "header name empty", mutate: func(o *tg) { reqHeaders(o).Add[0].Name = "" }, want: []string{required(f0 + ".requestHeaderModifier.add[0].name")}},
		{name: "header name duplicate ignoring case", mutate: func(o *tg) { reqHeaders(o).Add[1].Name = "x-gateway-version" }, want: []string{duplicate(f0 + ".requestHeaderModifier.add[1].name")}},
		{name: "header in set and add", mutate: func(o *tg) { reqHeaders(o).Add[0].Name = "X-Env" }},
		{name: "header value invalid", mutate: func(o *tg) { reqHeaders(o).Add[0].Value = "v1\r\nX-Evil: 1" }, want: []string{invalid(f0 + ".requestHeaderModifier.add[0].value")}},
		{name: "header value empty", mutate: func(o *tg) { reqHeaders(o).Set[0].Value = "" }, want: []string{required(f0 + ".requestHeaderModifier.set[0].value")}},
		{name: "remove header invalid", mutate: func(o *tg) { reqHeaders(o).Remove[0] = "X Debug" }, want: []string{invalid(f0 + ".requestHeaderModifier.remove[0]")}},
		{name: "remove header duplicate", mutate: func(o *tg) { reqHeaders(o).Remove[1] = "x-debug" }, want: []string{duplicate(f0 + ".requestHeaderModifier.remove[1]")}},
		{name: "response header invalid", mutate: func(o *tg) { filter(o, 1).ResponseHeaderModifier.Add[0].Name = "X:Bad" }, want: []string{invalid(ing + ".filters[1].responseHeaderModifier.add[0].name")}},
		{name: "rewrite hostname invalid", mutate: func(o *tg) { filter(o, 2).URLRewrite.Hostname = "Bad_Host" }, want: []string{invalid(ing + ".filters[2].urlRewrite.hostname")}},
		{name: "rewrite hostname wildcard", mutate: func(o *tg) { filter(o, 2).URLRewrite.Hostname = "*.company.com" }, want: []string{invalid(ing + ".filters[2].urlRewrite.hostname")}},
		{name: "rewrite prefix relative", mutate: func(o *tg) { filter(o, 2).URLRewrite.ReplacePrefixMatch = "v2/" }, want: []string{invalid(ing + ".filters[2].urlRewrite.replacePrefixMatch")}},
		// Egress.
		{name: "rewrite from empty", mutate: func(o *tg) { egress(o).RewriteRules[0].From = "" }, want: []string{required(eg + ".rewriteRules[0].from")}},
		{name: "rewrite to empty", mutate: func(o *tg) { egress(o).RewriteRules[0].To = "" }, want: []string{required(eg + ".rewriteRules[0].to")}},
		{name: "rewrite from relative", mutate: func(o *tg) { egress(o).RewriteRules[0].From = "api/" }, want: []string{invalid(eg + ".rewriteRules[0].from")}},
		{name: "rewrite to other placeholder", mutate: func(o *tg) { egress(o).RewriteRules[0].To = "/{version}/" }, want: []string{invalid(eg + ".rewriteRules[0].to")}},
		{name: "rewrite to with service", mutate: func(o *tg) { egress(o).RewriteRules[0].To = "/{service}/" }},
		{name: "egress timeout zero", mutate: func(o *tg) { egress(o).Timeout = dur("0s") }, want: []string{invalid(eg + ".timeout")}},
		{name: "retries negative", mutate: func(o *tg) { retry(o).NumRetries = ptr.To[int32](-1) }, want: []string{invalid(eg + ".retryPolicy.numRetries")}},
		{name: "retries zero", mutate: func(o *tg) { retry(o).NumRetries = ptr.To[int32](0) }},
		{name: "per try timeout zero", mutate: func(o *tg) { retry(o).PerTryTimeout = dur("0s") }, want: []string{invalid(eg + ".retryPolicy.perTryTimeout")}},
		{name: "backoff base negative", mutate: func(o *tg) { retry(o).BackoffBaseInterval = dur("-1s") }, want: []string{invalid(eg + ".retryPolicy.backoffBaseInterval")}},
		{name: "backoff max zero", mutate: func(o *tg) { retry(o).BackoffMaxInterval = dur("0s") }, want: []string{invalid(eg + ".retryPolicy.backoffMaxInterval")}},
		{name: "backoff max below base", mutate: func(o *tg) { retry(o).BackoffMaxInterval = dur("500ms") }, want: []string{invalid(eg + ".retryPolicy.backoffMaxInterval")}},
		{name: "backoff max equals base", mutate: func(o *tg) { retry(o).BackoffMaxInterval = dur("1s") }},
		// Service coordination.
		{name: "coordination exclusive", mutate: func(o *tg) { o.Spec.ServiceCoordination.Strategy = "exclusive" }},
		{name: "coordination unset", mutate: func(o *tg) { o.Spec.ServiceCoordination.Strategy = "" }},
		{name: "coordination unknown", mutate: func(o *tg) { o.Spec.ServiceCoordination.Strategy = "mixed" }, want: []string{notSupported("spec.serviceCoordination.strategy")}},
		// Load balancing.
		{name: "strategy ring hash", mutate: func(o *tg) { o.Spec.LoadBalancing.Strategy = "ring_hash" }},
		{name: "strategy unset", mutate: func(o *tg) { o.Spec.LoadBalancing.Strategy = "" }},
		{name: "strategy with dash", mutate: func(o *tg) { o.Spec.LoadBalancing.Strategy = "round-robin" }, want: []string{notSupported("spec.loadBalancing.strategy")}},
		{name: "health checking path", mutate: func(o *tg) { o.Spec.LoadBalancing.HealthChecking.Path = "health" }, want: []string{invalid("spec.loadBalancing.healthChecking.path")}},
		{name: "breaker negative counts", mutate: func(o *tg) {
			b := breaker(o)
			b.MaxConnections, b.MaxPendingRequests, b.MaxRequests, b.MaxRetries, b.ConsecutiveErrors =
				ptr.To[int32](-1), ptr.To[int32](-1), ptr.To[int32](-1), ptr.To[int32](-1), ptr.To[int32](-1)
		}, want: []string{invalid(cb + ".maxConnections"), invalid(cb + ".maxPendingRequests"), invalid(cb + ".maxRequests"),
			invalid(cb + ".maxRetries"), invalid(cb + ".consecutiveErrors")}},
		{name: "breaker zero counts", mutate: func(o *tg) { breaker(o).MaxRetries, breaker(o).MaxEjectionPercent = ptr.To[int32](0), ptr.To[int32](0) }},
		{name: "breaker ejection 100", mutate: func(o *tg) { breaker(o).MaxEjectionPercent = ptr.To[int32](100) }},
		{name: "breaker ejection 101", mutate: func(o *tg) { breaker(o).MaxEjectionPercent = ptr.To[int32](101) }, want: []string{invalid(cb + ".maxEjectionPercent")}},
		{name: "breaker ejection negative", mutate: func(o *tg) { breaker(o).MaxEjectionPercent = ptr.To[int32](-1) }, want: []string{invalid(cb + ".maxEjectionPercent")}},
		{name: "breaker interval zero", mutate: func(o *tg) { breaker(o).Interval = dur("0s") }, want: []string{invalid(cb + ".interval")}},
		{name: "breaker ejection time negative", mutate: func(o *tg) { breaker(o).BaseEjectionTime = dur("-30s") }, want: []string{invalid(cb + ".baseEjectionTime")}},
		// Security.
		{name: "tls mode unset", mutate: func(o *tg) { o.Spec.Security.TLSMode = "" }},
		{name: "tls mode unknown", mutate: func(o *tg) { o.Spec.Security.TLSMode = "mutual" }, want: []string{notSupported(sec + ".tlsMode")}},
		{name: "mtls without certificate", mutate: func(o *tg) { o.Spec.Security.MTLS.CertificateRef = nil }, want: []string{required(sec + ".mtls.certificateRef")}},
		{name: "mtls disabled without certificate", mutate: func(o *tg) { o.Spec.Security.MTLS = &gateway.MTLSConfig{} }},
		{name: "mtls certificate name empty", mutate: func(o *tg) { o.Spec.Security.MTLS.CertificateRef.Name = "" }, want: []string{required(sec + ".mtls.certificateRef.name")}},
		{name: "mtls certificate name invalid", mutate: func(o *tg) { o.Spec.Security.MTLS.CertificateRef.Name = "Cert_1" }, want: []string{invalid(sec + ".mtls.certificateRef.name")}},
		{name: "mtls certificate namespace invalid", mutate: func(o *tg) { o.Spec.Security.MTLS.CertificateRef.Namespace = "a.b" }, want: []string{invalid(sec + ".mtls.certificateRef.namespace")}},
		{name: "allowed tag empty", mutate: func(o *tg) { o.Spec.Security.AccessControl.AllowedTags[0] = "" }, want: []string{required(sec + ".accessControl.allowedTags[0]")}},
		{name: "allowed tag whitespace", mutate: func(o *tg) { o.Spec.Security.AccessControl.AllowedTags[0] = "prod server" }, want: []string{invalid(sec + ".accessControl.allowedTags[0]")}},
		{name: "allowed tag acl form", mutate: func(o *tg) { o.Spec.Security.AccessControl.AllowedTags[0] = "tag:prod" }},
		{name: "allowed tag duplicate", mutate: func(o *tg) { o.Spec.Security.AccessControl.AllowedTags[1] = "prod:server" }, want: []string{duplicate(sec + ".accessControl.allowedTags[1]")}},
		{name: "denied tag whitespace", mutate: func(o *tg) { o.Spec.Security.AccessControl.DeniedTags[0] = "dev:\ttesting" }, want: []string{invalid(sec + ".accessControl.deniedTags[0]")}},
		{name: "denied tag duplicate", mutate: func(o *tg) {
			o.Spec.Security.AccessControl.DeniedTags = []string{"dev:testing", "dev:testing"}
		}, want: []string{duplicate(sec + ".accessControl.deniedTags[1]")}},
		{name: "tag allowed and denied", mutate: func(o *tg) {
			o.Spec.Security.AccessControl.DeniedTags = append(o.Spec.Security.AccessControl.DeniedTags, "enterprise:user")
		}, want: []string{invalid(sec + ".accessControl.deniedTags[1]")}},
		// Observability.
		{name: "metrics port unset", mutate: func(o *tg) { o.Spec.Observability.Metrics.Port = nil }},
		{name: "metrics port zero", mutate: func(o *tg) { o.Spec.Observability.Metrics.Port = ptr.To[int32](0) }, want: []string{invalid(obs + ".metrics.port")}},
		{name: "sampling rate zero", mutate: func(o *tg) { o.Spec.Observability.Tracing.SamplingRate = qty("0") }},
		{name: "sampling rate one", mutate: func(o *tg) { o.Spec.Observability.Tracing.SamplingRate = qty("1") }},
		{name: "sampling rate milli", mutate: func(o *tg) { o.Spec.Observability.Tracing.SamplingRate = qty("500m") }},
		{name: "sampling rate above one", mutate: func(o *tg) { o.Spec.Observability.Tracing.SamplingRate = qty("1.5") }, want: []string{invalid(obs + ".tracing.samplingRate")}},
		{name: "sampling rate negative", mutate: func(o *tg) { o.Spec.Observability.Tracing.SamplingRate = qty("-0.1") }, want: []string{invalid(obs + ".tracing.samplingRate")}},
		{name: "jaeger https", mutate: func(o *tg) { o.Spec.Observability.Tracing.JaegerEndpoint = "https://jaeger.example.com/api/traces" }},
		{name: "jaeger without scheme", mutate: func(o *tg) { o.Spec.Observability.Tracing.JaegerEndpoint = "jaeger-collector:14268" }, want: []string{invalid(obs + ".tracing.jaegerEndpoint")}},
		{name: "jaeger udp", mutate: func(o *tg) { o.Spec.Observability.Tracing.JaegerEndpoint = "udp://jaeger:6831" }, want: []string{invalid(obs + ".tracing.jaegerEndpoint")}},
		{name: "log level unset", mutate: func(o *tg) { o.Spec.Observability.Logging.Level = "" }},
		{name: "log level unknown", mutate: func(o *tg) { o.Spec.Observability.Logging.Level = "trace" }, want: []string{notSupported(obs + ".logging.level")}},
		{name: "observability empty", mutate: func(o *tg) { o.Spec.Observability = &gateway.ObservabilityConfig{} }},
		{name: "optional sections nil", mutate: func(o *tg) {
			o.Spec.ServiceCoordination, o.Spec.LoadBalancing, o.Spec.Security, o.Spec.Observability = nil, nil, nil, nil
			o.Spec.Tailnets[0].RouteGeneration = nil
		}},
		{name: "optional subsections nil", mutate: func(o *tg) {
			o.Spec.LoadBalancing = &gateway.GatewayLoadBalancingConfig{}
			o.Spec.Security = &gateway.SecurityConfig{}
			o.Spec.Observability = &gateway.ObservabilityConfig{Metrics: &gateway.MetricsConfig{}, Tracing: &gateway.TracingConfig{}, Logging: &gateway.LoggingConfig{}}
			o.Spec.Tailnets[0].RouteGeneration = &gateway.RouteGenerationConfig{Ingress: &gateway.IngressRouteConfig{}, Egress: &gateway.EgressRouteConfig{RetryPolicy: &gateway.RetryPolicy{}}}
		}},
		{
			name: "all problems at once",
			mutate: func(o *tg) {
				o.Spec.GatewayRef = gateway.LocalPolicyTargetReference{Kind: "Service"}
				o.Spec.Tailnets[1].Name = "prod-tailnet"
				o.Spec.Tailnets[1].TailscaleTailnetRef.Namespace = "x"
				ingress(o).HostPattern = "{x}.example.com"
				egress(o).Timeout = dur("-1s")
				o.Spec.LoadBalancing.Strategy = "fastest"
				o.Spec.Security.MTLS.CertificateRef = nil
				o.Spec.Observability.Logging.Level = "verbose"
			},
			want: []string{
				required("spec.gatewayRef.name"), notSupported("spec.gatewayRef.kind"),
				duplicate("spec.tailnets[1].name"), forbidden("spec.tailnets[1].tailscaleTailnetRef.namespace"),
				invalid(ing + ".hostPattern"), invalid(eg + ".timeout"), notSupported("spec.loadBalancing.strategy"),
				required(sec + ".mtls.certificateRef"), notSupported(obs + ".logging.level"),
			},
		},
	})
}

// --- updates ---

func TestValidateUpdate(t *testing.T) {
	type updateCase struct {
		name string
		// mutate changes the new object; old is the valid object at resourceVersion 1.
		mutate func(meta *metav1.ObjectMeta)
		want   []string
	}
	cases := []updateCase{
		{name: "unchanged"},
		{name: "labels changed", mutate: func(m *metav1.ObjectMeta) { m.Labels = map[string]string{"a": "b"} }},
		{name: "name changed", mutate: func(m *metav1.ObjectMeta) { m.Name = "other" }, want: []string{invalid("metadata.name")}},
		{name: "resourceVersion missing", mutate: func(m *metav1.ObjectMeta) { m.ResourceVersion = "" }, want: []string{invalid("metadata.resourceVersion")}},
		{name: "bad label reported once", mutate: func(m *metav1.ObjectMeta) { m.Labels = map[string]string{"bad key": "x"} }, want: []string{invalid("metadata.labels")}},
	}
	run := func(t *testing.T, kind string, update func(mutate func(*metav1.ObjectMeta), breakSpec bool) field.ErrorList, specErr string, namespaced bool) {
		allCases := slices.Clone(cases)
		if namespaced {
			allCases = append(allCases, updateCase{name: "namespace changed", mutate: func(m *metav1.ObjectMeta) { m.Namespace = "other" }, want: []string{invalid("metadata.namespace")}})
		}
		for _, tc := range allCases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				checkErrors(t, update(tc.mutate, false), tc.want)
			})
		}
		t.Run(kind+"/spec rules apply", func(t *testing.T) {
			checkErrors(t, update(nil, true), []string{specErr})
		})
	}

	run(t, "TailscaleTailnet", func(mutate func(*metav1.ObjectMeta), breakSpec bool) field.ErrorList {
		old := validTailnet()
		old.ResourceVersion = "1"
		obj := old.DeepCopy()
		if mutate != nil {
			mutate(&obj.ObjectMeta)
		}
		if breakSpec {
			obj.Spec.Tailnet = ""
		}
		return ValidateTailscaleTailnetUpdate(obj, old)
	}, required("spec.tailnet"), false)

	run(t, "TailscaleEndpoints", func(mutate func(*metav1.ObjectMeta), breakSpec bool) field.ErrorList {
		old := validEndpoints()
		old.ResourceVersion = "1"
		obj := old.DeepCopy()
		if mutate != nil {
			mutate(&obj.ObjectMeta)
		}
		if breakSpec {
			obj.Spec.Endpoints[0].Port = 0
		}
		return ValidateTailscaleEndpointsUpdate(obj, old)
	}, invalid("spec.endpoints[0].port"), true)

	run(t, "TailscaleServices", func(mutate func(*metav1.ObjectMeta), breakSpec bool) field.ErrorList {
		old := validServices()
		old.ResourceVersion = "1"
		obj := old.DeepCopy()
		if mutate != nil {
			mutate(&obj.ObjectMeta)
		}
		if breakSpec {
			obj.Spec.Selector = nil
		}
		return ValidateTailscaleServicesUpdate(obj, old)
	}, required("spec.selector"), true)

	run(t, "TailscaleGateway", func(mutate func(*metav1.ObjectMeta), breakSpec bool) field.ErrorList {
		old := validGateway()
		old.ResourceVersion = "1"
		obj := old.DeepCopy()
		if mutate != nil {
			mutate(&obj.ObjectMeta)
		}
		if breakSpec {
			obj.Spec.Tailnets = nil
		}
		return ValidateTailscaleGatewayUpdate(obj, old)
	}, required("spec.tailnets"), true)
}

// --- the examples of the API contract this project implements (the shapes examples/ holds) ---

var testScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	install.Install(s)
	return s
}()

// withDefaults applies the v1alpha1 defaults, as the API server does before validating.
func withDefaults[T runtime.Object](t *testing.T, obj T) T {
	t.Helper()
	ext, err := testScheme.ConvertToVersion(obj.DeepCopyObject(), v1alpha1.SchemeGroupVersion)
	if err != nil {
		t.Fatalf("convert to v1alpha1: %v", err)
	}
	testScheme.Default(ext)
	in, err := testScheme.ConvertToVersion(ext, gateway.SchemeGroupVersion)
	if err != nil {
		t.Fatalf("convert to internal: %v", err)
	}
	return in.(T)
}

func objectMeta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}

func TestSpecExamples(t *testing.T) {
	healthCheck := func(interval string) *gateway.HealthCheckConfig {
		return &gateway.HealthCheckConfig{Enabled: ptr.To(true), Path: "/health", Interval: dur(interval)}
	}
	webSelector := func() *metav1.LabelSelector {
		return &metav1.LabelSelector{
			MatchLabels: map[string]string{"service-type": "web", "environment": "production"},
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "region", Operator: metav1.LabelSelectorOpIn, Values: []string{"east", "west"}},
			},
		}
	}
	tailnetRef := func(name string) gateway.LocalPolicyTargetReference {
		return gateway.LocalPolicyTargetReference{Kind: "TailscaleTailnet", Name: name}
	}
	envoyGateway := gateway.LocalPolicyTargetReference{Kind: "Gateway", Name: "envoy-gateway", Namespace: "envoy-gateway-system"}
	autoProxy := &gateway.ProxyConfig{
		Replicas: ptr.To[int32](2), ConnectionType: "bidirectional",
		Ports: []gateway.ProxyPort{{Port: 80, Protocol: "TCP"}, {Port: 443, Protocol: "TCP"}},
	}

	examples := []struct {
		name string
		obj  runtime.Object
		// want lists the errors of examples that break the documents' own rules.
		want []string
		// warns: a TailscaleServices accepted with the UnselectedTemplate warning.
		warns bool
	}{
		{
			name: "workflow.md TailscaleTailnet",
			obj: &gateway.TailscaleTailnet{
				ObjectMeta: objectMeta("production-tailnet", ""),
				Spec: gateway.TailscaleTailnetSpec{
					OAuthSecretName: "tailscale-oauth-secret",
					Tags:            []string{"tag:k8s-operator", "tag:production", "tag:cluster-main"},
				},
			},
		},
		{
			name: "tailscale-endpoints.md basic",
			obj: &gateway.TailscaleEndpoints{
				ObjectMeta: objectMeta("web-services", "default"),
				Spec: gateway.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []gateway.TailscaleEndpoint{{
					Name: "api-server", TailscaleIP: "100.64.0.10", TailscaleFQDN: "api-server.company.ts.net", Port: 8080,
					Protocol: "HTTP", ExternalTarget: "api.internal.company.com:8080", HealthCheck: healthCheck("30s"),
				}}},
			},
		},
		{
			name: "tailscale-endpoints.md multi-protocol",
			obj: &gateway.TailscaleEndpoints{
				ObjectMeta: objectMeta("backend-services", "production"),
				Spec: gateway.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []gateway.TailscaleEndpoint{
					{
						Name: "user-api", TailscaleIP: "100.64.0.10", TailscaleFQDN: "user-api.company.ts.net", Port: 8080,
						Protocol: "HTTP", ExternalTarget: "users.internal.company.com:8080", HealthCheck: healthCheck("30s"),
					},
					{
						Name: "postgres", TailscaleIP: "100.64.0.11", TailscaleFQDN: "postgres.company.ts.net", Port: 5432,
						Protocol: "TCP", ExternalTarget: "postgres.internal.company.com:5432",
						HealthCheck: &gateway.HealthCheckConfig{Enabled: ptr.To(true), Type: "TCP", Interval: dur("60s")},
					},
					{
						Name: "grpc-service", TailscaleIP: "100.64.0.12", TailscaleFQDN: "grpc.company.ts.net", Port: 9090,
						Protocol: "gRPC", ExternalTarget: "grpc.internal.company.com:9090",
						HealthCheck: &gateway.HealthCheckConfig{Enabled: ptr.To(true), Type: "HTTP", Path: "/grpc.health.v1.Health/Check"},
					},
				}},
			},
		},
		{
			name: "tailscale-endpoints.md tag-based discovery",
			obj: &gateway.TailscaleEndpoints{
				ObjectMeta: objectMeta("auto-discovery", "default"),
				Spec: gateway.TailscaleEndpointsSpec{
					Tailnet: "company.ts.net",
					TagSelectors: []gateway.TagSelector{
						{Key: "env", Operator: "In", Values: []string{"production", "staging"}},
						{Key: "service-type", Operator: "Exists"},
					},
					ServiceDiscovery: &gateway.ServiceDiscoveryConfig{
						AutoRegister: ptr.To(true),
						VIPServices:  []gateway.VIPServiceConfig{{Name: "web-cluster", Port: 80, TargetEndpoint: "web-service"}},
					},
				},
			},
		},
		{
			name: "tailscale-endpoints.md advanced health checks",
			obj: &gateway.TailscaleEndpoints{
				ObjectMeta: objectMeta("monitored-services", "default"),
				Spec: gateway.TailscaleEndpointsSpec{Tailnet: "company.ts.net", Endpoints: []gateway.TailscaleEndpoint{{
					Name: "api-service", TailscaleIP: "100.64.0.20", TailscaleFQDN: "api.company.ts.net", Port: 8080,
					Protocol: "HTTP", ExternalTarget: "api.backend.com:8080", HealthCheck: validHealthCheck(),
				}}},
			},
		},
		{
			name: "tailscale-endpoints.md dynamic discovery",
			obj: &gateway.TailscaleEndpoints{
				ObjectMeta: objectMeta("dynamic", "default"),
				Spec: gateway.TailscaleEndpointsSpec{
					Tailnet:      "company.ts.net",
					TagSelectors: []gateway.TagSelector{{Key: "service-type", Operator: "Exists"}},
				},
			},
		},
		{
			name: "tailscale-services.md auto-created TailscaleEndpoints",
			obj: &gateway.TailscaleEndpoints{
				ObjectMeta: metav1.ObjectMeta{
					Name: "production-web-service-auto", Namespace: "production",
					Annotations: map[string]string{"tailscale-gateway.com/auto-provisioned": "true"},
				},
				Spec: gateway.TailscaleEndpointsSpec{
					Tailnet: "production-tailnet",
					Tags:    []string{"tag:auto-web", "tag:k8s-proxy", "tag:production"},
					Proxy:   autoProxy,
				},
			},
		},
		{
			// The template labels lack "region", so the selector's "region In (east, west)" does not
			// select the endpoints the template provisions.
			name: "tailscale-services.md core fields",
			obj: &gateway.TailscaleServices{
				ObjectMeta: objectMeta("web-service", "default"),
				Spec: gateway.TailscaleServicesSpec{
					Selector: webSelector(),
					VIPService: &gateway.VIPServiceSpec{
						Name: "svc:web-service", Ports: []string{"tcp:80", "tcp:443"},
						Tags: []string{"tag:web-service", "tag:production"}, Comment: "Production web service",
						AutoApprove: ptr.To(true), Annotations: map[string]string{"environment": "production", "team": "backend"},
					},
					LoadBalancing: &gateway.LoadBalancingConfig{
						Strategy: "round-robin",
						HealthCheck: &gateway.HealthCheckConfig{
							Enabled: ptr.To(true), Path: "/health", Interval: dur("30s"), Timeout: dur("5s"),
							HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](3),
						},
						Weights: map[string]int32{"web-east": 70, "web-west": 30},
						FailoverConfig: &gateway.FailoverConfig{
							PrimaryEndpoints: []string{"web-east"}, SecondaryEndpoints: []string{"web-west"}, FailbackDelay: dur("60s"),
						},
					},
					ServiceDiscovery: &gateway.ServiceDiscoverySpec{
						DiscoverVIPServices: true,
						VIPServiceSelector: &gateway.VIPServiceSelector{
							Tags: []string{"tag:shared-service"}, ServiceNames: []string{"svc:external-api"},
						},
						ExternalServices: []gateway.ExternalService{
							{Name: "external-api", Address: "api.example.com", Port: 443, Protocol: "HTTPS", Weight: ptr.To[int32](10)},
						},
					},
					EndpointTemplate: &gateway.EndpointTemplate{
						Tailnet: "production-tailnet", Tags: []string{"tag:auto-web", "tag:k8s"},
						Proxy: &gateway.ProxyConfig{
							Replicas: ptr.To[int32](3), ConnectionType: "bidirectional",
							Ports: []gateway.ProxyPort{{Port: 80, Protocol: "TCP"}},
						},
						Labels: map[string]string{"service-type": "web", "environment": "production", "auto-provisioned": "true"},
					},
				},
			},
			warns: true,
		},
		{
			// "region: auto" is not in the selector's "region In (east, west)".
			name: "tailscale-services.md complete example",
			obj: &gateway.TailscaleServices{
				ObjectMeta: objectMeta("production-web-service", "production"),
				Spec: gateway.TailscaleServicesSpec{
					Selector: webSelector(),
					VIPService: &gateway.VIPServiceSpec{
						Name: "svc:production-web", Ports: []string{"tcp:80", "tcp:443"},
						Tags:        []string{"tag:web-service", "tag:production", "tag:multi-region"},
						Comment:     "Production web service with multi-region failover",
						AutoApprove: ptr.To(true),
						Annotations: map[string]string{"team": "platform", "environment": "production", "monitoring": "enabled"},
					},
					LoadBalancing: &gateway.LoadBalancingConfig{
						Strategy: "failover",
						HealthCheck: &gateway.HealthCheckConfig{
							Enabled: ptr.To(true), Path: "/health", Interval: dur("15s"), Timeout: dur("3s"),
							HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](3),
						},
						FailoverConfig: &gateway.FailoverConfig{
							PrimaryEndpoints: []string{"web-east"}, SecondaryEndpoints: []string{"web-west"}, FailbackDelay: dur("300s"),
						},
					},
					ServiceDiscovery: &gateway.ServiceDiscoverySpec{
						DiscoverVIPServices: true,
						VIPServiceSelector:  &gateway.VIPServiceSelector{Tags: []string{"tag:shared-infrastructure"}},
						ExternalServices: []gateway.ExternalService{
							{Name: "cdn-service", Address: "cdn.example.com", Port: 443, Protocol: "HTTPS", Weight: ptr.To[int32](5)},
						},
					},
					EndpointTemplate: &gateway.EndpointTemplate{
						Tailnet: "production-tailnet", Tags: []string{"tag:auto-web", "tag:k8s-proxy", "tag:production"},
						Proxy: autoProxy,
						Labels: map[string]string{
							"service-type": "web", "environment": "production", "region": "auto", "auto-provisioned": "true",
						},
					},
				},
			},
			warns: true,
		},
		{
			name: "tailscale-services.md weighted, external services and basic selector snippets",
			obj: &gateway.TailscaleServices{
				ObjectMeta: objectMeta("weighted", "default"),
				Spec: gateway.TailscaleServicesSpec{
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"service-type": "web", "environment": "production"}},
					LoadBalancing: &gateway.LoadBalancingConfig{
						Strategy: "weighted",
						Weights:  map[string]int32{"web-east": 70, "web-west": 20, "web-backup": 10},
					},
					ServiceDiscovery: &gateway.ServiceDiscoverySpec{ExternalServices: []gateway.ExternalService{
						{Name: "legacy-api", Address: "legacy.internal.com", Port: 8080, Protocol: "HTTP", Weight: ptr.To[int32](5)},
						{Name: "cloud-service", Address: "api.cloud-provider.com", Port: 443, Protocol: "HTTPS", Weight: ptr.To[int32](15)},
					}},
					EndpointTemplate: &gateway.EndpointTemplate{
						Tailnet: "production-tailnet", Tags: []string{"tag:auto-web", "tag:k8s-proxy"}, Proxy: autoProxy,
						Labels: map[string]string{"service-type": "web", "environment": "production", "region": "auto"},
					},
				},
			},
		},
		{
			name: "tailscale-services.md failover, advanced selector and VIP discovery snippets",
			obj: &gateway.TailscaleServices{
				ObjectMeta: objectMeta("failover", "default"),
				Spec: gateway.TailscaleServicesSpec{
					Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "region", Operator: "In", Values: []string{"east", "west", "central"}},
						{Key: "tier", Operator: "NotIn", Values: []string{"deprecated"}},
						{Key: "auto-provisioned", Operator: "Exists"},
					}},
					VIPService: &gateway.VIPServiceSpec{Name: "svc:shared-database"},
					LoadBalancing: &gateway.LoadBalancingConfig{
						Strategy: "failover",
						FailoverConfig: &gateway.FailoverConfig{
							PrimaryEndpoints:   []string{"web-primary-east", "web-primary-west"},
							SecondaryEndpoints: []string{"web-backup-central"},
							FailbackDelay:      dur("120s"),
						},
					},
					ServiceDiscovery: &gateway.ServiceDiscoverySpec{
						DiscoverVIPServices: true,
						VIPServiceSelector: &gateway.VIPServiceSelector{
							Tags: []string{"tag:shared-infrastructure"}, ServiceNames: []string{"svc:database", "svc:cache"},
						},
					},
				},
			},
		},
		{
			name: "tailscale-services.md least connections snippet",
			obj: &gateway.TailscaleServices{
				ObjectMeta: objectMeta("least-connections", "default"),
				Spec: gateway.TailscaleServicesSpec{
					Selector:      &metav1.LabelSelector{MatchLabels: map[string]string{"service-type": "web"}},
					LoadBalancing: &gateway.LoadBalancingConfig{Strategy: "least-connections"},
				},
			},
		},
		{
			name: "tailscale-gateway.md basic",
			obj: &gateway.TailscaleGateway{
				ObjectMeta: objectMeta("production-gateway", "production"),
				Spec: gateway.TailscaleGatewaySpec{
					GatewayRef: envoyGateway,
					Tailnets: []gateway.TailnetConfiguration{{
						Name: "main-tailnet", TailscaleTailnetRef: tailnetRef("main-tailnet"),
						RouteGeneration: &gateway.RouteGenerationConfig{Ingress: &gateway.IngressRouteConfig{
							Enabled: true, HostPattern: "{service}.company.ts.net",
						}},
					}},
				},
			},
		},
		{
			name: "tailscale-gateway.md multi-tailnet",
			obj: &gateway.TailscaleGateway{
				ObjectMeta: objectMeta("multi-tailnet-gateway", "production"),
				Spec: gateway.TailscaleGatewaySpec{
					GatewayRef: envoyGateway,
					Tailnets: []gateway.TailnetConfiguration{
						{
							Name: "prod-tailnet", TailscaleTailnetRef: tailnetRef("prod-tailnet"), Priority: ptr.To[int32](100),
							RouteGeneration: &gateway.RouteGenerationConfig{
								Ingress: &gateway.IngressRouteConfig{Enabled: true, HostPattern: "{service}.prod.company.ts.net", PathPrefix: "/"},
								Egress: &gateway.EgressRouteConfig{
									Enabled: true, HostPattern: "{service}.prod.internal", PathPrefix: "/prod/{service}/", Timeout: dur("30s"),
								},
							},
						},
						{
							Name: "staging-tailnet", TailscaleTailnetRef: tailnetRef("staging-tailnet"), Priority: ptr.To[int32](50),
							RouteGeneration: &gateway.RouteGenerationConfig{
								Ingress: &gateway.IngressRouteConfig{Enabled: true, HostPattern: "{service}.staging.company.ts.net", PathPrefix: "/staging/"},
							},
						},
					},
					ServiceCoordination: &gateway.ServiceCoordinationConfig{Enabled: true, Strategy: "shared"},
					LoadBalancing: &gateway.GatewayLoadBalancingConfig{
						Strategy:       "round_robin",
						HealthChecking: &gateway.HealthCheckConfig{Enabled: ptr.To(true), Interval: dur("30s"), Timeout: dur("10s")},
					},
				},
			},
		},
		{
			name: "tailscale-gateway.md high availability",
			obj: &gateway.TailscaleGateway{
				ObjectMeta: objectMeta("ha-gateway", "production"),
				Spec: gateway.TailscaleGatewaySpec{
					GatewayRef: envoyGateway,
					Tailnets: []gateway.TailnetConfiguration{{
						Name: "primary-tailnet", TailscaleTailnetRef: tailnetRef("primary-tailnet"),
						RouteGeneration: &gateway.RouteGenerationConfig{Ingress: &gateway.IngressRouteConfig{
							Enabled: true, HostPattern: "{service}.company.ts.net",
							DefaultBackend: &gateway.BackendConfig{
								Weight:      ptr.To[int32](100),
								HealthCheck: &gateway.HealthCheckConfig{Enabled: ptr.To(true), Interval: dur("15s")},
							},
						}},
					}},
					Security: &gateway.SecurityConfig{
						TLSMode: "strict",
						MTLS: &gateway.MTLSConfig{Enabled: true, CertificateRef: &gateway.SecretReference{
							Name: "gateway-mtls-cert", Namespace: "tailscale-gateway-system",
						}},
						AccessControl: &gateway.AccessControlConfig{
							AllowedTags: []string{"prod:server", "enterprise:user"}, DeniedTags: []string{"dev:testing"},
						},
					},
					Observability: &gateway.ObservabilityConfig{
						Metrics: &gateway.MetricsConfig{Enabled: true, Port: ptr.To[int32](9090)},
						Tracing: &gateway.TracingConfig{Enabled: true, SamplingRate: qty("0.1"), JaegerEndpoint: "http://jaeger-collector:14268/api/traces"},
						Logging: &gateway.LoggingConfig{Level: "info", AccessLogs: true},
					},
				},
			},
		},
		{
			name: "tailscale-gateway.md advanced routing",
			obj: &gateway.TailscaleGateway{
				ObjectMeta: objectMeta("advanced-routing-gateway", "production"),
				Spec: gateway.TailscaleGatewaySpec{
					GatewayRef: envoyGateway,
					Tailnets: []gateway.TailnetConfiguration{{
						Name: "main-tailnet", TailscaleTailnetRef: tailnetRef("main-tailnet"),
						RouteGeneration: &gateway.RouteGenerationConfig{
							Ingress: &gateway.IngressRouteConfig{
								Enabled: true, HostPattern: "{service}.company.ts.net", PathPrefix: "/",
								Filters: []gateway.HTTPRouteFilter{{
									Type: "RequestHeaderModifier",
									RequestHeaderModifier: &gateway.HTTPHeaderFilter{Add: []gateway.HTTPHeader{
										{Name: "X-Gateway-Version", Value: "v1.0.0"},
										{Name: "X-Request-ID", Value: "{request_id}"},
									}},
								}},
							},
							Egress: &gateway.EgressRouteConfig{
								Enabled: true, HostPattern: "{service}.internal.company.com", PathPrefix: "/api/{service}/",
								RewriteRules: []gateway.RewriteRule{{From: "/api/{service}/", To: "/"}},
								Timeout:      dur("30s"),
								RetryPolicy: &gateway.RetryPolicy{
									NumRetries: ptr.To[int32](3), PerTryTimeout: dur("10s"),
									BackoffBaseInterval: dur("1s"), BackoffMaxInterval: dur("10s"),
								},
							},
						},
					}},
					LoadBalancing: &gateway.GatewayLoadBalancingConfig{
						Strategy: "least_request",
						HealthChecking: &gateway.HealthCheckConfig{
							Enabled: ptr.To(true), Interval: dur("15s"), Timeout: dur("5s"),
							HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](3),
						},
						CircuitBreaker: &gateway.CircuitBreakerConfig{
							Enabled: true, MaxConnections: ptr.To[int32](1000), MaxPendingRequests: ptr.To[int32](100),
							MaxRequests: ptr.To[int32](1000), MaxRetries: ptr.To[int32](3), ConsecutiveErrors: ptr.To[int32](5),
							Interval: dur("30s"), BaseEjectionTime: dur("30s"), MaxEjectionPercent: ptr.To[int32](50),
						},
					},
				},
			},
		},
		{
			name: "workflow.md TailscaleGateway",
			obj: &gateway.TailscaleGateway{
				ObjectMeta: objectMeta("main-tailscale-gateway", "default"),
				Spec: gateway.TailscaleGatewaySpec{
					GatewayRef: gateway.LocalPolicyTargetReference{Name: "main-gateway"},
					Tailnets: []gateway.TailnetConfiguration{{
						Name: "production", TailscaleTailnetRef: gateway.LocalPolicyTargetReference{Name: "production-tailnet"},
						ServiceDiscovery: &gateway.TailnetServiceDiscovery{Enabled: true},
						RouteGeneration: &gateway.RouteGenerationConfig{
							Ingress: &gateway.IngressRouteConfig{HostPattern: "{service}.production.gateway.local"},
							Egress:  &gateway.EgressRouteConfig{PathPrefix: "/api/{service}/"},
						},
					}},
				},
			},
		},
		{
			name: "tailscale-gateway.md best practices",
			obj: &gateway.TailscaleGateway{
				ObjectMeta: objectMeta("best-practices", "default"),
				Spec: gateway.TailscaleGatewaySpec{
					GatewayRef: gateway.LocalPolicyTargetReference{Name: "envoy-gateway"},
					Tailnets: []gateway.TailnetConfiguration{
						{Name: "production", TailscaleTailnetRef: tailnetRef("production"), Priority: ptr.To[int32](100)},
						{Name: "staging", TailscaleTailnetRef: tailnetRef("staging"), Priority: ptr.To[int32](50)},
						{Name: "development", TailscaleTailnetRef: tailnetRef("development"), Priority: ptr.To[int32](10)},
					},
					LoadBalancing: &gateway.GatewayLoadBalancingConfig{HealthChecking: &gateway.HealthCheckConfig{
						Enabled: ptr.To(true), Interval: dur("30s"), Timeout: dur("10s"),
						HealthyThreshold: ptr.To[int32](2), UnhealthyThreshold: ptr.To[int32](3),
					}},
					Security: &gateway.SecurityConfig{
						TLSMode:       "strict",
						AccessControl: &gateway.AccessControlConfig{AllowedTags: []string{"prod:server"}},
					},
					Observability: &gateway.ObservabilityConfig{
						Metrics: &gateway.MetricsConfig{Enabled: true},
						Tracing: &gateway.TracingConfig{Enabled: true, SamplingRate: qty("0.1")},
						Logging: &gateway.LoggingConfig{Level: "info", AccessLogs: true},
					},
				},
			},
		},
	}

	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			var errs field.ErrorList
			switch obj := withDefaults(t, ex.obj).(type) {
			case *gateway.TailscaleTailnet:
				errs = ValidateTailscaleTailnet(obj)
			case *gateway.TailscaleEndpoints:
				errs = ValidateTailscaleEndpoints(obj)
			case *gateway.TailscaleServices:
				errs = ValidateTailscaleServices(obj)
				if got := TailscaleServicesWarnings(obj); (len(got) > 0) != ex.warns {
					t.Errorf("warnings %q, want a warning: %v", got, ex.warns)
				}
			case *gateway.TailscaleGateway:
				errs = ValidateTailscaleGateway(obj)
			default:
				t.Fatalf("unexpected type %T", obj)
			}
			checkErrors(t, errs, ex.want)
		})
	}
}

// selfSignedPEM is a PEM certificate of a fresh self-signed CA.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// A template whose labels the selector does not match is accepted with a warning naming both.
func TestTailscaleServicesWarnings(t *testing.T) {
	obj := validServices()
	if w := TailscaleServicesWarnings(obj); len(w) != 0 {
		t.Errorf("matching template: warnings %q", w)
	}
	obj.Spec.EndpointTemplate.Labels["region"] = "auto"
	w := TailscaleServicesWarnings(obj)
	if len(w) != 1 || !strings.Contains(w[0], "region=auto") || !strings.Contains(w[0], "region in (east,west)") {
		t.Errorf("template labels outside the selector: warnings %q, want one naming the labels and the selector", w)
	}
	obj.Spec.Selector = nil
	if w := TailscaleServicesWarnings(obj); len(w) != 0 {
		t.Errorf("without a selector (an error, not a warning): warnings %q", w)
	}
}
