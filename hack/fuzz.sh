#!/usr/bin/env bash
# fuzz.sh runs every `go test -fuzz` target of the repository for FUZZTIME each (default 8s; `go
# test` takes one target per invocation). A failing input is written by `go test` under the
# package's testdata/fuzz/<Target>/: fix the bug and commit that file, and plain `go test` keeps
# replaying it as a regression case.
#   FUZZTIME=10m hack/fuzz.sh            # a longer run
#   hack/fuzz.sh FuzzClientResponse      # only the targets named
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-8s}
FUZZPARALLEL=${FUZZPARALLEL:-2}
GO=${GO:-go}

# package target
targets=(
	"./pkg/apis/gateway/install FuzzDecodeDefaultValidate"
	"./pkg/apis/gateway/install FuzzFillDefaultValidate"
	"./pkg/tailnet FuzzClientResponse"
	"./pkg/extension/backends FuzzDecode"
)

# Every Fuzz function in the tree must be listed above, so none is silently left out.
listed=$(printf '%s\n' "${targets[@]}" | awk '{print $2}' | sort -u)
found=$(grep -rhoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' cmd pkg test | sed -E 's/^func (.*)\(/\1/' | sort -u)
if [[ "$listed" != "$found" ]]; then
	echo "hack/fuzz.sh: targets listed here differ from the Fuzz functions in the tree:" >&2
	diff <(echo "$listed") <(echo "$found") >&2 || true
	exit 1
fi

for entry in "${targets[@]}"; do
	read -r pkg target <<<"$entry"
	if [[ $# -gt 0 && " $* " != *" $target "* ]]; then
		continue
	fi
	echo "fuzz: $pkg $target for $FUZZTIME"
	"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel "$FUZZPARALLEL" "$pkg"
done
