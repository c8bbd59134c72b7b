#!/usr/bin/env bash
# Regenerates deepcopy, conversion, defaulter, openapi, clientset, apply configurations, listers,
# informers and the API reference (docs/reference/api.md). The generators are pinned as `tool` dependencies in go.mod.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${ROOT}"

MODULE=$(go list -m)
APIS="${MODULE}/pkg/apis/gateway"
API_VERSION="${APIS}/v1alpha1"
GEN_PKG="${MODULE}/pkg/generated"
BOILERPLATE="${ROOT}/hack/boilerplate.go.txt"
# The kinds TailscaleEndpoints and TailscaleServices are already plural.
PLURALS="TailscaleEndpoints:TailscaleEndpoints,TailscaleServices:TailscaleServices"

rm -f pkg/apis/gateway/zz_generated.*.go pkg/apis/gateway/v1alpha1/zz_generated.*.go
rm -rf pkg/generated/clientset pkg/generated/listers pkg/generated/informers pkg/generated/applyconfiguration
rm -f pkg/generated/openapi/zz_generated.openapi.go

echo "deepcopy, defaulter, conversion"
go tool deepcopy-gen --go-header-file "${BOILERPLATE}" --output-file zz_generated.deepcopy.go "${APIS}" "${API_VERSION}"
go tool defaulter-gen --go-header-file "${BOILERPLATE}" --output-file zz_generated.defaults.go "${API_VERSION}"
go tool conversion-gen --go-header-file "${BOILERPLATE}" --output-file zz_generated.conversion.go "${API_VERSION}"

echo "openapi"
go tool openapi-gen --go-header-file "${BOILERPLATE}" \
  --output-file zz_generated.openapi.go \
  --output-dir pkg/generated/openapi --output-pkg "${GEN_PKG}/openapi" \
  --output-model-name-file zz_generated.model_name.go \
  --report-filename hack/api-rules-violations.list \
  k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime \
  k8s.io/apimachinery/pkg/version k8s.io/apimachinery/pkg/api/resource \
  k8s.io/apimachinery/pkg/util/intstr \
  "${API_VERSION}"

echo "apply configurations, clientset, listers, informers"
SCHEMA=$(mktemp)
trap 'rm -f "${SCHEMA}"' EXIT
go run ./pkg/generated/openapi/cmd/models-schema > "${SCHEMA}"
go tool applyconfiguration-gen --go-header-file "${BOILERPLATE}" \
  --output-dir pkg/generated/applyconfiguration --output-pkg "${GEN_PKG}/applyconfiguration" \
  --openapi-schema "${SCHEMA}" "${API_VERSION}"
go tool client-gen --go-header-file "${BOILERPLATE}" \
  --output-dir pkg/generated/clientset --output-pkg "${GEN_PKG}/clientset" \
  --clientset-name versioned --plural-exceptions "${PLURALS}" --input-base "" --input "${API_VERSION}" \
  --apply-configuration-package "${GEN_PKG}/applyconfiguration"
go tool lister-gen --go-header-file "${BOILERPLATE}" \
  --output-dir pkg/generated/listers --output-pkg "${GEN_PKG}/listers" --plural-exceptions "${PLURALS}" "${API_VERSION}"
go tool informer-gen --go-header-file "${BOILERPLATE}" \
  --output-dir pkg/generated/informers --output-pkg "${GEN_PKG}/informers" \
  --versioned-clientset-package "${GEN_PKG}/clientset/versioned" \
  --listers-package "${GEN_PKG}/listers" --plural-exceptions "${PLURALS}" "${API_VERSION}"

echo "API reference"
mkdir -p docs/reference
go run ./hack/gen-api-reference -out docs/reference/api.md
