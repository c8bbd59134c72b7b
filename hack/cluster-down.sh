#!/usr/bin/env bash
# Removes the cluster hack/cluster-up.sh made (`make cluster-down`) and leaves the machine as it
# found it: every process of the node is killed (they all live in the cgroup /tsgw-node), every
# mount under the state directory is unmounted, the cgroups, the network namespace (with its
# bridge, veths, iptables rules and kube-router's ipsets) and the host's veth are deleted, the
# host sysctls the kubelet changed are restored, and the host paths the node created are removed.
# Safe to run twice; the logs stay in _output/cluster/logs.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/cluster-lib.sh
source "${ROOT}/hack/cluster-lib.sh"

require_root
check_owner

# cgroup_pids: every process in the node's cgroups, in any hierarchy.
cgroup_pids() {
  local h
  for h in $(cgroup_hierarchies); do
    if [[ -d "${h}/${CGROUP}" ]]; then
      find "${h}/${CGROUP}" -name cgroup.procs -exec cat {} + 2>/dev/null || true
    fi
  done | sort -u
}

# Ask the processes cluster-up started to stop (the kubelet and containerd first, so they stop
# making new ones), then kill whatever remains in the cgroups: shims, pods and their children.
for name in kubelet kube-proxy kube-router containerd coredns kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pidfile="${RUN}/${name}.pid"
  if [[ -f "${pidfile}" ]]; then kill -TERM "$(cat "${pidfile}")" 2>/dev/null || true; fi
done
for _ in $(seq 1 50); do
  alive=0
  for pidfile in "${RUN}"/*.pid; do
    if [[ -f "${pidfile}" ]] && kill -0 "$(cat "${pidfile}")" 2>/dev/null; then alive=1; fi
  done
  ((alive)) || break
  sleep 0.2
done
freezer=/sys/fs/cgroup/freezer/${CGROUP}
for attempt in $(seq 1 50); do
  pids=$(cgroup_pids)
  [[ -z "${pids}" ]] && break
  # Frozen, nothing forks while the list is killed; killed tasks die when thawed.
  if [[ -f "${freezer}/freezer.state" ]]; then echo FROZEN >"${freezer}/freezer.state"; fi
  # shellcheck disable=SC2086
  kill -KILL ${pids} 2>/dev/null || true
  if [[ -f "${freezer}/freezer.state" ]]; then echo THAWED >"${freezer}/freezer.state"; fi
  sleep 0.2
  if ((attempt == 50)); then
    echo "cluster-down: processes still in cgroup ${CGROUP}: ${pids}" >&2
    exit 1
  fi
done
rm -f "${RUN}"/*.pid

# Mounts under the state directory (overlay rootfs, volumes, pod netns), deepest first.
if [[ -d "${STATE}" ]]; then
  awk -v prefix="${STATE}/" 'index($5, prefix) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r mnt; do
      umount "${mnt}" 2>/dev/null || umount -l "${mnt}"
    done
fi

for h in $(cgroup_hierarchies); do
  if [[ -d "${h}/${CGROUP}" ]]; then find "${h}/${CGROUP}" -depth -type d -exec rmdir {} +; fi
done

if [[ -e "${NETNS_PATH}" ]]; then
  ip netns delete "${NETNS}"
fi
if [[ -f "${RUN}/netns-mount-created" ]] && mountpoint -q /run/netns &&
  [[ -z "$(ls -A /run/netns)" ]]; then
  umount /run/netns && rmdir /run/netns
fi
# The host end goes with its peer; delete it in case the namespace was already gone.
if ip link show "${HOST_VETH}" >/dev/null 2>&1; then ip link delete "${HOST_VETH}"; fi

if [[ -f "${RUN}/sysctls" ]]; then
  while read -r setting; do
    sysctl -qw "${setting}"
  done <"${RUN}/sysctls"
fi
# Host paths the kubelet and containerd create whatever their configuration says.
if [[ -f "${RUN}/created-paths" ]]; then
  while read -r path; do
    rm -rf "${path}"
  done <"${RUN}/created-paths"
fi
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "${STATE}/*" -delete
fi

if [[ -d "${STATE}" ]]; then
  find "${STATE}" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
fi
rm -f "${OWNER_FILE}"
echo "cluster-down: removed"
