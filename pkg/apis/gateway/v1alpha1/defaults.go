package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// Defaults documented by the API.
const (
	DefaultHealthCheckPath            = "/"
	DefaultHealthCheckInterval        = 30 * time.Second
	DefaultHealthCheckTimeout         = 10 * time.Second
	DefaultHealthyThreshold     int32 = 2
	DefaultUnhealthyThreshold   int32 = 3
	DefaultExpectedStatus       int32 = 200
	DefaultTailnetPriority      int32 = 100
	DefaultPathPrefix                 = "/"
	DefaultOAuthSecretNamespace       = "tailscale-gateway-system"
	DefaultProxyConnectionType        = "bidirectional"
	DefaultGatewayGroup               = "gateway.networking.k8s.io"
	DefaultGatewayKind                = "Gateway"
	TailscaleTailnetKind              = "TailscaleTailnet"
)

func addDefaultingFuncs(scheme *runtime.Scheme) error {
	return RegisterDefaults(scheme)
}

// SetDefaults_TailscaleTailnetSpec defaults the tailnet to the credentials' own and the Secret's namespace.
func SetDefaults_TailscaleTailnetSpec(obj *TailscaleTailnetSpec) {
	if obj.Tailnet == "" {
		obj.Tailnet = DefaultTailnet
	}
	if obj.OAuthSecretName != "" && obj.OAuthSecretNamespace == "" {
		obj.OAuthSecretNamespace = DefaultOAuthSecretNamespace
	}
}

// SetDefaults_AllowedNamespaces defaults from to All. An unset allowedNamespaces stays unset
// (and admits every namespace): defaulting it would change every stored tailnet on its next read.
func SetDefaults_AllowedNamespaces(obj *AllowedNamespaces) {
	if obj.From == "" {
		obj.From = NamespacesFromAll
	}
}

// SetDefaults_HealthCheckConfig applies the documented health check defaults. The timeout
// defaults to 10s, or to half the interval when the interval is 10s or shorter.
func SetDefaults_HealthCheckConfig(obj *HealthCheckConfig) {
	if obj.Enabled == nil {
		obj.Enabled = ptr.To(false)
	}
	if obj.Type == "" {
		obj.Type = ProtocolHTTP
	}
	if obj.Path == "" && (obj.Type == ProtocolHTTP || obj.Type == ProtocolHTTPS) {
		obj.Path = DefaultHealthCheckPath
	}
	if obj.Interval == nil {
		obj.Interval = &metav1.Duration{Duration: DefaultHealthCheckInterval}
	}
	if obj.Timeout == nil {
		// The documented 10s, unless the interval is so short that 10s would not fit in it.
		timeout := DefaultHealthCheckTimeout
		if obj.Interval.Duration <= timeout && obj.Interval.Duration > 0 {
			timeout = obj.Interval.Duration / 2
		}
		obj.Timeout = &metav1.Duration{Duration: timeout}
	}
	if obj.HealthyThreshold == nil {
		obj.HealthyThreshold = ptr.To(DefaultHealthyThreshold)
	}
	if obj.UnhealthyThreshold == nil {
		obj.UnhealthyThreshold = ptr.To(DefaultUnhealthyThreshold)
	}
	if obj.ExpectedStatus == nil && (obj.Type == ProtocolHTTP || obj.Type == ProtocolHTTPS) {
		obj.ExpectedStatus = ptr.To(DefaultExpectedStatus)
	}
}

// SetDefaults_ServiceDiscoveryConfig registers VIP services automatically unless told otherwise.
func SetDefaults_ServiceDiscoveryConfig(obj *ServiceDiscoveryConfig) {
	if obj.AutoRegister == nil {
		obj.AutoRegister = ptr.To(true)
	}
}

// SetDefaults_ProxyConfig defaults to one bidirectional proxy.
func SetDefaults_ProxyConfig(obj *ProxyConfig) {
	if obj.Replicas == nil {
		obj.Replicas = ptr.To[int32](1)
	}
	if obj.ConnectionType == "" {
		obj.ConnectionType = DefaultProxyConnectionType
	}
}

// SetDefaults_ProxyPort defaults the protocol to TCP.
func SetDefaults_ProxyPort(obj *ProxyPort) {
	if obj.Protocol == "" {
		obj.Protocol = string(ProtocolTCP)
	}
}

// SetDefaults_LoadBalancingConfig defaults the strategy to round-robin.
func SetDefaults_LoadBalancingConfig(obj *LoadBalancingConfig) {
	if obj.Strategy == "" {
		obj.Strategy = StrategyRoundRobin
	}
}

// SetDefaults_TailscaleGatewaySpec defaults the Gateway reference's group and kind.
func SetDefaults_TailscaleGatewaySpec(obj *TailscaleGatewaySpec) {
	if obj.GatewayRef.Group == "" {
		obj.GatewayRef.Group = DefaultGatewayGroup
	}
	if obj.GatewayRef.Kind == "" {
		obj.GatewayRef.Kind = DefaultGatewayKind
	}
}

// SetDefaults_TailnetConfiguration defaults the priority and the TailscaleTailnet reference.
func SetDefaults_TailnetConfiguration(obj *TailnetConfiguration) {
	if obj.Priority == nil {
		obj.Priority = ptr.To(DefaultTailnetPriority)
	}
	if obj.TailscaleTailnetRef.Group == "" {
		obj.TailscaleTailnetRef.Group = GroupName
	}
	if obj.TailscaleTailnetRef.Kind == "" {
		obj.TailscaleTailnetRef.Kind = TailscaleTailnetKind
	}
}

// SetDefaults_IngressRouteConfig defaults the path prefix to "/".
func SetDefaults_IngressRouteConfig(obj *IngressRouteConfig) {
	if obj.PathPrefix == "" {
		obj.PathPrefix = DefaultPathPrefix
	}
}

// SetDefaults_ServiceCoordinationConfig defaults the strategy to shared.
func SetDefaults_ServiceCoordinationConfig(obj *ServiceCoordinationConfig) {
	if obj.Strategy == "" {
		obj.Strategy = "shared"
	}
}

// SetDefaults_GatewayLoadBalancingConfig defaults the strategy to round_robin.
func SetDefaults_GatewayLoadBalancingConfig(obj *GatewayLoadBalancingConfig) {
	if obj.Strategy == "" {
		obj.Strategy = "round_robin"
	}
}
