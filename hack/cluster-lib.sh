# Shared by hack/cluster-up.sh and hack/cluster-down.sh: names, addresses and helpers of the
# single-node test cluster. Sourced, not run.
# shellcheck shell=bash disable=SC2034

BIN="${ROOT}/_output/bin"
IMAGES="${ROOT}/_output/images"
STATE="${CLUSTER_DIR:-${ROOT}/_output/cluster}"
LOGS="${STATE}/logs"
RUN="${STATE}/run"
ADMIN_KUBECONFIG="${STATE}/admin.kubeconfig"
CONTAINERD_SOCK="${STATE}/containerd/containerd.sock"

NODE_NAME=tsgw-node
NETNS=tsgw-node
NETNS_PATH="/run/netns/${NETNS}"
CGROUP=tsgw-node
HOST_VETH=tsgw-host
NODE_VETH=tsgw-node0
HOST_ADDR=169.254.77.1
NODE_LINK_ADDR=169.254.77.2
NODE_IP=10.250.0.2
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
SERVICE_API_IP=10.96.0.1
PAUSE_IMAGE=tsgw.local/pause:v1
# kube-router's health endpoint, in the node's netns.
KUBE_ROUTER_HEALTH_PORT=20244
# The netns, cgroup and veth names are machine-wide: this file names the checkout whose cluster
# holds them, so another checkout's cluster-up or cluster-down refuses instead of taking them over.
OWNER_FILE=/run/tsgw-node.owner

# check_owner: fails when the machine's cluster belongs to another state directory.
check_owner() {
  if [[ -f "${OWNER_FILE}" && "$(cat "${OWNER_FILE}")" != "${STATE}" ]]; then
    echo "$(basename "$0"): the cluster of $(cat "${OWNER_FILE}") is up; run its hack/cluster-down.sh" >&2
    exit 1
  fi
}

# require_root: network namespaces, cgroups and containerd need root.
require_root() {
  if [[ $(id -u) != 0 ]]; then
    echo "$(basename "$0"): must run as root (network namespaces, cgroups, containerd)" >&2
    exit 1
  fi
}

# in_node CMD...: runs CMD in the node's network namespace (and nothing else: same mounts as the
# host, so the kubelet's volume mounts are visible to containerd and runc).
in_node() {
  nsenter --net="${NETNS_PATH}" -- "$@"
}

# cgroup_hierarchies: the mounted cgroup hierarchies (v1 controllers, and the v2 one of a hybrid or
# unified host), one directory each.
cgroup_hierarchies() {
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

# start NAME CMD...: starts CMD in the node's netns and in the cgroup /tsgw-node/system of every
# hierarchy (its children, containerd's shims included, stay there), logging to $LOGS/NAME.log.
start() {
  local name=$1 procs=() h
  shift
  for h in $(cgroup_hierarchies); do
    procs+=("${h}/${CGROUP}/system/cgroup.procs")
  done
  # The shell joins the cgroups, closes every descriptor but stdio (a caller's lock, such as
  # `flock $TMPDIR/tsgw-cluster.lock make cluster-up`, must not stay held by the node's daemons),
  # then becomes CMD (same pid, recorded for cluster-down).
  # shellcheck disable=SC2016
  in_node bash -c 'for f in ${1}; do echo $$ >"${f}"; done
    for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec ${fd}>&-"; fi; done
    shift; exec "$@"' \
    "${name}" "${procs[*]}" "$@" >"${LOGS}/${name}.log" 2>&1 &
  echo $! >"${RUN}/${name}.pid"
}

# wait_for WHAT SECONDS CMD...: waits until CMD succeeds, failing after SECONDS.
wait_for() {
  local what=$1 seconds=$2 deadline
  shift 2
  deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      echo "cluster: ${what} not ready after ${seconds} s; logs in ${LOGS}" >&2
      return 1
    fi
    sleep 1
  done
}

# node_ready: the node is registered and Ready.
node_ready() {
  [[ $(kubectl --kubeconfig "${ADMIN_KUBECONFIG}" get node "${NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# enforcer_running: kube-router, the NetworkPolicy enforcer cluster-up starts, runs (a cluster
# made by an older cluster-up has none).
enforcer_running() {
  [[ -f "${RUN}/kube-router.pid" ]] && kill -0 "$(cat "${RUN}/kube-router.pid")" 2>/dev/null
}

# enforcer_chained: the node's FORWARD chain jumps to kube-router's (its rule's comment ends in
# an ID of its own).
enforcer_chained() {
  in_node iptables -w -S FORWARD | grep -q -- '-j KUBE-ROUTER-FORWARD$'
}
