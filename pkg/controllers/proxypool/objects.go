package proxypool

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxydeploy"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Labels of the pool's objects.
const (
	// ManagedByLabel with value ManagedBy marks every object this controller creates; with
	// PoolLabel and a controller ownerReference to the TailscaleTailnet it makes an object ours.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "tailscale-gateway-proxypool"
	// PoolLabel names the TailscaleTailnet whose pool the object belongs to.
	PoolLabel = "gateway.tailscale.com/proxy-pool"
)

const (
	podNameLabel = "app.kubernetes.io/name"
	podName      = "tailscale-gateway-proxy"
	stateDir     = "/var/lib/tailscale-gateway-proxy"
	// maxBase bounds the pool's base name: its pods' controller-revision-hash label
	// (<base>-<10 characters>) and its auth key Secrets (<base>-<i>-authkey) stay within 63.
	maxBase = 40
)

// Names of a pool's objects.
type Names struct {
	// Base names the ServiceAccount, Role, RoleBinding, StatefulSet, Service, NetworkPolicy and
	// PodDisruptionBudget: "tsgw-pool-<tailnet>", or, when the TailscaleTailnet's name has dots
	// or is long, its start and a hash of the whole name.
	Base string
}

// NamesOf returns the names of the pool of TailscaleTailnet tailnet.
func NamesOf(tailnet string) Names {
	base := "tsgw-pool-" + tailnet
	if strings.Contains(tailnet, ".") || len(base) > maxBase {
		sum := sha256.Sum256([]byte(tailnet))
		short := strings.ReplaceAll(tailnet, ".", "-")
		short = strings.TrimRight(short[:min(len(short), maxBase-len("tsgw-pool-")-9)], "-")
		base = "tsgw-pool-" + short + "-" + hex.EncodeToString(sum[:4])
	}
	return Names{Base: base}
}

// StateSecret is the state Secret of replica i, named like its pod.
func (n Names) StateSecret(i int) string { return n.Base + "-" + strconv.Itoa(i) }

// AuthKeySecret holds the single-use auth key of replica i until it has joined.
func (n Names) AuthKeySecret(i int) string { return n.StateSecret(i) + "-authkey" }

// Pool is what a pool's objects are derived from.
type Pool struct {
	// Tailnet is the TailscaleTailnet; its spec.proxyPool must be set.
	Tailnet *v1alpha1.TailscaleTailnet
	// Namespace is the server's own, where the pool runs.
	Namespace string
	// Tags are the pool nodes' tags (the tailnet's first proxy tag).
	Tags []string
	// Ports are the egress Service ports of the objects the pool serves (proxydeploy.EgressPorts
	// of each, merged).
	Ports []corev1.ServicePort
}

// Replicas is the pool's size: spec.proxyPool.replicas, 0 without a pool.
func Replicas(t *v1alpha1.TailscaleTailnet) int {
	if t.Spec.ProxyPool == nil {
		return 0
	}
	return int(max(t.Spec.ProxyPool.Replicas, 0))
}

func labelsOf(p Pool) map[string]string {
	return map[string]string{ManagedByLabel: ManagedBy, PoolLabel: p.Tailnet.Name}
}

func selectorOf(p Pool) map[string]string {
	return map[string]string{podNameLabel: podName, PoolLabel: p.Tailnet.Name}
}

func metaOf(p Pool, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: p.Namespace, Labels: labelsOf(p),
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(p.Tailnet, v1alpha1.SchemeGroupVersion.WithKind("TailscaleTailnet"))},
	}
}

// ServiceAccount returns the pool proxies' ServiceAccount.
func ServiceAccount(p Pool) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metaOf(p, NamesOf(p.Tailnet.Name).Base), AutomountServiceAccountToken: ptr.To(true)}
}

