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
  --tailnet-poll-interval 5s --extension-endpoint-mode proxy --extension-proxy-address 127.0.0.1 \
  --allow-external-services \
  >"${DATA}/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  ${KUBECTL} get --raw /readyz >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || { tail -50 "${DATA}/apiserver.log"; echo "apiserver exited" >&2; exit 1; }
  sleep 0.2
done

${KUBECTL} apply -f examples/ >/dev/null
${KUBECTL} apply -f "${SIM}/live-examples.yaml"

# Only the simulated tailnet and the server end the run (see the end); the rest may fail alone.
core=("${pids[@]}")

# tailscale-gateway-proxy: a tsnet node of the simulated tailnet with an egress listener on
# 127.0.0.1 per endpoint of the simulated devices. The server runs with
# --extension-endpoint-mode=proxy, so the endpoints Envoy receives for the route are these
# listeners: traffic goes Envoy -> proxy -> tailnet device.
# It also hosts the Tailscale Service of TailscaleServices simulated-web (ListenService, so its
# node is tagged with a tag the Service carries); the simulator routes the Service to it the way
# Tailscale's control plane does.
# Each run starts a new simulated tailnet: a node identity from the last one is unknown to it.
rm -rf "${DATA}/proxy" && mkdir -p "${DATA}/proxy"
"${BIN}/tailscale-gateway-proxy" --kubeconfig "${DATA}/kubeconfig" --namespace default --endpoints simulated-devices \
  --services "${SIM_SERVICE}" --tags "${SIM_SERVICE_TAG}" \
  --state-dir "${DATA}/proxy" --hostname tailscale-gateway-proxy --control-url "${SIM_CONTROL_URL}" \
  --auth-key-file "${SIM}/auth-key" --egress-bind-address 127.0.0.1 >"${DATA}/proxy.log" 2>&1 &
pids+=($!)
PROXY_HTTP=""
for _ in $(seq 1 300); do
  PROXY_HTTP=$(sed -n 's/.*"Serving egress".*address="\([0-9.:]*\)".*target="default\/simulated-devices\/api-server".*/\1/p' "${DATA}/proxy.log" | tail -1)
  [[ -n "${PROXY_HTTP}" ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || break
  sleep 0.2
done
# The Service answers once the controllers created it, the proxy hosts it and the simulator
# routed it: ask from the simulated device the message curls from, until the primary answers.
FETCH="${SIM_ADMIN_URL}/devices/${SIM_CLIENT}/fetch?url=${SIM_SERVICE_URL}"
SERVICE_UP=false
if [[ -n "${PROXY_HTTP}" ]]; then
  for _ in $(seq 1 300); do
    if curl -sf "${FETCH}" 2>/dev/null | grep -q "\"body\": \"hello from ${SIM_PRIMARY}"; then SERVICE_UP=true; break; fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.5
  done
fi

# Envoy Gateway v1.9.1 standalone (file provider, Host infrastructure) with this server as its
# extension: it translates an HTTPRoute whose backendRef is the simulated devices and calls the
# hooks, and Envoy's endpoints for that route come from the xDS server on 127.0.0.1:18001. There
# is no Envoy binary here: Envoy Gateway logs that it cannot start one, and translates anyway.
# It listens on 0.0.0.0:18000 (its xDS, mTLS), :8081 and :18002, which it does not let us move.
EG=${DATA}/envoy-gateway
EG_STARTED=false
if hack/build-tools.sh envoy-gateway >"${DATA}/build-envoy-gateway.log" 2>&1; then
  rm -rf "${EG}/resources" && mkdir -p "${EG}/resources" "${EG}/home"
  EGABS=$(cd "${EG}" && pwd)
  "${BIN}/envoy-gateway" certgen --local --config-home "${EGABS}/config" >"${EG}/certgen.log" 2>&1
  cat >"${EG}/envoy-gateway.yaml" <<EOF
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyGateway
gateway:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
provider:
  type: Custom
  custom:
    resource:
      type: File
      file:
        paths: ["${EGABS}/resources"]
    infrastructure:
      type: Host
      host:
        configHome: ${EGABS}/config
        dataHome: ${EGABS}/data
        stateHome: ${EGABS}/state
        runtimeDir: ${EGABS}/run
admin:
  address: {host: 127.0.0.1, port: 19000}
telemetry:
  metrics:
    prometheus: {disable: true}
extensionManager:
  backendResources:
    - {group: gateway.tailscale.com, version: v1alpha1, kind: TailscaleEndpoints}
    - {group: gateway.tailscale.com, version: v1alpha1, kind: TailscaleServices}
  hooks:
    xdsTranslator:
      post: [Route, Cluster, Translation]
  service:
    fqdn: {hostname: 127.0.0.1, port: 5005}
  failOpen: false
  maxMessageSize: 16Mi
EOF
  # The file provider reads Gateway API objects and our backends from files: the object the
  # route names is copied from the server (its endpoints and health come from the server).
  cat >"${EG}/resources/gateway.yaml" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: eg, namespace: default}
spec:
  gatewayClassName: eg
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: simulated, namespace: default}
spec:
  parentRefs: [{name: eg}]
  rules:
    - backendRefs:
        - {group: gateway.tailscale.com, kind: TailscaleEndpoints, name: simulated-devices, port: 80}
