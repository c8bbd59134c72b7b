#!/usr/bin/env bash
# Builds the third-party binaries the e2e suite, the aggregation benchmarks and the test cluster
# (hack/cluster-up.sh) run, into _output/bin:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                            k8s.io/kubernetes/cmd/<name> from hack/tools
#   envoy-gateway            github.com/envoyproxy/gateway/cmd/envoy-gateway (standalone Envoy Gateway
#                            for test/envoygateway), from its own module hack/tools/envoy-gateway
#   containerd, containerd-shim-runc-v2, ctr
#                            github.com/containerd/containerd/v2 from hack/tools/containerd
#   runc                     github.com/opencontainers/runc with seccomp (cgo) from hack/tools/runc
#   cni/bridge, cni/host-local, cni/loopback, cni/portmap
#                            github.com/containernetworking/plugins from hack/tools/cni-plugins
#   helm                     helm.sh/helm/v4/cmd/helm from hack/tools/helm
#   coredns                  CoreDNS with the cluster's plugins only, from hack/tools/coredns
#   kube-router              github.com/cloudnativelabs/kube-router/v2 from hack/tools/kube-router:
#                            the cluster's NetworkPolicy enforcer (its firewall only; docs/cluster.md)
#   etcd                     go.etcd.io/etcd/server/v3 at the main module's version (the e2e suite
#                            embeds the same etcd with pkg/embeddedetcd)
# Each group is its own module because their k8s.io/* and containerd requirements conflict.
# A binary is rebuilt only when it is missing or when its module's go.mod or go.sum changed since it
# was built (recorded in a stamp file next to it). A cold build takes 10-20 minutes on two cores for
# the Kubernetes binaries (they share most of it) and about as long again for envoy-gateway; see
# docs/cluster.md for measured figures.
# `cluster` names the set hack/cluster-up.sh needs; it also installs iptables, conntrack, nftables,
# ipset (kube-router) and runc's build dependencies (gcc, pkg-config, libseccomp-dev) with apt-get
# when they are missing (as root only).
# Arguments name the binaries or groups to build (default: the e2e set, kube-apiserver
# kube-controller-manager envoy-gateway); `make run` builds envoy-gateway only.
set -o errexit -o nounset -o pipefail
WANTED=" ${*:-kube-apiserver kube-controller-manager envoy-gateway} "
CLUSTER_SET="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd containerd runc cni coredns helm kube-router"
WANTED=${WANTED/ cluster / ${CLUSTER_SET} }
wanted() { [[ "${WANTED}" == *" $1 "* ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${ROOT}/_output/bin"
TOOLS="${ROOT}/hack/tools"
mkdir -p "${BIN}"

# One build at a time: concurrent `make test` runs wait for the first one's build.
exec 9>"${BIN}/.build-tools.lock"
if command -v flock >/dev/null; then flock 9; fi

KUBE_VERSION=$(cd "${TOOLS}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
if [[ -z "${KUBE_VERSION}" ]]; then
  echo "build-tools: hack/tools/go.mod does not require k8s.io/kubernetes" >&2
  exit 1
fi
STAMP="${KUBE_VERSION} $(cat "${TOOLS}/go.mod" "${TOOLS}/go.sum" | sha256sum | cut -d' ' -f1)"

# build NAME: builds k8s.io/kubernetes/cmd/NAME into ${BIN}/NAME unless it is up to date.
build() {
  local name=$1 out="${BIN}/$1" stamp="${BIN}/.$1.stamp"
  if [[ -x "${out}" && -f "${stamp}" && "$(cat "${stamp}")" == "${STAMP}" ]]; then
    echo "build-tools: ${out} is ${KUBE_VERSION}, up to date"
    return
  fi
  echo "build-tools: building ${name} ${KUBE_VERSION} (10-20 min when cold)..."
  local major minor
  IFS=. read -r major minor _ <<<"${KUBE_VERSION#v}"
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean"
  done
  # Build to a temporary name so an interrupted build never leaves a half-written binary behind.
  (cd "${TOOLS}" && go build -mod=readonly -buildvcs=false -ldflags "${ldflags}" -o "${out}.tmp" "k8s.io/kubernetes/cmd/${name}")
  mv -f "${out}.tmp" "${out}"
  echo "${STAMP}" >"${stamp}"
  "${out}" --version
}

for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  if wanted "${name}"; then build "${name}"; fi
done
# module_stamp DIR MODULE: the version of MODULE that DIR/go.mod requires and the hash of DIR's
# go.mod and go.sum; a binary built from DIR is current while its stamp file holds this.
module_stamp() {
  local dir=$1 module=$2 version
  version=$(cd "${dir}" && go list -m -f '{{.Version}}' "${module}")
  if [[ -z "${version}" ]]; then
    echo "build-tools: ${dir}/go.mod does not require ${module}" >&2
    return 1
  fi
  echo "${version} $(cat "${dir}/go.mod" "${dir}/go.sum" | sha256sum | cut -d' ' -f1)"
}

# build_from DIR STAMP OUT PACKAGE [GO BUILD FLAGS...]: builds PACKAGE in module DIR into OUT unless
# OUT's stamp file holds STAMP. Static (CGO_ENABLED=0 unless the caller sets it): the cluster's
# binaries run on any distribution.
build_from() {
  local dir=$1 stamp=$2 out=$3 pkg=$4
  shift 4
  local stampfile
  stampfile="$(dirname "${out}")/.$(basename "${out}").stamp"
  if [[ -x "${out}" && -f "${stampfile}" && "$(cat "${stampfile}")" == "${stamp}" ]]; then
    echo "build-tools: ${out} is ${stamp%% *}, up to date"
    return
  fi
  echo "build-tools: building ${out#"${ROOT}/"} ${stamp%% *}..."
  mkdir -p "$(dirname "${out}")"
  (cd "${dir}" && CGO_ENABLED=${CGO_ENABLED:-0} go build -mod=readonly -buildvcs=false "$@" -o "${out}.tmp" "${pkg}")
  mv -f "${out}.tmp" "${out}"
  echo "${stamp}" >"${stampfile}"
}

if wanted envoy-gateway; then
  # Envoy Gateway: a separate module, because k8s.io/kubernetes above pins k8s.io/* to versions
  # Envoy Gateway does not build with.
  EG_TOOLS="${TOOLS}/envoy-gateway"
  EG_STAMP=$(module_stamp "${EG_TOOLS}" github.com/envoyproxy/gateway)
  EG_VERSION=${EG_STAMP%% *}
  eg_out="${BIN}/envoy-gateway" eg_stamp="${BIN}/.envoy-gateway.stamp"
  if [[ -x "${eg_out}" && -f "${eg_stamp}" && "$(cat "${eg_stamp}")" == "${EG_STAMP}" ]]; then
    echo "build-tools: ${eg_out} is ${EG_VERSION}, up to date"
  else
    echo "build-tools: building envoy-gateway ${EG_VERSION} (about 20 min when cold)..."
    # Static and -trimpath like its image (hack/images.sh envoy-gateway): both links share one
    # compilation in the build cache.
    (cd "${EG_TOOLS}" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath \
      -ldflags "-X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=${EG_VERSION}" \
      -o "${eg_out}.tmp" github.com/envoyproxy/gateway/cmd/envoy-gateway)
    mv -f "${eg_out}.tmp" "${eg_out}"
    echo "${EG_STAMP}" >"${eg_stamp}"
    "${eg_out}" version
  fi
fi

if wanted etcd; then
  # etcd's own main package, at the version the main module already requires for pkg/embeddedetcd:
  # the cluster's etcd and the e2e suite's embedded one are the same code and share the build cache.
  build_from "${ROOT}" "$(module_stamp "${ROOT}" go.etcd.io/etcd/server/v3)" "${BIN}/etcd" \
    go.etcd.io/etcd/server/v3
fi

if wanted containerd; then
  dir="${TOOLS}/containerd" mod=github.com/containerd/containerd/v2
  stamp=$(module_stamp "${dir}" "${mod}")
  # The version package takes the module version; no_btrfs/no_devmapper/no_zfs leave out snapshotters
  # that need C libraries (the cluster uses overlayfs).
  flags=(-tags "no_btrfs no_devmapper no_zfs" -ldflags "-X ${mod}/version.Version=${stamp%% *}")
  for name in containerd containerd-shim-runc-v2 ctr; do
    build_from "${dir}" "${stamp}" "${BIN}/${name}" "${mod}/cmd/${name}" "${flags[@]}"
  done
fi

if wanted cni; then
  dir="${TOOLS}/cni-plugins" mod=github.com/containernetworking/plugins
  stamp=$(module_stamp "${dir}" "${mod}")
  for pkg in main/bridge ipam/host-local main/loopback meta/portmap; do
    build_from "${dir}" "${stamp}" "${BIN}/cni/${pkg#*/}" "${mod}/plugins/${pkg}" \
      -ldflags "-X ${mod}/pkg/utils/buildversion.BuildVersion=${stamp%% *}"
  done
fi

if wanted coredns; then
  build_from "${TOOLS}/coredns" "$(module_stamp "${TOOLS}/coredns" github.com/coredns/coredns)" \
    "${BIN}/coredns" .
fi

if wanted kube-router; then
  dir="${TOOLS}/kube-router" mod=github.com/cloudnativelabs/kube-router/v2
  stamp=$(module_stamp "${dir}" "${mod}")
  build_from "${dir}" "${stamp}" "${BIN}/kube-router" "${mod}/cmd/kube-router" \
    -ldflags "-X ${mod}/pkg/version.Version=${stamp%% *}"
fi

if wanted helm; then
  dir="${TOOLS}/helm" mod=helm.sh/helm/v4
  stamp=$(module_stamp "${dir}" "${mod}")
  build_from "${dir}" "${stamp}" "${BIN}/helm" "${mod}/cmd/helm" \
    -ldflags "-X ${mod}/internal/version.version=${stamp%% *}"
fi

# The node's host packages (Debian): iptables/conntrack/nftables serve kube-proxy and the CNI
# portmap plugin; ipset serves kube-router (it runs the ipset command); gcc, pkg-config and
# libseccomp build runc. Installed only as root and only when missing.
if { wanted runc || wanted kube-router; } && [[ $(id -u) == 0 ]]; then
  missing=()
  for probe in "command -v iptables:iptables" "command -v conntrack:conntrack" "command -v nft:nftables" \
    "command -v ipset:ipset" \
    "command -v gcc:gcc" "command -v pkg-config:pkg-config" "pkg-config --exists libseccomp:libseccomp-dev"; do
    ${probe%%:*} >/dev/null 2>&1 || missing+=("${probe#*:}")
  done
  if ((${#missing[@]})); then
    echo "build-tools: apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

if wanted runc; then
  # runc needs cgo (its nsexec is C) and libseccomp for the RuntimeDefault seccomp profile.
  dir="${TOOLS}/runc" mod=github.com/opencontainers/runc
  stamp=$(module_stamp "${dir}" "${mod}")
  CGO_ENABLED=1 build_from "${dir}" "${stamp}" "${BIN}/runc" "${mod}" -tags seccomp \
    -ldflags "-X main.version=${stamp%% *}"
fi