// Role grants, in the server's namespace, what the pool proxies need of their own: getting and
// updating their state Secrets and getting their auth key Secrets, by name. Reading the
// objects they serve, in every namespace, is the ClusterRole the chart binds to the
// namespace's ServiceAccounts (docs/concepts/proxy-pools.md); it reads no Secret.
func Role(p Pool) *rbacv1.Role {
	n := NamesOf(p.Tailnet.Name)
	var states, keys []string
	for i := range Replicas(p.Tailnet) {
		states = append(states, n.StateSecret(i))
		keys = append(keys, n.AuthKeySecret(i))
	}
	var rules []rbacv1.PolicyRule
	if len(states) > 0 {
		rules = []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: states, Verbs: []string{"get", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: keys, Verbs: []string{"get"}},
		}
	}
	return &rbacv1.Role{ObjectMeta: metaOf(p, n.Base), Rules: rules}
}

// RoleBinding binds Role to ServiceAccount.
func RoleBinding(p Pool) *rbacv1.RoleBinding {
	n := NamesOf(p.Tailnet.Name)
	return &rbacv1.RoleBinding{
		ObjectMeta: metaOf(p, n.Base),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: n.Base},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: n.Base, Namespace: p.Namespace}},
	}
}

// StateSecret returns the empty state Secret of replica i; the proxy fills it.
func StateSecret(p Pool, i int) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metaOf(p, NamesOf(p.Tailnet.Name).StateSecret(i)), Type: corev1.SecretTypeOpaque}
}

// AuthKeySecret returns the Secret of replica i holding key, minted with tags; its annotations
// record the tags, the key's ID and expiry, never the key.
func AuthKeySecret(p Pool, i int, key tailnet.AuthKey, tags []string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metaOf(p, NamesOf(p.Tailnet.Name).AuthKeySecret(i)), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{proxydeploy.AuthKeyKey: []byte(key.Key)}}
	s.Annotations = map[string]string{proxydeploy.AuthKeyTagsAnnotation: strings.Join(tags, ","), proxydeploy.AuthKeyIDAnnotation: key.ID}
	if !key.Expires.IsZero() {
		s.Annotations[proxydeploy.AuthKeyExpiresAnnotation] = key.Expires.UTC().Format(time.RFC3339)
	}
	return s
}

// MergePorts merges the egress Service ports of several objects into one list sorted by name
// (the allocator gives each endpoint of one scope its own port, so names do not repeat; a
// repeated one is kept once).
func MergePorts(lists ...[]corev1.ServicePort) []corev1.ServicePort {
	var out []corev1.ServicePort
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.SortFunc(out, func(a, b corev1.ServicePort) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(out, func(a, b corev1.ServicePort) bool { return a.Name == b.Name })
}

// Service returns the Service in front of the pool: a port per egress listener of every
// object served (same number as the listener) and the metrics port.
func Service(p Pool) *corev1.Service {
	ports := append(slices.Clone(p.Ports), corev1.ServicePort{Name: "metrics", Protocol: corev1.ProtocolTCP,
		Port: proxydeploy.MetricsPort, TargetPort: intstr.FromInt32(proxydeploy.MetricsPort)})
	return &corev1.Service{ObjectMeta: metaOf(p, NamesOf(p.Tailnet.Name).Base), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeClusterIP, Selector: selectorOf(p), Ports: ports,
	}}
}

// Args is the pool proxy's command line (before the kubelet expands $(POD_NAME)).
func Args(cfg proxydeploy.Config, p Pool) []string {
	args := []string{
		"--tailnet=" + p.Tailnet.Name,
		"--secret-namespace=" + p.Namespace,
		"--hostname=$(POD_NAME)",
		"--state-secret=$(POD_NAME)",
		"--state-dir=" + stateDir,
		"--auth-key-secret=$(POD_NAME)-authkey",
		"--metrics-bind-address=:" + strconv.Itoa(proxydeploy.MetricsPort),
	}
	if cfg.ControlURL != "" {
		args = append(args, "--control-url="+cfg.ControlURL)
	}
	if len(p.Tags) > 0 {
		args = append(args, "--tags="+strings.Join(p.Tags, ","))
	}
	return args
}

