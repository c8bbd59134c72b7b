#!/usr/bin/env bash
# Lints and renders charts/tailscale-gateway with real helm (_output/bin/helm, hack/build-tools.sh
# helm) for each certificate source, each etcd mode and the OAuth values, checks what the defaults
# promise (2 replicas, RollingUpdate with maxUnavailable 0, PodDisruptionBudgets, a 3-member etcd,
# an APIService with a caBundle, versioned images), and that bad values are refused. `make chart`.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELM="${ROOT}/_output/bin/helm"
CHART="${ROOT}/charts/tailscale-gateway"
OUT=$(mktemp -d)
trap 'rm -rf "${OUT}"' EXIT

fail() {
  echo "verify-chart: $*" >&2
  exit 1
}
render() {
  local name=$1
  shift
  "${HELM}" template tailscale-gateway "${CHART}" -n tailscale-gateway-system "$@" >"${OUT}/${name}.yaml" ||
    fail "helm template ($name) failed"
}
# has NAME PATTERN: the rendering NAME has a line matching the extended regex PATTERN.
has() { grep -Eq -- "$2" "${OUT}/$1.yaml" || fail "$1: no line matches '$2'"; }
hasnt() { ! grep -Eq -- "$2" "${OUT}/$1.yaml" || fail "$1: a line matches '$2'"; }

"${HELM}" lint --strict "${CHART}" >/dev/null || "${HELM}" lint --strict "${CHART}"
"${HELM}" lint --strict "${CHART}" --set oauth.clientId=id --set oauth.clientSecret=secret >/dev/null

render default
has default '^  replicas: 2$'
has default '^      maxUnavailable: 0$'
has default '^kind: PodDisruptionBudget$'
has default '^  replicas: 3$'
has default '^  caBundle: [A-Za-z0-9+/=]{100,}$'
has default 'image: ghcr.io/tailscale-gateway/tailscale-gateway-apiserver:0\.1\.0$'
has default -- '--proxy-image=ghcr.io/tailscale-gateway/tailscale-gateway-proxy:0\.1\.0$'
has default -- '--etcd-servers=http://tailscale-gateway-etcd-0\.tailscale-gateway-etcd\.tailscale-gateway-system\.svc\.cluster\.local:2379,'
hasnt default ':latest'
hasnt default 'name: tailscale-gateway-oauth$'
hasnt default 'client_secret'

render oauth --set oauth.clientId=the-id --set oauth.clientSecret=the-secret --set image.tag=v1.2.3
has oauth "client_secret: \"$(printf the-secret | base64)\""
has oauth 'tailscale-gateway-apiserver:v1\.2\.3$'

render external --set etcd.mode=external --set 'etcd.external.servers={https://etcd-a:2379,https://etcd-b:2379}'
has external -- '--etcd-servers=https://etcd-a:2379,https://etcd-b:2379$'
hasnt external '^kind: StatefulSet$'

render certmanager --set apiService.certificate.source=certManager \
  --set apiService.certificate.certManager.issuerRef.name=ca-issuer \
  --set apiService.certificate.certManager.issuerRef.kind=ClusterIssuer
has certmanager '^kind: Certificate$'
has certmanager 'cert-manager.io/inject-ca-from: tailscale-gateway-system/tailscale-gateway-apiserver$'
hasnt certmanager 'caBundle'

render secret --set apiService.certificate.source=secret --set apiService.certificate.existingSecret=my-tls
has secret '^ +secretName: my-tls$'
hasnt secret '^kind: Secret$'

# Refused values.
for bad in "image.tag=latest" "etcd.mode=external" "apiService.certificate.source=none" \
  "apiService.certificate.source=secret" "oauth.clientId=only-the-id" "apiserver.replicas=0"; do
  if "${HELM}" template tailscale-gateway "${CHART}" --set "${bad}" >/dev/null 2>&1; then
    fail "--set ${bad} was accepted"
  fi
done
echo "verify-chart: charts/tailscale-gateway lints and renders"
