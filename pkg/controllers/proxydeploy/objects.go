package proxydeploy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/kubestate"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/plan"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Annotations of the generated objects.
const (
	// ConfigHashAnnotation on the pod template is a hash of the pod's configuration: any change
	// rolls the StatefulSet.
	ConfigHashAnnotation = "gateway.tailscale.com/config-hash"
	// AuthKeyTagsAnnotation on the auth key Secret lists the tags the key was minted with.
	AuthKeyTagsAnnotation = "gateway.tailscale.com/auth-key-tags"
)

// Connection types of ProxyConfig.
const (
	Ingress       = "ingress"
	Egress        = "egress"
	Bidirectional = "bidirectional"
)

// Paths and ports inside the proxy's pod.
const (
	// AuthKeyKey is the key of the auth key in its Secret.
	AuthKeyKey    = kubestate.AuthKeyKey
	stateDir      = "/var/lib/tailscale-gateway-proxy"
	MetricsPort   = 9090
	containerName = "proxy"
)

// ReadinessPeriodSeconds is how often the kubelet asks a proxy's /readyz (a check in the
// process, no I/O). The kubelet's first probe comes right after the container starts, before
// the node has joined its tailnet (about 1-2 s), so the period is what a new or restarted proxy
// waits beyond that before it is an endpoint of its egress Service: with Kubernetes' default of
// 10 s, pods on the real-node cluster joined at +2 s and were Ready at +11 s (docs/cluster.md).
const ReadinessPeriodSeconds = 2

// PreStopSeconds is how long a proxy pod being deleted goes on serving before its container
// gets SIGTERM (a sleep preStop hook): the EndpointSlice controller marks a terminating pod's
// endpoint not ready and kube-proxy then stops sending it new egress connections, which takes
// about a second; a proxy that closed its egress listeners at once would refuse the
// connections still sent to it meanwhile (docs/data-plane.md, "Rolling restart").
const PreStopSeconds = 5

// TerminationGracePeriodSeconds covers a proxy's whole shutdown: the preStop sleep, the wait for
// the control plane to move its Services' VIPs (proxy.WithdrawWait, 5 s), the drain of open
// connections (--drain-grace, 30 s by default), closing what is left (proxy.DrainTimeout, 10 s)
// and the node (5 s), plus a margin; past it the kubelet kills the container.
const TerminationGracePeriodSeconds = PreStopSeconds + 5 + 30 + 10 + 5 + 5

// Config is what the generated objects take from the server's flags.
type Config struct {
	// Image, PullPolicy and Resources of the proxy container.
	Image      string
	PullPolicy corev1.PullPolicy
	Resources  corev1.ResourceRequirements
	// ControlURL is the coordination server the proxies join; empty is Tailscale's.
	ControlURL string
	// Namespace is the installation's namespace, where every proxy object is kept: tenants,
	// whose namespaces hold the TailscaleEndpoints, cannot read its Secrets.
	Namespace string
}

// Input is what the objects of one TailscaleEndpoints are derived from.
type Input struct {
	Endpoints *v1alpha1.TailscaleEndpoints
	// Services are the TailscaleServices the proxies host (ingress): those in the namespace whose
	// selector matches the TailscaleEndpoints, and the one that auto-provisioned it.
	Services []string
	// Tags are requested by the node: the TailscaleTailnet's tags and the object's tags.
	Tags []string
}

// Wanted reports whether obj gets a proxy: it has spec.proxy, or it was auto-provisioned for a
// TailscaleServices (whose VIP its proxies host), with the template's proxy or the defaults.
func Wanted(obj *v1alpha1.TailscaleEndpoints) bool { return plan.Dedicated(obj) }

// Replicas is the number of proxies of obj (1 by default).
func Replicas(obj *v1alpha1.TailscaleEndpoints) int {
	if obj.Spec.Proxy == nil || obj.Spec.Proxy.Replicas == nil {
		return 1
	}
	return int(max(*obj.Spec.Proxy.Replicas, 0))
}

// ConnectionType of obj, bidirectional by default.
func ConnectionType(obj *v1alpha1.TailscaleEndpoints) string {
	if obj.Spec.Proxy == nil || obj.Spec.Proxy.ConnectionType == "" {
		return Bidirectional
	}
	return obj.Spec.Proxy.ConnectionType
}

