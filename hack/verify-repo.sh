#!/usr/bin/env bash
# Fails when the repository tracks what a clone should not carry: build output (an executable ELF,
# or a file over 1 MiB that is neither Go source nor test data), or a reference to a path outside
# the repository (a sibling shared directory, or an absolute path of a build machine).
# REPO=dir checks another git work tree (the test of this script uses it).
set -o errexit -o nounset -o pipefail

cd "${REPO:-$(dirname "${BASH_SOURCE[0]}")/..}"
MAX=$((1024 * 1024))
fail=0

while IFS= read -r -d '' f; do
  [[ -f "${f}" ]] || continue # deleted in the work tree, not yet in the index
  if [[ "$(head -c 4 "${f}" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
    echo "tracked executable (ELF): ${f}" >&2
    fail=1
  fi
  size=$(stat -c %s "${f}")
  if (( size > MAX )); then
    case "${f}" in
      *.go | testdata/* | */testdata/*) ;;
      *) echo "tracked file over 1 MiB that is not Go source or test data: ${f} (${size} bytes)" >&2; fail=1 ;;
    esac
  fi
done < <(git ls-files -z)

# The patterns are spelled so that this script does not match itself.
# /home/nonroot is the home of the images' own user (hack/tools/images), not a build machine's.
if hits=$(git grep -nIE '\.\./share[d]|/wor[k]/|/roo[t]/|/hom[e]/[a-z]' -- . 2>/dev/null | grep -v '/hom[e]/nonroot'); then
  echo "tracked files refer to paths outside the repository:" >&2
  echo "${hits}" >&2
  fail=1
fi

if (( fail )); then
  echo "repository check failed" >&2
  exit 1
fi
echo "repository check passed"
