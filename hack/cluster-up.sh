#!/usr/bin/env bash
# Brings up a real single-node Kubernetes v1.36 cluster on this machine, as root, with no Docker and
# no registry (`make cluster-up`; `make cluster-down` removes it). Used by test/cluster and by
# anyone who wants to run the chart on a kubelet. docs/cluster.md explains it.
#
# Network layout (nothing private-range on the host; nothing routed off the machine):
#   host netns        tsgw-host   169.254.77.1/30 (link-local)  --veth--
#   netns tsgw-node   tsgw-node0  169.254.77.2/30  (the host reaches the API server here)
#                                 10.250.0.2/32    (the node's InternalIP, advertise address, DNS)
#                     cni0        10.244.0.1/24    (bridge: pods, CNI bridge + host-local + portmap)
#                     Services    10.96.0.0/16     (kube-proxy, iptables mode, in the netns only)
# The netns has no default route, and only packets to 169.254.77.1 leave it: pods reach the node,
# each other and Services, nothing else.
# Every process of the node (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kube-router (NetworkPolicies), containerd, its shims and the pods) runs in that netns and under the cgroup
# /tsgw-node of every cgroup hierarchy, which hack/cluster-down.sh empties and removes.
# State, logs and certificates live under _output/cluster (CLUSTER_DIR).
#
# Images: the pause image is built here (hack/tools/images) and imported with ctr; kubelet and
# containerd use it as the sandbox image; nothing is ever pulled. `make images` archives are imported
# with IMPORT="path..." or `hack/cluster-up.sh import <archive>...` on a running cluster.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/cluster-lib.sh
source "${ROOT}/hack/cluster-lib.sh"

require_root

# import ARCHIVE...: imports OCI archives into the node's containerd (namespace k8s.io).
import_images() {
  local archive
  for archive in "$@"; do
    in_node "${BIN}/ctr" --address "${CONTAINERD_SOCK}" -n k8s.io images import --local \
      --all-platforms "${archive}" >/dev/null
    echo "cluster-up: imported ${archive}"
  done
}
if [[ "${1:-}" == import ]]; then
  shift
  import_images "$@"
  exit 0
fi

check_owner
if [[ -e "${NETNS_PATH}" ]]; then
  if node_ready && enforcer_running; then
    echo "cluster-up: the cluster is already up (KUBECONFIG=${ADMIN_KUBECONFIG})"
    exit 0
  fi
  echo "cluster-up: a previous cluster is half up or runs no NetworkPolicy enforcer; removing it first" >&2
  "${ROOT}/hack/cluster-down.sh"
fi

start_time=$(date +%s)
"${ROOT}/hack/build-tools.sh" cluster
for tool in iptables ip openssl curl nsenter; do
  command -v "${tool}" >/dev/null || { echo "cluster-up: ${tool} is missing" >&2; exit 1; }
done

# The kubelet changes these host sysctls (kernel tunables it expects); cluster-down restores them.
mkdir -p "${STATE}" "${LOGS}" "${RUN}"
: >"${RUN}/sysctls"
for key in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
  echo "${key}=$(sysctl -n "${key}")" >>"${RUN}/sysctls"
done

# Host paths the kubelet or containerd create whatever their configuration says (container log
# links, shim sockets): cluster-down removes those that did not exist before.
: >"${RUN}/created-paths"
for path in /run/containerd /var/log/containers /var/log/pods /var/lib/kubelet /etc/cni /opt/cni \
  /etc/kubernetes; do
  [[ -e "${path}" ]] || echo "${path}" >>"${RUN}/created-paths"
done
# `ip netns add` makes /run/netns a mount point the first time; cluster-down undoes that when no
# other namespace is left in it.
if ! mountpoint -q /run/netns; then touch "${RUN}/netns-mount-created"; fi

echo "${STATE}" >"${OWNER_FILE}"

