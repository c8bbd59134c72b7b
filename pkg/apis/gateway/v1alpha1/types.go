package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Protocol is an application protocol spoken by an endpoint or checked by a health probe.
// +enum
type Protocol string

// Protocols accepted by endpoints, health checks and external services.
const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTPS Protocol = "HTTPS"
	ProtocolTCP   Protocol = "TCP"
	ProtocolUDP   Protocol = "UDP"
	ProtocolTLS   Protocol = "TLS"
	ProtocolGRPC  Protocol = "gRPC"
)

// TagSelectorOperator relates a tag key to a set of values.
// +enum
type TagSelectorOperator string

// Operators of a TagSelector.
const (
	TagSelectorOpIn           TagSelectorOperator = "In"
	TagSelectorOpNotIn        TagSelectorOperator = "NotIn"
	TagSelectorOpExists       TagSelectorOperator = "Exists"
	TagSelectorOpDoesNotExist TagSelectorOperator = "DoesNotExist"
)

// LoadBalancingStrategy chooses how traffic is spread across the backends of a TailscaleServices.
// +enum
type LoadBalancingStrategy string

// Strategies of a TailscaleServices.
const (
	StrategyRoundRobin       LoadBalancingStrategy = "round-robin"
	StrategyLeastConnections LoadBalancingStrategy = "least-connections"
	StrategyWeighted         LoadBalancingStrategy = "weighted"
	StrategyFailover         LoadBalancingStrategy = "failover"
)

// DefaultTailnet names the tailnet that owns the API credentials ("-" in the Tailscale API).
const DefaultTailnet = "-"

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleTailnet connects the cluster to one Tailscale tailnet: the credentials used to reach the
// Tailscale API and the tags given to every device the gateway creates in it.
type TailscaleTailnet struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired connection to the tailnet.
	// +optional
	Spec TailscaleTailnetSpec `json:"spec,omitempty"`
	// Status is the observed state of the tailnet.
	// +optional
	Status TailscaleTailnetStatus `json:"status,omitempty"`
}

// TailscaleTailnetSpec is the desired connection to a tailnet.
type TailscaleTailnetSpec struct {
	// Tailnet is the tailnet's name in the Tailscale API, such as "example.com" or "company.ts.net":
	// a DNS subdomain, an email-style name ("user@example.com"), or "-" (the default), the tailnet
	// the credentials belong to.
	// +optional
	Tailnet string `json:"tailnet,omitempty"`
	// OAuthSecretName names the Secret holding the OAuth client credentials under the keys
	// "client_id" and "client_secret" (a DNS subdomain).
	// +optional
	OAuthSecretName string `json:"oauthSecretName,omitempty"`
	// OAuthSecretNamespace is the namespace of the OAuth Secret (a DNS label). Defaults to
	// "tailscale-gateway-system" when oauthSecretName is set.
	// +optional
	OAuthSecretNamespace string `json:"oauthSecretNamespace,omitempty"`
	// APIBaseURL overrides the Tailscale API base URL (default https://api.tailscale.com): an absolute
	// http or https URL with a host.
	// +optional
	APIBaseURL string `json:"apiBaseURL,omitempty"`
	// Tags are the ACL tags of the devices the server itself creates in this tailnet (its
	// health-check prober): each "tag:<name>", the name starting with a letter and holding
	// letters, digits and '-'; no tag twice. Proxies do not carry them: see proxyTags.
	// +optional
	// +listType=set
	Tags []string `json:"tags,omitempty"`
	// ProxyTags bound the ACL tags any proxy of this tailnet may carry (the tailnet admin's
	// choice): a TailscaleEndpoints' spec.tags and a TailscaleServices'
	// spec.endpointTemplate.tags must be among them, and a proxy whose object names no tags
	// carries the first. Each "tag:<name>" as in tags; no tag twice. Unset, ["tag:k8s"] (the
	// Tailscale Kubernetes operator's default proxy tag). The OAuth client must own them.
	// +optional
	// +listType=atomic
	ProxyTags []string `json:"proxyTags,omitempty"`
	// AllowedNamespaces says which namespaces' TailscaleEndpoints, TailscaleServices and
	// TailscaleGateways may name this tailnet (modelled on Gateway API's
	// listeners[].allowedRoutes.namespaces). Unset, every namespace may: what a tailnet created
	// before the field existed allowed.
	// +optional
	AllowedNamespaces *AllowedNamespaces `json:"allowedNamespaces,omitempty"`
	// ProxyPool is the proxies this tailnet shares among its TailscaleEndpoints without
	// spec.proxy (and the Tailscale Services those endpoints back), in the server's own
	// namespace. Unset, or with replicas 0, there is no pool.
	// +optional
	ProxyPool *ProxyPool `json:"proxyPool,omitempty"`
}

// ProxyPool configures a tailnet's shared proxies: one StatefulSet of replicas, each a tailnet
// device carrying the tailnet's first proxyTags tag, serving the egress of every
// TailscaleEndpoints of the tailnet without spec.proxy (in every namespace the tailnet admits)
// and hosting the VIPs of the TailscaleServices that select them. The pod settings follow the
// Tailscale Kubernetes operator's ProxyClass.
type ProxyPool struct {
	// Replicas is the number of pool proxies, 0 to 16; 0 removes the pool.
	Replicas int32 `json:"replicas"`
	// Resources of the proxy container ("cpu" and "memory" only); unset, the server's
	// defaults for proxies.
	// +optional
	Resources *ProxyResources `json:"resources,omitempty"`
	// Tolerations of the proxy pods.
	// +optional
	// +listType=atomic
	Tolerations []ProxyToleration `json:"tolerations,omitempty"`
	// NodeSelector of the proxy pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// PodLabels are added to the proxy pods' labels; keys in the gateway.tailscale.com/ domain
	// and app.kubernetes.io/name are the server's and refused.
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`
	// PodAnnotations are added to the proxy pods' annotations; keys in the
	// gateway.tailscale.com/ domain are the server's and refused.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
	// PriorityClassName of the proxy pods (a DNS subdomain).
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// ProxyResources are the compute resources of a proxy container.
type ProxyResources struct {
	// Requests by resource name ("cpu", "memory").
	// +optional
	Requests map[string]resource.Quantity `json:"requests,omitempty"`
	// Limits by resource name ("cpu", "memory"); each at least its request.
	// +optional
	Limits map[string]resource.Quantity `json:"limits,omitempty"`
}

// ProxyToleration is a pod toleration (as core/v1 Toleration).
type ProxyToleration struct {
	// Key is the taint key matched; empty with operator Exists matches every taint.
	// +optional
	Key string `json:"key,omitempty"`
	// Operator is Equal (the default) or Exists.
	// +optional
	Operator string `json:"operator,omitempty"`
	// Value is matched with operator Equal; empty with Exists.
	// +optional
	Value string `json:"value,omitempty"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute; empty matches every effect.
	// +optional
	Effect string `json:"effect,omitempty"`
	// TolerationSeconds bounds how long a NoExecute taint is tolerated; only with NoExecute.
	// +optional
	TolerationSeconds *int64 `json:"tolerationSeconds,omitempty"`
}

