#!/usr/bin/env bash
# Fails when the committed generated code or API reference differs from what hack/update-codegen.sh
# produces.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${ROOT}"

TMP=$(mktemp -d)
trap 'rm -rf "${TMP}"' EXIT
# Work on a copy so a failed verify leaves the tree untouched.
tar --exclude=./_output --exclude=./.git -cf - . | tar -C "${TMP}" -xf -
(cd "${TMP}" && hack/update-codegen.sh >/dev/null)
if ! diff -ruN --exclude=_output --exclude=.git "${ROOT}/pkg" "${TMP}/pkg" >"${TMP}.diff" \
  || ! diff -u "${ROOT}/hack/api-rules-violations.list" "${TMP}/hack/api-rules-violations.list" >>"${TMP}.diff" \
  || ! diff -uN "${ROOT}/docs/reference/api.md" "${TMP}/docs/reference/api.md" >>"${TMP}.diff"; then
  cat "${TMP}.diff"
  rm -f "${TMP}.diff"
  echo "generated code is out of date: run hack/update-codegen.sh" >&2
  exit 1
fi
rm -f "${TMP}.diff"
echo "generated code is up to date"