# --- network ------------------------------------------------------------------------------------
ip netns add "${NETNS}"
ip link add "${HOST_VETH}" type veth peer name "${NODE_VETH}" netns "${NETNS}"
ip addr add "${HOST_ADDR}/30" dev "${HOST_VETH}"
ip link set "${HOST_VETH}" up
in_node ip link set lo up
in_node ip addr add "${NODE_LINK_ADDR}/30" dev "${NODE_VETH}"
in_node ip link set "${NODE_VETH}" up
# The node's own address: a /32 on the same device (the kernel here has no dummy devices); the host
# has no route to it.
in_node ip addr add "${NODE_IP}/32" dev "${NODE_VETH}"
# The node's own processes (kube-apiserver calling the APIService's Service) need a route to the
# Service range before kube-proxy's DNAT picks a pod; it points at the veth, and nothing but
# traffic to the host's link-local address may leave through the veth (mangle POSTROUTING sees
# the final output device, after DNAT rerouted Service traffic to the bridge).
in_node ip route add "${SERVICE_CIDR}" dev "${NODE_VETH}"
in_node iptables -w -t mangle -A POSTROUTING -o "${NODE_VETH}" ! -d "${HOST_ADDR}/30" -j DROP
# Per-netns sysctls: forwarding between the bridge and the node, bridged traffic through iptables
# (kube-proxy's Service rules apply to pod-to-pod-via-Service traffic on the same bridge).
in_node sysctl -qw net.ipv4.ip_forward=1
in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1
in_node sysctl -qw net.ipv4.conf.all.route_localnet=1

# --- cgroups ------------------------------------------------------------------------------------
for hierarchy in $(cgroup_hierarchies); do
  mkdir -p "${hierarchy}/${CGROUP}/system"
done
if [[ -f "/sys/fs/cgroup/cpuset/${CGROUP}/cpuset.cpus" ]]; then
  for f in cpuset.cpus cpuset.mems; do
    cat "/sys/fs/cgroup/cpuset/${f}" >"/sys/fs/cgroup/cpuset/${CGROUP}/${f}"
    cat "/sys/fs/cgroup/cpuset/${f}" >"/sys/fs/cgroup/cpuset/${CGROUP}/system/${f}"
  done
fi

# --- certificates -------------------------------------------------------------------------------
PKI="${STATE}/pki"
mkdir -p "${PKI}"
# ca NAME CN: a self-signed CA.
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$2" \
    -keyout "${PKI}/$1.key" -out "${PKI}/$1.crt" 2>/dev/null
}
# cert NAME CA SUBJECT EXT: a key pair signed by CA with the extensions EXT.
cert() {
  local name=$1 signer=$2 subject=$3 ext=$4
  openssl req -newkey rsa:2048 -nodes -subj "${subject}" -keyout "${PKI}/${name}.key" \
    -out "${PKI}/${name}.csr" 2>/dev/null
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${signer}.crt" -CAkey "${PKI}/${signer}.key" \
    -CAcreateserial -days 3650 -out "${PKI}/${name}.crt" \
    -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "${ext}") \
    2>/dev/null
  rm -f "${PKI}/${name}.csr"
}
client='extendedKeyUsage=clientAuth'
ca ca kubernetes-ca
ca front-proxy-ca front-proxy-ca
cert apiserver ca /CN=kube-apiserver "extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:${SERVICE_API_IP},IP:${NODE_IP},IP:${NODE_LINK_ADDR},IP:127.0.0.1"
cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" "${client}"
cert front-proxy-client front-proxy-ca /CN=front-proxy-client "${client}"
cert admin ca "/O=system:masters/CN=cluster-admin" "${client}"
cert controller-manager ca /CN=system:kube-controller-manager "${client}"
cert scheduler ca /CN=system:kube-scheduler "${client}"
cert kube-proxy ca /CN=system:kube-proxy "${client}"
cert kubelet ca "/O=system:nodes/CN=system:node:${NODE_NAME}" "${client}"
cert kubelet-serving ca "/CN=${NODE_NAME}" "extendedKeyUsage=serverAuth
subjectAltName=DNS:${NODE_NAME},IP:${NODE_IP}"
openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null

# kubeconfig NAME SERVER: a kubeconfig for the client certificate NAME.
kubeconfig() {
  local name=$1 server=$2 file="${STATE}/$1.kubeconfig"
  kubectl config --kubeconfig "${file}" set-cluster tsgw --server "${server}" \
    --certificate-authority "${PKI}/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig "${file}" set-credentials "${name}" \
    --client-certificate "${PKI}/${name}.crt" --client-key "${PKI}/${name}.key" --embed-certs >/dev/null
  kubectl config --kubeconfig "${file}" set-context tsgw --cluster tsgw --user "${name}" >/dev/null
  kubectl config --kubeconfig "${file}" use-context tsgw >/dev/null
}
for name in controller-manager scheduler kube-proxy kubelet; do
  kubeconfig "${name}" "https://${NODE_IP}:6443"