// NamespacesFrom says which namespaces AllowedNamespaces admits.
type NamespacesFrom string

// Values of AllowedNamespaces.From.
const (
	// NamespacesFromAll admits every namespace.
	NamespacesFromAll NamespacesFrom = "All"
	// NamespacesFromSelector admits the namespaces whose labels match AllowedNamespaces.Selector.
	NamespacesFromSelector NamespacesFrom = "Selector"
	// NamespacesFromNames admits the namespaces listed in AllowedNamespaces.Names.
	NamespacesFromNames NamespacesFrom = "Names"
)

// AllowedNamespaces selects the namespaces whose objects may use a tailnet.
type AllowedNamespaces struct {
	// From is All (the default), Selector or Names.
	// +optional
	From NamespacesFrom `json:"from,omitempty"`
	// Selector matches the labels of the admitted namespaces; required with from: Selector and
	// forbidden with another from.
	// Every namespace carries kubernetes.io/metadata.name=<name>.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	// Names lists the admitted namespaces (DNS labels, each once); required with from: Names and
	// forbidden with another from.
	// +optional
	// +listType=set
	Names []string `json:"names,omitempty"`
}

// TailscaleTailnetStatus is the observed state of a tailnet.
type TailscaleTailnetStatus struct {
	// Conditions describe the connection: Ready, TailnetSynced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// TailnetInfo describes the tailnet as reported by the Tailscale API.
	// +optional
	TailnetInfo *TailnetInfo `json:"tailnetInfo,omitempty"`
	// DeviceCount is the number of devices in the tailnet.
	// +optional
	DeviceCount int32 `json:"deviceCount,omitempty"`
	// ConnectedDeviceCount is the number of devices currently connected to the control plane.
	// +optional
	ConnectedDeviceCount int32 `json:"connectedDeviceCount,omitempty"`
	// LastSyncTime is when the Tailscale API was last read successfully.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
}

// TailnetInfo describes a tailnet.
type TailnetInfo struct {
	// Name is the tailnet's name.
	Name string `json:"name"`
	// MagicDNSSuffix is the DNS suffix of devices in the tailnet, such as "tail1234.ts.net".
	// +optional
	MagicDNSSuffix string `json:"magicDNSSuffix,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleTailnetList is a list of TailscaleTailnet.
type TailscaleTailnetList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items is the list of TailscaleTailnet.
	Items []TailscaleTailnet `json:"items"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleEndpoints is a set of services reachable through a tailnet, usable as backends of
// Gateway API routes.
type TailscaleEndpoints struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec lists the endpoints and how they are discovered and checked.
	// +optional
	Spec TailscaleEndpointsSpec `json:"spec,omitempty"`
	// Status is the observed state of the endpoints.
	// +optional
	Status TailscaleEndpointsStatus `json:"status,omitempty"`
}

// TailscaleEndpointsSpec lists endpoints in one tailnet.
type TailscaleEndpointsSpec struct {
	// Tailnet is the tailnet the endpoints live in: the name of a TailscaleTailnet, or a tailnet
	// domain such as "company.ts.net" that is matched against TailscaleTailnet spec.tailnet.
	Tailnet string `json:"tailnet"`
	// Endpoints are the statically defined endpoints, with unique names. At least one of endpoints,
	// tagSelectors, proxy or ports must be set.
	// +optional
	// +listType=map
	// +listMapKey=name
	Endpoints []TailscaleEndpoint `json:"endpoints,omitempty"`
	// ServiceDiscovery configures VIP services for the endpoints.
	// +optional
	ServiceDiscovery *ServiceDiscoveryConfig `json:"serviceDiscovery,omitempty"`
	// TagSelectors discover endpoints among the tailnet's devices by their tags.
	// +optional
	// +listType=atomic
	TagSelectors []TagSelector `json:"tagSelectors,omitempty"`
	// Tags are ACL tags given to proxy devices created for these endpoints: each "tag:<name>", the name starting with a letter and holding letters, digits and
	// '-'; no tag twice.
	// +optional
	// +listType=set
	Tags []string `json:"tags,omitempty"`
	// Proxy configures tailnet proxies provisioned for these endpoints.
	// +optional
	Proxy *ProxyConfig `json:"proxy,omitempty"`
	// Ports the provisioned proxies serve, written beside proxy; the same as proxy.ports (set one
	// or the other).
	// +optional
	// +listType=atomic
	Ports []ProxyPort `json:"ports,omitempty"`
}

// TailscaleEndpoint is one service reachable through the tailnet.
type TailscaleEndpoint struct {
	// Name identifies the endpoint within the resource (RFC 1123 label, at most 63 characters).
	Name string `json:"name"`
	// TailscaleIP is the endpoint's tailnet address, in 100.64.0.0/10 or fd7a:115c:a1e0::/48.
	TailscaleIP string `json:"tailscaleIP"`
	// TailscaleFQDN is the endpoint's MagicDNS name in the tailnet (a DNS subdomain; a trailing dot is allowed).
	TailscaleFQDN string `json:"tailscaleFQDN"`
	// Port is the endpoint's port (1-65535).
	Port int32 `json:"port"`
	// Protocol is one of HTTP, HTTPS, TCP, UDP, TLS, gRPC.
	Protocol Protocol `json:"protocol"`
	// ExternalTarget is the backend behind the endpoint, as host:port.
	// +optional
	ExternalTarget string `json:"externalTarget,omitempty"`
	// HealthCheck configures active health checking of the endpoint.
	// +optional
	HealthCheck *HealthCheckConfig `json:"healthCheck,omitempty"`
	// Metadata holds additional labels describing the endpoint; Envoy reads them as its host's
	// filter metadata gateway.tailscale.com/metadata.
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
	// TLS configures how Envoy verifies an HTTPS or TLS endpoint it connects to (TLS origination,
	// SNI = tailscaleFQDN). Only for protocol HTTPS or TLS.
	// +optional
	TLS *UpstreamTLSConfig `json:"tls,omitempty"`
}

