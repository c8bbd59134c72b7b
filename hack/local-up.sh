#!/usr/bin/env bash
# Starts a simulated tailnet (cmd/tailnet-sim) and the standalone API server wired to it, applies
# examples/ and the simulated devices, and serves until interrupted. Used by `make run`.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${ROOT}"
BIN=_output/bin
DATA=${DATA:-_output/local}
ADDR=${ADDR:-127.0.0.1}
PORT=${PORT:-8443}
SIM=${DATA}/sim
KUBECTL="kubectl --kubeconfig ${DATA}/kubeconfig"

mkdir -p "${SIM}/state"
rm -f "${SIM}/sim.env"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"${BIN}/tailnet-sim" -local-up-dir "${SIM}" -dir "${SIM}/state" >"${SIM}/tailnet-sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  [[ -f "${SIM}/sim.env" ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "${SIM}/tailnet-sim.log"; echo "tailnet-sim exited" >&2; exit 1; }
  sleep 0.2
done
[[ -f "${SIM}/sim.env" ]] || { echo "tailnet-sim did not start in 2 minutes" >&2; exit 1; }
# shellcheck disable=SC1091
source "${SIM}/sim.env"

"${BIN}/tailscale-gateway-apiserver" --standalone --data-dir "${DATA}" \
  --bind-address "${ADDR}" --secure-port "${PORT}" \
  --tailnet-credentials-dir "${SIM}/credentials" --tailnet-control-url "${SIM_CONTROL_URL}" \
  --tailnet-poll-interval 5s >"${DATA}/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  ${KUBECTL} get --raw /readyz >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || { tail -50 "${DATA}/apiserver.log"; echo "apiserver exited" >&2; exit 1; }
  sleep 0.2
done

${KUBECTL} apply -f examples/ >/dev/null
${KUBECTL} apply -f "${SIM}/live-examples.yaml"

cat <<MSG

tailscale-gateway-apiserver is serving on https://${ADDR}:${PORT} (log: ${DATA}/apiserver.log),
wired to a simulated tailnet (log: ${SIM}/tailnet-sim.log).

  export KUBECONFIG=${DATA}/kubeconfig
  kubectl get tailscale -A
  kubectl get tsep simulated-devices -o wide -w        # live HEALTHY count
  kubectl get tstn simulated                           # live device counts

Flip the simulated devices and watch the status change:
  curl -X POST -d code=500 ${SIM_ADMIN_URL}/devices/api-server/http-status
  curl -X POST -d serving=false ${SIM_ADMIN_URL}/devices/grpc-service/grpc-serving
  curl -X POST -d online=false ${SIM_ADMIN_URL}/devices/postgres/online

Ctrl-C stops both.
MSG
wait -n "${pids[@]}"