done
# The admin kubeconfig is used from the host, through the veth.
kubeconfig admin "https://${NODE_LINK_ADDR}:6443"

# --- control plane ------------------------------------------------------------------------------
start etcd "${BIN}/etcd" --name "${NODE_NAME}" --data-dir "${STATE}/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "${NODE_NAME}=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
  --log-level warn
wait_for "etcd" 120 in_node curl -fsS http://127.0.0.1:2381/readyz

start kube-apiserver "${BIN}/kube-apiserver" \
  --advertise-address "${NODE_IP}" --bind-address 0.0.0.0 --secure-port 6443 \
  --etcd-servers http://127.0.0.1:2379 \
  --service-cluster-ip-range "${SERVICE_CIDR}" \
  --tls-cert-file "${PKI}/apiserver.crt" --tls-private-key-file "${PKI}/apiserver.key" \
  --client-ca-file "${PKI}/ca.crt" --anonymous-auth=true \
  --kubelet-client-certificate "${PKI}/apiserver-kubelet-client.crt" \
  --kubelet-client-key "${PKI}/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "${PKI}/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "${PKI}/sa.pub" --service-account-signing-key-file "${PKI}/sa.key" \
  --requestheader-client-ca-file "${PKI}/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-uid-headers X-Remote-Uid \
  --requestheader-group-headers X-Remote-Group --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "${PKI}/front-proxy-client.crt" \
  --proxy-client-key-file "${PKI}/front-proxy-client.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --allow-privileged=true --profiling=false --v=1
wait_for "kube-apiserver" 300 kubectl --kubeconfig "${ADMIN_KUBECONFIG}" get --raw /readyz

start kube-controller-manager "${BIN}/kube-controller-manager" \
  --kubeconfig "${STATE}/controller-manager.kubeconfig" \
  --authentication-kubeconfig "${STATE}/controller-manager.kubeconfig" \
  --authorization-kubeconfig "${STATE}/controller-manager.kubeconfig" \
  --cluster-signing-cert-file "${PKI}/ca.crt" --cluster-signing-key-file "${PKI}/ca.key" \
  --root-ca-file "${PKI}/ca.crt" --service-account-private-key-file "${PKI}/sa.key" \
  --use-service-account-credentials=true --service-cluster-ip-range "${SERVICE_CIDR}" \
  --leader-elect=false --bind-address 127.0.0.1 --profiling=false --v=1
start kube-scheduler "${BIN}/kube-scheduler" \
  --kubeconfig "${STATE}/scheduler.kubeconfig" \
  --authentication-kubeconfig "${STATE}/scheduler.kubeconfig" \
  --authorization-kubeconfig "${STATE}/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --profiling=false --v=1

# --- cluster DNS: CoreDNS on the node's address, read-only on the API ------------------------
cert coredns ca /CN=system:coredns "${client}"
kubeconfig coredns "https://${NODE_IP}:6443"
kubectl --kubeconfig "${ADMIN_KUBECONFIG}" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: ["services", "pods", "namespaces"]
    verbs: ["list", "watch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: system:coredns
EOF
cat >"${STATE}/Corefile" <<EOF
.:53 {
    bind ${NODE_IP}
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ${STATE}/coredns.kubeconfig tsgw
        pods insecure
    }
    loadbalance
}
EOF
start coredns "${BIN}/coredns" -conf "${STATE}/Corefile"

# --- container runtime --------------------------------------------------------------------------
mkdir -p "${STATE}/cni" "${STATE}/containerd"
cat >"${STATE}/cni/10-tsgw.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tsgw",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${STATE}/cni/ipam",
        "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"${STATE}/containerd/config.toml" <<EOF
version = 3
root = "${STATE}/containerd/root"
state = "${STATE}/containerd/state"
# Plugins that would write outside the state directories or open host sockets.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${CONTAINERD_SOCK}"