// UpstreamTLSConfig configures the verification of an endpoint's server certificate.
type UpstreamTLSConfig struct {
	// CACertificate is a PEM bundle of the certificate authorities that verify the endpoint's
	// certificate, whose DNS names must include tailscaleFQDN. When empty, the system CAs of
	// Envoy's image verify it (Tailscale HTTPS certificates are publicly trusted).
	// +optional
	CACertificate string `json:"caCertificate,omitempty"`
}

// HealthCheckConfig configures an active health check.
type HealthCheckConfig struct {
	// Enabled turns health checking on. Defaults to false.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Type is the probe protocol: HTTP, HTTPS, TCP, UDP, TLS or gRPC. Defaults to HTTP.
	// +optional
	Type Protocol `json:"type,omitempty"`
	// Path is the HTTP path probed; must start with "/". Defaults to "/" for HTTP and HTTPS.
	// +optional
	Path string `json:"path,omitempty"`
	// Interval between probes; must be positive. Defaults to 30s.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Timeout of one probe; must be positive and shorter than the interval. Defaults to 10s, or to
	// half the interval when the interval is 10s or shorter.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// HealthyThreshold is the number of consecutive successes that mark the endpoint healthy (at
	// least 1). Defaults to 2.
	// +optional
	HealthyThreshold *int32 `json:"healthyThreshold,omitempty"`
	// UnhealthyThreshold is the number of consecutive failures that mark the endpoint unhealthy (at
	// least 1). Defaults to 3.
	// +optional
	UnhealthyThreshold *int32 `json:"unhealthyThreshold,omitempty"`
	// ExpectedStatus is the HTTP status code of a healthy answer (100-599). Defaults to 200 for HTTP
	// and HTTPS.
	// +optional
	ExpectedStatus *int32 `json:"expectedStatus,omitempty"`
	// Headers are sent with HTTP probes; names and values must be valid HTTP header fields.
	// +optional
	Headers map[string]string `json:"headers,omitempty"`
}

// ServiceDiscoveryConfig configures VIP services for a TailscaleEndpoints.
type ServiceDiscoveryConfig struct {
	// VIPServices are the Tailscale VIP services fronting endpoints of this resource.
	// +optional
	// +listType=map
	// +listMapKey=name
	VIPServices []VIPServiceConfig `json:"vipServices,omitempty"`
	// AutoRegister registers the endpoints as VIP services automatically. Defaults to true.
	// +optional
	AutoRegister *bool `json:"autoRegister,omitempty"`
}

// VIPServiceConfig maps a VIP service port to an endpoint.
type VIPServiceConfig struct {
	// Name is the VIP service's name, as a DNS label ("web") or with the "svc:" prefix ("svc:web"),
	// unique within the list.
	Name string `json:"name"`
	// Port is the VIP service port (1-65535).
	Port int32 `json:"port"`
	// TargetEndpoint names the endpoint that serves the VIP service: one of spec.endpoints when any
	// are declared, else a discovered endpoint (a device's hostname).
	TargetEndpoint string `json:"targetEndpoint"`
}

// TagSelector matches tailnet devices by ACL tag. A device tag "tag:env-production" or
// "tag:env=production" has key "env" and value "production"; "tag:web" has key "web" and no value.
type TagSelector struct {
	// Key is the tag key to match: at most 63 letters, digits, '-', '_' or '.', starting with a
	// letter or digit.
	Key string `json:"key"`
	// Operator is one of In, NotIn, Exists, DoesNotExist.
	Operator TagSelectorOperator `json:"operator"`
	// Values to match, none empty; required for In and NotIn, forbidden for Exists and DoesNotExist.
	// +optional
	// +listType=atomic
	Values []string `json:"values,omitempty"`
}

// ProxyConfig configures tailnet proxy devices.
type ProxyConfig struct {
	// Replicas is the number of proxy devices (0 or more). Defaults to 1.
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// ConnectionType is ingress, egress or bidirectional. Defaults to bidirectional.
	// +optional
	ConnectionType string `json:"connectionType,omitempty"`
	// Ports the proxies serve, each port and protocol once.
	// +optional
	// +listType=atomic
	Ports []ProxyPort `json:"ports,omitempty"`
}

// ProxyPort is one port served by a proxy.
type ProxyPort struct {
	// Port number (1-65535).
	Port int32 `json:"port"`
	// Protocol is TCP or UDP. Defaults to TCP.
	// +optional
	Protocol string `json:"protocol,omitempty"`
}

// TailscaleEndpointsStatus is the observed state of a TailscaleEndpoints.
type TailscaleEndpointsStatus struct {
	// Conditions: Ready, TailnetSynced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Endpoints holds per-endpoint device and health state.
	// +optional
	// +listType=map
	// +listMapKey=name
	Endpoints []EndpointStatus `json:"endpoints,omitempty"`
	// VIPServices holds the state of the VIP services of this resource.
	// +optional
	// +listType=map
	// +listMapKey=name
	VIPServices []VIPServiceStatus `json:"vipServices,omitempty"`
	// TotalEndpoints is the number of endpoints.
	// +optional
	TotalEndpoints int32 `json:"totalEndpoints,omitempty"`
	// HealthyEndpoints is the number of endpoints whose health check passes.
	// +optional
	HealthyEndpoints int32 `json:"healthyEndpoints,omitempty"`
	// Egress records the ports allocated to the endpoints' egress listeners on the proxy that
	// serves them. An endpoint without a port here is not served for egress yet; condition
	// EgressPortsAllocated says why.
	// +optional
	Egress *EgressAllocation `json:"egress,omitempty"`
}

