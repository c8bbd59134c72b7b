#!/usr/bin/env bash
# Runs the API server benchmarks, one process per mode. Each mode's server runs in a child process
# of the benchmark (the test binary re-executed), so its RSS and heap figures are the server's and
# its embedded etcd's; client-rss-MiB is the benchmark client's. Used by `make bench`.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run() { go test -run '^$' -timeout 60m "$@" ./test/benchmark/ | grep -E '^(Benchmark|ok|FAIL)|ns/op'; }
for mode in stored live; do
  run -bench "BenchmarkGet/mode=${mode}/" -benchtime 2000x
  run -bench "BenchmarkList/mode=${mode}/" -benchtime 20x
done
run -bench 'BenchmarkTransitionLatency' -benchtime 20x
run -bench 'BenchmarkAPICallsUnderReadLoad' -benchtime 1x
