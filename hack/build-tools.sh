#!/usr/bin/env bash
# Builds the third-party binaries the e2e suite and the aggregation benchmarks run, into _output/bin:
#   kube-apiserver           k8s.io/kubernetes/cmd/kube-apiserver
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager (ClusterRole aggregation
#                            and namespace deletion for the e2e suite)
#   envoy-gateway            github.com/envoyproxy/gateway/cmd/envoy-gateway (standalone Envoy Gateway
#                            for test/envoygateway), from its own module hack/tools/envoy-gateway
# at the versions hack/tools/go.mod and hack/tools/envoy-gateway/go.mod require. A binary is rebuilt
# only when it is missing or when its module's go.mod or go.sum changed since it was built (recorded
# in a stamp file next to it). A cold build takes 10-20 minutes on two cores for the Kubernetes pair
# (the second binary shares most of it) and about as long again for envoy-gateway.
# etcd is not built: the e2e suite runs pkg/embeddedetcd in the test process.
# Arguments name the binaries to build (default: all three); `make run` builds envoy-gateway only.
set -o errexit -o nounset -o pipefail
WANTED=" ${*:-kube-apiserver kube-controller-manager envoy-gateway} "
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

wanted kube-apiserver && build kube-apiserver
wanted kube-controller-manager && build kube-controller-manager
wanted envoy-gateway || exit 0

# Envoy Gateway: a separate module, because k8s.io/kubernetes above pins k8s.io/* to versions
# Envoy Gateway does not build with.
EG_TOOLS="${TOOLS}/envoy-gateway"
EG_VERSION=$(cd "${EG_TOOLS}" && go list -m -f '{{.Version}}' github.com/envoyproxy/gateway)
if [[ -z "${EG_VERSION}" ]]; then
  echo "build-tools: hack/tools/envoy-gateway/go.mod does not require github.com/envoyproxy/gateway" >&2
  exit 1
fi
EG_STAMP="${EG_VERSION} $(cat "${EG_TOOLS}/go.mod" "${EG_TOOLS}/go.sum" | sha256sum | cut -d' ' -f1)"
eg_out="${BIN}/envoy-gateway" eg_stamp="${BIN}/.envoy-gateway.stamp"
if [[ -x "${eg_out}" && -f "${eg_stamp}" && "$(cat "${eg_stamp}")" == "${EG_STAMP}" ]]; then
  echo "build-tools: ${eg_out} is ${EG_VERSION}, up to date"
else
  echo "build-tools: building envoy-gateway ${EG_VERSION} (about 20 min when cold)..."
  (cd "${EG_TOOLS}" && go build -mod=readonly -buildvcs=false \
    -ldflags "-X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=${EG_VERSION}" \
    -o "${eg_out}.tmp" github.com/envoyproxy/gateway/cmd/envoy-gateway)
  mv -f "${eg_out}.tmp" "${eg_out}"
  echo "${EG_STAMP}" >"${eg_stamp}"
  "${eg_out}" version
fi