// EgressAllocation is the egress ports of one TailscaleEndpoints, written by the controllers'
// allocator only.
type EgressAllocation struct {
	// Proxy names the proxy (the allocation's scope) the ports are unique on.
	Proxy string `json:"proxy"`
	// Ports are the allocated ports, one per endpoint, endpoint port and protocol.
	// +optional
	// +listType=atomic
	Ports []EgressPort `json:"ports,omitempty"`
}

// EgressPort is the egress listener port of one endpoint.
type EgressPort struct {
	// Endpoint is the endpoint's name.
	Endpoint string `json:"endpoint"`
	// Protocol is UDP for a UDP listener, else TCP.
	Protocol Protocol `json:"protocol"`
	// Port is the endpoint's own port.
	Port int32 `json:"port"`
	// ListenerPort is the proxy's local port for it.
	ListenerPort int32 `json:"listenerPort"`
}

// EndpointStatus is the observed state of one endpoint.
type EndpointStatus struct {
	// Name of the endpoint.
	Name string `json:"name"`
	// Status is Healthy, Unhealthy or Unknown.
	// +optional
	Status string `json:"status,omitempty"`
	// Address is the dialled address, host:port.
	// +optional
	Address string `json:"address,omitempty"`
	// Online reports whether the endpoint's device is connected to the tailnet.
	// +optional
	Online *bool `json:"online,omitempty"`
	// LastSeen is when the device was last connected.
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// LastChecked is when the last health probe finished.
	// +optional
	LastChecked *metav1.Time `json:"lastChecked,omitempty"`
	// Latency of the last health probe.
	// +optional
	Latency *metav1.Duration `json:"latency,omitempty"`
	// Error of the last failed health probe.
	// +optional
	Error string `json:"error,omitempty"`
}

// VIPServiceStatus is the observed state of one VIP service.
type VIPServiceStatus struct {
	// Name of the VIP service.
	Name string `json:"name"`
	// Status is Registered, Pending or Failed.
	// +optional
	Status string `json:"status,omitempty"`
	// VIPAddress is the address allocated to the service.
	// +optional
	VIPAddress string `json:"vipAddress,omitempty"`
	// LastUpdated is when the service was last changed.
	// +optional
	LastUpdated *metav1.Time `json:"lastUpdated,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleEndpointsList is a list of TailscaleEndpoints.
type TailscaleEndpointsList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items is the list of TailscaleEndpoints.
	Items []TailscaleEndpoints `json:"items"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleServices composes TailscaleEndpoints selected by labels into one Tailscale VIP service
// with load balancing, health checking and auto-provisioning.
type TailscaleServices struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired service.
	// +optional
	Spec TailscaleServicesSpec `json:"spec,omitempty"`
	// Status is the observed state of the service.
	// +optional
	Status TailscaleServicesStatus `json:"status,omitempty"`
}

// TailscaleServicesSpec is the desired state of a TailscaleServices.
type TailscaleServicesSpec struct {
	// Selector selects TailscaleEndpoints in the same namespace by label; it must not be empty.
	Selector *metav1.LabelSelector `json:"selector"`
	// VIPService configures the Tailscale VIP service.
	// +optional
	VIPService *VIPServiceSpec `json:"vipService,omitempty"`
	// LoadBalancing configures how traffic is spread across the selected endpoints.
	// +optional
	LoadBalancing *LoadBalancingConfig `json:"loadBalancing,omitempty"`
	// ServiceDiscovery attaches existing VIP services and external backends.
	// +optional
	ServiceDiscovery *ServiceDiscoverySpec `json:"serviceDiscovery,omitempty"`
	// EndpointTemplate provisions a TailscaleEndpoints when none matches the selector.
	// +optional
	EndpointTemplate *EndpointTemplate `json:"endpointTemplate,omitempty"`
}