func runsEgress(obj *v1alpha1.TailscaleEndpoints) bool  { return ConnectionType(obj) != Ingress }
func runsIngress(obj *v1alpha1.TailscaleEndpoints) bool { return ConnectionType(obj) != Egress }

func labelsOf(obj *v1alpha1.TailscaleEndpoints) map[string]string {
	return ParentLabels(obj.Namespace, obj.Name, obj.UID)
}

// The label every proxy pod carries.
const (
	podNameLabel = "app.kubernetes.io/name"
	podName      = "tailscale-gateway-proxy"
)

// selectorOf selects the pods of obj's proxy (their template's labels).
func selectorOf(obj *v1alpha1.TailscaleEndpoints) map[string]string {
	return map[string]string{podNameLabel: podName, ParentNamespaceLabel: obj.Namespace, ParentNameLabel: obj.Name}
}

// metaOf is the metadata of obj's object name in the installation's namespace ns: labels, no
// ownerReference (it would cross namespaces).
func metaOf(ns string, obj *v1alpha1.TailscaleEndpoints, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labelsOf(obj)}
}

// ServiceAccount returns the proxies' ServiceAccount.
func ServiceAccount(ns string, obj *v1alpha1.TailscaleEndpoints) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metaOf(ns, obj, NamesFor(obj.Namespace, obj.Name).Base), AutomountServiceAccountToken: ptr.To(true)}
}

// Role returns what the proxies need in the installation's namespace ns: getting and updating
// their own state Secrets and getting their auth key Secrets, by name. They read the objects
// they serve (gateway.tailscale.com, in the tenant's namespace) through the ClusterRole the
// installation binds to its namespace's ServiceAccounts (chart: tailscale-gateway-proxy), which
// reads no Secret. They emit no Events.
func Role(ns string, obj *v1alpha1.TailscaleEndpoints) *rbacv1.Role {
	n := NamesFor(obj.Namespace, obj.Name)
	var states, keys []string
	for i := range Replicas(obj) {
		states = append(states, n.StateSecret(i))
		keys = append(keys, n.AuthKeySecret(i))
	}
	var rules []rbacv1.PolicyRule
	if len(states) > 0 {
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: states,
			Verbs: []string{"get", "update", "patch"},
		}, rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: keys, Verbs: []string{"get"},
		})
	}
	return &rbacv1.Role{ObjectMeta: metaOf(ns, obj, n.Base), Rules: rules}
}

// RoleBinding binds Role to ServiceAccount.
func RoleBinding(ns string, obj *v1alpha1.TailscaleEndpoints) *rbacv1.RoleBinding {
	n := NamesFor(obj.Namespace, obj.Name)
	return &rbacv1.RoleBinding{
		ObjectMeta: metaOf(ns, obj, n.Base),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: n.Base},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: n.Base, Namespace: ns}},
	}
}

// StateSecret returns the empty state Secret of replica i; the proxy fills it.
func StateSecret(ns string, obj *v1alpha1.TailscaleEndpoints, i int) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metaOf(ns, obj, NamesFor(obj.Namespace, obj.Name).StateSecret(i)), Type: corev1.SecretTypeOpaque}
}

// AuthKeySecret returns the Secret of replica i holding key, minted with tags; its annotations
// record the tags, the key's ID and expiry, never the key.
func AuthKeySecret(ns string, obj *v1alpha1.TailscaleEndpoints, i int, key tailnet.AuthKey, tags []string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metaOf(ns, obj, NamesFor(obj.Namespace, obj.Name).AuthKeySecret(i)), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{AuthKeyKey: []byte(key.Key)}}
	s.Annotations = map[string]string{AuthKeyTagsAnnotation: strings.Join(tags, ","), AuthKeyIDAnnotation: key.ID}
	if !key.Expires.IsZero() {
		s.Annotations[AuthKeyExpiresAnnotation] = key.Expires.UTC().Format(time.RFC3339)
	}
	return s
}