// resourcesOf are the container resources: the pool's when it names any, else cfg's.
func resourcesOf(cfg proxydeploy.Config, pp *v1alpha1.ProxyPool) corev1.ResourceRequirements {
	if pp.Resources == nil || (len(pp.Resources.Requests) == 0 && len(pp.Resources.Limits) == 0) {
		return cfg.Resources
	}
	list := func(m map[string]resource.Quantity) corev1.ResourceList {
		if len(m) == 0 {
			return nil
		}
		out := corev1.ResourceList{}
		for k, v := range m {
			out[corev1.ResourceName(k)] = v
		}
		return out
	}
	return corev1.ResourceRequirements{Requests: list(pp.Resources.Requests), Limits: list(pp.Resources.Limits)}
}

// StatefulSet returns the pool's StatefulSet: proxydeploy's proxy pod with the pool's
// resources, tolerations, node selector, priority class and extra pod labels and annotations;
// its template carries proxydeploy.ConfigHashAnnotation.
func StatefulSet(cfg proxydeploy.Config, p Pool) *appsv1.StatefulSet {
	n := NamesOf(p.Tailnet.Name)
	pp := p.Tailnet.Spec.ProxyPool
	cfg.Resources = resourcesOf(cfg, pp)
	pod := proxydeploy.PodSpec(cfg, n.Base, Args(cfg, p))
	pod.NodeSelector = maps.Clone(pp.NodeSelector)
	pod.PriorityClassName = pp.PriorityClassName
	for _, t := range pp.Tolerations {
		pod.Tolerations = append(pod.Tolerations, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOperator(t.Operator),
			Value: t.Value, Effect: corev1.TaintEffect(t.Effect), TolerationSeconds: t.TolerationSeconds})
	}
	sel := selectorOf(p)
	podLabels := maps.Clone(pp.PodLabels)
	if podLabels == nil {
		podLabels = map[string]string{}
	}
	maps.Copy(podLabels, sel) // validation refuses pod labels that would replace these
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: maps.Clone(pp.PodAnnotations)}, Spec: pod}
	if tmpl.Annotations == nil {
		tmpl.Annotations = map[string]string{}
	}
	tmpl.Annotations[proxydeploy.ConfigHashAnnotation] = hashOf(tmpl)
	replicas := int32(Replicas(p.Tailnet))
	return &appsv1.StatefulSet{ObjectMeta: metaOf(p, n.Base), Spec: appsv1.StatefulSetSpec{
		Replicas: &replicas, ServiceName: n.Base, Selector: &metav1.LabelSelector{MatchLabels: sel},
		PodManagementPolicy: appsv1.ParallelPodManagement, Template: tmpl,
		UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
	}}
}

// PodDisruptionBudget keeps voluntary disruptions to one pool proxy at a time; nil for a pool
// of one replica.
func PodDisruptionBudget(p Pool) *policyv1.PodDisruptionBudget {
	if Replicas(p.Tailnet) <= 1 {
		return nil
	}
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{ObjectMeta: metaOf(p, NamesOf(p.Tailnet.Name).Base), Spec: policyv1.PodDisruptionBudgetSpec{
		MaxUnavailable: &one, Selector: &metav1.LabelSelector{MatchLabels: selectorOf(p)}}}
}

// NetworkPolicy is the pool's NetworkPolicy (proxydeploy.NetworkPolicyFor over every port the
// pool serves), owned like sts.
func NetworkPolicy(cfg proxydeploy.NetworkPolicyConfig, p Pool, sts *appsv1.StatefulSet) *networkingv1.NetworkPolicy {
	np := proxydeploy.NetworkPolicyFor(cfg, sts, p.Ports, p.Tailnet)
	np.OwnerReferences = slices.Clone(sts.OwnerReferences)
	return np
}

func hashOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
