package proxydeploy

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels that make a proxy object ours and name the object it is kept for. The proxy objects
// live in the installation's namespace while their parent (a TailscaleEndpoints) lives in a
// tenant's: Kubernetes refuses ownerReferences across namespaces, so these labels are the
// ownership, and the controller collects what no parent wants any more (gc.go).
const (
	// ManagedByLabel marks every object this controller creates (value ManagedBy); nothing
	// without it is ever updated or deleted.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "tailscale-gateway-proxydeploy"
	// ParentNamespaceLabel, ParentNameLabel and ParentUIDLabel name the object a proxy object
	// is kept for; the UID tells a recreated object of the same name from the one before.
	ParentNamespaceLabel = "gateway.tailscale.com/parent-namespace"
	ParentNameLabel      = "gateway.tailscale.com/parent-name"
	ParentUIDLabel       = "gateway.tailscale.com/parent-uid"
)

// MaxNameLength bounds the name of a TailscaleEndpoints with a proxy: ParentNameLabel carries
// it, and label values have at most 63 characters.
const MaxNameLength = 63

// maxBase is the longest Base: a StatefulSet's pods carry the label
// controller-revision-hash=<statefulset>-<hash of up to 10 characters>, at most 63 characters.
const maxBase = 52

// Names of the objects kept for one TailscaleEndpoints, all in the installation's namespace.
type Names struct {
	// Base names the ServiceAccount, Role, RoleBinding, StatefulSet, Service, NetworkPolicy and
	// PodDisruptionBudget; replica i's pod and state Secret are Base-i.
	Base string
	// SharedAuthKey is the Secret of the reusable key earlier versions shared among replicas
	// (only in LegacyNamesOf).
	SharedAuthKey string
}

// NamesFor returns the names of the proxy objects of the TailscaleEndpoints namespace/name:
// "ts-<name>-<namespace>", shortened to stay a DNS label a StatefulSet may carry, and a hash
// of both, so that objects of different tenants never share a name (as the Tailscale operator
// names its proxies). Names start with a letter: a Service's name must.
func NamesFor(namespace, name string) Names {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	hash := hex.EncodeToString(sum[:])[:8]
	readable := strings.ReplaceAll(name+"-"+namespace, ".", "-")
	if budget := maxBase - len("ts-") - 1 - len(hash); len(readable) > budget {
		readable = readable[:budget]
	}
	return Names{Base: "ts-" + strings.TrimRight(readable, "-") + "-" + hash}
}

// LegacyNamesOf returns the names earlier versions gave the objects of the TailscaleEndpoints
// name in its own namespace ("<name>-proxy"): they are migrated and removed (legacy.go).
func LegacyNamesOf(name string) Names {
	return Names{Base: name + "-proxy", SharedAuthKey: name + "-proxy-authkey"}
}

// StateSecret is the state Secret of replica i, named like its pod.
func (n Names) StateSecret(i int) string { return n.Base + "-" + strconv.Itoa(i) }

// AuthKeySecret is the Secret holding the single-use auth key of replica i until it has joined.
func (n Names) AuthKeySecret(i int) string { return n.StateSecret(i) + authKeySuffix }

const authKeySuffix = "-authkey"

// ParentLabels are the labels of every object kept for the TailscaleEndpoints
// namespace/name of the given uid.
func ParentLabels(namespace, name string, uid types.UID) map[string]string {
	return map[string]string{ManagedByLabel: ManagedBy, ParentNamespaceLabel: namespace, ParentNameLabel: name, ParentUIDLabel: string(uid)}
}

// ParentOf returns the TailscaleEndpoints m is kept for, from its labels; ok is false for an
// object that is not ours.
func ParentOf(m metav1.Object) (parent types.NamespacedName, uid types.UID, ok bool) {
	l := m.GetLabels()
	if l[ManagedByLabel] != ManagedBy || l[ParentNamespaceLabel] == "" || l[ParentNameLabel] == "" {
		return types.NamespacedName{}, "", false
	}
	return types.NamespacedName{Namespace: l[ParentNamespaceLabel], Name: l[ParentNameLabel]}, types.UID(l[ParentUIDLabel]), true
}

// IsKeptFor reports whether m is ours and kept for the TailscaleEndpoints parent (same
// namespace, name and UID).
func IsKeptFor(m metav1.Object, parent metav1.Object) bool {
	p, uid, ok := ParentOf(m)
	return ok && p.Namespace == parent.GetNamespace() && p.Name == parent.GetName() && uid == parent.GetUID()
}