// EgressPorts are the Service ports of obj's egress listeners, at the ports recorded in its
// status (plan.EgressOf, pkg/proxy/ports), sorted by name; none for an ingress-only proxy, and
// none for an endpoint not allocated a port yet.
func EgressPorts(obj *v1alpha1.TailscaleEndpoints) []corev1.ServicePort {
	if !runsEgress(obj) {
		return nil
	}
	egress, _, _ := plan.EgressOf([]*v1alpha1.TailscaleEndpoints{obj})
	var out []corev1.ServicePort
	for _, e := range egress {
		proto := corev1.ProtocolTCP
		if e.Network == "udp" {
			proto = corev1.ProtocolUDP
		}
		out = append(out, corev1.ServicePort{Name: fmt.Sprintf("%s-%d", e.Network, e.Port), Protocol: proto,
			Port: e.Port, TargetPort: intstr.FromInt32(e.Port)})
	}
	slices.SortFunc(out, func(a, b corev1.ServicePort) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Service returns the Service in front of the proxies: one port per egress listener (same port
// number as the listener) and the metrics port.
func Service(ns string, obj *v1alpha1.TailscaleEndpoints) *corev1.Service {
	ports := append(EgressPorts(obj), corev1.ServicePort{Name: "metrics", Protocol: corev1.ProtocolTCP,
		Port: MetricsPort, TargetPort: intstr.FromInt32(MetricsPort)})
	return &corev1.Service{ObjectMeta: metaOf(ns, obj, NamesFor(obj.Namespace, obj.Name).Base), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeClusterIP, Selector: selectorOf(obj), Ports: ports,
	}}
}

// Args returns the proxy's command line for in (before the kubelet expands $(POD_NAME)).
func Args(cfg Config, in Input) []string {
	obj := in.Endpoints
	args := []string{
		"--namespace=" + obj.Namespace,
		"--secret-namespace=" + cfg.Namespace,
		"--hostname=$(POD_NAME)",
		"--state-secret=$(POD_NAME)",
		"--state-dir=" + stateDir,
		"--auth-key-secret=$(POD_NAME)" + authKeySuffix,
		"--metrics-bind-address=:" + strconv.Itoa(MetricsPort),
	}
	if cfg.ControlURL != "" {
		args = append(args, "--control-url="+cfg.ControlURL)
	}
	if len(in.Tags) > 0 {
		args = append(args, "--tags="+strings.Join(in.Tags, ","))
	}
	if runsEgress(obj) {
		args = append(args, "--endpoints="+obj.Name)
	}
	if runsIngress(obj) && len(in.Services) > 0 {
		args = append(args, "--services="+strings.Join(in.Services, ","))
	}
	return args
}

// Serves reports whether the proxy of in has anything to serve; an ingress-only proxy that no
// TailscaleServices selects has not, and runs no replicas.
func Serves(in Input) bool {
	return runsEgress(in.Endpoints) || len(in.Services) > 0
}

// StatefulSet returns the proxies' StatefulSet; its pod template carries ConfigHashAnnotation.
func StatefulSet(cfg Config, in Input) *appsv1.StatefulSet {
	obj := in.Endpoints
	n := NamesFor(obj.Namespace, obj.Name)
	replicas := int32(Replicas(obj))
	if !Serves(in) {
		replicas = 0
	}
	pod := PodSpec(cfg, n.Base, Args(cfg, in))
	sel := selectorOf(obj)
	podLabels := map[string]string{}
	for k, v := range sel {
		podLabels[k] = v
	}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels}, Spec: pod}
	tmpl.Annotations = map[string]string{ConfigHashAnnotation: hashOf(tmpl)}
	return &appsv1.StatefulSet{ObjectMeta: metaOf(cfg.Namespace, obj, n.Base), Spec: appsv1.StatefulSetSpec{
		Replicas: &replicas, ServiceName: n.Base, Selector: &metav1.LabelSelector{MatchLabels: sel},
		PodManagementPolicy: appsv1.ParallelPodManagement, Template: tmpl,
		UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
	}}
}

// PodDisruptionBudget returns the budget that keeps voluntary disruptions (node drains) to
// one proxy at a time, or nil when in runs at most one replica (a budget of one replica with
// maxUnavailable 1 protects nothing, and one with 0 would block every drain).
func PodDisruptionBudget(ns string, in Input) *policyv1.PodDisruptionBudget {
	obj := in.Endpoints
	if Replicas(obj) <= 1 || !Serves(in) {
		return nil
	}
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{ObjectMeta: metaOf(ns, obj, NamesFor(obj.Namespace, obj.Name).Base), Spec: policyv1.PodDisruptionBudgetSpec{
		MaxUnavailable: &one, Selector: &metav1.LabelSelector{MatchLabels: selectorOf(obj)}}}
}

// hashOf is a hash of v's JSON.
func hashOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