EOF
  # Name and spec only: the file provider refuses objects that carry a resourceVersion.
  printf '{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":"simulated-devices","namespace":"default"},"spec":%s}\n' \
    "$(${KUBECTL} get tailscaleendpoints -n default simulated-devices -o jsonpath='{.spec}')" >"${EG}/resources/simulated-devices.json"
  HOME="${EGABS}/home" "${BIN}/envoy-gateway" server --config-path "${EG}/envoy-gateway.yaml" >"${EG}/envoy-gateway.log" 2>&1 &
  pids+=($!)
  EG_STARTED=true
else
  echo "Envoy Gateway is not started: building it failed (${DATA}/build-envoy-gateway.log)." >&2
fi

cat <<MSG

tailscale-gateway-apiserver is serving on https://${ADDR}:${PORT} (log: ${DATA}/apiserver.log),
wired to a simulated tailnet (log: ${SIM}/tailnet-sim.log).

  export KUBECONFIG=${DATA}/kubeconfig
  kubectl get tailscale -A
  kubectl get tsep simulated-devices -o wide -w        # live HEALTHY count
  kubectl get tstn simulated                           # live device counts

$(if ${EG_STARTED}; then cat <<EG_MSG
Envoy Gateway (log: ${EG}/envoy-gateway.log) translates HTTPRoute default/simulated, whose
backendRef is the simulated devices, through this server's extension. What Envoy receives for it
from the xDS server on 127.0.0.1:18001 (endpoints, priorities, health), live:
  ${BIN}/xds-watch httproute/default/simulated/rule/0
EG_MSG
fi)
$(if [[ -n "${PROXY_HTTP}" ]]; then cat <<PROXY_MSG
Those endpoints are tailscale-gateway-proxy's egress listeners (log: ${DATA}/proxy.log). What
Envoy would send to the api-server device goes through the proxy's tsnet node:
  curl http://${PROXY_HTTP}/
PROXY_MSG
else echo "tailscale-gateway-proxy did not start (log: ${DATA}/proxy.log)."; fi)

$(if ${SERVICE_UP}; then cat <<SVC_MSG
A Tailscale Service hosted by tailscale-gateway-proxy: TailscaleServices default/${SIM_SERVICE}
is svc:${SIM_SERVICE} in the simulated tailnet, balanced with failover over TailscaleEndpoints
web-primary (the ${SIM_PRIMARY} device) and web-secondary (${SIM_SECONDARY}). Curl it from the
simulated device ${SIM_CLIENT} (the admin API makes the request from that device's tsnet node):
  curl "${FETCH}"
It answers "hello from ${SIM_PRIMARY}". Make the primary unhealthy, and after two failed probes
(2 s apart) the same curl answers "hello from ${SIM_SECONDARY}"; heal it, and traffic returns to
the primary 10 s (failbackDelay) after it is healthy again:
  curl -X POST -d code=500 ${SIM_ADMIN_URL}/devices/${SIM_PRIMARY}/http-status
  kubectl get tssvc ${SIM_SERVICE} -o wide            # live endpoint health and active tier
  curl -X POST -d code=200 ${SIM_ADMIN_URL}/devices/${SIM_PRIMARY}/http-status
SVC_MSG
else echo "svc:${SIM_SERVICE} did not answer from ${SIM_CLIENT} (logs: ${DATA}/proxy.log, ${SIM}/tailnet-sim.log)."; fi)

Flip the simulated devices and watch the status change:
  curl -X POST -d code=500 ${SIM_ADMIN_URL}/devices/api-server/http-status
  curl -X POST -d serving=false ${SIM_ADMIN_URL}/devices/grpc-service/grpc-serving
  curl -X POST -d online=false ${SIM_ADMIN_URL}/devices/postgres/online

Ctrl-C stops everything.
MSG
# Only the simulated tailnet and the server end the run; Envoy Gateway stopping does not.
wait -n "${core[@]}"