[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"

[debug]
  address = "${STATE}/containerd/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "${STATE}/containerd/opt"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "${PAUSE_IMAGE}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "${STATE}/containerd/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which some machines (this one) withhold even
  # from root: the kubelet asks -998 for sandboxes and -997 for Guaranteed pods. Containers get
  # containerd's own score (0) at least instead of failing to start.
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["${BIN}/cni"]
    conf_dir = "${STATE}/cni"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "${BIN}/runc"
        Root = "${STATE}/runc"
        SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
EOF
start containerd env PATH="${BIN}:${PATH}" "${BIN}/containerd" --config "${STATE}/containerd/config.toml"
wait_for "containerd" 60 in_node "${BIN}/ctr" --address "${CONTAINERD_SOCK}" version

"${ROOT}/hack/images.sh" pause >/dev/null
import_images "${IMAGES}/pause.tar"
# The pause image is pinned: the kubelet's image garbage collection never removes it.
if [[ -n "${IMPORT:-}" ]]; then
  # shellcheck disable=SC2086
  import_images ${IMPORT}
fi

# --- node ---------------------------------------------------------------------------------------
mkdir -p "${STATE}/kubelet" "${STATE}/pod-logs"
# The resolv.conf of dnsPolicy Default pods: CoreDNS too, so no name server outside the node.
echo "nameserver ${NODE_IP}" >"${STATE}/resolv.conf"
cat >"${STATE}/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "${PKI}/ca.crt"}
authorization: {mode: Webhook}
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: "${PKI}/kubelet-serving.crt"
tlsPrivateKeyFile: "${PKI}/kubelet-serving.key"
containerRuntimeEndpoint: "unix://${CONTAINERD_SOCK}"
imageServiceEndpoint: "unix://${CONTAINERD_SOCK}"
cgroupDriver: cgroupfs
cgroupRoot: /${CGROUP}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
podLogsDirectory: "${STATE}/pod-logs"
resolvConf: "${STATE}/resolv.conf"
clusterDomain: cluster.local
clusterDNS: ["${NODE_IP}"]
# Images are imported, never pulled: no garbage collection may remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A shared build machine runs low on disk and memory at times; pods are not evicted for it.
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
maxPods: 110
EOF
start kubelet "${BIN}/kubelet" --config "${STATE}/kubelet/config.yaml" \
  --kubeconfig "${STATE}/kubelet.kubeconfig" --root-dir "${STATE}/kubelet/root" \
  --cert-dir "${STATE}/kubelet/pki" --hostname-override "${NODE_NAME}" --node-ip "${NODE_IP}" \
  --v=1

cat >"${STATE}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: "${STATE}/kube-proxy.kubeconfig"
mode: iptables
clusterCIDR: "${POD_CIDR}"
hostnameOverride: "${NODE_NAME}"
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Conntrack limits and timeouts are global to the host: left alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start kube-proxy "${BIN}/kube-proxy" --config "${STATE}/kube-proxy.yaml" --v=1

wait_for "node ${NODE_NAME} Ready" 300 node_ready

# --- NetworkPolicy enforcer: kube-router's firewall only -----------------------------------------
# Its network policy controller (no router, no service proxy, no CNI file) enforces NetworkPolicies
# with iptables rules and ipsets in the node's netns, which cluster-down deletes with them. Its own
# identity: the kubelet's (Node authorizer) may not list NetworkPolicies or Namespaces. It needs
# the Node object, so it starts once the node is registered. docs/cluster.md says why kube-router.
cert kube-router ca /CN=system:kube-router "${client}"
kubeconfig kube-router "https://${NODE_IP}:6443"
kubectl --kubeconfig "${ADMIN_KUBECONFIG}" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:kube-router
rules:
  # kube-router's informers (it waits for all of them, firewall only or not).
  - apiGroups: [""]
    resources: ["pods", "namespaces", "nodes", "services", "endpoints"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["list", "watch"]
  - apiGroups: ["networking.k8s.io"]
    resources: ["networkpolicies"]
    verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:kube-router
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kube-router
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: system:kube-router
EOF
start kube-router "${BIN}/kube-router" --kubeconfig "${STATE}/kube-router.kubeconfig" \
  --hostname-override "${NODE_NAME}" --run-firewall=true --run-router=false --run-service-proxy=false \
  --run-loadbalancer=false --enable-cni=false --service-cluster-ip-range "${SERVICE_CIDR}" \
  --health-port "${KUBE_ROUTER_HEALTH_PORT}" --metrics-port 0 --v=1
# Healthy once its caches synced and its controllers run; then FORWARD jumps to its chain.
wait_for "kube-router" 120 in_node curl -fsS "http://127.0.0.1:${KUBE_ROUTER_HEALTH_PORT}/healthz"
wait_for "kube-router's firewall" 60 enforcer_chained
wait_for "CoreDNS" 60 in_node curl -fsS http://127.0.0.1:8181/ready
echo "cluster-up: node ${NODE_NAME} Ready in $(($(date +%s) - start_time)) s; KUBECONFIG=${ADMIN_KUBECONFIG}"
