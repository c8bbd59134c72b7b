#!/usr/bin/env bash
# Builds the project's OCI images without Docker (`make images`): each binary is built static
# (CGO_ENABLED=0) for every platform in PLATFORMS and assembled by hack/tools/images into an OCI
# archive _output/images/<name>.tar holding an image index (one image per platform), non-root, with
# the machine's CA bundle. `ctr images import` and any OCI registry client read the archives.
#
#   hack/images.sh                 tailscale-gateway-apiserver and tailscale-gateway-proxy
#   hack/images.sh test            those, tailnet-sim (the simulated tailnet the cluster tests use) and
#                                  envoy-gateway and netcheck (test/cluster/netcheck: the suite's HTTP
#                                  client and server)
#   hack/images.sh envoy-gateway   tsgw.local/envoy-gateway:<version>, Envoy Gateway's cmd/envoy-gateway
#                                  at the version hack/tools/envoy-gateway pins, for the cluster suite
#   hack/images.sh pause           the cluster's pause image only (hack/cluster-up.sh)
#   hack/images.sh etcd            tsgw.local/etcd:<version>, the etcd the main module requires, for
#                                  the chart's etcd StatefulSet in the test cluster
#   hack/images.sh NAME...         the named cmd/NAME (or test/cluster/NAME) images
#
# TAG defaults to `git describe --tags --always --dirty` (never latest) and is also injected as the
# binaries' version (pkg/version, shown by --version); REGISTRY names the repository
# (default ghcr.io/tailscale-gateway, the chart's default); PLATFORMS defaults to
# "linux/amd64 linux/arm64". _output/images/TAG records the tag of the last build. TRIMPATH=0 builds
# without -trimpath, reusing the build cache of `go build`/`go test` in this checkout.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${ROOT}"
OUT=_output/images
TAG=${TAG:-$(git describe --tags --always --dirty)}
REGISTRY=${REGISTRY:-ghcr.io/tailscale-gateway}
PLATFORMS=${PLATFORMS:-linux/amd64 linux/arm64}
PAUSE_REF=tsgw.local/pause:v1
if [[ "${TAG}" == latest ]]; then
  echo "images: TAG=latest refused; images are versioned" >&2
  exit 1
fi
mkdir -p "${OUT}"
trimpath=-trimpath
if [[ "${TRIMPATH:-1}" == 0 ]]; then trimpath=""; fi

TOOL="${OUT}/bin/images"
(cd hack/tools/images && CGO_ENABLED=0 go build -mod=readonly -o "${ROOT}/${TOOL}" .)

# assemble REF OUT DIR NAME [FLAGS...]: one archive from DIR/<os>-<arch>/NAME for each platform.
assemble() {
  local ref=$1 out=$2 dir=$3 name=$4 platform args=()
  shift 4
  for platform in ${PLATFORMS}; do
    args+=(-binary "${platform}=${dir}/${platform/\//-}/${name}")
  done
  "${TOOL}" -ref "${ref}" -out "${out}" "${args[@]}" "$@"
  echo "images: ${out} (${ref}; ${PLATFORMS})"
}

# build_all DIR MODULE_DIR LDFLAGS PACKAGE...: builds the packages for every platform into DIR.
build_all() {
  local dir=$1 module=$2 ldflags=$3 platform
  shift 3
  for platform in ${PLATFORMS}; do
    mkdir -p "${dir}/${platform/\//-}"
    (cd "${module}" && CGO_ENABLED=0 GOOS=${platform%/*} GOARCH=${platform#*/} \
      go build -mod=readonly ${trimpath} -ldflags "${ldflags}" -o "${ROOT}/${dir}/${platform/\//-}/" "$@")
  done
}

if [[ "${1:-}" == pause ]]; then
  build_all "${OUT}/bin" hack/tools/images "-s -w" ./pause
  # The sandbox runs as the nobody-like user the upstream pause image uses; it needs no CA bundle.
  assemble "${PAUSE_REF}" "${OUT}/pause.tar" "${OUT}/bin" pause -uid 65535 -ca-bundle ""
  exit 0
fi

if [[ "${1:-}" == etcd ]]; then
  version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  for platform in ${PLATFORMS}; do
    mkdir -p "${OUT}/bin/${platform/\//-}"
    CGO_ENABLED=0 GOOS=${platform%/*} GOARCH=${platform#*/} go build -mod=readonly ${trimpath} \
      -ldflags "-s -w" -o "${OUT}/bin/${platform/\//-}/etcd" go.etcd.io/etcd/server/v3
  done
  assemble "tsgw.local/etcd:${version}" "${OUT}/etcd.tar" "${OUT}/bin" etcd
  exit 0
fi

# envoy_gateway: Envoy Gateway's own binary (no Envoy: that image is not built here), from its module
# hack/tools/envoy-gateway, tagged with the version that module pins.
envoy_gateway() {
  local dir=hack/tools/envoy-gateway version
  version=$(cd "${dir}" && go list -m -f '{{.Version}}' github.com/envoyproxy/gateway)
  build_all "${OUT}/bin" "${dir}" \
    "-s -w -X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=${version}" \
    github.com/envoyproxy/gateway/cmd/envoy-gateway
  assemble "tsgw.local/envoy-gateway:${version}" "${OUT}/envoy-gateway.tar" "${OUT}/bin" envoy-gateway
}

names=("$@")
if ((${#names[@]} == 0)); then
  names=(tailscale-gateway-apiserver tailscale-gateway-proxy)
elif [[ "${names[*]}" == test ]]; then
  envoy_gateway
  names=(tailscale-gateway-apiserver tailscale-gateway-proxy tailnet-sim netcheck)
elif [[ "${names[*]}" == envoy-gateway ]]; then
  envoy_gateway
  exit 0
fi
pkgs=()
for name in "${names[@]}"; do
  if [[ -d "cmd/${name}" ]]; then
    pkgs+=("./cmd/${name}")
  elif [[ -d "test/cluster/${name}" ]]; then
    pkgs+=("./test/cluster/${name}")
  else
    echo "images: no cmd/${name} or test/cluster/${name}" >&2
    exit 1
  fi
done
build_all "${OUT}/bin" . "-s -w -X github.com/tailscale-gateway/tailscale-gateway/pkg/version.gitVersion=${TAG}" "${pkgs[@]}"
for name in "${names[@]}"; do
  assemble "${REGISTRY}/${name}:${TAG}" "${OUT}/${name}.tar" "${OUT}/bin" "${name}"
done
echo "${TAG}" >"${OUT}/TAG"