// VIPServiceSpec describes a Tailscale VIP service.
type VIPServiceSpec struct {
	// Name is the service name, "svc:<dns-label>".
	Name string `json:"name"`
	// Ports are the service's ports, "tcp:N", "udp:N" or a range "tcp:N-M" (ports 1-65535), each
	// once.
	// +optional
	// +listType=set
	Ports []string `json:"ports,omitempty"`
	// Tags are the service's ACL tags: each "tag:<name>", the name starting with a letter and holding letters, digits and
	// '-'; no tag twice.
	// +optional
	// +listType=set
	Tags []string `json:"tags,omitempty"`
	// Comment describes the service in the Tailscale admin console.
	// +optional
	Comment string `json:"comment,omitempty"`
	// AutoApprove approves the gateway's hosts of the service automatically.
	// +optional
	AutoApprove *bool `json:"autoApprove,omitempty"`
	// Annotations are stored on the Tailscale service; keys and values as Kubernetes annotations.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// LoadBalancingConfig configures load balancing of a TailscaleServices.
type LoadBalancingConfig struct {
	// Strategy is round-robin (default), least-connections, weighted or failover.
	// +optional
	Strategy LoadBalancingStrategy `json:"strategy,omitempty"`
	// HealthCheck configures service-level health checking of the backends.
	// +optional
	HealthCheck *HealthCheckConfig `json:"healthCheck,omitempty"`
	// Weights maps endpoint names (DNS labels) to their non-negative share of traffic; required, with
	// at least one weight above zero, when strategy is weighted.
	// +optional
	Weights map[string]int32 `json:"weights,omitempty"`
	// FailoverConfig sets the tiers of the failover strategy; required when strategy is failover.
	// +optional
	FailoverConfig *FailoverConfig `json:"failoverConfig,omitempty"`
}

// FailoverConfig sets primary and secondary tiers of endpoints.
type FailoverConfig struct {
	// PrimaryEndpoints receive traffic while any of them is healthy; required when strategy is
	// failover. Names (DNS labels) of TailscaleEndpoints or external services, each once.
	// +optional
	// +listType=set
	PrimaryEndpoints []string `json:"primaryEndpoints,omitempty"`
	// SecondaryEndpoints receive traffic when no primary endpoint is healthy. Names as in
	// primaryEndpoints, none of them also primary. Unset, every backend not named primary is
	// secondary; set, a backend named in neither list gets no traffic.
	// +optional
	// +listType=set
	SecondaryEndpoints []string `json:"secondaryEndpoints,omitempty"`
	// FailbackDelay is how long primaries must be healthy again before traffic returns to them; not
	// negative.
	// +optional
	FailbackDelay *metav1.Duration `json:"failbackDelay,omitempty"`
}

// ServiceDiscoverySpec attaches existing VIP services and external backends to a TailscaleServices.
type ServiceDiscoverySpec struct {
	// DiscoverVIPServices attaches to existing VIP services instead of creating new ones.
	// +optional
	DiscoverVIPServices bool `json:"discoverVIPServices,omitempty"`
	// VIPServiceSelector selects the VIP services to attach to.
	// +optional
	VIPServiceSelector *VIPServiceSelector `json:"vipServiceSelector,omitempty"`
	// ExternalServices are backends outside the tailnet and the cluster.
	// +optional
	// +listType=map
	// +listMapKey=name
	ExternalServices []ExternalService `json:"externalServices,omitempty"`
}

// VIPServiceSelector selects VIP services by tag or name.
type VIPServiceSelector struct {
	// Tags selects services carrying any of these tags: each "tag:<name>", the name starting with a letter and holding letters, digits and
	// '-'; no tag twice.
	// +optional
	// +listType=set
	Tags []string `json:"tags,omitempty"`
	// ServiceNames selects services by name, "svc:<dns-label>", each once.
	// +optional
	// +listType=set
	ServiceNames []string `json:"serviceNames,omitempty"`
}

// ExternalService is a backend outside the tailnet.
type ExternalService struct {
	// Name identifies the backend: a DNS label, unique within the list.
	Name string `json:"name"`
	// Address is a hostname (a DNS subdomain) or an IP address.
	Address string `json:"address"`
	// Port of the backend (1-65535).
	Port int32 `json:"port"`
	// Protocol is one of HTTP, HTTPS, TCP, UDP, TLS, gRPC.
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`
	// Weight is the backend's non-negative share of traffic.
	// +optional
	Weight *int32 `json:"weight,omitempty"`
}

// EndpointTemplate describes the TailscaleEndpoints provisioned for a TailscaleServices.
type EndpointTemplate struct {
	// Tailnet of the provisioned endpoints (TailscaleTailnet name or tailnet domain).
	Tailnet string `json:"tailnet"`
	// Tags given to the provisioned proxy devices: each "tag:<name>", the name starting with a letter and holding letters, digits and
	// '-'; no tag twice.
	// +optional
	// +listType=set
	Tags []string `json:"tags,omitempty"`
	// Proxy configures the provisioned proxies.
	// +optional
	Proxy *ProxyConfig `json:"proxy,omitempty"`
	// Ports the provisioned proxies serve, written beside proxy; the same as proxy.ports (set one
	// or the other).
	// +optional
	// +listType=atomic
	Ports []ProxyPort `json:"ports,omitempty"`
	// Labels of the provisioned TailscaleEndpoints; they must match the selector.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// TailscaleServicesStatus is the observed state of a TailscaleServices.
type TailscaleServicesStatus struct {
	// Conditions: Ready, VIPServiceReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// SelectedEndpoints are the TailscaleEndpoints matching the selector.
	// +optional
	// +listType=atomic
	SelectedEndpoints []SelectedEndpoints `json:"selectedEndpoints,omitempty"`
	// VIPServiceStatus is the state of the VIP service.
	// +optional
	VIPServiceStatus *VIPServiceState `json:"vipServiceStatus,omitempty"`
	// LoadBalancingStatus is the state of load balancing.
	// +optional
	LoadBalancingStatus *LoadBalancingStatus `json:"loadBalancingStatus,omitempty"`
	// ServiceInfo describes multi-operator coordination of the service.
	// +optional
	ServiceInfo *ServiceInfo `json:"serviceInfo,omitempty"`
	// DiscoveredVIPServices are the Tailscale Services of the object's tailnet that
	// spec.serviceDiscovery.vipServiceSelector matches (with discoverVIPServices), other than
	// spec.vipService.name: their addresses and ports are backends of the object's Service.
	// +optional
	// +listType=map
	// +listMapKey=name
	DiscoveredVIPServices []DiscoveredVIPService `json:"discoveredVIPServices,omitempty"`
}

// DiscoveredVIPService is a Tailscale Service found by spec.serviceDiscovery.vipServiceSelector.
type DiscoveredVIPService struct {
	// Name of the Tailscale Service, "svc:<label>".
	Name string `json:"name"`
	// DNSName is the Service's MagicDNS name.
	// +optional
	DNSName string `json:"dnsName,omitempty"`
	// Addresses are the Service's tailnet VIP addresses.
	// +optional
	// +listType=atomic
	Addresses []string `json:"addresses,omitempty"`
	// Ports are the Service's ports, "tcp:N" or "udp:N".
	// +optional
	// +listType=atomic
	Ports []string `json:"ports,omitempty"`
	// Tags are the Service's ACL tags.
	// +optional
	// +listType=atomic
	Tags []string `json:"tags,omitempty"`
}

// SelectedEndpoints is one TailscaleEndpoints selected by a TailscaleServices.
type SelectedEndpoints struct {
	// Name of the TailscaleEndpoints.
	Name string `json:"name"`
	// Namespace of the TailscaleEndpoints.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Status is Ready or NotReady.
	// +optional
	Status string `json:"status,omitempty"`
	// Machines are the devices serving the endpoints.
	// +optional
	// +listType=atomic
	Machines []string `json:"machines,omitempty"`
	// LastSelected is when the endpoints were selected.
	// +optional
	LastSelected *metav1.Time `json:"lastSelected,omitempty"`
	// Labels of the TailscaleEndpoints.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// HealthStatus summarises the health of the machines.
	// +optional
	HealthStatus *HealthStatus `json:"healthStatus,omitempty"`
}

// HealthStatus counts healthy and unhealthy machines.
type HealthStatus struct {
	// HealthyMachines is the number of healthy machines.
	// +optional
	HealthyMachines int32 `json:"healthyMachines,omitempty"`
	// UnhealthyMachines is the number of unhealthy machines.
	// +optional
	UnhealthyMachines int32 `json:"unhealthyMachines,omitempty"`
	// LastHealthCheck is when health was last checked.
	// +optional
	LastHealthCheck *metav1.Time `json:"lastHealthCheck,omitempty"`
}

// VIPServiceState is the observed state of a VIP service.
type VIPServiceState struct {
	// Created reports whether the service exists in the tailnet.
	// +optional
	Created bool `json:"created,omitempty"`
	// ServiceName is the service's name.
	// +optional
	ServiceName string `json:"serviceName,omitempty"`
	// DNSName is the service's MagicDNS name.
	// +optional
	DNSName string `json:"dnsName,omitempty"`
	// Addresses are the service's tailnet addresses.
	// +optional
	// +listType=atomic
	Addresses []string `json:"addresses,omitempty"`
	// BackendCount is the number of backends.
	// +optional
	BackendCount int32 `json:"backendCount,omitempty"`
	// HealthyBackendCount is the number of healthy backends.
	// +optional
	HealthyBackendCount int32 `json:"healthyBackendCount,omitempty"`
	// ServiceTags are the service's ACL tags.
	// +optional
	// +listType=atomic
	ServiceTags []string `json:"serviceTags,omitempty"`
	// LastRegistration is when the service was last created or updated.
	// +optional
	LastRegistration *metav1.Time `json:"lastRegistration,omitempty"`
	// Hosts are the devices advertising the service or approved for it, as the tailnet last
	// reported them.
	// +optional
	// +listType=atomic
	Hosts []VIPServiceHost `json:"hosts,omitempty"`
}

// VIPServiceHost is a device hosting a VIP service, or approved to.
type VIPServiceHost struct {
	// Device is the host's machine name.
	Device string `json:"device"`
	// NodeID is the host's stable node ID.
	// +optional
	NodeID string `json:"nodeID,omitempty"`
	// Approved reports whether the tailnet approves the device as a host of the service (by its
	// policy's autoApprovers, by hand or through the API): only approved hosts receive its traffic.
	// +optional
	Approved bool `json:"approved,omitempty"`
	// Advertising reports whether the device advertises the service.
	// +optional
	Advertising bool `json:"advertising,omitempty"`
}

// LoadBalancingStatus is the observed state of load balancing.
type LoadBalancingStatus struct {
	// Strategy in effect.
	// +optional
	Strategy LoadBalancingStrategy `json:"strategy,omitempty"`
	// EndpointWeights in effect.
	// +optional
	EndpointWeights map[string]int32 `json:"endpointWeights,omitempty"`
	// RequestCounts per endpoint.
	// +optional
	RequestCounts map[string]int64 `json:"requestCounts,omitempty"`
	// FailoverStatus is the state of the failover strategy.
	// +optional
	FailoverStatus *FailoverStatus `json:"failoverStatus,omitempty"`
}

// FailoverStatus is the state of the failover strategy.
type FailoverStatus struct {
	// ActiveTier is primary or secondary.
	// +optional
	ActiveTier string `json:"activeTier,omitempty"`
	// LastFailover is when the active tier last changed.
	// +optional
	LastFailover *metav1.Time `json:"lastFailover,omitempty"`
	// FailoverReason explains the last change.
	// +optional
	FailoverReason string `json:"failoverReason,omitempty"`
}

// ServiceInfo describes multi-operator coordination of a VIP service.
type ServiceInfo struct {
	// MultiOperatorService reports whether several operators share the service.
	// +optional
	MultiOperatorService bool `json:"multiOperatorService,omitempty"`
	// OwnerOperator created the service.
	// +optional
	OwnerOperator string `json:"ownerOperator,omitempty"`
	// ConsumerOperators attach to the service.
	// +optional
	// +listType=atomic
	ConsumerOperators []string `json:"consumerOperators,omitempty"`
	// ServiceRegistryKey identifies the service in the coordination registry.
	// +optional
	ServiceRegistryKey string `json:"serviceRegistryKey,omitempty"`
	// LastCoordination is when coordination last ran.
	// +optional
	LastCoordination *metav1.Time `json:"lastCoordination,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleServicesList is a list of TailscaleServices.
type TailscaleServicesList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items is the list of TailscaleServices.
	Items []TailscaleServices `json:"items"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleGateway joins an Envoy Gateway Gateway to one or more tailnets, with route generation,
// service coordination, load balancing, security and observability settings.
type TailscaleGateway struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired integration.
	// +optional
	Spec TailscaleGatewaySpec `json:"spec,omitempty"`
	// Status is the observed state of the integration.
	// +optional
	Status TailscaleGatewayStatus `json:"status,omitempty"`
}

// TailscaleGatewaySpec is the desired state of a TailscaleGateway.
type TailscaleGatewaySpec struct {
	// GatewayRef references the Gateway API Gateway.
	GatewayRef LocalPolicyTargetReference `json:"gatewayRef"`
	// Tailnets connected to the gateway; at least one, with unique names.
	// +listType=map
	// +listMapKey=name
	Tailnets []TailnetConfiguration `json:"tailnets"`
	// ServiceCoordination configures cross-cluster service sharing.
	// +optional
	ServiceCoordination *ServiceCoordinationConfig `json:"serviceCoordination,omitempty"`
	// LoadBalancing is the global load balancing configuration.
	// +optional
	LoadBalancing *GatewayLoadBalancingConfig `json:"loadBalancing,omitempty"`
	// Security configures TLS and access control.
	// +optional
	Security *SecurityConfig `json:"security,omitempty"`
	// Observability configures metrics, tracing and logging.
	// +optional
	Observability *ObservabilityConfig `json:"observability,omitempty"`
}

// LocalPolicyTargetReference references an object by group, kind, name and optional namespace.
type LocalPolicyTargetReference struct {
	// Group of the referent. Defaults to gateway.networking.k8s.io for a Gateway and
	// gateway.tailscale.com for a TailscaleTailnet.
	// +optional
	Group string `json:"group,omitempty"`
	// Kind of the referent. Defaults to Gateway in gatewayRef and TailscaleTailnet in tailscaleTailnetRef.
	// +optional
	Kind string `json:"kind,omitempty"`
	// Name of the referent.
	Name string `json:"name"`
	// Namespace of the referent; defaults to the referring object's namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// TailnetConfiguration connects one tailnet to the gateway.
type TailnetConfiguration struct {
	// Name identifies this tailnet configuration within the gateway: a DNS label, unique in the list.
	Name string `json:"name"`
	// TailscaleTailnetRef references the TailscaleTailnet.
	TailscaleTailnetRef LocalPolicyTargetReference `json:"tailscaleTailnetRef"`
	// RouteGeneration configures automatic route generation.
	// +optional
	RouteGeneration *RouteGenerationConfig `json:"routeGeneration,omitempty"`
	// Priority orders tailnets in multi-tailnet routing; higher wins (0 or more). Defaults to 100.
	// +optional
	Priority *int32 `json:"priority,omitempty"`
	// ServiceDiscovery configures discovery of services in this tailnet.
	// +optional
	ServiceDiscovery *TailnetServiceDiscovery `json:"serviceDiscovery,omitempty"`
}

// TailnetServiceDiscovery configures discovery of services in a tailnet.
type TailnetServiceDiscovery struct {
	// Enabled turns discovery on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
}

// RouteGenerationConfig configures automatic route generation.
type RouteGenerationConfig struct {
	// Ingress configures routes from the tailnet into the cluster.
	// +optional
	Ingress *IngressRouteConfig `json:"ingress,omitempty"`
	// Egress configures routes from the cluster to the tailnet.
	// +optional
	Egress *EgressRouteConfig `json:"egress,omitempty"`
}

// IngressRouteConfig configures generated ingress routes.
type IngressRouteConfig struct {
	// Enabled turns ingress route generation on. Defaults to false.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// HostPattern is a DNS name template whose only placeholder is {service}, e.g. "{service}.company.ts.net".
	// +optional
	HostPattern string `json:"hostPattern,omitempty"`
	// PathPrefix of generated routes; starts with "/". Defaults to "/".
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`
	// DefaultBackend configures generated backends.
	// +optional
	DefaultBackend *BackendConfig `json:"defaultBackend,omitempty"`
	// Filters applied to generated routes.
	// +optional
	// +listType=atomic
	Filters []HTTPRouteFilter `json:"filters,omitempty"`
}

// EgressRouteConfig configures generated egress routes.
type EgressRouteConfig struct {
	// Enabled turns egress route generation on. Defaults to false.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// HostPattern is a DNS name template whose only placeholder is {service}.
	// +optional
	HostPattern string `json:"hostPattern,omitempty"`
	// PathPrefix of egress routes; starts with "/" and may contain {service}.
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`
	// RewriteRules rewrite request paths of egress traffic.
	// +optional
	// +listType=atomic
	RewriteRules []RewriteRule `json:"rewriteRules,omitempty"`
	// Timeout of egress requests; positive.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// RetryPolicy for failed egress requests.
	// +optional
	RetryPolicy *RetryPolicy `json:"retryPolicy,omitempty"`
}

// BackendConfig configures generated backends.
type BackendConfig struct {
	// Weight of the backend (non-negative).
	// +optional
	Weight *int32 `json:"weight,omitempty"`
	// HealthCheck of the backend.
	// +optional
	HealthCheck *HealthCheckConfig `json:"healthCheck,omitempty"`
}

// HTTPRouteFilter modifies requests or responses of generated routes (a subset of Gateway API HTTPRouteFilter).
type HTTPRouteFilter struct {
	// Type is RequestHeaderModifier, ResponseHeaderModifier or URLRewrite.
	Type string `json:"type"`
	// RequestHeaderModifier changes request headers.
	// +optional
	RequestHeaderModifier *HTTPHeaderFilter `json:"requestHeaderModifier,omitempty"`
	// ResponseHeaderModifier changes response headers.
	// +optional
	ResponseHeaderModifier *HTTPHeaderFilter `json:"responseHeaderModifier,omitempty"`
	// URLRewrite rewrites the request's hostname or path prefix.
	// +optional
	URLRewrite *HTTPURLRewriteFilter `json:"urlRewrite,omitempty"`
}

// HTTPHeaderFilter sets, adds and removes HTTP headers.
type HTTPHeaderFilter struct {
	// Set overwrites headers.
	// +optional
	// +listType=map
	// +listMapKey=name
	Set []HTTPHeader `json:"set,omitempty"`
	// Add appends headers.
	// +optional
	// +listType=map
	// +listMapKey=name
	Add []HTTPHeader `json:"add,omitempty"`
	// Remove deletes headers by name.
	// +optional
	// +listType=set
	Remove []string `json:"remove,omitempty"`
}

// HTTPHeader is a header name and value.
type HTTPHeader struct {
	// Name of the header: a valid HTTP header name, each once per list.
	Name string `json:"name"`
	// Value of the header: not empty, a valid HTTP header value.
	Value string `json:"value"`
}

// HTTPURLRewriteFilter rewrites the hostname or path prefix of a request.
type HTTPURLRewriteFilter struct {
	// Hostname replaces the Host header.
	// +optional
	Hostname string `json:"hostname,omitempty"`
	// ReplacePrefixMatch replaces the matched path prefix.
	// +optional
	ReplacePrefixMatch string `json:"replacePrefixMatch,omitempty"`
}

// RewriteRule rewrites a request path prefix.
type RewriteRule struct {
	// From is the path prefix to replace; starts with "/" and may contain {service}.
	From string `json:"from"`
	// To is the replacement; starts with "/" and may contain {service}.
	To string `json:"to"`
}

// RetryPolicy retries failed requests.
type RetryPolicy struct {
	// NumRetries is the number of retries (non-negative).
	// +optional
	NumRetries *int32 `json:"numRetries,omitempty"`
	// PerTryTimeout bounds each try; positive.
	// +optional
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`
	// BackoffBaseInterval is the first retry delay; positive.
	// +optional
	BackoffBaseInterval *metav1.Duration `json:"backoffBaseInterval,omitempty"`
	// BackoffMaxInterval caps the retry delay; not shorter than the base interval.
	// +optional
	BackoffMaxInterval *metav1.Duration `json:"backoffMaxInterval,omitempty"`
}

// ServiceCoordinationConfig configures cross-cluster service sharing.
type ServiceCoordinationConfig struct {
	// Enabled turns coordination on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// Strategy is shared or exclusive. Defaults to shared.
	// +optional
	Strategy string `json:"strategy,omitempty"`
}

// GatewayLoadBalancingConfig is the global load balancing configuration of a gateway.
type GatewayLoadBalancingConfig struct {
	// Strategy is round_robin (default), least_request, random or ring_hash.
	// +optional
	Strategy string `json:"strategy,omitempty"`
	// HealthChecking configures active health checking of backends.
	// +optional
	HealthChecking *HealthCheckConfig `json:"healthChecking,omitempty"`
	// CircuitBreaker limits load on backends and ejects failing ones.
	// +optional
	CircuitBreaker *CircuitBreakerConfig `json:"circuitBreaker,omitempty"`
}

// CircuitBreakerConfig limits load on backends and ejects failing ones.
type CircuitBreakerConfig struct {
	// Enabled turns the circuit breaker on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// MaxConnections to a backend cluster.
	// +optional
	MaxConnections *int32 `json:"maxConnections,omitempty"`
	// MaxPendingRequests to a backend cluster.
	// +optional
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	// MaxRequests in flight to a backend cluster.
	// +optional
	MaxRequests *int32 `json:"maxRequests,omitempty"`
	// MaxRetries in flight to a backend cluster.
	// +optional
	MaxRetries *int32 `json:"maxRetries,omitempty"`
	// ConsecutiveErrors that eject a backend.
	// +optional
	ConsecutiveErrors *int32 `json:"consecutiveErrors,omitempty"`
	// Interval of ejection analysis.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// BaseEjectionTime of an ejected backend.
	// +optional
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent of backends that may be ejected (0-100).
	// +optional
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// SecurityConfig configures TLS and access control.
type SecurityConfig struct {
	// TLSMode is strict, permissive or disabled.
	// +optional
	TLSMode string `json:"tlsMode,omitempty"`
	// MTLS configures mutual TLS.
	// +optional
	MTLS *MTLSConfig `json:"mtls,omitempty"`
	// AccessControl allows and denies tailnet tags.
	// +optional
	AccessControl *AccessControlConfig `json:"accessControl,omitempty"`
}

// MTLSConfig configures mutual TLS.
type MTLSConfig struct {
	// Enabled turns mutual TLS on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// CertificateRef references the Secret holding the certificate.
	// +optional
	CertificateRef *SecretReference `json:"certificateRef,omitempty"`
}

// SecretReference names a Secret.
type SecretReference struct {
	// Name of the Secret.
	Name string `json:"name"`
	// Namespace of the Secret.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// AccessControlConfig allows and denies tailnet tags.
type AccessControlConfig struct {
	// AllowedTags may reach the gateway.
	// +optional
	// +listType=set
	AllowedTags []string `json:"allowedTags,omitempty"`
	// DeniedTags may not reach the gateway.
	// +optional
	// +listType=set
	DeniedTags []string `json:"deniedTags,omitempty"`
}

// ObservabilityConfig configures metrics, tracing and logging.
type ObservabilityConfig struct {
	// Metrics configures the metrics endpoint.
	// +optional
	Metrics *MetricsConfig `json:"metrics,omitempty"`
	// Tracing configures distributed tracing.
	// +optional
	Tracing *TracingConfig `json:"tracing,omitempty"`
	// Logging configures logging.
	// +optional
	Logging *LoggingConfig `json:"logging,omitempty"`
}

// MetricsConfig configures the metrics endpoint.
type MetricsConfig struct {
	// Enabled turns metrics on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// Port of the metrics endpoint (1-65535).
	// +optional
	Port *int32 `json:"port,omitempty"`
}

// TracingConfig configures distributed tracing.
type TracingConfig struct {
	// Enabled turns tracing on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// SamplingRate is the sampled fraction of requests, between 0 and 1 (e.g. 0.1).
	// +optional
	SamplingRate *resource.Quantity `json:"samplingRate,omitempty"`
	// JaegerEndpoint is the collector URL.
	// +optional
	JaegerEndpoint string `json:"jaegerEndpoint,omitempty"`
}

// LoggingConfig configures logging.
type LoggingConfig struct {
	// Level is debug, info, warn or error.
	// +optional
	Level string `json:"level,omitempty"`
	// AccessLogs turns access logs on.
	// +optional
	AccessLogs bool `json:"accessLogs,omitempty"`
}

// TailscaleGatewayStatus is the observed state of a TailscaleGateway.
type TailscaleGatewayStatus struct {
	// Conditions: Ready, TailnetsReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Tailnets holds per-tailnet state.
	// +optional
	// +listType=map
	// +listMapKey=name
	Tailnets []TailnetStatus `json:"tailnets,omitempty"`
	// ServiceInfo counts services behind the gateway.
	// +optional
	ServiceInfo *GatewayServiceInfo `json:"serviceInfo,omitempty"`
	// GatewayInfo describes the referenced Gateway.
	// +optional
	GatewayInfo *GatewayInfo `json:"gatewayInfo,omitempty"`
}

// TailnetStatus is the state of one tailnet of a gateway.
type TailnetStatus struct {
	// Name of the tailnet configuration.
	Name string `json:"name"`
	// Status is Connected, Disconnected or Unknown.
	// +optional
	Status string `json:"status,omitempty"`
	// LastConnected is when the tailnet was last reachable.
	// +optional
	LastConnected *metav1.Time `json:"lastConnected,omitempty"`
	// ServicesCount is the number of services in the tailnet.
	// +optional
	ServicesCount int32 `json:"servicesCount,omitempty"`
	// RoutesGenerated is the number of routes generated for the tailnet.
	// +optional
	RoutesGenerated int32 `json:"routesGenerated,omitempty"`
}

// GatewayServiceInfo counts services behind a gateway.
type GatewayServiceInfo struct {
	// TotalServices behind the gateway.
	// +optional
	TotalServices int32 `json:"totalServices,omitempty"`
	// HealthyServices behind the gateway.
	// +optional
	HealthyServices int32 `json:"healthyServices,omitempty"`
	// UnhealthyServices behind the gateway.
	// +optional
	UnhealthyServices int32 `json:"unhealthyServices,omitempty"`
}

// GatewayInfo describes the referenced Gateway.
type GatewayInfo struct {
	// ListenerCount of the Gateway.
	// +optional
	ListenerCount int32 `json:"listenerCount,omitempty"`
	// RouteCount attached to the Gateway.
	// +optional
	RouteCount int32 `json:"routeCount,omitempty"`
	// LastReconciled is when the gateway was last reconciled.
	// +optional
	LastReconciled *metav1.Time `json:"lastReconciled,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TailscaleGatewayList is a list of TailscaleGateway.
type TailscaleGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items is the list of TailscaleGateway.
	Items []TailscaleGateway `json:"items"`
}
